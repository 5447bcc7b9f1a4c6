"""Datasets → in-memory text/label arrays, from TensorFlow Datasets or local files.

Text-classification sets that embedding studies use fit in memory many times over, and
holding them as arrays makes shuffling, evaluation and predictions.csv simple and exact.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from hubsweep.data.network import require_reachable
from hubsweep.data.records import (
    LabelMapper,
    Row,
    absent_or_text,
    join_fields,
    prefixes,
    read_csv,
    read_jsonl,
    scaffold_value,
)
from hubsweep.errors import DataError, HubsweepError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextSplit:
    texts: np.ndarray  # object array of str
    labels: np.ndarray  # int32 label ids
    # The training split's dataset.scaffold_keys values, [n, keys] str (scaffold_value; ""
    # missing); None in the other splits (evaluation never reads them) and without scaffolds.
    scaffolds: np.ndarray | None = None

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

    def absent_classes(self) -> dict[str, list[str]]:
        """Per split, the classes it holds no example of (only splits that lack some)."""
        absent = {}
        for role, split in self.splits.items():
            counts = np.bincount(split.labels, minlength=self.num_classes)
            missing = [name for name, n in zip(self.label_names, counts, strict=True) if n == 0]
            if missing:
                absent[role] = missing
        return absent


def scaffold_keys(cfg: DictConfig, role: str = "train") -> list[str]:
    """dataset.scaffold_keys read for the split with `role`: the training split's only
    (none for configs built by hand without the setting)."""
    return list(cfg.get("scaffold_keys") or []) if role == "train" else []


def _scaffold_array(columns: list[list[str]], n: int) -> np.ndarray | None:
    if not columns:
        return None
    return np.array(columns, dtype=object).T.reshape(n, len(columns))


def load_dataset(cfg: DictConfig, roles: Sequence[str] | None = None) -> TextDataset:
    """Load the splits with the given roles (default: every role in `cfg.splits`)."""
    wanted = {role: cfg.splits[role] for role in (roles or cfg.splits)}
    if cfg.source == "tfds":
        return _load_tfds(cfg, wanted)
    return _load_local(cfg, wanted)


def hash_files(paths: Iterable[Path], root: Path) -> str:
    """sha256 over each file's name (relative to root) and content, in the given order."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def source_fingerprint(d: DictConfig) -> str:
    """The content of local data files; a TFDS download is named by its builder."""
    if not d.source_dir:
        return f"tfds:{d.tfds_name}"
    base = Path(d.source_dir)
    if d.source == "tfds":
        files = sorted(p for p in base.iterdir() if p.is_file())
    else:
        files = [base / name for name in d.splits.values() if (base / name).is_file()]
    return hash_files(files, base)[:16]


# --- TensorFlow Datasets -------------------------------------------------------------

# Under the TFDS data_dir: datasets prepared offline, one directory per source's content.
OFFLINE_SUBDIR = "hubsweep-offline"
# A Text feature's values that stand for a missing one (SciCite's builder writes str(NaN)).
TFDS_MISSING = ("nan",)


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
                path = self._source_dir / filename
                if not path.is_file():
                    raise DataError(
                        f"dataset.source_dir: {path} is missing; "
                        "expected the SciCite release files train.jsonl, dev.jsonl, test.jsonl"
                    )
                # TFDS's own reader fails deep inside preparation, with no location.
                for _ in read_jsonl(path):
                    pass
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
        # TFDS names a prepared dataset by builder and version only: prepared from one
        # directory of release files, it would be served for any other (edited files, a
        # variant) as if it were theirs. Each source's content gets a data_dir of its own.
        from tensorflow_datasets.core import constants

        root = str(cfg.data_dir or constants.get_default_data_dir())  # gs:// stays a URL
        kwargs["data_dir"] = os.path.join(root, OFFLINE_SUBDIR, source_fingerprint(cfg))
        builder = offline[cfg.tfds_name](source_dir=str(cfg.source_dir), **kwargs)
    else:
        try:
            builder = tfds.builder(cfg.tfds_name, **kwargs)
        except tfds.core.registered.DatasetNotFoundError as e:
            raise DataError(f"dataset.tfds_name: {e}") from None
    if not builder.is_prepared():
        if not cfg.source_dir:
            for url in builder.url_infos or {}:
                require_reachable(
                    url,
                    "dataset",
                    f"offline, point dataset.source_dir at the {cfg.tfds_name} release files",
                )
        log.info("preparing TFDS dataset %s in %s", cfg.tfds_name, builder.data_dir)
        try:
            builder.download_and_prepare()
        except HubsweepError:
            raise
        except Exception as e:  # network, checksum or parse failure inside TFDS
            hint = "" if cfg.source_dir else "; offline, point dataset.source_dir at the files"
            raise DataError(f"could not prepare TFDS dataset {cfg.tfds_name!r}: {e}{hint}") from e
    return builder


