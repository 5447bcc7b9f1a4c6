"""The CORD-19 release as people download it, as a corpus: `metadata.csv` plus
`document_parses/{pdf_json,pmc_json}/*.json`, as a directory or the published `.tar.gz`.

One document per `cord_uid` (the release repeats some across rows): title, authors and
abstract from the metadata, then the body paragraphs and the reference titles of one
parse, the PMC parse where the paper has both (the release notes recommend it: it is
cleaner than the PDF parse), the first listed PDF parse otherwise; a paper without a
parse contributes its title, authors and abstract. Streamed: the full release is tens of
GB. A tarball is read in two passes (its member order is not fixed): the first copies
`metadata.csv` out, the second streams the parses, also from a `document_parses.tar.gz`
nested inside, as the published release has it.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from hubsweep.errors import DataError

METADATA = "metadata.csv"
PARSES = "document_parses/"
TARBALL_SUFFIXES = (".tar.gz", ".tgz")
# Abstracts and author lists exceed csv's default field limit of 128 KiB in a few rows.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def is_tarball(path: Path) -> bool:
    return path.name.endswith(TARBALL_SUFFIXES)


def is_release_dir(path: Path) -> bool:
    return path.is_dir() and (path / METADATA).is_file()


@dataclass
class _Paper:
    offset: int  # where its first metadata row starts, to read it again
    parse: str | None  # the chosen parse, relative to the release root
    pmc: bool  # the chosen parse is a PMC one


def _split_files(value: str | None) -> list[str]:
    return [p.strip() for p in (value or "").split(";") if p.strip()]


class _Metadata:
    """metadata.csv, read row by row with each row's offset, and re-read at an offset."""

    def __init__(self, path: Path) -> None:
        self.f = path.open(encoding="utf-8", newline="")
        self.header = next(csv.reader([self.f.readline()]), [])
        missing = {"cord_uid", "title", "abstract"} - set(self.header)
        if missing:
            raise DataError(f"{path}:1: not a CORD-19 metadata.csv (no {sorted(missing)} column)")

    def _row(self) -> dict | None:
        line = self.f.readline()
        if not line:
            return None
        # Quoted fields may hold newlines (quotes inside are doubled): read on until the
        # quotes balance.
        while line.count('"') % 2:
            more = self.f.readline()
            if not more:
                break
            line += more
        return dict(zip(self.header, next(csv.reader([line]), []), strict=False))

    def rows(self) -> Iterator[tuple[int, dict]]:
        while True:
            offset = self.f.tell()
            row = self._row()
            if row is None:
                return
            yield offset, row

    def row_at(self, offset: int) -> dict:
        self.f.seek(offset)
        return self._row() or {}

    def __enter__(self) -> _Metadata:
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


def _papers(metadata: Path) -> dict[str, _Paper]:
    """cord_uid -> its first row and chosen parse, over all its rows."""
    papers: dict[str, _Paper] = {}
    with _Metadata(metadata) as table:
        for offset, row in table.rows():
            uid = row.get("cord_uid", "").strip()
            if not uid:
                continue
            pmc = _split_files(row.get("pmc_json_files"))
            pdf = _split_files(row.get("pdf_json_files"))
            paper = papers.setdefault(uid, _Paper(offset, None, False))
            if pmc and not paper.pmc:
                paper.parse, paper.pmc = pmc[0], True
            elif pdf and paper.parse is None:
                paper.parse = pdf[0]
    return papers


def _text(row: dict, parse: dict | None, fields: Sequence[str]) -> str:
    parts = []
    for field in fields:
        if field in ("title", "authors", "abstract"):
            value = (row.get(field) or "").strip()
            if not value and field == "abstract" and parse:  # the PDF parse has one
                value = "\n".join(p.get("text", "") for p in parse.get("abstract", []))
            parts.append(value)
        elif field == "body_text" and parse:
            parts.extend(p.get("text", "") for p in parse.get("body_text", []))
        elif field == "ref_titles" and parse:
            parts.extend(b.get("title", "") for b in parse.get("bib_entries", {}).values())
    return "\n".join(p for p in parts if p)


def _load_parse(data: bytes | str, where: str) -> dict:
    try:
        parse = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{where}: malformed JSON ({e})") from None
    if not isinstance(parse, dict):
        raise DataError(f"{where}: not a CORD-19 parse (a JSON object)")
    return parse


def _directory_documents(root: Path, fields: Sequence[str]) -> Iterator[str]:
    metadata = root / METADATA
    papers = _papers(metadata)
    with _Metadata(metadata) as table:
        for paper in papers.values():
            row = table.row_at(paper.offset)
            parse = None
            if paper.parse and (root / paper.parse).is_file():
                path = root / paper.parse
                parse = _load_parse(path.read_bytes(), str(path))
            yield _text(row, parse, fields)


def _parse_members(tar: tarfile.TarFile, where: str) -> Iterator[tuple[str, IO[bytes]]]:
    """(path from `document_parses/` on, file) for each parse, nested tarballs included."""
    for member in tar:
        if not member.isfile():
            continue
        name = member.name
        if is_tarball(Path(name)) and Path(name).name.startswith("document_parses"):
            with tarfile.open(fileobj=tar.extractfile(member), mode="r|gz") as inner:
                yield from _parse_members(inner, f"{where}!{name}")
        elif PARSES in name and name.endswith(".json"):
            yield name[name.index(PARSES) :], tar.extractfile(member)


def _tarball_documents(tarball: Path, fields: Sequence[str]) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="cord19-") as tmp:
        metadata = Path(tmp) / METADATA
        with tarfile.open(tarball, mode="r|gz") as tar:
            for member in tar:
                if member.isfile() and Path(member.name).name == METADATA:
                    with metadata.open("wb") as out:
                        shutil.copyfileobj(tar.extractfile(member), out)
                    break
        if not metadata.is_file():
            raise DataError(f"{tarball}: no {METADATA} in this tarball; not a CORD-19 release")
        papers = _papers(metadata)
        wanted = {p.parse: uid for uid, p in papers.items() if p.parse}
        done: set[str] = set()
        with _Metadata(metadata) as table:
            with tarfile.open(tarball, mode="r|gz") as tar:
                for name, data in _parse_members(tar, str(tarball)):
                    uid = wanted.get(name)
                    if uid is None or uid in done:
                        continue
                    parse = _load_parse(data.read(), f"{tarball}!{name}")
                    done.add(uid)
                    yield _text(table.row_at(papers[uid].offset), parse, fields)
            for uid, paper in papers.items():  # no parse, or its file is not in the tarball
                if uid not in done:
                    yield _text(table.row_at(paper.offset), None, fields)


def release_documents(path: Path, fields: Sequence[str]) -> Iterator[str]:
    """One text per paper of a CORD-19 release directory or tarball."""
    try:
        if is_tarball(path):
            yield from _tarball_documents(path, fields)
        else:
            yield from _directory_documents(path, fields)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"corpus: cannot read the CORD-19 release {path}: {e}") from None
