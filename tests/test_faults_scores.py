"""Fault suite, scores and names: macro scores never average a class a split does not hold,
a one-class training split is refused, names never escape results_dir, and a BERT pair run
past its position limit is one error when it loads."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hubsweep.errors import ConfigError, DataError, EmbeddingError
from hubsweep.metrics import MACRO_RULE, classification_metrics
from hubsweep.results.layout import FINAL_FILE
from hubsweep.training.run import train_and_evaluate

from .conftest import CUES, FILLER, LABELS, SMALL_RUN
from .test_transformer import HIDDEN, POSITIONS, write_tiny_checkpoint


def _cli(command: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [shutil.which(command), *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stderr.strip().splitlines()[-1]


# --- macro scores ------------------------------------------------------------------------


def test_macro_scores_average_over_the_classes_present_in_labels_or_predictions():
    names = ("method", "background", "result")
    # No `result` in the labels and none predicted: its recall and F1 are undefined.
    labels = np.array([0, 0, 1, 1, 1, 1])
    logits = np.eye(3)[[0, 1, 1, 1, 1, 0]] * 5.0
    m = classification_metrics(labels, logits, names)
    f1 = [m["per_class"][c]["f1"] for c in ("method", "background")]
    assert m["macro_classes"] == ["method", "background"]
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert m["macro_recall"] == pytest.approx((0.5 + 0.75) / 2)
    # scikit-learn's rule: a class predicted but absent from the labels still counts.
    logits = np.eye(3)[[0, 2, 1, 1, 1, 1]] * 5.0
    m = classification_metrics(labels, logits, names)
    assert m["macro_classes"] == list(names)
    assert m["macro_precision"] == pytest.approx((1.0 + 1.0 + 0.0) / 3)


def _jsonl(directory: Path, split: str, labels: list[str], seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = []
    for i, label in enumerate(labels):
        words = [*rng.choice(CUES[label], 4), *rng.choice(FILLER, 3)]
        rows.append({"text": " ".join(words) + f" {split}{i}", "label": label})
    (directory / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _dataset(tmp_path: Path, train: list[str], held_out: list[str]) -> list[str]:
    directory = tmp_path / "data"
    directory.mkdir()
    _jsonl(directory, "train", train, 0)
    _jsonl(directory, "dev", held_out, 1)
    _jsonl(directory, "test", held_out, 2)
    return [
        "dataset=jsonl",
        f"dataset.source_dir={directory}",
        f"dataset.label_names=[{','.join(LABELS)}]",
    ]


def test_a_split_without_a_class_is_scored_over_the_classes_present_and_says_so(
    make_cfg, tmp_path, caplog
):
    train = [LABELS[i % 3] for i in range(90)]
    held_out = [LABELS[i % 2] for i in range(40)]  # no `result`
    cfg = make_cfg(*_dataset(tmp_path, train, held_out), "trainer.evaluate_test=true")
    with caplog.at_level(logging.WARNING):
        result = train_and_evaluate(cfg)
    assert "has no example of 'result'" in caplog.text
    final = json.loads((Path(result.run_dir) / FINAL_FILE).read_text())
    assert final["macro_rule"] == MACRO_RULE
    assert final["absent_classes"] == {"validation": ["result"], "test": ["result"]}
    for scores in (final["final"], final["test"]):
        present = scores["macro_classes"]
        assert "result" not in present or scores["per_class"]["result"]["support"] == 0
        f1 = np.mean([scores["per_class"][c]["f1"] for c in present])
        assert scores["macro_f1"] == pytest.approx(f1)


def test_a_training_split_of_one_class_is_refused(make_cfg, tmp_path):
    cfg = make_cfg(*_dataset(tmp_path, ["method"] * 30, ["method", "background"] * 10))
    with pytest.raises(DataError, match=r"dataset.splits.train: .*1 class\(es\) \(method\)"):
        train_and_evaluate(cfg)


def test_the_report_says_how_macro_scores_average_and_which_splits_lack_a_class(make_cfg, tmp_path):
    from hubsweep.reports.document import build_report

    held_out = [LABELS[i % 2] for i in range(40)]
    overrides = _dataset(tmp_path, [LABELS[i % 3] for i in range(90)], held_out)
    cfg = make_cfg(*overrides, "experiment_name=lacking", run="results/lacking/runs/r0")
    train_and_evaluate(cfg)
    text = build_report(tmp_path / "results" / "lacking").read_text()
    assert MACRO_RULE in text
    assert "a split without every class (validation: result)" in text


# --- names are names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "override",
    [
        "experiment_name=../escape1",
        "experiment_name=/tmp/abs",
        "experiment_name=..",
        "sweep.study_name=../../x",
        "sweep.study_name=/abs/study",
        "sweep.study_name=a/b",
    ],
)
def test_a_name_with_a_path_in_it_is_refused_before_anything_is_written(
    fixture_overrides, tmp_path, override
):
    results = tmp_path / "nest" / "results"
    command = "hubsweep-sweep" if override.startswith("sweep.") else "hubsweep-train"
    extra = ["sweep=lr", "sweep.n_trials=1"] if command == "hubsweep-sweep" else []
    proc = _cli(command, *fixture_overrides, *SMALL_RUN, *extra, f"results_dir={results}", override)
    key = override.split("=", 1)[0]
    line = _one_line_error(proc)
    assert line.startswith(f"{command}: error: {key}: ") and "is not a name" in line
    assert [p for p in tmp_path.rglob("*")] == []  # nothing beside, under or above it


def test_a_name_is_checked_on_the_python_path_too(make_cfg):
    with pytest.raises(ConfigError, match="experiment_name: '../x' is not a name"):
        train_and_evaluate(make_cfg("experiment_name=../x"))


# --- a BERT pair's position limit --------------------------------------------------------


def test_a_seq_length_above_the_encoders_position_limit_is_one_error_naming_both(
    make_cfg, tmp_path
):
    from hubsweep.embeddings.transformer.convert import convert_checkpoint

    # Converted at the checkpoint's own limit, run with twice that.
    checkpoint = write_tiny_checkpoint(tmp_path / "checkpoint")
    pair = convert_checkpoint(checkpoint, tmp_path / "pair", seq_length=POSITIONS)
    cfg = make_cfg(
        f"embedding.preprocess_handle={pair / 'preprocess'}",
        f"embedding.handle={pair / 'encoder'}",
        f"embedding.dim={HIDDEN}",
        f"embedding.seq_length={2 * POSITIONS}",
    )
    with pytest.raises(EmbeddingError) as error:
        train_and_evaluate(cfg)
    message = str(error.value)
    assert f"embedding.seq_length={2 * POSITIONS}" in message
    assert f"max_position_embeddings={POSITIONS}" in message
