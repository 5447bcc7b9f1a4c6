"""Fixtures: a tiny SciCite-schema dataset and a tiny real text-embedding module."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from .pg import postgres_db  # noqa: F401 (a fixture for every test module)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
LABELS = ("method", "background", "result")
CUES = {
    "method": ["we", "use", "the", "algorithm", "procedure", "following", "protocol"],
    "background": ["previous", "studies", "have", "shown", "reported", "widely", "known"],
    "result": ["our", "findings", "are", "consistent", "agree", "with", "observed"],
}
FILLER = ["cells", "virus", "model", "data", "patients", "analysis", "samples", "rate"]
VOCAB = sorted({w for words in CUES.values() for w in words} | set(FILLER))
DIM = 8
SMALL_RUN = [
    "trainer.steps=60",
    "trainer.eval_every=20",
    "trainer.batch_size=8",
    "optimizer.learning_rate=0.5",
]


def _sentence(rng: np.random.Generator, label: str) -> str:
    words = list(rng.choice(CUES[label], size=4)) + list(rng.choice(FILLER, size=3))
    rng.shuffle(words)
    return " ".join(words).capitalize() + " (Smith et al., 2010)."


def _record(rng: np.random.Generator, split: str, i: int, label: str) -> dict:
    citing, cited = f"{split}{i:04d}", f"cited{i:04d}"
    return {
        "source": "explicit",
        "citeEnd": 68.0 if i % 7 == 0 else 175,
        "sectionName": "Introduction" if i % 5 else float("nan"),
        "citeStart": 168,
        "string": _sentence(rng, label),
        "label": label,
        "label_confidence": 1.0,
        "citingPaperId": citing,
        "citedPaperId": cited,
        "isKeyCitation": bool(i % 2),
        "id": f"{citing}>{cited}",
        "unique_id": f"{citing}>{cited}_0",
        "excerpt_index": 0,
    }


def write_scicite(
    directory: Path, sizes: dict[str, int], seed: int = 0, label_noise: float = 0.0
) -> Path:
    """Release-schema JSON lines (bare NaN tokens and a repeated unique_id included);
    `label_noise` of the sentences get the cue words of another class."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in sizes.items():
        records = [_record(rng, split, i, LABELS[i % 3]) for i in range(n)]
        for i in np.flatnonzero(rng.random(n) < label_noise):
            records[i]["string"] = _sentence(rng, LABELS[(i + 1) % 3])
        if split == "train":  # the release repeats some unique_ids; TFDS keeps the first
            records.append({**records[0], "string": "A near duplicate of the first line."})
        with (directory / f"{split}.jsonl").open("w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
    return directory


@pytest.fixture(scope="session")
def scicite_dir(tmp_path_factory) -> Path:
    return write_scicite(
        tmp_path_factory.mktemp("release") / "scicite", {"train": 120, "dev": 45, "test": 45}
    )


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="session")
def module_vectors() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(len(VOCAB), DIM)).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_module(tmp_path_factory, module_vectors) -> Path:
    from hubsweep.embeddings.export import export_text_embedding

    return export_text_embedding(
        VOCAB, module_vectors, tmp_path_factory.mktemp("modules") / "tiny", lowercase=True
    )


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("feature-cache")


@pytest.fixture
def fixture_overrides(scicite_dir, tfds_dir, tiny_module, cache_dir) -> list[str]:
    """Command-line overrides that point a run at the fixture data and module."""
    return [
        f"dataset.source_dir={scicite_dir}",
        f"dataset.data_dir={tfds_dir}",
        f"embedding.handle={tiny_module}",
        f"embedding.dim={DIM}",
        "trainer.progress=false",
        # Fixture runs are tiny: compiling with XLA costs more than it saves. The compiled
        # paths are tested with trainer.xla=true explicitly (test_population, test_fast_paths).
        "trainer.xla=false",
        f"cache_dir={cache_dir}",
    ]


@pytest.fixture
def make_cfg(fixture_overrides, tmp_path) -> Callable:
    """Compose the real config tree with fixture data, as `hubsweep-train` would."""
    from hydra import compose, initialize_config_dir

    from hubsweep.config.schema import register_configs

    register_configs()

    def make(*overrides: str, run: str = "run", small: bool = True):
        base = [*fixture_overrides, f"output_dir={tmp_path / run}"]
        if small:
            base += SMALL_RUN
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            return compose("config", overrides=[*base, *overrides])

    return make
