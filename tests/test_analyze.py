"""hubsweep-analyze: similarity heatmap, nearest neighbours and the cluster score."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from omegaconf import OmegaConf

from hubsweep.analysis import cluster_score, run_analysis
from hubsweep.embeddings.export import export_text_embedding
from hubsweep.errors import EmbeddingError

VOCAB = ["fever", "cough", "throat", "italy", "spain", "europe", "table", "chair"]


@pytest.fixture(scope="module")
def topic_module(tmp_path_factory):
    """Symptoms near one axis, places near another, furniture on a third."""
    rng = np.random.default_rng(0)
    axes = {"fever": 0, "cough": 0, "throat": 0, "italy": 1, "spain": 1, "europe": 1}
    vectors = np.stack([np.eye(6)[axes.get(w, 2)] * 3 + rng.normal(0, 0.3, 6) for w in VOCAB])
    path = tmp_path_factory.mktemp("topics") / "module"
    return export_text_embedding(VOCAB, vectors.astype(np.float32), path, lowercase=True)


def _cfg(module, out, **kw):
    return OmegaConf.create(
        {
            "embedding": {
                "name": "topics",
                "handle": str(module),
                "trainable": False,
                "dim": None,
                "signature": None,
                "output_key": None,
            },
            "groups": [["Fever", "cough", "throat"], ["Italy", "Spain", "Europe"]],
            "neighbours": [],
            "top_k": 3,
            "vocab_file": None,
            "results_dir": str(out),
            "output_dir": str(out),
            **kw,
        }
    )


def test_analysis_finds_the_topics(topic_module, tmp_path):
    analysis = run_analysis(_cfg(topic_module, tmp_path))
    assert analysis.cluster_score > 0.8
    similarity = pd.read_csv(tmp_path / "similarity.csv", index_col=0)
    assert list(similarity.index) == ["Fever", "cough", "throat", "Italy", "Spain", "Europe"]
    assert similarity.to_numpy().max() == pytest.approx(1.0)
    neighbours = pd.read_csv(tmp_path / "neighbours.csv")
    fever = neighbours[neighbours.term == "Fever"].neighbour.tolist()
    assert set(fever[:2]) == {"cough", "throat"} and "fever" not in fever
    assert (tmp_path / "similarity.png").read_bytes()[:4] == b"\x89PNG"
    assert "| Fever" in (tmp_path / "neighbours.md").read_text()
    assert json.loads((tmp_path / "scores.json").read_text())["cluster_score"] == pytest.approx(
        analysis.cluster_score
    )


def test_cluster_score_is_within_minus_between_cosine():
    vectors = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=float)
    assert cluster_score(vectors, [0, 0, 1, 1]) == pytest.approx(1.0)
    # within: cos(v0, v2) = cos(v1, v3) = 0; between: 1, 0, 0, 1 -> 0 - 0.5
    assert cluster_score(vectors, [0, 1, 0, 1]) == pytest.approx(-0.5)
    assert cluster_score(vectors, [0, 0, 0, 0]) is None


class HashedWords(tf.Module):
    """A module hubsweep did not make, with no vocabulary file: hashed word buckets."""

    def __init__(self) -> None:
        self.table = tf.Variable(tf.random.stateless_normal([64, 4], seed=[1, 2]))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, sentences):
        ids = tf.strings.to_hash_bucket_fast(tf.strings.split(sentences), 64)
        return tf.reduce_mean(tf.gather(self.table, ids), axis=1)


def test_a_module_without_a_vocabulary_needs_vocab_file(tmp_path):
    tf.saved_model.save(HashedWords(), str(tmp_path / "hashed"))
    with pytest.raises(EmbeddingError, match="set vocab_file"):
        run_analysis(_cfg(tmp_path / "hashed", tmp_path / "out"))
    (tmp_path / "words.txt").write_text("fever\ncough\nitaly\n")
    run_analysis(
        _cfg(tmp_path / "hashed", tmp_path / "out", vocab_file=str(tmp_path / "words.txt"))
    )
    neighbours = pd.read_csv(tmp_path / "out" / "neighbours.csv")
    assert set(neighbours.neighbour) <= {"fever", "cough", "italy"}


def test_cli_writes_the_analysis(topic_module, tmp_path):
    proc = subprocess.run(
        [
            shutil.which("hubsweep-analyze"),
            f"embedding.handle={topic_module}",
            "embedding.dim=null",
            f"results_dir={tmp_path}",
            "groups=[[fever,cough],[italy,spain]]",
            "top_k=2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (scores,) = tmp_path.glob("analysis/*/*/scores.json")
    assert json.loads(scores.read_text())["terms"] == ["fever", "cough", "italy", "spain"]
