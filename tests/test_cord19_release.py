"""The CORD-19 release as people download it (metadata.csv + document_parses/, as a
directory or a .tar.gz) as a Swivel corpus. The fixture is release-shaped: papers with
both parses, one PDF parse only, none at all, a cord_uid on two rows, a quoted newline."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from hubsweep.errors import DataError
from hubsweep.swivel.corpus import CORD19_FIELDS, corpus_files, documents

COLUMNS = [
    "cord_uid",
    "sha",
    "source_x",
    "title",
    "doi",
    "pmcid",
    "abstract",
    "authors",
    "pdf_json_files",
    "pmc_json_files",
]


def _parse(paper_id: str, body: list[str], refs: list[str], abstract: str = "") -> dict:
    return {
        "paper_id": paper_id,
        "metadata": {"title": "", "authors": []},
        "abstract": [{"text": abstract}] if abstract else [],
        "body_text": [{"text": t, "section": "Introduction"} for t in body],
        "bib_entries": {f"BIBREF{i}": {"title": r} for i, r in enumerate(refs)},
        "ref_entries": {},
    }


def write_release(root: Path) -> Path:
    """Five rows, four papers."""
    pdf, pmc = root / "document_parses" / "pdf_json", root / "document_parses" / "pmc_json"
    pdf.mkdir(parents=True)
    pmc.mkdir(parents=True)
    parses = {
        "pdf_json/aaa.json": _parse("aaa", ["pdfbody alpha virus"], ["pdfref one"]),
        "pmc_json/PMC1.xml.json": _parse("PMC1", ["pmcbody alpha virus"], ["pmcref one"]),
        "pdf_json/bbb.json": _parse("bbb", ["beta fever body"], ["beta ref"], "parse abstract"),
        "pdf_json/ddd.json": _parse("ddd", ["delta pdf body"], []),
        "pmc_json/PMC4.xml.json": _parse("PMC4", ["delta pmc body"], ["delta pmc ref"]),
    }
    for name, parse in parses.items():
        (root / "document_parses" / name).write_text(json.dumps(parse))
    rows = [
        # both parses: PMC preferred
        [
            "u1",
            "aaa",
            "PMC",
            "Alpha title",
            "",
            "PMC1",
            "Alpha abstract",
            "Smith, A.",
            "document_parses/pdf_json/aaa.json",
            "document_parses/pmc_json/PMC1.xml.json",
        ],
        # PDF parse only, no abstract in the metadata: the parse's abstract is used
        [
            "u2",
            "bbb",
            "Elsevier",
            "Beta title",
            "",
            "",
            "",
            "Jones, B.",
            "document_parses/pdf_json/bbb.json",
            "",
        ],
        # no parse at all; an abstract with a quoted newline
        ["u3", "", "WHO", "Gamma title", "", "", "Gamma abstract\nsecond line", "Lee, C.", "", ""],
        # one paper on two rows: the first has the PDF parse, the second the PMC parse
        [
            "u4",
            "ddd",
            "Medline",
            "Delta title",
            "",
            "",
            "Delta abstract",
            "Kim, D.",
            "document_parses/pdf_json/ddd.json",
            "",
        ],
        [
            "u4",
            "",
            "PMC",
            "Delta title",
            "",
            "PMC4",
            "Delta abstract",
            "Kim, D.",
            "",
            "document_parses/pmc_json/PMC4.xml.json",
        ],
    ]
    with (root / "metadata.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    return root


def tar_release(root: Path, tarball: Path, nested: bool) -> Path:
    """As published: <date>/metadata.csv beside <date>/document_parses.tar.gz (`nested`,
    and after it, so the reader cannot rely on the order), or the tree as it is."""
    with tarfile.open(tarball, "w:gz") as tar:
        if nested:
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w:gz") as parses:
                parses.add(root / "document_parses", arcname="document_parses")
            info = tarfile.TarInfo("2020-06-01/document_parses.tar.gz")
            info.size = inner.tell()
            inner.seek(0)
            tar.addfile(info, inner)
            tar.add(root / "metadata.csv", arcname="2020-06-01/metadata.csv")
        else:
            tar.add(root, arcname="2020-06-01")
    return tarball


EXPECTED = {
    "u1": "Alpha title\nSmith, A.\nAlpha abstract\npmcbody alpha virus\npmcref one",
    "u2": "Beta title\nJones, B.\nparse abstract\nbeta fever body\nbeta ref",
    "u3": "Gamma title\nLee, C.\nGamma abstract\nsecond line",
    "u4": "Delta title\nKim, D.\nDelta abstract\ndelta pmc body\ndelta pmc ref",
}


@pytest.fixture
def release(tmp_path) -> Path:
    return write_release(tmp_path / "release")


def _docs(path: Path) -> list[str]:
    return sorted(d for f in corpus_files(path) for d in documents(f, CORD19_FIELDS))


def test_a_release_directory_gives_one_document_per_paper(release):
    assert _docs(release) == sorted(EXPECTED.values())
    assert corpus_files(release) == [release / "metadata.csv"]


@pytest.mark.parametrize("nested", [False, True])
def test_the_tarball_gives_the_same_documents(release, tmp_path, nested):
    tarball = tar_release(release, tmp_path / "cord-19_2020-06-01.tar.gz", nested)
    assert _docs(tarball) == sorted(EXPECTED.values())


def test_fields_choose_what_is_read(release):
    docs = sorted(documents(release / "metadata.csv", ("title", "ref_titles")))
    assert docs == [
        "Alpha title\npmcref one",
        "Beta title\nbeta ref",
        "Delta title\ndelta pmc ref",
        "Gamma title",
    ]


def test_a_broken_release_is_one_clear_error(release, tmp_path):
    (release / "document_parses" / "pdf_json" / "bbb.json").write_text("{not json")
    with pytest.raises(DataError, match=r"bbb\.json: malformed JSON"):
        _docs(release)
    tarball = tmp_path / "other.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(release / "document_parses", arcname="x/document_parses")
    with pytest.raises(DataError, match="no metadata.csv in this tarball"):
        _docs(tarball)
    (release / "metadata.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"metadata.csv:1: not a CORD-19 metadata.csv"):
        _docs(release)


def test_hubsweep_swivel_builds_a_module_from_the_release_tarball(release, tmp_path):
    tarball = tar_release(release, tmp_path / "cord-19.tar.gz", nested=True)
    output = tmp_path / "module"
    args = [
        f"corpus={tarball}",
        f"output={output}",
        "dim=4",
        "epochs=2",
        "shard_size=2",
        "min_count=1",
        "window=2",
        "processes=1",
        "progress=false",
    ]
    proc = subprocess.run(
        [shutil.which("hubsweep-swivel"), *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    vocab = (output / "assets" / "vocab.txt").read_text().split()
    assert {"pmcbody", "delta", "gamma"} <= set(vocab)
    assert "pdfbody" not in vocab  # the PDF parse of a paper with a PMC parse is not read


def test_hubsweep_swivel_without_a_corpus_says_so(tmp_path):
    proc = subprocess.run(
        [shutil.which("hubsweep-swivel"), f"output={tmp_path / 'm'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "corpus" in last and "Traceback" not in proc.stderr
