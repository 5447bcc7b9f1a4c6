"""`hubsweep-adapt`: BERT's masking, the masked-LM loss against an independent NumPy
computation, the encoder written back exactly as read, a resumed adaptation equal to one
that never stopped, only training texts read, and the command end to end on a tiny
checkpoint the tests write, its pair then fine-tuned by a run."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from hydra import compose, initialize_config_dir
from safetensors.numpy import load_file

from hubsweep.adapt.adaptation import adapt, adaptation_texts
from hubsweep.adapt.masking import IGNORED, mask_tokens
from hubsweep.adapt.mlm import MaskedLanguageModel
from hubsweep.adapt.record import (
    ADAPT_FILE,
    CHECKPOINT_DIR,
    adaptation_record,
    adaptation_seconds,
)
from hubsweep.config.schema import register_configs
from hubsweep.data.datasets import load_dataset
from hubsweep.embeddings.transformer.bert import BertConfig, BertEncoder
from hubsweep.training.run import train_and_evaluate

from .conftest import REPO
from .test_transformer import _numpy_bert, write_tiny_checkpoint


def _encoder(checkpoint: Path) -> tuple[BertEncoder, dict]:
    w = load_file(str(checkpoint / "model.safetensors"))
    cfg = BertConfig.from_json(json.loads((checkpoint / "config.json").read_text()))
    return BertEncoder(w, cfg), w


def test_the_encoder_writes_back_exactly_what_it_read(tmp_path):
    encoder, w = _encoder(write_tiny_checkpoint(tmp_path / "ckpt"))
    back = encoder.checkpoint_weights()
    assert set(back) == set(w)
    for name, value in w.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)


def test_masking_picks_and_replaces_as_bert_does():
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 1000, size=(400, 128)).astype(np.int32)
    maskable = rng.random(ids.shape) < 0.9
    inputs, labels = mask_tokens(ids, maskable, np.random.default_rng(1), 0.15, 4, 1000)
    picked = labels != IGNORED
    assert not (picked & ~maskable).any()
    assert picked.sum() / maskable.sum() == pytest.approx(0.15, abs=0.005)
    np.testing.assert_array_equal(labels[picked], ids[picked])
    masked = (inputs == 4) & picked
    kept = (inputs == ids) & picked
    swapped = picked & ~masked & ~kept
    assert masked.sum() / picked.sum() == pytest.approx(0.8, abs=0.01)
    assert kept.sum() / picked.sum() == pytest.approx(0.1 + 0.1 / 1000, abs=0.01)
    assert swapped.sum() / picked.sum() == pytest.approx(0.1, abs=0.01)
    np.testing.assert_array_equal(inputs[~picked], ids[~picked])
    again = mask_tokens(ids, maskable, np.random.default_rng(1), 0.15, 4, 1000)
    np.testing.assert_array_equal(again[0], inputs)
    # A draw that picks nothing still gives the step one token to predict.
    _, labels = mask_tokens(ids[:1, :3], maskable[:1, :3] | True, rng, 1e-9, 4, 1000)
    assert (labels != IGNORED).sum() == 1


def test_the_masked_lm_loss_is_the_reference_math(tmp_path):
    """The loss at the picked positions, against NumPy: the encoder's forward pass
    (test_transformer's), BERT's head (dense, erf GELU, LayerNorm, the tied embeddings and
    a bias) and the mean cross-entropy."""
    from scipy.special import erf, log_softmax

    encoder, w = _encoder(write_tiny_checkpoint(tmp_path / "ckpt"))
    model = MaskedLanguageModel(encoder, seed=3)
    model.bias.assign(np.random.default_rng(2).normal(0, 0.5, model.bias.shape).astype("f4"))
    rng = np.random.default_rng(0)
    ids = rng.integers(5, encoder.config.vocab_size, size=(3, 9)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 6:] = mask[2, 4:] = 0
    labels = np.full_like(ids, IGNORED)
    labels[0, 2], labels[1, 5], labels[2, 1], labels[2, 3] = 7, 9, 11, 13
    seed = tf.constant([0, 0], tf.int64)
    loss = float(model.loss(ids, mask, labels, seed, training=False))

    sequence, _ = _numpy_bert(w, ids, mask)
    h = sequence[labels != IGNORED] @ model.transform.kernel.numpy() + model.transform.bias.numpy()
    h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
    h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-12)
    logits = h @ w["embeddings.word_embeddings.weight"].T + model.bias.numpy()
    targets = labels[labels != IGNORED]
    expected = -log_softmax(logits, axis=-1)[np.arange(len(targets)), targets].mean()
    assert loss == pytest.approx(expected, rel=1e-5)
    # bfloat16 matmuls: the same loss within their precision.
    mixed = float(model.loss(ids, mask, labels, seed, training=False, mixed=True))
    assert mixed == pytest.approx(expected, rel=2e-2)
    # Training draws dropout: another loss, the same for the same seed.
    dropped = [float(model.loss(ids, mask, labels, seed, training=True)) for _ in range(2)]
    assert dropped[0] == dropped[1] != pytest.approx(loss, rel=1e-6)


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    return write_tiny_checkpoint(tmp_path / "ckpt")


@pytest.fixture
def adapt_args(tiny_checkpoint, scicite_dir, tfds_dir) -> list[str]:
    """hubsweep-adapt's overrides for the fixture data and the tiny checkpoint."""
    return [
        f"checkpoint={tiny_checkpoint}",
        f"dataset.source_dir={scicite_dir}",
        f"dataset.data_dir={tfds_dir}",
        "steps=10",
        "batch_size=8",
        "seq_length=32",
        "save_every=4",
        "learning_rate=0.01",
        "progress=false",
    ]


@pytest.fixture
def make(adapt_args, tmp_path):
    """Compose hubsweep-adapt's config, written to tmp_path/<name>."""
    register_configs()

    def compose_adapt(name: str, *overrides: str):
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            return compose(
                "adapt", overrides=[*adapt_args, f"output={tmp_path / name}", *overrides]
            )

    return compose_adapt


def test_adaptation_reads_the_training_texts_only(make):
    cfg = make("out")
    texts = adaptation_texts(cfg)
    data = load_dataset(cfg.dataset)
    np.testing.assert_array_equal(texts, data.splits["train"].texts)
    assert len(texts) < sum(len(s) for s in data.splits.values())


def test_a_resumed_adaptation_equals_one_that_never_stopped(make, tiny_checkpoint):
    tf.config.experimental.enable_op_determinism()
    stopped = make("resumed")
    assert adapt(stopped, until=6) is None  # saved at 4 and at 6, then "interrupted"
    state = next(Path(stopped.work_dir, "state").iterdir())
    assert [json.loads(line)["step"] for line in (state / "loss.jsonl").open()] == [4, 6]
    resumed = adapt(stopped)
    straight = adapt(make("straight"))
    a = load_file(str(resumed / "checkpoint" / "model.safetensors"))
    b = load_file(str(straight / "checkpoint" / "model.safetensors"))
    source = load_file(str(tiny_checkpoint / "model.safetensors"))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # It trained the encoder, not the pooler (the masked LM never reads it).
    query = "encoder.layer.0.attention.self.query.weight"
    assert not np.array_equal(a[query], source[query])
    np.testing.assert_array_equal(a["pooler.dense.weight"], source["pooler.dense.weight"])
    record = adaptation_record(resumed / "encoder")
    assert [e["step"] for e in record["loss"]] == [4, 6, 8, 10]
    assert record["split"] == "train" and record["settings"]["steps"] == 10
    assert adaptation_seconds(record) == pytest.approx(sum(e["seconds"] for e in record["loss"]))
    assert adaptation_seconds(record) > 0
    assert adaptation_record(tiny_checkpoint / "encoder") is None  # not an adapted pair


def test_adapting_lowers_the_masked_lm_loss(make):
    out = adapt(make("long", "steps=80", "save_every=20", "learning_rate=0.003"))
    losses = [
        e["loss"] for e in json.loads((out / CHECKPOINT_DIR / ADAPT_FILE).read_text())["loss"]
    ]
    assert losses[-1] < 0.8 * losses[0], losses


def _adapt_cli(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("hubsweep-adapt")
    assert exe, "the console script is installed with the package"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300)


def test_the_command_writes_a_pair_a_run_fine_tunes(adapt_args, tmp_path, make_cfg):
    out = tmp_path / "adapted"
    proc = _adapt_cli(*adapt_args, "steps=6", f"output={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for part in ("encoder/saved_model.pb", "preprocess/saved_model.pb", "checkpoint/vocab.txt"):
        assert (out / part).is_file(), part
    info = json.loads((out / "hubsweep_transformer.json").read_text())
    assert info["source"] == str((out / "checkpoint").resolve())
    assert not list(tmp_path.glob(".adapted.tmp-*"))
    cfg = make_cfg(
        f"embedding.preprocess_handle={out / 'preprocess'}",
        f"embedding.handle={out / 'encoder'}",
        "embedding.dim=null",
        "embedding.pooling=mean",
        "embedding.seq_length=32",
        "embedding.trainable=true",
        "optimizer=adamw",
        "trainer.steps=4",
        "trainer.eval_every=2",
    )
    assert train_and_evaluate(cfg).status == "completed"

    again = _adapt_cli(*adapt_args, f"output={out}")
    assert again.returncode == 1
    assert f"hubsweep-adapt: error: output: {out} exists" in again.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("steps=0", "error: steps: must be positive, got 0"),
        ("mask_prob=1.5", "error: mask_prob: must be in (0, 1), got 1.5"),
        (
            "seq_length=128",
            "error: seq_length: 128 is above the checkpoint's max_position_embeddings (64)",
        ),
        ("checkpoint=/nonexistent", "error: --transformer /nonexistent: neither a checkpoint"),
    ],
)
def test_bad_settings_are_one_clear_error(adapt_args, tmp_path, override, message):
    proc = _adapt_cli(*adapt_args, f"output={tmp_path / 'out'}", override)
    assert proc.returncode == 1
    assert message in proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_vocabulary_without_mask_is_one_clear_error(adapt_args, tiny_checkpoint, tmp_path):
    vocab = tiny_checkpoint / "vocab.txt"
    vocab.write_text(vocab.read_text().replace("[MASK]\n", "[unused0]\n"))
    proc = _adapt_cli(*adapt_args, f"output={tmp_path / 'out'}")
    assert proc.returncode == 1
    assert f"error: {vocab}: no [MASK] token" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_adapted_arm_counts_its_adaptation_in_its_cost(
    make, make_cfg, fixture_overrides, tmp_path
):
    """Two frozen arms of one sweep, the tiny pair and the same pair adapted: the adapted
    arm's report cost carries the adaptation's seconds once, in its total and not per
    trial, and the budget sentence says so."""
    from hubsweep.embeddings.transformer.convert import convert_checkpoint
    from hubsweep.reports.collect import read_study
    from hubsweep.reports.cost import arm_costs, budget_sentence, cost_table
    from hubsweep.study.driver import run_sweep

    from .test_sweep import COMPOSE, FAST_SWEEP

    adapted = adapt(make("adapted", "steps=4"))
    plain = convert_checkpoint(Path(make("x").checkpoint), tmp_path / "plain", seq_length=32)
    pair = ["embedding.pooling=mean", "embedding.seq_length=32", "embedding.dim=null"]
    args = [
        f"results_dir={tmp_path / 'results'}",
        *FAST_SWEEP,
        "sweep.n_trials=2",
        "sweep.retrain_best_seeds=1",
        *pair,
        f"+arms.plain=['embedding.preprocess_handle={plain}/preprocess',"
        f"'embedding.handle={plain}/encoder']",
        f"+arms.adapted=['embedding.preprocess_handle={adapted}/preprocess',"
        f"'embedding.handle={adapted}/encoder']",
    ]
    run_sweep(make_cfg(*args), [*fixture_overrides, *args], COMPOSE)
    studies = [
        read_study(tmp_path / "results" / "default" / "lr" / a) for a in ("plain", "adapted")
    ]
    costs = arm_costs(studies)
    seconds = adaptation_seconds(adaptation_record(adapted / "encoder"))
    assert costs["plain"].adaptation_s == 0
    assert costs["adapted"].adaptation_s == pytest.approx(seconds) and seconds > 0
    c = costs["adapted"]
    assert c.total_s == pytest.approx(c.search_s + c.finalists_s + c.retrain_s + seconds)
    numbers, text = cost_table(list(costs.values()), "macro_f1", False)
    assert list(text["module adaptation (min)"]) == ["0.00", f"{seconds / 60:.2f}"]
    assert "adapted's module was first adapted" in budget_sentence(studies, costs)
