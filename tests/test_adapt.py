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
from hubsweep.adapt.masking import IGNORED, mask_tokens, pad_batch
from hubsweep.adapt.mlm import MaskedLanguageModel, pretrained_head
from hubsweep.adapt.vocabulary import Vocabulary
from hubsweep.config.schema import register_configs
from hubsweep.data.datasets import load_dataset
from hubsweep.embeddings.transformer.adapted import (
    ADAPT_FILE,
    CHECKPOINT_DIR,
    adaptation_record,
    adaptation_seconds,
)
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


def _with_head(w: dict, rng: np.random.Generator, older_names: bool) -> dict:
    """The checkpoint's weights with a pretrained masked-LM head, as BertForMaskedLM saves
    it (LayerNorm's parameters as weight/bias, or in older checkpoints gamma/beta)."""
    hidden, vocab = w["embeddings.word_embeddings.weight"].shape[::-1]
    gamma, beta = ("gamma", "beta") if older_names else ("weight", "bias")

    def n(*shape, mean=0.0):
        return (mean + rng.normal(0, 0.3, shape)).astype(np.float32)

    return {
        **w,
        "cls.predictions.transform.dense.weight": n(hidden, hidden),
        "cls.predictions.transform.dense.bias": n(hidden),
        f"cls.predictions.transform.LayerNorm.{gamma}": n(hidden, mean=1.0),
        f"cls.predictions.transform.LayerNorm.{beta}": n(hidden),
        "cls.predictions.bias": n(vocab),
        "cls.predictions.decoder.weight": w["embeddings.word_embeddings.weight"],
    }


@pytest.mark.parametrize("older_names", [False, True])
def test_the_masked_lm_loss_is_the_reference_math(tmp_path, older_names):
    """The loss at the picked positions, against NumPy: the encoder's forward pass
    (test_transformer's), the checkpoint's own head (dense, erf GELU, LayerNorm, the tied
    embeddings and a bias; every parameter random, so each one counts) and the mean
    cross-entropy."""
    from scipy.special import erf, log_softmax

    encoder, w = _encoder(write_tiny_checkpoint(tmp_path / "ckpt"))
    w = _with_head(w, np.random.default_rng(2), older_names)
    model = MaskedLanguageModel(encoder, seed=3, head=pretrained_head(w))
    assert model.pretrained
    rng = np.random.default_rng(0)
    ids = rng.integers(5, encoder.config.vocab_size, size=(3, 9)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 6:] = mask[2, 4:] = 0
    labels = np.full_like(ids, IGNORED)
    labels[0, 2], labels[1, 5], labels[2, 1], labels[2, 3] = 7, 9, 11, 13
    seed = tf.constant([0, 0], tf.int64)
    loss = float(model.loss(ids, mask, labels, seed, training=False))

    p = "cls.predictions."
    gamma, beta = ("gamma", "beta") if older_names else ("weight", "bias")
    sequence, _ = _numpy_bert(w, ids, mask)
    h = sequence[labels != IGNORED] @ w[p + "transform.dense.weight"].T
    h = h + w[p + "transform.dense.bias"]
    h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
    h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-12)
    h = h * w[f"{p}transform.LayerNorm.{gamma}"] + w[f"{p}transform.LayerNorm.{beta}"]
    logits = h @ w["embeddings.word_embeddings.weight"].T + w[p + "bias"]
    targets = labels[labels != IGNORED]
    expected = -log_softmax(logits, axis=-1)[np.arange(len(targets)), targets].mean()
    assert loss == pytest.approx(expected, rel=1e-5)
    # bfloat16 matmuls: the same loss within their precision.
    mixed = float(model.loss(ids, mask, labels, seed, training=False, mixed=True))
    assert mixed == pytest.approx(expected, rel=2e-2)
    # Training draws dropout: another loss, the same for the same seed.
    dropped = [float(model.loss(ids, mask, labels, seed, training=True)) for _ in range(2)]
    assert dropped[0] == dropped[1] != pytest.approx(loss, rel=1e-6)


def test_without_a_shipped_head_a_new_one_starts_as_bert_initialises_it(tmp_path):
    encoder, w = _encoder(write_tiny_checkpoint(tmp_path / "ckpt"))
    assert pretrained_head(w) is None
    model = MaskedLanguageModel(encoder, seed=3)
    assert not model.pretrained
    kernel = model.transform.kernel.numpy()
    assert abs(kernel.std() - 0.02) < 0.005 and abs(kernel.mean()) < 0.005
    for zero in (model.transform.bias, model.norm.beta, model.bias):
        assert not zero.numpy().any()
    np.testing.assert_array_equal(model.norm.gamma.numpy(), 1.0)
    again = MaskedLanguageModel(_encoder(tmp_path / "ckpt")[0], seed=3)
    np.testing.assert_array_equal(again.transform.kernel.numpy(), kernel)