def _load_tfds(cfg: DictConfig, wanted: dict[str, str]) -> TextDataset:
    import tensorflow_datasets as tfds

    builder = tfds_builder(cfg)
    features = builder.info.features
    prefix_keys, separator = prefixes(cfg)
    named = {
        "text_key": [cfg.text_key],
        "prefix_keys": prefix_keys,
        "scaffold_keys": scaffold_keys(cfg),
        "label_key": [cfg.label_key],
    }
    for setting, keys in named.items():
        for key in keys:
            if key not in features:
                raise DataError(
                    f"dataset.{setting}: {key!r} is not a feature of {cfg.tfds_name}; "
                    f"features: {', '.join(features.keys())}"
                )
    for key in prefix_keys:
        if not isinstance(features[key], tfds.features.Text):
            raise DataError(
                f"dataset.prefix_keys: {key!r} is not a text feature of {cfg.tfds_name} "
                f"({type(features[key]).__name__})"
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
        columns = [full[key] for key in (*prefix_keys, cfg.text_key)]
        texts = np.array(
            [
                join_fields([v.decode("utf-8") for v in values], separator, TFDS_MISSING)
                for values in zip(*columns, strict=True)
            ],
            dtype=object,
        )
        scaffolds = [
            [scaffold_value(v, TFDS_MISSING) for v in full[key]] for key in scaffold_keys(cfg, role)
        ]
        labels = full[cfg.label_key].astype(np.int32)
        splits[role] = TextSplit(texts, labels, _scaffold_array(scaffolds, len(labels)))
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
        rows = read_jsonl(path) if cfg.source == "jsonl" else read_csv(path)
        to_id = LabelMapper(label_names, cfg.get("label_index"))
        splits[role] = _to_split(rows, path, cfg, to_id, scaffold_keys(cfg, role))
    return TextDataset(cfg.name, label_names, splits)


def _to_split(
    rows: Iterator[Row], path: Path, cfg: DictConfig, to_id: LabelMapper, aux_keys: list[str]
) -> TextSplit:
    """`aux_keys`: the scaffold fields read for this split (the training split's)."""
    text_key, label_key = cfg.text_key, cfg.label_key
    prefix_keys, separator = prefixes(cfg)
    texts, labels, fields = [], [], set()
    scaffolds: list[list[str]] = [[] for _ in aux_keys]
    for lineno, record in rows:
        for key in (text_key, label_key):
            if record.get(key) is None:
                raise DataError(f"{path}:{lineno}: missing {key!r}")
        text, label = record[text_key], record[label_key]
        if not isinstance(text, str):
            raise DataError(f"{path}:{lineno}: {text_key!r} is not a string")
        heads = [record.get(key) for key in prefix_keys]
        for key, value in zip(prefix_keys, heads, strict=True):
            if not absent_or_text(value):
                raise DataError(
                    f"{path}:{lineno}: {key!r} (dataset.prefix_keys) is not a string: {value!r:.60}"
                )
        fields.update(record)
        texts.append(join_fields([*heads, text], separator))
        for column, key in zip(scaffolds, aux_keys, strict=True):
            column.append(scaffold_value(record.get(key)))
        labels.append(to_id(path, lineno, label))
    if not texts:
        raise DataError(f"{path}: no examples")
    # A misspelt key would otherwise read every text without its prefix, without a word.
    for setting, keys in (("prefix_keys", prefix_keys), ("scaffold_keys", aux_keys)):
        for key in keys:
            if key not in fields:
                raise DataError(
                    f"{path}: no record has {key!r} (dataset.{setting}); fields: "
                    f"{', '.join(sorted(fields))}"
                )
    return TextSplit(
        np.array(texts, dtype=object),
        np.array(labels, dtype=np.int32),
        _scaffold_array(scaffolds, len(labels)),
    )
