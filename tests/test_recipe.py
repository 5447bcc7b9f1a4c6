"""The fine-tuning recipe: AdamW (decoupled weight decay, no decay on biases and norms),
the global-norm clip and layer-wise learning-rate decay, each against an independent NumPy
computation of the same steps; on the tiny BERT checkpoint through the classifier."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from hubsweep.errors import ConfigError
from hubsweep.training.optimizers import AdamW

from .test_transformer import _cfg, tiny_bert  # noqa: F401  (the session fixture)

B1, B2, EPS, WD = 0.9, 0.999, 1e-6, 0.01


def numpy_adamw(w, grads, lr, decays, t, state, eps=EPS):
    """One step of PyTorch's AdamW on one array: decay, moments, bias-corrected update."""
    m, v = state.get("m", np.zeros_like(w)), state.get("v", np.zeros_like(w))
    if decays:
        w = w - lr * WD * w
    m = B1 * m + (1 - B1) * grads
    v = B2 * v + (1 - B2) * grads**2
    state.update(m=m, v=v)
    m_hat, v_hat = m / (1 - B1**t), v / (1 - B2**t)
    return w - lr * m_hat / (np.sqrt(v_hat) + eps)


def _clip(grads: list[np.ndarray], norm: float) -> list[np.ndarray]:
    total = np.sqrt(sum(float((g**2).sum()) for g in grads))
    return [g * min(1.0, norm / total) for g in grads]


# A large epsilon too: where ε sits (added to √v̂, as PyTorch does, not to √v) then moves
# the weights well past the tolerance.
@pytest.mark.parametrize("eps", [EPS, 1e-2])
def test_adamw_steps_as_pytorchs_with_decay_clip_and_a_rate_multiplier(eps):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 5)).astype(np.float32)
    y = rng.normal(size=(8, 3)).astype(np.float32)
    kernel = tf.Variable(rng.normal(size=(5, 3)).astype(np.float32), name="dense/kernel")
    bias = tf.Variable(rng.normal(size=(3,)).astype(np.float32), name="dense/bias")
    opt = AdamW(1e-2, WD, B1, B2, eps, ("bias",), global_clipnorm=0.5)
    opt.multipliers = {kernel.ref(): 0.25}

    def grads_of(k, b):
        err = x @ k + b - y
        return [2 * x.T @ err / err.size, 2 * err.sum(axis=0) / err.size]

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(x @ kernel + bias - y))
        grads = tape.gradient(loss, [kernel, bias])
        opt.apply_gradients(zip(grads, [kernel, bias], strict=True))

    k, b, sk, sb = kernel.numpy(), bias.numpy(), {}, {}
    for t in (1, 2, 3):
        gk, gb = _clip(grads_of(k, b), 0.5)
        assert np.sqrt((gk**2).sum() + (gb**2).sum()) == pytest.approx(0.5)  # clipping bites
        k = numpy_adamw(k, gk, 1e-2 * 0.25, True, t, sk, eps)
        b = numpy_adamw(b, gb, 1e-2, False, t, sb, eps)
        step()
        np.testing.assert_allclose(kernel.numpy(), k, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(bias.numpy(), b, rtol=1e-5, atol=1e-7)


def test_a_sparse_gradient_steps_like_the_dense_one():
    table = np.arange(12, dtype=np.float32).reshape(6, 2) / 10
    dense_var, sparse_var = tf.Variable(table, name="t/dense"), tf.Variable(table, name="t/sp")
    rows = tf.constant([1, 4, 1])
    for var in (dense_var, sparse_var):
        opt = AdamW(0.1, WD, B1, B2, EPS)
        for _ in range(2):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.gather(var, rows) ** 2)
            (grad,) = tape.gradient(loss, [var])
            assert isinstance(grad, tf.IndexedSlices)
            if var is dense_var:
                grad = tf.convert_to_tensor(grad)  # the rows summed into the full table
            opt.apply_gradients([(grad, var)])
    np.testing.assert_allclose(sparse_var.numpy(), dense_var.numpy(), rtol=1e-6)
    assert not np.allclose(dense_var.numpy()[0], table[0])  # weight decay reaches every row


