"""The fine-tuning recipe's dropout, and the encoder path for hubsweep-exported BERT pairs:
packed once, and with the embeddings frozen, the top layers trained on the frozen bottom's
hidden states computed once: the same curves as the string path (the reference)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub

from hubsweep.training.run import train_and_evaluate

from .test_fast_paths import _curve
from .test_transformer import HIDDEN, SENTENCES, _cfg, tiny_bert  # noqa: F401  (fixture)

TOLERANCE = 2e-4  # same batches, masks and initial weights; only float order differs


def _inputs(pair: Path) -> dict[str, tf.Tensor]:
    import tensorflow_text  # noqa: F401

    return hub.load(str(pair / "preprocess"))(tf.constant(SENTENCES))


def _embedded(pair: Path):
    """(the loaded encoder, the preprocessed SENTENCES, their embeddings' output)."""
    encoder = hub.load(str(pair / "encoder"))
    inputs = _inputs(pair)
    ids, types = inputs["input_word_ids"], inputs["input_type_ids"]
    return encoder, inputs, encoder.embed(ids, types, tf.constant([0, 0], tf.int64), False)


def test_dropout_is_the_reference_inverted_dropout_while_training_and_off_otherwise(
    tiny_bert,  # noqa: F811
):
    _, pair = tiny_bert
    encoder = hub.load(str(pair / "encoder"))
    inputs = _inputs(pair)
    ids, types = inputs["input_word_ids"], inputs["input_type_ids"]
    seed = tf.constant([7, 0], tf.int64)
    plain = encoder.embed(ids, types, seed, training=False).numpy()
    dropped = encoder.embed(ids, types, seed, training=True).numpy()
    # Independently: the stateless uniform draw for this site (0), kept where >= the rate.
    rate = 0.1  # the checkpoint's config.json leaves hidden_dropout_prob at BERT's default
    u = tf.random.stateless_uniform(plain.shape, seed=[7, 0]).numpy()
    np.testing.assert_allclose(dropped, np.where(u >= rate, plain / (1 - rate), 0), atol=1e-6)
    assert 0.05 < (dropped == 0).mean() < 0.15
    again = encoder.embed(ids, types, seed, training=True).numpy()
    other = encoder.embed(ids, types, tf.constant([8, 0], tf.int64), training=True).numpy()
    assert np.array_equal(again, dropped) and not np.array_equal(other, dropped)

    # TF-Hub's call: inference is deterministic; training draws new masks at each call.
    layer = hub.KerasLayer(str(pair / "encoder"), trainable=True)
    base = layer(inputs, training=False)["sequence_output"].numpy()
    np.testing.assert_array_equal(layer(inputs, training=False)["sequence_output"].numpy(), base)
    first = layer(inputs, training=True)["sequence_output"].numpy()
    second = layer(inputs, training=True)["sequence_output"].numpy()
    assert not np.allclose(first, base) and not np.allclose(first, second)
    # Rate 0: training is inference.
    for v in layer.weights:
        if v.name.endswith(("hidden_dropout:0", "attention_dropout:0")):
            v.assign(0.0)
    np.testing.assert_allclose(
        layer(inputs, training=True)["sequence_output"].numpy(), base, atol=1e-6
    )


def test_the_call_is_embed_then_each_layer_then_pool(
    tiny_bert,  # noqa: F811
):
    encoder, inputs, x = _embedded(tiny_bert[1])
    mask, seed = inputs["input_mask"], tf.constant([0, 0], tf.int64)
    for i in range(2):
        x = encoder.layer(x, mask, seed, index=i, training=False)
    out = encoder(inputs, training=False)
    np.testing.assert_allclose(x.numpy(), out["sequence_output"].numpy(), atol=1e-6)
    np.testing.assert_allclose(encoder.pool(x).numpy(), out["pooled_output"].numpy(), atol=1e-6)


FINE_TUNE = (
    "embedding.trainable=true",
    "embedding.pooling=mean",
    "optimizer=adamw",
    "optimizer.learning_rate=0.001",
    "trainer.steps=60",
    "trainer.eval_every=20",
    "trainer.evaluate_test=true",
)


def test_full_fine_tuning_on_packed_ids_equals_the_string_path_with_dropout(
    tiny_bert,  # noqa: F811
    make_cfg,
):
    _, pair = tiny_bert
    fast = train_and_evaluate(_cfg(make_cfg, pair, *FINE_TUNE, run="ids"))
    plain = train_and_evaluate(
        _cfg(make_cfg, pair, *FINE_TUNE, "trainer.fast_path=false", run="ids-strings")
    )
    assert (fast.training_path, plain.training_path) == ("encoder token ids", "strings")
    np.testing.assert_allclose(_curve(fast), _curve(plain), atol=TOLERANCE)
    assert fast.test["macro_f1"] == pytest.approx(plain.test["macro_f1"], abs=TOLERANCE)
    # The dropout was on: without the hidden one the curves differ.
    off = train_and_evaluate(
        _cfg(make_cfg, pair, *FINE_TUNE, "embedding.hidden_dropout=0", run="ids-no-dropout")
    )
    assert not np.allclose(_curve(off), _curve(fast), atol=TOLERANCE)


def test_each_training_call_draws_new_masks_from_the_run_seed_and_evaluation_none(
    tiny_bert,  # noqa: F811
    make_cfg,
):
    from hubsweep.embeddings.loading import load_embedding_layer

    cfg = _cfg(make_cfg, tiny_bert[1], "embedding.trainable=true", run="masks")
    layer = load_embedding_layer(cfg.embedding)
    sentences = tf.constant(SENTENCES)
    layer.seed_dropout(0)
    first, second = (layer(sentences, training=True).numpy() for _ in range(2))
    assert layer.training_calls.numpy() == 2 and not np.allclose(first, second)
    plain = layer(sentences, training=False).numpy()
    assert layer.training_calls.numpy() == 2  # evaluation is no dropout step
    np.testing.assert_array_equal(layer(sentences, training=False).numpy(), plain)
    layer.seed_dropout(1)
    other = layer(sentences, training=True).numpy()
    layer.seed_dropout(0)
    np.testing.assert_array_equal(layer(sentences, training=True).numpy(), first)
    assert not np.allclose(other, first)


def test_tf_hub_s_call_while_training_is_embed_layers_pool_at_its_step_seed(
    tiny_bert,  # noqa: F811
):
    encoder, inputs, _ = _embedded(tiny_bert[1])
    encoder.encoder.dropout_step.assign(5)
    out = encoder(inputs, training=True)
    assert encoder.encoder.dropout_step.numpy() == 6
    seed = tf.constant([5, 0], tf.int64)
    x = encoder.embed(inputs["input_word_ids"], inputs["input_type_ids"], seed, training=True)
    for i in range(2):
        x = encoder.layer(x, inputs["input_mask"], seed, index=i, training=True)
    np.testing.assert_allclose(out["sequence_output"].numpy(), x.numpy(), atol=1e-6)
    np.testing.assert_allclose(out["pooled_output"].numpy(), encoder.pool(x).numpy(), atol=1e-6)


def test_top_k_on_cached_hidden_states_equals_the_string_path(
    tiny_bert,  # noqa: F811
    make_cfg,
    cache_dir,
    monkeypatch,
):
    from hubsweep.training import encoder_path

    built = []
    compute = encoder_path._hidden_states
    monkeypatch.setattr(encoder_path, "_hidden_states", lambda *a: built.append(1) or compute(*a))
    _, pair = tiny_bert
    top = (*FINE_TUNE, "embedding.trainable_layers=1")
    before = set(Path(cache_dir).glob("*.npz"))
    cached = train_and_evaluate(_cfg(make_cfg, pair, *top, run="top-cached"))
    added = set(Path(cache_dir).glob("*.npz")) - before
    plain = train_and_evaluate(
        _cfg(make_cfg, pair, *top, "trainer.fast_path=false", run="top-strings")
    )
    assert cached.training_path == "encoder cached below the top layers"
    np.testing.assert_allclose(_curve(cached), _curve(plain), atol=TOLERANCE)
    assert cached.test["macro_f1"] == pytest.approx(plain.test["macro_f1"], abs=TOLERANCE)
    assert len(added) == 3  # each split's hidden states below layer 1, once
    with np.load(next(iter(added))) as entry:
        assert entry["features"].shape[1] == HIDDEN and entry["features"].dtype == np.float32
        assert entry["features"].shape[0] == entry["lengths"].sum()
    assert len(built) == 3
    again = train_and_evaluate(_cfg(make_cfg, pair, *top, run="top-again"))
    assert len(built) == 3 and set(Path(cache_dir).glob("*.npz")) - before == added  # served
    np.testing.assert_allclose(_curve(again), _curve(cached), atol=1e-6)

    half = train_and_evaluate(
        _cfg(make_cfg, pair, *top, "trainer.hidden_cache_dtype=float16", run="top-half")
    )
    assert len(set(Path(cache_dir).glob("*.npz")) - before) == 6  # its own entries
    np.testing.assert_allclose(_curve(half)[:, 0], _curve(cached)[:, 0], atol=2e-2)


def test_a_dropout_rate_for_a_module_without_one_is_one_clear_error(make_cfg):
    from hubsweep.errors import ConfigError

    with pytest.raises(ConfigError, match="embedding.hidden_dropout: applies to a BERT"):
        train_and_evaluate(make_cfg("embedding.hidden_dropout=0.2", run="bad-dropout"))


def test_mixed_precision_multiplies_in_bfloat16_and_trains_to_the_same_scores(
    tiny_bert,  # noqa: F811
    make_cfg,
):
    encoder, inputs, x = _embedded(tiny_bert[1])
    mask, seed = inputs["input_mask"], tf.constant([0, 0], tf.int64)
    exact = encoder.layer(x, mask, seed, index=0, training=False, mixed=False).numpy()
    mixed = encoder.layer(x, mask, seed, index=0, training=False, mixed=True).numpy()
    # bfloat16 keeps 8 bits of mantissa: close (LayerNorm'd outputs, ~unit scale), not equal.
    assert 0 < np.abs(mixed - exact).max() < 0.1

    pair = tiny_bert[1]
    full = train_and_evaluate(_cfg(make_cfg, pair, *FINE_TUNE, run="f32"))
    half = train_and_evaluate(
        _cfg(make_cfg, pair, *FINE_TUNE, "trainer.mixed_precision=true", run="bf16")
    )
    assert half.training_path == full.training_path == "encoder token ids"
    assert not np.array_equal(_curve(half), _curve(full))
    np.testing.assert_allclose(_curve(half)[:, 0], _curve(full)[:, 0], atol=0.05)  # loss
    assert half.test["macro_f1"] == pytest.approx(full.test["macro_f1"], abs=0.1)


def test_mixed_precision_for_a_frozen_or_bag_of_words_module_is_one_clear_error(make_cfg):
    from hubsweep.errors import ConfigError

    with pytest.raises(ConfigError, match="trainer.mixed_precision: applies to a fine-tuned"):
        train_and_evaluate(make_cfg("trainer.mixed_precision=true", run="bad-mixed"))


def _whole_encoder(pair: Path, out: Path) -> Path:
    """The pair with its encoder saved as TF-Hub's BERTs are: one call, no parts, no rates."""
    from hubsweep.embeddings.transformer.bert import INPUT_KEYS

    loaded = hub.load(str(pair / "encoder"))
    module = tf.train.Checkpoint()
    module.encoder = loaded  # reachable, so its call saves; `variables` lists no rates
    module.variables = [v for v in loaded.variables if "dropout" not in v.name]
    module.trainable_variables = list(loaded.trainable_variables)
    spec = {k: tf.TensorSpec([None, None], tf.int32) for k in INPUT_KEYS}
    module.__call__ = tf.function(
        lambda inputs: loaded(inputs, training=False), input_signature=[spec]
    )
    tf.saved_model.save(module, str(out / "encoder"))
    return out / "encoder"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("trainer.mixed_precision=true", "needs an encoder exported by hubsweep-export"),
        ("embedding.hidden_dropout=0.2", "this encoder has no hidden_dropout rate to set"),
    ],
)
def test_settings_a_tf_hub_bert_cannot_take_are_one_clear_error(
    tiny_bert,  # noqa: F811
    make_cfg,
    tmp_path,
    setting,
    message,
):
    from hubsweep.errors import EmbeddingError

    encoder = _whole_encoder(tiny_bert[1], tmp_path)
    cfg = _cfg(make_cfg, tiny_bert[1], "embedding.trainable=true", setting, run="whole")
    cfg.embedding.handle = str(encoder)
    with pytest.raises(EmbeddingError, match=message):
        train_and_evaluate(cfg)
    # Without the setting it trains, whole, on the string path.
    plain = _cfg(make_cfg, tiny_bert[1], *FINE_TUNE[:1], "trainer.steps=20", run="whole-ok")
    plain.embedding.handle = str(encoder)
    assert train_and_evaluate(plain).training_path == "strings"


