"""Stream documents from a corpus: the CORD-19 release (a directory with metadata.csv and
document_parses/, or its .tar.gz; see cord19.py), CORD-19 JSON lines (gzip or not), or
plain text files."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from hubsweep.errors import DataError
from hubsweep.swivel.cord19 import METADATA, is_release_dir, is_tarball, release_documents

CORD19_FIELDS = ("title", "authors", "abstract", "body_text", "ref_titles")


def corpus_files(path: str | Path) -> list[Path]:
    """The files that make up a corpus. A CORD-19 release directory is its metadata.csv
    (which names the parses; its size and time stand for the release's)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if is_release_dir(path):
        return [path / METADATA]
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and p.name.endswith((".jsonl", ".jsonl.gz", ".txt"))
    )
    if not files:
        raise DataError(f"corpus: no .jsonl, .jsonl.gz or .txt files under {path}")
    return files


def _paper_text(record: dict, fields: Sequence[str]) -> str:
    parts = []
    for key in fields:
        value = record.get(key)
        if isinstance(value, list):
            parts.extend(str(v) for v in value if v)
        elif value:
            parts.append(str(value))
    return "\n".join(parts)


def documents(path: Path, fields: Sequence[str] = CORD19_FIELDS) -> Iterator[str]:
    """One string per paper (release, JSON lines) or per line (plain text)."""
    if is_tarball(path):
        yield from release_documents(path, fields)
        return
    if path.name == METADATA:
        yield from release_documents(path.parent, fields)
        return
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if path.name.endswith(".txt"):
                if line.strip():
                    yield line
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg})") from None
            yield _paper_text(record, fields)
