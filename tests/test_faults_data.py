"""Fault suite, data: labels that could be mis-mapped, and text that is not text.

Each test feeds a real file through the real loader (or the real CLI) and asserts either
the correct labels or one error naming file:line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hubsweep.data.datasets import load_dataset
from hubsweep.errors import DataError


def _cfg(directory: Path, source: str, names: list, label_index=None, splits=None):
    ext = "jsonl" if source == "jsonl" else "csv"
    return OmegaConf.create(
        {
            "name": "local",
            "source": source,
            "tfds_name": None,
            "source_dir": str(directory),
            "data_dir": None,
            "splits": splits or {"train": f"train.{ext}"},
            "text_key": "text",
            "label_key": "label",
            "label_names": [str(n) for n in names],  # as Hydra's list[str] schema stores them
            "label_index": label_index,
        }
    )


def _jsonl(path: Path, labels: list) -> Path:
    path.write_text(
        "".join(json.dumps({"text": f"t{i}", "label": v}) + "\n" for i, v in enumerate(labels))
    )
    return path.parent


def _csv(path: Path, labels: list) -> Path:
    path.write_text("text,label\n" + "".join(f"t{i},{v}\n" for i, v in enumerate(labels)))
    return path.parent


@pytest.mark.parametrize("source", ["jsonl", "csv"])
def test_integer_labels_that_are_class_names_are_not_shifted(tmp_path, source):
    write = _jsonl if source == "jsonl" else _csv
    directory = write(tmp_path / f"train.{source}", [1, 2, 3, 4, 5, 5, 1])
    split = load_dataset(_cfg(directory, source, [1, 2, 3, 4, 5])).splits["train"]
    assert split.labels.tolist() == [0, 1, 2, 3, 4, 4, 0]


@pytest.mark.parametrize("source", ["jsonl", "csv"])
def test_integer_labels_index_word_class_names(tmp_path, source):
    write = _jsonl if source == "jsonl" else _csv
    directory = write(tmp_path / f"train.{source}", [0, 1, 1, 0])
    split = load_dataset(_cfg(directory, source, ["neg", "pos"])).splits["train"]
    assert split.labels.tolist() == [0, 1, 1, 0]


def test_an_integer_that_names_no_numeric_class_is_refused(tmp_path):
    directory = _jsonl(tmp_path / "train.jsonl", [1, 2, 0])
    with pytest.raises(DataError, match=r"train.jsonl:3: unknown label 0 \(class names are"):
        load_dataset(_cfg(directory, "jsonl", [1, 2, 3]))


def test_label_index_true_reads_integers_as_indices(tmp_path):
    directory = _jsonl(tmp_path / "train.jsonl", [0, 1, 2])
    split = load_dataset(_cfg(directory, "jsonl", [1, 2, 3], label_index=True)).splits["train"]
    assert split.labels.tolist() == [0, 1, 2]


def test_label_index_false_accepts_names_only(tmp_path):
    directory = _jsonl(tmp_path / "train.jsonl", ["neg", 1])
    with pytest.raises(DataError, match=r"train.jsonl:2: unknown label 1"):
        load_dataset(_cfg(directory, "jsonl", ["neg", "pos"], label_index=False))


def test_an_index_outside_the_classes_is_refused(tmp_path):
    directory = _csv(tmp_path / "train.csv", [0, 7])
    with pytest.raises(DataError, match=r"train.csv:3: label index 7 is outside 0..1"):
        load_dataset(_cfg(directory, "csv", ["neg", "pos"]))


@pytest.mark.parametrize("source", ["jsonl", "csv"])
def test_bytes_that_are_not_utf8_name_file_and_line(tmp_path, source):
    good = b'{"text": "fine", "label": "neg"}\n' if source == "jsonl" else b"fine,neg\n"
    bad = b'{"text": "caf\xe9", "label": "pos"}\n' if source == "jsonl" else b"caf\xe9,pos\n"
    header = b"" if source == "jsonl" else b"text,label\n"
    (tmp_path / f"train.{source}").write_bytes(header + good + good + bad)
    line = 3 if source == "jsonl" else 4
    with pytest.raises(DataError, match=rf"train.{source}:{line}: not UTF-8 text \(byte 0xe9"):
        load_dataset(_cfg(tmp_path, source, ["neg", "pos"]))


def test_a_lone_surrogate_names_file_and_line(tmp_path):
    (tmp_path / "train.jsonl").write_text(
        '{"text": "fine", "label": "neg"}\n{"text": "bad \\ud800 text", "label": "pos"}\n'
    )
    with pytest.raises(DataError, match=r"train.jsonl:2: .* lone surrogate"):
        load_dataset(_cfg(tmp_path, "jsonl", ["neg", "pos"]))


def test_bad_bytes_in_the_scicite_release_are_one_cli_error(scicite_dir, tmp_path):
    release = tmp_path / "scicite"
    shutil.copytree(scicite_dir, release)
    with (release / "dev.jsonl").open("ab") as f:
        f.write(b'{"string": "\xff\xfe", "label": "method"}\n')
    lines = len((release / "dev.jsonl").read_bytes().splitlines())
    proc = subprocess.run(
        [
            shutil.which("hubsweep-train"),
            f"dataset.source_dir={release}",
            f"dataset.data_dir={tmp_path / 'tfds'}",
            f"results_dir={tmp_path / 'results'}",
            "embedding.handle=/nonexistent",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert f"dev.jsonl:{lines}: not UTF-8 text" in last, proc.stderr[-2000:]
