"""Datasets: the TFDS scicite builder (download and offline paths) and local files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
from omegaconf import OmegaConf

from hubsweep.data.datasets import load_dataset
from hubsweep.errors import DataError

from .conftest import LABELS, write_scicite


def _scicite_cfg(**kw):
    base = {
        "name": "scicite",
        "source": "tfds",
        "tfds_name": "scicite",
        "source_dir": None,
        "data_dir": None,
        "splits": {"train": "train", "validation": "validation", "test": "test"},
        "text_key": "string",
        "label_key": "label",
        "label_names": list(LABELS),
    }
    return OmegaConf.create({**base, **kw})


def test_offline_and_download_paths_yield_the_same_examples(scicite_dir, tmp_path, monkeypatch):
    offline = load_dataset(_scicite_cfg(source_dir=str(scicite_dir), data_dir=str(tmp_path / "a")))

    # The network is the only thing replaced: TFDS's own scicite builder then extracts
    # "the archive" to a directory holding scicite/{train,dev,test}.jsonl, as the release does.
    def fake_download(self, url_or_urls):
        assert "scicite.tar.gz" in url_or_urls["scicite"]
        return {"scicite": scicite_dir.parent}

    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", fake_download)
    monkeypatch.setattr("hubsweep.data.network.unreachable", lambda url: None)
    downloaded = load_dataset(_scicite_cfg(data_dir=str(tmp_path / "b")))

    assert offline.label_names == downloaded.label_names == LABELS
    for role in ("train", "validation", "test"):
        a, b = offline.splits[role], downloaded.splits[role]
        assert sorted(zip(a.texts, a.labels, strict=True)) == sorted(
            zip(b.texts, b.labels, strict=True)
        )
    # TFDS keeps the first of a repeated unique_id, so the near-duplicate line is dropped.
    raw_train = (scicite_dir / "train.jsonl").read_text().splitlines()
    assert len(offline.splits["train"]) == len(raw_train) - 1
    texts = {json.loads(line)["string"]: json.loads(line)["label"] for line in raw_train[:-1]}
    for text, label in zip(
        offline.splits["train"].texts, offline.splits["train"].labels, strict=True
    ):
        assert LABELS[label] == texts[text]


def test_offline_preparation_happens_once(scicite_dir, tmp_path, monkeypatch):
    cfg = _scicite_cfg(source_dir=str(scicite_dir), data_dir=str(tmp_path))
    first = load_dataset(cfg)

    def no_second_preparation(*args, **kwargs):
        raise AssertionError("the prepared dataset was prepared again")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_second_preparation)
    second = load_dataset(cfg)
    assert list(second.splits["validation"].texts) == list(first.splits["validation"].texts)


def test_release_files_that_differ_are_prepared_apart_in_one_data_dir(scicite_dir, tmp_path):
    # TFDS names a prepared dataset by builder and version: without a directory per
    # source's content, the variant would be served the first preparation's sentences.
    variant = tmp_path / "variant"
    variant.mkdir()
    for split in ("train", "dev", "test"):
        lines = (scicite_dir / f"{split}.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        for r in records:
            r["string"] = f"Methods: {r['string']}"
        (variant / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    data_dir = str(tmp_path / "tfds")
    first = load_dataset(_scicite_cfg(source_dir=str(scicite_dir), data_dir=data_dir))
    second = load_dataset(_scicite_cfg(source_dir=str(variant), data_dir=data_dir))
    for role in ("train", "validation", "test"):
        a, b = first.splits[role], second.splits[role]
        assert sorted(f"Methods: {t}" for t in a.texts) == sorted(b.texts)
    # And the first is still served its own.
    again = load_dataset(_scicite_cfg(source_dir=str(scicite_dir), data_dir=data_dir))
    assert list(again.splits["test"].texts) == list(first.splits["test"].texts)


def test_offline_path_names_a_missing_release_file(tmp_path):
    partial = write_scicite(tmp_path / "partial", {"train": 6, "dev": 3})
    with pytest.raises(DataError, match="test.jsonl is missing"):
        load_dataset(_scicite_cfg(source_dir=str(partial), data_dir=str(tmp_path / "d")))


def test_mismatched_label_order_is_refused(scicite_dir, tmp_path):
    cfg = _scicite_cfg(
        source_dir=str(scicite_dir),
        data_dir=str(tmp_path),
        label_names=["background", "method", "result"],
    )
    with pytest.raises(DataError, match="label order"):
        load_dataset(cfg)


def _local_cfg(directory, source="jsonl", **kw):
    ext = source
    return OmegaConf.create(
        {
            "name": "local",
            "source": source,
            "tfds_name": None,
            "source_dir": str(directory),
            "data_dir": None,
            "splits": {"train": f"train.{ext}", "validation": f"dev.{ext}"},
            "text_key": "text",
            "label_key": "label",
            "label_names": ["neg", "pos"],
            **kw,
        }
    )


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))


def test_jsonl_and_csv_files_load_by_config_alone(tmp_path):
    _write(
        tmp_path / "train.jsonl",
        [
            '{"text": "good film", "label": "pos"}',
            '{"text": "bad film", "label": "neg"}',
            '{"text": "fine, by index", "label": 1}',
        ],
    )
    _write(tmp_path / "dev.jsonl", ['{"text": "awful", "label": "neg"}'])
    _write(tmp_path / "train.csv", ["text,label", '"good, really",pos', "bad,neg"])
    _write(tmp_path / "dev.csv", ["text,label", "awful,neg"])
    js = load_dataset(_local_cfg(tmp_path))
    assert list(js.splits["train"].texts) == ["good film", "bad film", "fine, by index"]
    assert list(js.splits["train"].labels) == [1, 0, 1]
    cs = load_dataset(_local_cfg(tmp_path, source="csv"))
    assert list(cs.splits["train"].texts) == ["good, really", "bad"]
    assert cs.splits["train"].labels.dtype == np.int32
    assert cs.label_names == ("neg", "pos")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            ['{"text": "ok", "label": "pos"}', '{"text": "broken", "label": '],
            r"train.jsonl:2: malformed JSON",
        ),
        (
            ['{"text": "ok", "label": "pos"}', "", '{"text": "x", "label": "meh"}'],
            r"train.jsonl:3: unknown label 'meh'",
        ),
        (['{"text": "ok"}'], r"train.jsonl:1: missing 'label'"),
        (['["not", "an", "object"]'], r"train.jsonl:1: expected a JSON object"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path, lines, message):
    _write(tmp_path / "train.jsonl", lines)
    _write(tmp_path / "dev.jsonl", ['{"text": "awful", "label": "neg"}'])
    with pytest.raises(DataError, match=message):
        load_dataset(_local_cfg(tmp_path))


def test_bad_csv_names_file_and_line(tmp_path):
    _write(tmp_path / "train.csv", ["text,label", "good,pos", "odd,neutral"])
    _write(tmp_path / "dev.csv", ["text,label", "awful,neg"])
    with pytest.raises(DataError, match=r"train.csv:3: unknown label 'neutral'"):
        load_dataset(_local_cfg(tmp_path, source="csv"))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"dataset.splits.train: file .*train.jsonl does not exist"):
        load_dataset(_local_cfg(tmp_path))


def test_only_the_requested_splits_are_read(tmp_path):
    _write(tmp_path / "train.jsonl", ['{"text": "good", "label": "pos"}'])
    _write(tmp_path / "dev.jsonl", ['{"text": "bad", "label": "neg"}'])
    cfg = _local_cfg(tmp_path)
    cfg.splits.test = "test.jsonl"  # absent, and not asked for
    assert set(load_dataset(cfg, ["train", "validation"]).splits) == {"train", "validation"}
    with pytest.raises(DataError, match="dataset.splits.test"):
        load_dataset(cfg)


def test_the_dataset_cache_serves_a_new_process_and_never_stale_or_corrupt(tmp_path, caplog):
    from hubsweep.data.dataset_cache import SUBDIR, cached_dataset

    data_dir, cache = tmp_path / "data", tmp_path / "cache"
    data_dir.mkdir()
    _write(data_dir / "train.jsonl", ['{"text": "good film", "label": "pos"}'])
    _write(data_dir / "dev.jsonl", ['{"text": "awful", "label": "neg"}'])
    cfg = _local_cfg(data_dir)
    loads = []

    def load():
        loads.append(1)
        return load_dataset(cfg)

    first = cached_dataset(cache, cfg, ["train", "validation"], load)
    again = cached_dataset(cache, cfg, ["train", "validation"], load)  # as a new process would
    assert len(loads) == 1
    assert again.label_names == first.label_names
    for role, split in first.splits.items():
        assert list(again.splits[role].texts) == list(split.texts)
        assert again.splits[role].labels.tolist() == split.labels.tolist()
        assert again.splits[role].labels.dtype == np.int32
    (entry,) = (cache / SUBDIR).iterdir()
    entry.write_text(entry.read_text().replace("good film", "bad film"))  # corrupt it
    roles = ["train", "validation"]
    assert list(cached_dataset(cache, cfg, roles, load).splits["train"].texts) == ["good film"]
    assert "fails its checksum" in caplog.text and len(loads) == 2
    _write(data_dir / "train.jsonl", ['{"text": "edited", "label": "pos"}'])  # new content
    assert list(cached_dataset(cache, cfg, roles, load).splits["train"].texts) == ["edited"]
    assert len(loads) == 3


def test_prefix_keys_read_a_field_into_each_text_from_local_files(tmp_path):
    _write(
        tmp_path / "train.jsonl",
        [
            '{"text": "good film", "section": "Results", "label": "pos"}',
            '{"text": "bad film", "section": NaN, "label": "neg"}',
            '{"text": "fine film", "section": "  ", "label": "pos"}',
            '{"text": "odd film", "label": "neg"}',
        ],
    )
    _write(tmp_path / "dev.jsonl", ['{"text": "a film", "section": "Methods", "label": "pos"}'])
    data = load_dataset(_local_cfg(tmp_path, prefix_keys=["section"], text_separator=" | "))
    assert list(data.splits["train"].texts) == [
        "Results | good film",
        "bad film",
        "fine film",
        "odd film",
    ]
    assert list(data.splits["validation"].texts) == ["Methods | a film"]
    # Without the setting the texts are the field alone, as before.
    plain = load_dataset(_local_cfg(tmp_path))
    assert list(plain.splits["train"].texts) == ["good film", "bad film", "fine film", "odd film"]


def test_a_prefix_key_no_record_has_or_a_number_is_one_error(tmp_path):
    _write(tmp_path / "train.jsonl", ['{"text": "good film", "section": 3, "label": "pos"}'])
    _write(tmp_path / "dev.jsonl", ['{"text": "a film", "label": "pos"}'])
    with pytest.raises(DataError, match=r"train.jsonl:1: 'section' \(dataset.prefix_keys\) is not"):
        load_dataset(_local_cfg(tmp_path, prefix_keys=["section"], text_separator=": "))
    _write(tmp_path / "train.jsonl", ['{"text": "good film", "section": "Intro", "label": "pos"}'])
    with pytest.raises(DataError, match=r"dev.jsonl: no record has 'section'"):
        load_dataset(_local_cfg(tmp_path, prefix_keys=["section"], text_separator=": "))


def scicite_through_tfds_and_jsonl(scicite_dir, data_dir, **settings):
    """The SciCite release files loaded both ways, with the same dataset `settings`: as the
    TFDS builder prepares them (into `data_dir`), and read as JSON lines."""
    tfds_data = load_dataset(
        _scicite_cfg(source_dir=str(scicite_dir), data_dir=str(data_dir), **settings)
    )
    jsonl = OmegaConf.create(
        {
            **_scicite_cfg(source_dir=str(scicite_dir)),
            "source": "jsonl",
            "splits": {"train": "train.jsonl", "validation": "dev.jsonl", "test": "test.jsonl"},
            **settings,
        }
    )
    return tfds_data, load_dataset(jsonl)


def test_scicite_section_names_as_prefixes_through_tfds_and_as_jsonl_agree(scicite_dir, tmp_path):
    # TFDS stores a missing sectionName as "nan"; the JSON-lines reader sees NaN: both go
    # without a prefix, so the two paths give the same texts.
    prefix = {"prefix_keys": ["sectionName"], "text_separator": ": "}
    tfds_data, local = scicite_through_tfds_and_jsonl(scicite_dir, tmp_path, **prefix)
    texts = sorted(tfds_data.splits["test"].texts)
    assert texts == sorted(local.splits["test"].texts)
    assert sum(t.startswith("Introduction: ") for t in texts) == 36  # i % 5 != 0 of 45
    assert not any(t.lower().startswith("nan") for t in texts)
    with pytest.raises(DataError, match=r"dataset.prefix_keys: 'citeEnd' is not a text feature"):
        load_dataset(
            _scicite_cfg(
                source_dir=str(scicite_dir),
                data_dir=str(tmp_path),
                prefix_keys=["citeEnd"],
                text_separator=": ",
            )
        )
    with pytest.raises(DataError, match=r"dataset.prefix_keys: 'section' is not a feature"):
        load_dataset(
            _scicite_cfg(
                source_dir=str(scicite_dir),
                data_dir=str(tmp_path),
                **{**prefix, "prefix_keys": ["section"]},
            )
        )