def test_cached_rows_are_checked_on_load_and_a_damaged_entry_is_rebuilt(tmp_path, caplog):
    from hubsweep.embeddings.features import FeatureCache

    module = tmp_path / "module"
    module.mkdir()
    (module / "saved_model.pb").write_bytes(b"weights")
    texts = np.array(["a b", "c"])
    calls = []

    def build(x):
        calls.append(len(x))
        return np.arange(12, dtype=np.float16).reshape(3, 4), np.array([2, 1])

    also = (str(module), "seq_length=8,below_layer=1,float16")  # (preprocessor, settings)
    values, lengths = FeatureCache(tmp_path / "c").get_or_build_rows(
        str(module), texts, build, also
    )
    assert values.dtype == np.float16 and lengths.tolist() == [2, 1]
    FeatureCache(tmp_path / "c").get_or_build_rows(str(module), texts, build, also)
    assert calls == [2]  # the second process read the file
    (entry,) = (tmp_path / "c").glob("*.npz")
    with np.load(entry) as stored:
        damaged = {k: stored[k] for k in stored.files}
    damaged["lengths"] = np.array([1, 2])  # the same values, cut into other rows
    np.savez(entry, **damaged)
    again, rows = FeatureCache(tmp_path / "c").get_or_build_rows(str(module), texts, build, also)
    assert calls == [2, 2] and rows.tolist() == [2, 1] and "fails its checksum" in caplog.text
    cache = FeatureCache(tmp_path / "c")
    other = cache.key(str(module), texts, (str(module), "rows:seq_length=8,below_layer=2,float16"))
    assert other != cache.key(str(module), texts, (str(module), f"rows:{also[1]}"))


