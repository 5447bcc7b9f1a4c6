"""The TF-Hub-format module exporter and the embedding loader."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub
from omegaconf import OmegaConf

from hubsweep.embeddings.export import export_text_embedding, read_vectors_text
from hubsweep.embeddings.loading import load_embedding_layer
from hubsweep.errors import EmbeddingError

from .conftest import DIM, VOCAB


def _sqrtn(vectors: np.ndarray, ids: list[int]) -> np.ndarray:
    return vectors[ids].sum(axis=0) / np.sqrt(len(ids))


def test_module_tokenises_looks_up_and_combines_with_sqrtn(tiny_module, module_vectors):
    layer = hub.KerasLayer(str(tiny_module))
    index = {w: i for i, w in enumerate(VOCAB)}
    out = layer(tf.constant(["Virus, cells!", "virus", "", "unseenword cells", "...,"])).numpy()
    assert out.shape == (5, DIM) and out.dtype == np.float32
    np.testing.assert_allclose(
        out[0], _sqrtn(module_vectors, [index["virus"], index["cells"]]), rtol=1e-6
    )
    np.testing.assert_allclose(out[1], module_vectors[index["virus"]], rtol=1e-6)
    np.testing.assert_array_equal(out[2], np.zeros(DIM))  # empty text
    # The OOV bucket starts at zero but still counts as a token in the sqrtn denominator.
    np.testing.assert_allclose(out[3], module_vectors[index["cells"]] / np.sqrt(2), rtol=1e-6)
    np.testing.assert_array_equal(out[4], np.zeros(DIM))  # punctuation only


def test_case_is_kept_unless_the_module_lower_cases(tmp_path):
    vectors = np.eye(2, dtype=np.float32)
    cased = export_text_embedding(["Italy", "italy"], vectors, tmp_path / "cased")
    lower = export_text_embedding(["italy", "spain"], vectors, tmp_path / "lower", lowercase=True)
    np.testing.assert_array_equal(hub.KerasLayer(str(cased))(tf.constant(["Italy"])), [[1, 0]])
    np.testing.assert_array_equal(hub.KerasLayer(str(lower))(tf.constant(["ITALY"])), [[1, 0]])


def test_exported_variables_are_trainable_through_keras_layer(tiny_module):
    frozen = hub.KerasLayer(str(tiny_module), trainable=False)
    tuned = hub.KerasLayer(str(tiny_module), trainable=True)
    assert frozen.trainable_weights == []
    assert [w.shape.as_list() for w in tuned.trainable_weights] == [[len(VOCAB) + 1, DIM]]


def test_serving_signature_matches_call(tiny_module):
    loaded = tf.saved_model.load(str(tiny_module))
    sentences = tf.constant(["virus cells", "model"])
    np.testing.assert_allclose(
        loaded.signatures["serving_default"](sentences=sentences)["default"], loaded(sentences)
    )


def test_word2vec_and_glove_text_files_round_trip(tmp_path):
    (tmp_path / "w2v.txt").write_text("2 3\nfever 1 2 3\ncough 0.5 0 -1\n")
    (tmp_path / "glove.txt").write_text("fever 1 2 3\ncough 0.5 0 -1\n")
    for name in ("w2v.txt", "glove.txt"):
        vocab, vectors = read_vectors_text(tmp_path / name)
        assert vocab == ["fever", "cough"]
        np.testing.assert_array_equal(vectors, [[1, 2, 3], [0.5, 0, -1]])
    module = export_text_embedding(vocab, vectors, tmp_path / "m")
    np.testing.assert_allclose(hub.KerasLayer(str(module))(tf.constant(["cough"])), [[0.5, 0, -1]])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("fever 1 2 3\ncough 1 2\n", r"vec.txt:2: expected 3 values"),
        ("fever 1 2 x\n", r"vec.txt:1: non-numeric"),
        ("", r"no vectors"),
    ],
)
def test_bad_vector_files_name_the_line(tmp_path, content, message):
    (tmp_path / "vec.txt").write_text(content)
    with pytest.raises(EmbeddingError, match=message):
        read_vectors_text(tmp_path / "vec.txt")


@pytest.mark.parametrize(
    ("vocab", "message"),
    [(["a", "a"], "repeats entry 0"), (["a", "b c"], "whitespace"), (["a"], "matrix")],
)
def test_exporter_rejects_bad_vocabularies(tmp_path, vocab, message):
    with pytest.raises(EmbeddingError, match=message):
        export_text_embedding(vocab, np.ones((2, 3)), tmp_path / "m")


def _embedding_cfg(handle, **kw):
    return OmegaConf.create(
        {
            "name": "x",
            "handle": str(handle),
            "trainable": False,
            "dim": None,
            "signature": None,
            "output_key": None,
            **kw,
        }
    )


def test_loader_checks_the_output_width(tiny_module):
    assert load_embedding_layer(_embedding_cfg(tiny_module, dim=DIM)) is not None
    with pytest.raises(EmbeddingError, match=f"embedding.dim=128 but .* outputs {DIM}-d"):
        load_embedding_layer(_embedding_cfg(tiny_module, dim=128))


def test_loader_names_a_missing_module(tmp_path):
    with pytest.raises(EmbeddingError, match="no SavedModel directory"):
        load_embedding_layer(_embedding_cfg(tmp_path / "nothing"))


def test_loader_refuses_a_module_that_does_not_take_strings(tmp_path):
    class Numbers(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def __call__(self, x):
            return tf.stack([x, x], axis=1)

    tf.saved_model.save(Numbers(), str(tmp_path / "numbers"))
    with pytest.raises(EmbeddingError, match="does not accept a 1-D string tensor"):
        load_embedding_layer(_embedding_cfg(tmp_path / "numbers"))
