"""Datasets → in-memory text/label arrays, from TensorFlow Datasets or local files.

Text-classification sets that embedding studies use fit in memory many times over, and
holding them as arrays makes shuffling, evaluation and predictions.csv simple and exact.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from hubsweep.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextSplit:
    texts: np.ndarray  # object array of str
    labels: np.ndarray  # int32 label ids

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class TextDataset:
    name: str
    label_names: tuple[str, ...]
    splits: dict[str, TextSplit]  # role (train/validation/test) -> split

    @property
    def num_classes(self) -> int:
        return len(self.label_names)


def load_dataset(cfg: DictConfig, roles: Sequence[str] | None = None) -> TextDataset:
    """Load the splits with the given roles (default: every role in `cfg.splits`)."""
    wanted = {role: cfg.splits[role] for role in (roles or cfg.splits)}
    if cfg.source == "tfds":
        return _load_tfds(cfg, wanted)
    return _load_local(cfg, wanted)


# --- TensorFlow Datasets -------------------------------------------------------------


def _offline_builders() -> dict[str, type]:
    """Builders that can be prepared from a directory of release files instead of a download."""
    from tensorflow_datasets.datasets.scicite import scicite_dataset_builder

    class OfflineSciciteBuilder(scicite_dataset_builder.Builder, skip_registration=True):
        """TFDS's own scicite builder, reading the release files from a local directory.

        Only `_split_generators` changes, so the prepared dataset (dedup by unique_id,
        features, split names) is exactly what the download path produces.
        """

        name = "scicite"

        def __init__(self, *, source_dir: str, **kwargs: Any) -> None:
            self._source_dir = Path(source_dir)
            super().__init__(**kwargs)

        def _split_generators(self, dl_manager):  # noqa: ARG002 - no download on purpose
            import tensorflow_datasets as tfds

            files = {
                tfds.Split.TRAIN: "train.jsonl",
                tfds.Split.VALIDATION: "dev.jsonl",
                tfds.Split.TEST: "test.jsonl",
            }
            for filename in files.values():
                if not (self._source_dir / filename).is_file():
                    raise DataError(
                        f"dataset.source_dir: {self._source_dir / filename} is missing; "
                        "expected the SciCite release files train.jsonl, dev.jsonl, test.jsonl"
                    )
            return [
                tfds.core.SplitGenerator(
                    name=split, gen_kwargs={"path": str(self._source_dir / filename)}
                )
                for split, filename in files.items()
            ]

    return {"scicite": OfflineSciciteBuilder}


def tfds_builder(cfg: DictConfig):
    """The TFDS builder for `cfg`, prepared (downloaded or built from source_dir) if needed."""
    import tensorflow_datasets as tfds

    kwargs: dict[str, Any] = {}
    if cfg.data_dir:
        kwargs["data_dir"] = str(cfg.data_dir)
    if cfg.source_dir:
        offline = _offline_builders()
        if cfg.tfds_name not in offline:
            raise DataError(
                f"dataset.source_dir: offline preparation is supported for {sorted(offline)}, "
                f"not {cfg.tfds_name!r}; use dataset.source=jsonl/csv for local files"
            )
        builder = offline[cfg.tfds_name](source_dir=str(cfg.source_dir), **kwargs)
    else:
        try:
            builder = tfds.builder(cfg.tfds_name, **kwargs)
        except tfds.core.registered.DatasetNotFoundError as e:
            raise DataError(f"dataset.tfds_name: {e}") from None
    if not builder.is_prepared():
        log.info("preparing TFDS dataset %s in %s", cfg.tfds_name, builder.data_dir)
        try:
            builder.download_and_prepare()
        except DataError:
            raise
        except Exception as e:  # network, checksum or parse failure inside TFDS
            hint = "" if cfg.source_dir else "; offline, point dataset.source_dir at the files"
            raise DataError(f"could not prepare TFDS dataset {cfg.tfds_name!r}: {e}{hint}") from e
    return builder


def _load_tfds(cfg: DictConfig, wanted: dict[str, str]) -> TextDataset:
    import tensorflow_datasets as tfds

    builder = tfds_builder(cfg)
    features = builder.info.features
    for key in (cfg.text_key, cfg.label_key):
        if key not in features:
            raise DataError(
                f"dataset.{'text_key' if key == cfg.text_key else 'label_key'}: {key!r} is not a "
                f"feature of {cfg.tfds_name}; features: {', '.join(features.keys())}"
            )
    label_names = _tfds_label_names(cfg, features[cfg.label_key])
    splits = {}
    for role, split_name in wanted.items():
        if split_name not in builder.info.splits:
            raise DataError(
                f"dataset.splits.{role}: {cfg.tfds_name} has no split {split_name!r}; "
                f"splits: {', '.join(builder.info.splits.keys())}"
            )
        full = tfds.as_numpy(builder.as_dataset(split=split_name, batch_size=-1))
        texts = np.array([t.decode("utf-8") for t in full[cfg.text_key]], dtype=object)
        splits[role] = TextSplit(texts, full[cfg.label_key].astype(np.int32))
    return TextDataset(cfg.name, label_names, splits)


def _tfds_label_names(cfg: DictConfig, feature) -> tuple[str, ...]:
    names = tuple(getattr(feature, "names", None) or ())
    configured = tuple(cfg.label_names)
    if not names and not configured:
        raise DataError(
            f"dataset.label_names: {cfg.tfds_name}'s {cfg.label_key!r} is not a ClassLabel; "
            "list the class names in label-id order"
        )
    if names and configured and names != configured:
        raise DataError(
            f"dataset.label_names: {list(configured)} does not match {cfg.tfds_name}'s "
            f"label order {list(names)}"
        )
    return names or configured


# --- local JSON-lines / CSV files ------------------------------------------------------


def _load_local(cfg: DictConfig, wanted: dict[str, str]) -> TextDataset:
    label_names = tuple(cfg.label_names)
    base = Path(cfg.source_dir) if cfg.source_dir else Path()
    splits = {}
    for role, filename in wanted.items():
        path = base / filename
        if not path.is_file():
            raise DataError(f"dataset.splits.{role}: file {path} does not exist")
        rows = _read_jsonl(path) if cfg.source == "jsonl" else _read_csv(path)
        splits[role] = _to_split(rows, path, cfg.text_key, cfg.label_key, label_names)
    return TextDataset(cfg.name, label_names, splits)


Row = tuple[int, dict[str, Any]]


def _read_jsonl(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path}:{lineno}: malformed JSON ({e.msg}, column {e.colno})"
                ) from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object per line")
            yield lineno, record


def _read_csv(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        try:
            for record in reader:
                if None in record:
                    raise DataError(f"{path}:{reader.line_num}: more fields than the header")
                yield reader.line_num, record
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None


def _to_split(
    rows: Iterator[Row], path: Path, text_key: str, label_key: str, label_names: tuple[str, ...]
) -> TextSplit:
    label_ids = {name: i for i, name in enumerate(label_names)}
    texts, labels = [], []
    for lineno, record in rows:
        for key in (text_key, label_key):
            if record.get(key) is None:
                raise DataError(f"{path}:{lineno}: missing {key!r}")
        text, label = record[text_key], record[label_key]
        if not isinstance(text, str):
            raise DataError(f"{path}:{lineno}: {text_key!r} is not a string")
        if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(label_names):
            label_id = label
        elif str(label) in label_ids:
            label_id = label_ids[str(label)]
        else:
            raise DataError(
                f"{path}:{lineno}: unknown label {label!r}; dataset.label_names: "
                f"{', '.join(label_names)}"
            )
        texts.append(text)
        labels.append(label_id)
    if not texts:
        raise DataError(f"{path}: no examples")
    return TextSplit(np.array(texts, dtype=object), np.array(labels, dtype=np.int32))