def test_the_runs_of_a_process_share_one_tensor_of_cached_hidden_states(
    tiny_bert,  # noqa: F811
    make_cfg,
    tmp_path,
):
    """A study's trials build a classifier each: one copy of the rows serves them all (a
    copy per run filled 24 GB in a 16-trial MiniLM study)."""
    from hubsweep.data.datasets import load_dataset
    from hubsweep.embeddings.features import FeatureCache
    from hubsweep.training.build import build_classifier

    cfg = _cfg(make_cfg, tiny_bert[1], *FINE_TUNE, "embedding.trainable_layers=1", run="share")
    data, cache = load_dataset(cfg.dataset), FeatureCache(tmp_path / "cache")
    first, second = (build_classifier(cfg, data, cache) for _ in range(2))
    assert first.path == "encoder cached below the top layers"
    assert all(first.inputs[r] is second.inputs[r] for r in ("train", "validation", "test"))


def test_length_batches_take_every_row_once_shortest_first_within_both_budgets():
    from hubsweep.training.encoder_path import length_batches

    lengths = np.random.default_rng(0).integers(1, 130, size=1000)
    batches = length_batches(lengths, max_rows=64, max_tokens=1024)
    order = np.concatenate(batches)
    assert sorted(order.tolist()) == list(range(1000))
    assert np.all(np.diff(lengths[order]) >= 0)
    for b in batches:
        assert len(b) <= 64
        assert len(b) == 1 or len(b) * lengths[b].max() <= 1024
    # Greedy: a batch stops only where the next row would break a budget.
    for b, after in zip(batches, batches[1:], strict=False):
        assert len(b) == 64 or (len(b) + 1) * lengths[after[0]] > 1024
    # A row longer than the token budget goes alone.
    assert [len(b) for b in length_batches(np.array([5, 300, 5]), 8, 100)] == [2, 1]


