"""Records of local data files, and how a record becomes a text and a label.

JSON lines and CSV read as (line number, record) with every failure one error naming
file:line; `LabelMapper`, the one rule from a file's label to a class id; `join_fields`,
`dataset.prefix_keys` read into each text; `scaffold_value`, how a `dataset.scaffold_keys`
field's value is compared. `datasets` builds splits from these, and the
offline TFDS builder checks the SciCite release files with the same reader.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from hubsweep.errors import DataError

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


def read_jsonl(path: Path) -> Iterator[Row]:
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


def read_csv(path: Path) -> Iterator[Row]:
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


def prefixes(cfg: DictConfig) -> tuple[list[str], str]:
    """dataset.prefix_keys and the separator after each ("" without prefixes; configs built
    by hand without the prefix settings read as having none)."""
    keys = list(cfg.get("prefix_keys") or [])
    return keys, (cfg.text_separator if keys else "")


def absent_or_text(value: Any) -> bool:
    """A prefix field's value as JSON may hold it: missing (None, NaN) or a string."""
    return value is None or isinstance(value, str) or (isinstance(value, float) and value != value)


def join_fields(values: Sequence[Any], separator: str, missing: Sequence[str] = ()) -> str:
    """The text (the last value) after each prefix field that holds something, each followed
    by `separator`. A prefix that is not a string (None, NaN), is blank, or is one of
    `missing` (the TFDS path's "nan": SciCite's builder writes str(NaN)) is left out, so a
    record without a section name reads as its sentence alone."""
    *heads, text = values
    kept = [h.strip() for h in heads if isinstance(h, str) and h.strip()]
    return "".join(h + separator for h in kept if h not in missing) + text


def scaffold_value(value: Any, missing: Sequence[str] = ()) -> str:
    """A scaffold field's value as its class is named: case-folded, its words' letters only,
    spaces collapsed ("1. Introduction" and "INTRODUCTION" are both "introduction", true is
    "true", "Méthodes" "méthodes"); a value without letters keeps its digits ("2", "2 5" for
    2.5); "" for a missing one (None, NaN, blank, one of `missing`, a list or an object)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if hasattr(value, "item"):  # a NumPy scalar (TFDS)
        value = value.item()
    if (
        value is None
        or isinstance(value, dict | list)
        or (isinstance(value, float) and value != value)
    ):
        return ""
    text = str(value).strip()
    if text in missing:
        return ""
    words = re.sub(r"[\W\d_]+", " ", text.casefold()).split()
    return " ".join(words or re.sub(r"[\W_]+", " ", text).split())
