"""The frozen-feature cache and the token-id fine-tuning path give the same model, faster."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_hub as hub

from hubsweep.embeddings.export import export_text_embedding
from hubsweep.embeddings.features import FeatureCache
from hubsweep.metrics import softmax
from hubsweep.results.artifacts import read_metrics
from hubsweep.training.run import train_and_evaluate

from .conftest import VOCAB

TOLERANCE = 1e-4  # same batches and initial weights; only float summation order may differ


def _curve(result) -> np.ndarray:
    lines = read_metrics(result.run_dir, "validation")
    return np.array([[m["loss"], m["accuracy"], m["macro_f1"], m["train_loss"]] for m in lines])


def test_cached_features_train_the_same_head_as_the_string_path(make_cfg):
    cached = train_and_evaluate(make_cfg("model=mlp", "trainer.compiled_head=false", run="cached"))
    plain = train_and_evaluate(make_cfg("model=mlp", "trainer.feature_cache=false", run="plain"))
    assert (cached.training_path, plain.training_path) == ("features", "strings")
    np.testing.assert_allclose(_curve(cached), _curve(plain), atol=TOLERANCE)


@pytest.mark.parametrize("xla", [False, True])
def test_a_single_run_in_the_compiled_head_program_equals_the_keras_feature_path(make_cfg, xla):
    """Curves, test scores and the handed-back model (strings in, logits out)."""
    both = (
        "model=mlp",
        "model.dropout=0",
        "optimizer.learning_rate=0.01",
        "optimizer=adam",
        "trainer.evaluate_test=true",
        f"trainer.xla={xla}",
    )
    compiled = train_and_evaluate(make_cfg(*both, run="compiled"))
    keras_path = train_and_evaluate(make_cfg(*both, "trainer.compiled_head=false", run="keras"))
    assert (compiled.training_path, keras_path.training_path) == ("features (compiled)", "features")
    np.testing.assert_allclose(_curve(compiled), _curve(keras_path), atol=TOLERANCE)
    for key in ("loss", "accuracy", "macro_f1"):
        assert compiled.test[key] == pytest.approx(keras_path.test[key], abs=TOLERANCE)
    texts = tf.constant(["we use the following protocol", "previous studies have shown"])
    np.testing.assert_allclose(
        compiled.model(texts).numpy(), keras_path.model(texts).numpy(), atol=TOLERANCE
    )


def test_a_second_compiled_run_reuses_the_program_without_a_new_trace(make_cfg):
    from hubsweep.training.population import _PROGRAMS

    train_and_evaluate(make_cfg(run="first"))
    traces = {k: p.train_chunk.experimental_get_tracing_count() for k, p in _PROGRAMS.items()}
    second = train_and_evaluate(
        make_cfg("trainer.seed=3", "optimizer.learning_rate=0.1", run="second")
    )
    assert second.training_path == "features (compiled)"
    after = {k: p.train_chunk.experimental_get_tracing_count() for k, p in _PROGRAMS.items()}
    assert after == traces


def test_token_id_path_fine_tunes_the_same_model_as_the_string_path(make_cfg):
    fast = train_and_evaluate(make_cfg("embedding.trainable=true", "trainer.xla=true", run="fast"))
    plain = train_and_evaluate(
        make_cfg("embedding.trainable=true", "trainer.fast_path=false", run="plain")
    )
    assert (fast.training_path, plain.training_path) == ("token ids (compiled)", "strings")
    np.testing.assert_allclose(_curve(fast), _curve(plain), atol=TOLERANCE)
    np.testing.assert_allclose(
        fast.model.layers[0].weights[0].numpy(),
        plain.model.layers[0].weights[0].numpy(),
        atol=TOLERANCE,
    )


@pytest.mark.parametrize("schedule", ["constant", "warmup"])
def test_compiled_token_id_steps_train_the_same_model_as_keras_steps(make_cfg, schedule):
    args = ("embedding.trainable=true", f"schedule={schedule}", "schedule.warmup_steps=20")
    if schedule == "constant":
        args = args[:2]
    compiled = train_and_evaluate(
        make_cfg(*args, "trainer.batch_size=5", "trainer.xla=true", run="xla")
    )
    keras_steps = train_and_evaluate(
        make_cfg(*args, "trainer.batch_size=5", "trainer.xla=false", run="keras")
    )
    assert (compiled.training_path, keras_steps.training_path) == (
        "token ids (compiled)",
        "token ids",
    )
    np.testing.assert_allclose(_curve(compiled), _curve(keras_steps), atol=TOLERANCE)
    np.testing.assert_allclose(
        compiled.model.layers[0].weights[0].numpy(),
        keras_steps.model.layers[0].weights[0].numpy(),
        atol=TOLERANCE,
    )


def test_fine_tuned_module_exports_and_reloads_with_the_same_predictions(make_cfg, tiny_module):
    result = train_and_evaluate(make_cfg("embedding.trainable=true", "trainer.export_module=true"))
    exported = hub.KerasLayer(f"{result.run_dir}/module")
    predictions = pd.read_csv(f"{result.run_dir}/predictions.csv")
    head = result.model.layers[1]
    probs = softmax(head(exported(tf.constant(list(predictions.text)))).numpy())
    np.testing.assert_allclose(probs, predictions.filter(like="p_").to_numpy(), atol=1e-5)
    original = hub.KerasLayer(str(tiny_module))(tf.constant(["virus cells"])).numpy()
    assert not np.allclose(exported(tf.constant(["virus cells"])).numpy(), original)


# --- the cache itself ---------------------------------------------------------------------


class CountingEmbed:
    def __init__(self, scale: float = 1.0) -> None:
        self.calls, self.scale = 0, scale

    def __call__(self, texts: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.array([[len(t) * self.scale, t.count(" ")] for t in texts], np.float32)


TEXTS = np.array(["virus cells", "the model", "previous studies"], dtype=object)


def test_cache_is_reused_across_processes_via_disk(tiny_module, tmp_path):
    embed = CountingEmbed()
    first = FeatureCache(tmp_path).get_or_build(str(tiny_module), TEXTS, embed)
    again = FeatureCache(tmp_path).get_or_build(str(tiny_module), TEXTS, embed)
    assert embed.calls == 1
    np.testing.assert_array_equal(first, again)
    cache = FeatureCache(None)  # memory only
    cache.get_or_build(str(tiny_module), TEXTS, embed)
    cache.get_or_build(str(tiny_module), TEXTS, embed)
    assert embed.calls == 2


def test_changed_module_or_dataset_invalidates_the_cache(tmp_path, module_vectors):
    module = export_text_embedding(VOCAB, module_vectors, tmp_path / "m")
    cache, embed = FeatureCache(tmp_path / "cache"), CountingEmbed()
    cache.get_or_build(str(module), TEXTS, embed)
    cache.get_or_build(str(module), TEXTS[:2], embed)  # other dataset content
    assert embed.calls == 2
    export_text_embedding(VOCAB, module_vectors * 2, tmp_path / "m")  # same path, new weights
    changed = CountingEmbed(2.0)
    features = cache.get_or_build(str(module), TEXTS, changed)
    assert changed.calls == 1
    np.testing.assert_array_equal(features, changed(TEXTS))


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "checksum"])
def test_corrupt_cache_file_is_detected_and_rebuilt(tiny_module, tmp_path, damage, caplog):
    cache = FeatureCache(tmp_path)
    good = cache.get_or_build(str(tiny_module), TEXTS, CountingEmbed())
    (path,) = tmp_path.glob("*.npz")
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[-200] ^= 0xFF
    elif damage == "checksum":
        # A valid file (zip CRCs and all) whose vectors are not the ones its checksum names:
        # only the cache's own sha256 can catch this.
        with np.load(path) as stored:
            wrong, checksum = stored["features"] + 1.0, stored["sha256"]
        np.savez(path.with_suffix(".new.npz"), features=wrong, sha256=checksum)
        data = bytearray(path.with_suffix(".new.npz").read_bytes())
        path.with_suffix(".new.npz").unlink()
    else:
        data = bytearray(b"not a numpy file")
    path.write_bytes(bytes(data))
    embed = CountingEmbed()
    rebuilt = FeatureCache(tmp_path).get_or_build(str(tiny_module), TEXTS, embed)
    assert embed.calls == 1
    np.testing.assert_array_equal(rebuilt, good)
    assert "rebuilding" in caplog.text
    if damage == "checksum":
        assert "fails its checksum" in caplog.text
    assert FeatureCache(tmp_path)._load(cache.key(str(tiny_module), TEXTS)) is not None


CONCURRENT_TEXTS = 20000


def _texts() -> np.ndarray:
    return np.array([f"sentence {i} " * (i % 7) for i in range(CONCURRENT_TEXTS)], dtype=object)


def _build_entry(module: str, cache_dir: str, barrier, out) -> None:
    """Embed, then wait until every worker has embedded too: all store at the same moment."""

    def embed(x):
        features = np.array([[len(t), t.count(" "), i] for i, t in enumerate(x)], np.float32)
        barrier.wait(timeout=60)
        return features

    features = FeatureCache(cache_dir).get_or_build(module, _texts(), embed)
    out.put(float(features.sum()))


def test_concurrent_workers_building_one_entry_do_not_corrupt_it(tiny_module, tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    procs = [
        ctx.Process(target=_build_entry, args=(str(tiny_module), str(tmp_path), barrier, out))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs)
    sums = {out.get(timeout=5) for _ in procs}
    assert len(sums) == 1  # every worker missed the cache (the barrier proves it) and agreed
    assert len(list(tmp_path.glob("*.npz"))) == 1
    assert not list(tmp_path.glob("*.tmp*"))
    reread = FeatureCache(tmp_path).get_or_build(str(tiny_module), _texts(), CountingEmbed())
    assert float(reread.sum()) in sums