@pytest.mark.parametrize("top", [None, 1], ids=["ids", "top-1-cached"])
def test_evaluation_in_length_batches_gives_each_row_its_own_logits(
    tiny_bert,  # noqa: F811
    make_cfg,
    tmp_path,
    top,
):
    """Evaluation sorts rows by length into small batches, then puts each row's logits back
    in its place: equal to running each row alone, unpadded."""
    from hubsweep.data.datasets import load_dataset
    from hubsweep.embeddings.features import FeatureCache
    from hubsweep.training.build import build_classifier

    extra = () if top is None else (f"embedding.trainable_layers={top}",)
    cfg = _cfg(
        make_cfg, tiny_bert[1], *FINE_TUNE, *extra, "trainer.eval_batch_tokens=24", run="eval"
    )
    clf = build_classifier(cfg, load_dataset(cfg.dataset), FeatureCache(tmp_path / "cache"))
    rows = clf.inputs["validation"]
    # The fixture's sentences tokenise to one length: cut them to lengths 2..10, unsorted.
    cut = [rows[i][: 2 + (i * 7) % 9] for i in range(rows.nrows())]
    clf.inputs["validation"] = tf.RaggedTensor.from_row_lengths(
        tf.concat(cut, axis=0), [len(c) for c in cut]
    )
    batches = clf.eval_batches("validation")
    assert len(batches) > 3 and not np.array_equal(np.concatenate(batches), np.arange(len(cut)))
    alone = np.concatenate(
        [
            clf._eval_logits("validation", tf.constant([i], tf.int64)).numpy()
            for i in range(len(cut))
        ]
    )
    np.testing.assert_allclose(clf.logits("validation"), alone, atol=1e-5)