def test_adam_applies_a_sparse_gradient_as_kerass_sparse_adam_does():
    """hubsweep's Adam densifies a table's sparse gradient (repeated rows included) for the
    fused kernel: the same weights as Keras's own sparse update, and rows the batch did not
    touch still move once their moments are non-zero."""
    import tf_keras as keras

    from hubsweep.training.optimizers import Adam

    table = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    batches = [tf.constant([1, 4, 1]), tf.constant([2, 2, 6])]
    finals = []
    for make in (Adam, keras.optimizers.legacy.Adam):
        var, opt = tf.Variable(table, name=f"table_{make.__module__}"), make(0.05)
        for rows in batches:
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.gather(var, rows) ** 3)
            (grad,) = tape.gradient(loss, [var])
            assert isinstance(grad, tf.IndexedSlices)
            opt.apply_gradients([(grad, var)])
        finals.append(var.numpy())
    np.testing.assert_allclose(finals[0], finals[1], rtol=1e-6, atol=1e-7)
    assert not np.allclose(finals[0][4], table[4])  # batch 2 did not touch row 4: momentum
    np.testing.assert_array_equal(finals[0][[0, 3, 5]], table[[0, 3, 5]])  # never touched


def test_layer_wise_decay_on_the_tiny_bert_steps_as_numpy(tiny_bert, make_cfg):  # noqa: F811
    from hubsweep.data.datasets import load_dataset
    from hubsweep.training.build import build_classifier

    _, pair = tiny_bert
    cfg = _cfg(
        make_cfg,
        pair,
        "embedding.trainable=true",
        "embedding.pooling=mean",
        "optimizer=adamw",
        "optimizer.learning_rate=1e-3",
        "optimizer.clipnorm=null",
        "embedding.layer_lr_decay=0.5",
        # The step below is checked against gradients taken outside it: the same masks.
        "embedding.hidden_dropout=0",
        "embedding.attention_dropout=0",
        "model=linear",
        run="llrd",
    )
    data = load_dataset(cfg.dataset)
    classifier = build_classifier(cfg, data)
    opt, variables = classifier.optimizer, classifier.variables
    rates = {v.name: opt.multipliers.get(v.ref(), 1.0) for v in variables}
    head = {v.name for v in classifier.head.trainable_variables}
    for name, rate in rates.items():
        if "layer_1/" in name or name in head:
            assert rate == 1.0, name  # the top layer (l = L = 2): decay^0; the head
        elif "layer_0/" in name:
            assert rate == 0.5, name
        else:
            assert rate == 0.25, name  # the embeddings: decay^L
    assert {r for r in rates.values()} == {1.0, 0.5, 0.25}

    order = tf.constant([[0, 1, 2, 3]])
    with tf.GradientTape() as tape:
        logits = classifier.forward(classifier.gather("train", order[0]), training=True)
        loss = classifier.loss_fn(tf.gather(classifier.labels, order[0]), logits)
    grads = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, variables)]
    before = [v.numpy() for v in variables]
    classifier.train_chunk(order)
    for var, w, g in zip(variables, before, grads, strict=True):
        decays = not any(p in var.name for p in ("bias", "gamma", "beta", "norm"))
        expected = numpy_adamw(w, g, 1e-3 * rates[var.name], decays, 1, {})
        np.testing.assert_allclose(var.numpy(), expected, rtol=1e-4, atol=1e-6, err_msg=var.name)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["embedding.layer_lr_decay=0.5"], "embedding.layer_lr_decay: needs a fine-tuned BERT"),
        (["optimizer=adamw", "optimizer.clipnorm=0"], "optimizer.clipnorm: must be > 0"),
        (["optimizer=adamw", "optimizer.weight_decay=-1"], "optimizer.weight_decay: must be"),
    ],
)
def test_recipe_settings_where_they_do_not_apply_are_one_error(make_cfg, extra, message):
    from hubsweep.config.validation import validate

    with pytest.raises(ConfigError, match=message):
        validate(make_cfg(*extra))


