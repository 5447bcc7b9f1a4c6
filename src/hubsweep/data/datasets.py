"""Datasets → in-memory text/label arrays, from TensorFlow Datasets or local files.

Text-classification sets that embedding studies use fit in memory many times over, and
holding them as arrays makes shuffling, evaluation and predictions.csv simple and exact.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from hubsweep.data.network import require_reachable
from hubsweep.errors import DataError, HubsweepError

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

    def absent_classes(self) -> dict[str, list[str]]:
        """Per split, the classes it holds no example of (only splits that lack some)."""
        absent = {}
        for role, split in self.splits.items():
            counts = np.bincount(split.labels, minlength=self.num_classes)
            missing = [name for name, n in zip(self.label_names, counts, strict=True) if n == 0]
            if missing:
                absent[role] = missing
        return absent


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
                for _ in _read_jsonl(path):
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

        root = Path(cfg.data_dir or constants.get_default_data_dir())
        kwargs["data_dir"] = str(root / OFFLINE_SUBDIR / source_fingerprint(cfg))
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
    prefix_keys, separator = _prefixes(cfg)
    named = {"text_key": [cfg.text_key], "prefix_keys": prefix_keys, "label_key": [cfg.label_key]}
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
                join_fields([v.decode("utf-8") for v in values], separator)
                for values in zip(*columns, strict=True)
            ],
            dtype=object,
        )
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
        to_id = LabelMapper(label_names, cfg.get("label_index"))
        splits[role] = _to_split(rows, path, cfg, to_id)
    return TextDataset(cfg.name, label_names, splits)


Row = tuple[int, dict[str, Any]]


def read_text(path: Path) -> str:
    """The file as UTF-8 text; bytes that are not UTF-8 are one error naming file:line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at column {column}); "
            "re-encode the file as UTF-8"
        ) from None


def check_unicode(path: Path, lineno: int, value: Any) -> None:
    """A lone surrogate (e.g. JSON "\\ud800") is not text: TensorFlow fails on it later."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(
                f"{path}:{lineno}: {value!r:.60} holds a lone surrogate, not valid Unicode text"
            ) from None
    elif isinstance(value, dict):
        for v in value.values():
            check_unicode(path, lineno, v)
    elif isinstance(value, list):
        for v in value:
            check_unicode(path, lineno, v)


def _read_jsonl(path: Path) -> Iterator[Row]:
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
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
        check_unicode(path, lineno, record)
        yield lineno, record


def _read_csv(path: Path) -> Iterator[Row]:
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    try:
        for record in reader:
            if None in record:
                raise DataError(f"{path}:{reader.line_num}: more fields than the header")
            yield reader.line_num, record
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.strip().lstrip("+-").isdigit()


class LabelMapper:
    """One rule that cannot mis-map: a label is matched by name first; an integer that names
    no class is an index into label_names only with dataset.label_index=true (then every
    integer is an index), or with the default null when no class name is itself an
    integer (an integer that is not one of integer class names is refused: ambiguous)."""

    def __init__(self, label_names: tuple[str, ...], label_index: bool | None) -> None:
        self.names = label_names
        self.ids = {str(name): i for i, name in enumerate(label_names)}
        self.numeric_names = any(_is_integer(n) for n in label_names)
        self.label_index = label_index

    def _resolve(self, label: Any) -> int | None:
        if self.label_index is True and _is_integer(label):
            return int(label)
        if not isinstance(label, bool) and str(label).strip() in self.ids:
            return self.ids[str(label).strip()]
        if self.label_index is None and not self.numeric_names and _is_integer(label):
            return int(label)
        return None

    def __call__(self, path: Path, lineno: int, label: Any) -> int:
        label_id = self._resolve(label)
        if label_id is None:
            rule = " (class names are numbers: labels are matched as names)"
            raise DataError(
                f"{path}:{lineno}: unknown label {label!r}{rule if self.numeric_names else ''}; "
                f"dataset.label_names: {', '.join(self.names)}"
            )
        if not 0 <= label_id < len(self.names):
            raise DataError(
                f"{path}:{lineno}: label index {label_id} is outside 0..{len(self.names) - 1} "
                f"(dataset.label_names: {', '.join(self.names)})"
            )
        return label_id


def _prefixes(cfg: DictConfig) -> tuple[list[str], str]:
    """dataset.prefix_keys and the separator after each (configs built by hand may lack both)."""
    keys = list(cfg.get("prefix_keys") or [])
    return keys, (cfg.text_separator if keys else "")


def join_fields(values: Sequence[Any], separator: str) -> str:
    """The text (the last value) after each prefix field that holds something, each followed
    by `separator`; a prefix that is missing, empty or NaN (None, float NaN, or TFDS's "nan")
    is left out, so a record without a section name reads as its sentence alone."""
    *prefixes, text = values
    kept = [
        p.strip()
        for p in prefixes
        if isinstance(p, str) and p.strip() and p.strip().lower() != "nan"
    ]
    return "".join(p + separator for p in kept) + text


def _absent_or_text(value: Any) -> bool:
    return value is None or isinstance(value, str) or (isinstance(value, float) and value != value)


def _to_split(rows: Iterator[Row], path: Path, cfg: DictConfig, to_id: LabelMapper) -> TextSplit:
    text_key, label_key = cfg.text_key, cfg.label_key
    prefix_keys, separator = _prefixes(cfg)
    texts, labels, seen = [], [], set()
    for lineno, record in rows:
        for key in (text_key, label_key):
            if record.get(key) is None:
                raise DataError(f"{path}:{lineno}: missing {key!r}")
        text, label = record[text_key], record[label_key]
        if not isinstance(text, str):
            raise DataError(f"{path}:{lineno}: {text_key!r} is not a string")
        prefixes = [record.get(key) for key in prefix_keys]
        for key, value in zip(prefix_keys, prefixes, strict=True):
            if not _absent_or_text(value):
                raise DataError(
                    f"{path}:{lineno}: {key!r} (dataset.prefix_keys) is not a string: {value!r:.60}"
                )
        seen.update(key for key in prefix_keys if key in record)
        texts.append(join_fields([*prefixes, text], separator))
        labels.append(to_id(path, lineno, label))
    # A misspelt key would otherwise read every text without its prefix, without a word.
    for key in prefix_keys:
        if texts and key not in seen:
            raise DataError(f"{path}: no record has {key!r} (dataset.prefix_keys)")
    if not texts:
        raise DataError(f"{path}: no examples")
    return TextSplit(np.array(texts, dtype=object), np.array(labels, dtype=np.int32))
