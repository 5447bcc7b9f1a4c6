"""Swivel training on a two-topic corpus, export and the hubsweep-swivel command."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub

from hubsweep.embeddings.export import read_vectors_text
from hubsweep.swivel.counting import CountSettings, count_corpus
from hubsweep.swivel.training import LOSS_LOG, SwivelSettings, SwivelTrainer

from .test_swivel_counting import TOPICS, write_corpus

BASE = {"optimizer": "adagrad", "learning_rate": 0.1, "smoothing": 1.0, "seed": 0}


@pytest.fixture(scope="module")
def counts(tmp_path_factory):
    root = tmp_path_factory.mktemp("swivel")
    corpus = write_corpus(root / "papers.jsonl", docs_per_topic=60)
    settings = CountSettings(
        lowercase=True,
        window=4,
        min_count=1,
        max_vocab=100,
        shard_size=4,
        fields=("title", "abstract"),
        processes=1,
    )
    count_corpus(corpus, root / "counts", settings)
    return root / "counts"


def _cos(v: np.ndarray) -> np.ndarray:
    unit = v / np.linalg.norm(v, axis=1, keepdims=True)
    return unit @ unit.T


@pytest.mark.parametrize(("optimizer", "lr"), [("adagrad", 0.1), ("adam", 0.01)])
def test_training_lowers_the_loss_and_separates_the_topics(counts, tmp_path, optimizer, lr):
    settings = SwivelSettings(
        dim=8, epochs=30, optimizer=optimizer, learning_rate=lr, smoothing=1.0, seed=0
    )
    vectors = SwivelTrainer(counts, settings).train(tmp_path, progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / LOSS_LOG).read_text().splitlines()]
    assert losses[-1] < 0.5 * losses[0]
    vocab = (counts / "vocab.txt").read_text().split()
    cos = _cos(vectors)
    virus = [vocab.index(w) for w in TOPICS["virus"]]
    sport = [vocab.index(w) for w in TOPICS["sport"]]
    within = np.mean(
        [cos[i, j] for group in (virus, sport) for i in group for j in group if i != j]
    )
    across = cos[np.ix_(virus, sport)].mean()
    assert within > across + 0.5


def test_training_resumes_from_its_checkpoint(counts, tmp_path):
    SwivelTrainer(counts, SwivelSettings(dim=8, epochs=3, **BASE)).train(tmp_path, progress=False)
    resumed = SwivelTrainer(counts, SwivelSettings(dim=8, epochs=5, **BASE))
    resumed.train(tmp_path, progress=False)
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / LOSS_LOG).read_text().splitlines()]
    assert epochs == [1, 2, 3, 4, 5]


def test_cli_builds_a_module_that_round_trips(tmp_path):
    corpus = write_corpus(tmp_path / "papers.jsonl", docs_per_topic=30)
    output = tmp_path / "module"
    proc = subprocess.run(
        [
            shutil.which("hubsweep-swivel"),
            f"corpus={corpus}",
            f"output={output}",
            "dim=8",
            "epochs=5",
            "shard_size=4",
            "min_count=1",
            "window=3",
            "processes=1",
            "progress=false",
            "fields=[title,abstract]",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    vocab, vectors = read_vectors_text(output / "vectors.txt")
    layer = hub.KerasLayer(str(output))
    via_module = layer(tf.constant([vocab[0], "Fever!", "unseenword"])).numpy()
    np.testing.assert_allclose(via_module[0], vectors[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(via_module[1], vectors[vocab.index("fever")], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(via_module[2], np.zeros(8))  # OOV bucket starts at zero
    assert hub.KerasLayer(str(output), trainable=True).trainable_weights
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 5.0, rtol=1e-4)  # normalize


def _build(corpus, output, *extra: str) -> None:
    args = [f"corpus={corpus}", f"output={output}", "dim=8", "epochs=3", "shard_size=4"]
    args += ["min_count=1", "window=3", "processes=1", "progress=false", "fields=[title]"]
    proc = subprocess.run(
        [shutil.which("hubsweep-swivel"), *args, *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow  # ~100 s on 2 cores; run with -m slow
def test_changed_settings_or_corpus_are_never_served_old_vectors(tmp_path):
    corpus = write_corpus(tmp_path / "papers.jsonl", docs_per_topic=20)
    output = tmp_path / "module"
    work = tmp_path / "module.work"
    _build(corpus, output)
    first = (output / "vectors.txt").read_text()
    counts = json.loads((work / "counts" / "counts.json").read_text())

    _build(corpus, output)  # the same settings: reused, resumed, the same vectors
    assert (output / "vectors.txt").read_text() == first
    assert len(list(work.glob("training-*"))) == 1

    for changed in ("learning_rate=0.3", "solver=adam", "smoothing=0.75"):
        _build(corpus, output, changed)
        assert (output / "vectors.txt").read_text() != first, changed
    assert len(list(work.glob("training-*"))) == 4  # each trained from scratch, none reused

    def meta() -> dict:
        return json.loads((work / "counts" / "counts.json").read_text())

    _build(corpus, output, "max_vocab=8")  # the counts depend on it: counted again
    assert meta()["key"] != counts["key"] and meta()["vocab_size"] == 8

    _build(corpus, output)
    assert meta()["key"] == counts["key"]
    with corpus.open("a") as f:  # the corpus changes: counted again
        f.write(json.dumps({"title": "a brand new paper"}) + "\n")
    _build(corpus, output)
    assert meta()["key"] != counts["key"] and meta()["tokens"] > counts["tokens"]