def test_layer_wise_decay_needs_adamw(tiny_bert, make_cfg):  # noqa: F811
    from hubsweep.config.validation import validate

    _, pair = tiny_bert
    cfg = _cfg(make_cfg, pair, "embedding.trainable=true", "embedding.layer_lr_decay=0.8", run="x")
    with pytest.raises(ConfigError, match="embedding.layer_lr_decay: needs optimizer=adamw"):
        validate(cfg)


@pytest.mark.slow
def test_the_fine_tuning_study_runs_the_recipe_with_hyperband(
    tiny_bert,  # noqa: F811
    make_cfg,
    fixture_overrides,
    tmp_path,
):
    """experiments/encoders_finetuned.yaml on the tiny checkpoint: the top-2 and full arms
    search the fine-tuning space with AdamW, warm-up, layer-wise decay and Hyperband (the
    adapted arm is the full one on another pair: test_adapt fine-tunes such a pair)."""
    from hubsweep.study.compose import ComposeSpec
    from hubsweep.study.driver import run_sweep
    from hubsweep.study.plan import build_plans

    from .conftest import REPO

    _, pair = tiny_bert
    args = [
        "experiment=encoders_finetuned",
        "~arms.full_tapt",
        f"embedding.preprocess_handle={pair / 'preprocess'}",
        f"embedding.handle={pair / 'encoder'}",
        "embedding.dim=16",
        "embedding.seq_length=32",
        f"results_dir={tmp_path / 'results'}",
        "trainer.eval_every=10",
        "sweep.n_trials=2",
        "sweep.params.steps.low=20",
        "sweep.params.steps.high=40",
        "sweep.params.steps.step=20",
        "sweep.pruner_warmup_steps=10",
        "sweep.finalists=1",
        "sweep.retrain_best_seeds=0",
    ]
    cfg = make_cfg(*args, small=False)
    compose = ComposeSpec(str(REPO / "conf"), (), ())
    plans = build_plans(cfg, [*fixture_overrides, *args], compose)
    assert [p.arm for p in plans] == ["top2", "full"]
    assert plans[0].settings.pruner == "hyperband"
    summary = run_sweep(cfg, [*fixture_overrides, *args], compose)
    for arm in ("top2", "full"):
        best = summary["arms"][arm]["best"]
        assert set(best["params"]) == {
            "optimizer.learning_rate",
            "schedule.warmup_fraction",
            "optimizer.weight_decay",
            "trainer.steps",
            "trainer.batch_size",
        }
        assert 1e-5 <= best["params"]["optimizer.learning_rate"] <= 3e-4


def _padding(batches, lengths) -> float:
    return float(np.mean([1 - lengths[b].sum() / (lengths[b].max() * len(b)) for b in batches]))


def test_batches_bucketed_by_length_cover_every_epoch_and_cut_the_padding():
    from hubsweep.training.classifier import batch_order

    lengths = np.random.default_rng(0).integers(10, 128, size=410)
    stream = batch_order(410, 16, 3, lengths, buckets=5)
    first = [next(stream) for _ in range(25)]  # 400 of the first epoch's 410 examples
    seen = np.concatenate(first)
    assert len(set(seen.tolist())) == 400 and all(len(b) == 16 for b in first)
    second = [next(stream) for _ in range(26)]  # the 10 left over lead the next epoch (420)
    assert set(range(410)) - set(seen.tolist()) <= set(np.concatenate(second).tolist())
    again = batch_order(410, 16, 3, lengths, buckets=5)
    assert all((next(again) == b).all() for b in first)  # a function of the seed
    plain = batch_order(410, 16, 3)
    random_batches = [next(plain) for _ in range(25)]
    # Spans of 5 batches of lengths uniform on 10-127: about 17% padding against 42%.
    assert _padding(first, lengths) < 0.5 * _padding(random_batches, lengths)
    # The spans' sorted batches are shuffled: the stream does not run short to long.
    maxima = [int(lengths[b].max()) for b in first]
    assert maxima != sorted(maxima)