def test_special_tokens_and_padding_are_never_picked(tiny_checkpoint):
    vocab = Vocabulary(tiny_checkpoint, lower=True, seq_length=32)
    rows = vocab.rows(np.array(["we use the protocol", "", "   ", "cells virus data model"]))
    assert len(rows) == 2  # the texts without a wordpiece are left out
    inputs, mask, labels = vocab.masked(rows * 200, np.random.default_rng(0), prob=0.5)
    ids, _ = pad_batch(rows * 200, 8, vocab.preprocess.pad_id)
    picked = labels != IGNORED
    assert not picked[np.isin(ids, vocab.special)].any()
    assert not picked[mask == 0].any()
    words = (mask == 1) & ~np.isin(ids, vocab.special)
    assert picked[words].mean() == pytest.approx(0.5, abs=0.03)


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
    losses = state / "loss.jsonl"
    assert [json.loads(line)["step"] for line in losses.open()] == [4, 6]
    # A process killed after logging step 8 but before saving its state, mid-line too.
    with losses.open("a") as f:
        f.write(json.dumps({"step": 8, "loss": 9.9, "seconds": 1.0}) + '\n{"step": 8, "lo')
    leftover = Path(stopped.output).parent / ".resumed.tmp-99999"  # a killed write's
    (leftover / "checkpoint").mkdir(parents=True)
    resumed = adapt(stopped)
    assert not leftover.exists()
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
    # A handle as TF-Hub also takes it (file://) finds the same record; a URL finds none.
    assert adaptation_record(f"file://{resumed.resolve()}/encoder") == record
    assert adaptation_record("https://tfhub.dev/google/some/encoder/1") is None


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
    run = train_and_evaluate(cfg)
    assert run.status == "completed"
    # The run records its pair's adaptation (once per module: not in its own seconds), and
    # a runs report shows it in its own column from the run alone, the pair moved away.
    record = adaptation_record(out / "encoder")
    recorded = json.loads((Path(run.run_dir) / "final.json").read_text())["module_adaptation"]
    assert recorded == {
        "record": str((out / CHECKPOINT_DIR / ADAPT_FILE).resolve()),
        "source": record["source"],
        "steps": 6,
        "seconds": pytest.approx(adaptation_seconds(record)),
    }
    from hubsweep.reports.collect import collect
    from hubsweep.reports.tables import ADAPTATION_COLUMN, runs_table

    shutil.move(out, tmp_path / "moved")
    numbers, text = runs_table(collect(Path(run.run_dir).parent).groups)
    assert list(text[ADAPTATION_COLUMN]) == [f"{adaptation_seconds(record) / 60:.1f}"]
    assert numbers["module_adaptation_s"].tolist() == [pytest.approx(adaptation_seconds(record))]
    shutil.move(tmp_path / "moved", out)

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
        ("checkpoint=/nonexistent", "error: checkpoint: /nonexistent: neither a checkpoint"),
        ("seed=-1", "error: seed: must be >= 0, got -1"),
        ("beta_2=1", "error: beta_2: must be in [0, 1), got 1"),
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
    make, make_cfg, fixture_overrides, tmp_path, monkeypatch
):
    """Frozen arms of one sweep run from tmp_path with relative handles: the tiny pair, the
    same pair adapted, and a second arm on the adapted pair. The first adapted arm's report
    cost carries the adaptation's seconds once, in its total and not per trial (the second
    arm on it is not charged again); the budget sentence says so; and a report made from
    another directory finds the pair all the same."""
    from hubsweep.embeddings.transformer.convert import convert_checkpoint
    from hubsweep.reports.collect import read_study
    from hubsweep.reports.cost import arm_costs, budget_sentence, cost_table
    from hubsweep.study.driver import run_sweep

    from .test_sweep import COMPOSE, FAST_SWEEP

    monkeypatch.chdir(tmp_path)
    adapt(make("adapted", "steps=4"))
    convert_checkpoint(Path(make("x").checkpoint), Path("plain"), seq_length=32)
    pair = ["embedding.pooling=mean", "embedding.seq_length=32", "embedding.dim=null"]

    def arm(name: str, pair_dir: str, *more: str) -> str:
        handles = [
            f"'embedding.preprocess_handle={pair_dir}/preprocess'",
            f"'embedding.handle={pair_dir}/encoder'",
            *more,
        ]
        return f"+arms.{name}=[{','.join(handles)}]"

    args = [
        "results_dir=results",
        *FAST_SWEEP,
        "sweep.n_trials=2",
        "sweep.retrain_best_seeds=1",
        *pair,
        arm("plain", "plain"),
        arm("adapted", "adapted"),
        arm("again", "adapted", "'model=mlp'"),
    ]
    run_sweep(make_cfg(*args), [*fixture_overrides, *args], COMPOSE)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    arms = ("plain", "adapted", "again")
    studies = [read_study(tmp_path / "results" / "default" / "lr" / a) for a in arms]
    costs = arm_costs(studies)
    seconds = adaptation_seconds(adaptation_record(tmp_path / "adapted" / "encoder"))
    assert seconds > 0
    assert [costs[a].adaptation_s for a in arms] == [0, pytest.approx(seconds), 0]
    c = costs["adapted"]
    assert c.total_s == pytest.approx(c.search_s + c.finalists_s + c.retrain_s + seconds)
    numbers, text = cost_table(list(costs.values()), "macro_f1", False)
    assert list(text["module adaptation (min)"]) == ["0.00", f"{seconds / 60:.2f}", "0.00"]
    sentence = budget_sentence(studies, costs)
    assert "adapted's module was first adapted" in sentence and "again's" not in sentence
    # Made where the pair is not (results copied elsewhere, modules/ removed): the runs'
    # final.json still carry it.
    shutil.move(tmp_path / "adapted", tmp_path / "gone")
    studies = [read_study(tmp_path / "results" / "default" / "lr" / a) for a in arms]
    assert [arm_costs(studies)[a].adaptation_s for a in arms] == [0, pytest.approx(seconds), 0]


def test_an_output_with_a_trailing_slash_keeps_its_work_dir_beside_it(make, tmp_path):
    cfg = make("x", f"output={tmp_path}/pair/")
    assert cfg.work_dir == f"{tmp_path}/pair.work"