def test_bfloat16_on_a_cpu_without_bfloat16_instructions_is_one_warning(
    tiny_bert,  # noqa: F811
    make_cfg,
    caplog,
    monkeypatch,
):
    from hubsweep.data.datasets import load_dataset
    from hubsweep.embeddings.transformer import layer as layer_module
    from hubsweep.training.build import build_classifier

    avx2 = "flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw\n"
    assert layer_module.bfloat16_native(avx2) is False
    assert layer_module.bfloat16_native(avx2.replace("avx512bw", "avx512_bf16")) is True
    assert layer_module.bfloat16_native("Features\t: fp asimd sve bf16 i8mm\n") is True

    real = layer_module.bfloat16_native
    cfg = _cfg(make_cfg, tiny_bert[1], *FINE_TUNE, "trainer.mixed_precision=true", run="bf")
    data = load_dataset(cfg.dataset)
    for cpu, warnings in ((avx2, 1), ("flags\t: avx2 amx_bf16\n", 0)):
        monkeypatch.setattr(layer_module, "_warned_bfloat16", False)
        monkeypatch.setattr(layer_module, "bfloat16_native", lambda info=None, c=cpu: real(c))
        caplog.clear()
        build_classifier(cfg, data)
        build_classifier(cfg, data)  # a study's next trial: not again
        said = [m for r in caplog.records if "bfloat16 instructions" in (m := r.getMessage())]
        assert len(said) == warnings, (cpu, said)
        assert all("trainer.mixed_precision=false" in m for m in said)


def test_one_step_program_serves_chunks_of_every_length(tiny_bert, make_cfg):  # noqa: F811
    """The loop's chunks come in several lengths (evaluations, every 100 steps): the step
    program is traced once for all of them, and steps as one traced per length does."""
    import functools

    from hubsweep.training.build import build_classifier
    from hubsweep.training.classifier import Classifier, batch_order
    from hubsweep.training.trial_cache import TrialCache

    cfg = _cfg(make_cfg, tiny_bert[1], *FINE_TUNE, run="results/chunks/run")
    cache = TrialCache.for_config(cfg)
    data = cache.dataset(cfg.dataset, ["train", "validation"])
    one, other = (build_classifier(cfg, data, cache.features) for _ in range(2))
    assert one.path == "encoder token ids"
    per_length = tf.function(functools.partial(Classifier._train_chunk.python_function, other))
    order = batch_order(len(data.splits["train"]), cfg.trainer.batch_size, 0)
    for k in (2, 1, 3, 1):
        chunk = np.stack([next(order) for _ in range(k)])
        np.testing.assert_allclose(
            one.train_chunk(chunk).numpy(), per_length(tf.constant(chunk)).numpy(), rtol=1e-5
        )
    assert one._train_chunk.experimental_get_tracing_count() == 1
    assert per_length.experimental_get_tracing_count() == 3
