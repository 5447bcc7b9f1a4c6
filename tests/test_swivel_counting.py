"""Co-occurrence counting against a brute-force count."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hubsweep.swivel.counting import CountSettings, count_corpus, load_block

TOPICS = {
    "virus": ["virus", "infection", "fever", "cough", "patients", "vaccine"],
    "sport": ["football", "goal", "match", "league", "player", "coach"],
}


def write_corpus(path, docs_per_topic=40, seed=0):
    rng = np.random.default_rng(seed)
    lines = []
    for words in TOPICS.values():
        for _ in range(docs_per_topic):
            lines.append(
                json.dumps(
                    {
                        "title": " ".join(rng.choice(words, 12)) + ".",
                        "abstract": " ".join(rng.choice(words, 20)),
                        "authors": [],
                        "body_text": "",
                        "ref_titles": [],
                    }
                )
            )
    path.write_text("\n".join(lines) + "\n")
    return path


def brute_force(path, vocab, window):
    index = {t: i for i, t in enumerate(vocab)}
    counts = np.zeros((len(vocab), len(vocab)))
    for line in path.read_text().splitlines():
        paper = json.loads(line)
        tokens = f"{paper['title']}\n{paper['abstract']}".replace(".", "").lower().split()
        for i, a in enumerate(tokens):
            for d in range(1, window + 1):
                if i + d < len(tokens) and a in index and tokens[i + d] in index:
                    counts[index[a], index[tokens[i + d]]] += 1 / d
                    counts[index[tokens[i + d]], index[a]] += 1 / d
    return counts


@pytest.mark.parametrize("spill", [False, True])
def test_sharded_counts_match_a_brute_force_count(tmp_path, spill):
    corpus = write_corpus(tmp_path / "papers.jsonl")
    settings = CountSettings(
        lowercase=True,
        window=3,
        min_count=1,
        max_vocab=100,
        shard_size=4,
        fields=("title", "abstract"),
        processes=2,
        max_pairs_in_memory=50 if spill else 10_000_000,
    )
    meta = count_corpus(corpus, tmp_path / "counts", settings)
    vocab = (tmp_path / "counts" / "vocab.txt").read_text().split()
    assert meta["vocab_size"] == len(vocab) == 12 and meta["num_shards"] == 3
    n = meta["num_shards"]
    counts = np.zeros((12, 12))
    for r in range(n):
        for c in range(n):
            rows, cols, values = load_block(tmp_path / "counts", r, c)
            counts[rows * n + r, cols * n + c] = values
    expected = brute_force(corpus, vocab, 3)
    np.testing.assert_allclose(counts, expected, rtol=1e-5)
    np.testing.assert_allclose(
        np.load(tmp_path / "counts" / "marginals.npy"), expected.sum(1), rtol=1e-5
    )
    assert not (tmp_path / "counts" / "spill").exists() or not any(
        (tmp_path / "counts" / "spill").iterdir()
    )
    # Two topics that never share a document never co-occur.
    virus = [vocab.index(w) for w in TOPICS["virus"]]
    sport = [vocab.index(w) for w in TOPICS["sport"]]
    assert counts[np.ix_(virus, sport)].sum() == 0


def test_vocabulary_is_cut_to_whole_shards_and_min_count(tmp_path):
    corpus = write_corpus(tmp_path / "papers.jsonl")
    settings = CountSettings(
        lowercase=True,
        window=2,
        min_count=1,
        max_vocab=10,
        shard_size=4,
        fields=("title",),
        processes=1,
    )
    meta = count_corpus(corpus, tmp_path / "counts", settings)
    assert meta["vocab_size"] == 8


def test_plain_text_and_jsonl_corpora_stream_documents(tmp_path):
    from hubsweep.swivel.corpus import corpus_files, documents

    (tmp_path / "a.txt").write_text("first line here\n\nsecond line\n")
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"title": "T", "authors": ["A B"], "abstract": "", "ref_titles": ["R"]}) + "\n"
    )
    files = corpus_files(tmp_path)
    assert [f.name for f in files] == ["a.txt", "b.jsonl"]
    assert list(documents(files[0])) == ["first line here\n", "second line\n"]
    assert list(documents(files[1])) == ["T\nA B\nR"]
    assert list(documents(files[1], fields=("title",))) == ["T"]
