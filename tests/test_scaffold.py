"""Structural scaffolds (dataset.scaffold_keys): fields read beside each text, predicted by
auxiliary heads while the encoder trains, and unused at evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from omegaconf import OmegaConf

from hubsweep.data.dataset_cache import cached_dataset
from hubsweep.data.datasets import TextDataset, TextSplit, load_dataset
from hubsweep.data.records import scaffold_value
from hubsweep.errors import DataError
from hubsweep.training.build import build_classifier
from hubsweep.training.run import train_and_evaluate
from hubsweep.training.scaffold import Scaffolds

from .test_data import _local_cfg, _write, scicite_through_tfds_and_jsonl
from .test_transformer import _cfg, tiny_bert  # noqa: F401  (fixture)

NO_DROPOUT = ("embedding.hidden_dropout=0", "embedding.attention_dropout=0")
FINE_TUNE = (
    "embedding.trainable=true",
    "embedding.pooling=mean",
    "optimizer=adamw",
    "optimizer.learning_rate=0.001",
)
SCAFFOLD = ("dataset.scaffold_keys=[isKeyCitation]", "dataset.scaffold_min_count=2")


def test_scaffold_values_are_compared_lowercased_letters_only():
    assert scaffold_value("1. Introduction") == "introduction"
    assert scaffold_value("  RESULTS and discussion ") == "results and discussion"
    assert scaffold_value(b"Methods") == "methods"
    assert scaffold_value(np.bool_(True)) == "true" and scaffold_value(False) == "false"
    for missing in (None, float("nan"), "", "  ", "-", ["a"], {"a": 1}):
        assert scaffold_value(missing) == ""
    assert scaffold_value("nan", ("nan",)) == "" and scaffold_value("nan") == "nan"
    assert scaffold_value("Méthodes") == "méthodes" and scaffold_value("ÉTUDE 2") == "étude"
    assert scaffold_value(3) == "3" and scaffold_value("2.5") == "2 5"  # no letters: digits


def test_scaffold_fields_are_read_beside_the_text_and_kept_by_the_dataset_cache(tmp_path):
    _write(
        tmp_path / "train.jsonl",
        [
            '{"text": "good film", "section": "1. Results", "label": "pos"}',
            '{"text": "bad film", "section": NaN, "label": "neg"}',
            '{"text": "odd film", "label": "neg"}',
        ],
    )
    _write(tmp_path / "dev.jsonl", ['{"text": "a film", "section": "Methods", "label": "pos"}'])
    cfg = _local_cfg(tmp_path, scaffold_keys=["section"])
    data = load_dataset(cfg)
    train = data.splits["train"]
    assert list(train.texts) == ["good film", "bad film", "odd film"]  # not read into the text
    assert train.scaffolds.tolist() == [["results"], [""], [""]]
    # Evaluation never reads them: the other splits go without.
    assert data.splits["validation"].scaffolds is None
    assert load_dataset(_local_cfg(tmp_path)).splits["train"].scaffolds is None

    loads = []
    cache = tmp_path / "cache"
    for _ in range(2):  # built, then read back from disk
        got = cached_dataset(cache, cfg, ["train"], lambda: loads.append(1) or data)
        assert got.splits["train"].scaffolds.tolist() == train.scaffolds.tolist()
    assert len(loads) == 1

    # A key no training record has is an error; the other splits need not hold it.
    _write(tmp_path / "dev.jsonl", ['{"text": "a film", "label": "pos"}'])
    assert load_dataset(cfg).splits["train"].scaffolds.tolist() == train.scaffolds.tolist()
    with pytest.raises(DataError, match=r"train.jsonl: no record has 'part' \(dataset.scaffold_"):
        load_dataset(_local_cfg(tmp_path, scaffold_keys=["part"]))


def test_scicite_scaffolds_through_tfds_and_as_jsonl_agree(scicite_dir, tmp_path):
    # TFDS stores isKeyCitation as a bool and a missing sectionName as "nan"; JSON lines a
    # bool and NaN: the same values either way.
    keys = {"scaffold_keys": ["sectionName", "isKeyCitation"]}
    tfds_data, local = scicite_through_tfds_and_jsonl(scicite_dir, tmp_path, **keys)

    def rows(data):
        split = data.splits["train"]
        return sorted(zip(split.texts, map(tuple, split.scaffolds), strict=True))

    # TFDS drops the release's repeated unique_id; the JSON-lines reader keeps it.
    repeated = "A near duplicate of the first line."
    assert rows(tfds_data) == [r for r in rows(local) if r[0] != repeated]
    values = np.array([v for _, v in rows(local)])
    assert set(values[:, 0]) == {"introduction", ""} and set(values[:, 1]) == {"true", "false"}


def _dataset(values: list[str], labels: list[int]) -> TextDataset:
    split = TextSplit(
        np.array([f"t{i}" for i in range(len(values))], dtype=object),
        np.array(labels, np.int32),
        np.array(values, dtype=object).reshape(-1, 1),
    )
    return TextDataset("d", ("a", "b"), {"train": split})


def _scaffold_cfg(min_count=2, weight=0.5):
    return OmegaConf.create(
        {
            "dataset": {"scaffold_keys": ["section"], "scaffold_min_count": min_count},
            "trainer": {"scaffold_weight": weight, "seed": 3},
        }
    )


def test_scaffold_loss_is_the_weighted_mean_cross_entropy_over_the_labelled_examples():
    values = ["intro", "methods", "intro", "", "rare", "methods"]
    scaffolds = Scaffolds(_scaffold_cfg(), _dataset(values, [0, 1, 0, 1, 0, 1]), dim=4)
    assert scaffolds.classes == {"section": ("intro", "methods")}
    assert scaffolds.labels.numpy()[:, 0].tolist() == [0, 1, 0, -1, -1, 1]
    vectors = np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)
    idx = np.array([0, 3, 4, 5])  # two of four labelled
    got = scaffolds.loss(tf.constant(idx), tf.constant(vectors)).numpy()
    kernel, bias = (v.numpy() for v in scaffolds.heads[0].weights)
    logits = vectors @ kernel + bias
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected = 0.5 * -(logp[0, 0] + logp[3, 1]) / 2
    assert got == pytest.approx(expected, rel=1e-5)
    # A batch with no labelled example adds nothing.
    assert scaffolds.loss(tf.constant([3, 4]), tf.constant(vectors[:2])).numpy() == 0.0


def test_a_scaffold_with_fewer_than_two_common_values_is_one_error():
    with pytest.raises(DataError, match=r"'section' has 1 value\(s\).*'intro' \(3\)"):
        Scaffolds(_scaffold_cfg(min_count=2), _dataset(["intro"] * 3 + ["x"], [0] * 4), dim=4)


def test_a_scaffold_adds_its_loss_to_the_step_and_nothing_to_evaluation(
    tiny_bert,  # noqa: F811
    make_cfg,
):
    _, pair = tiny_bert
    plain_cfg = _cfg(make_cfg, pair, *FINE_TUNE, *NO_DROPOUT, run="plain")
    cfg = _cfg(make_cfg, pair, *FINE_TUNE, *NO_DROPOUT, *SCAFFOLD, run="scaffold")
    data = load_dataset(cfg.dataset)
    plain, scaffolded = build_classifier(plain_cfg, data), build_classifier(cfg, data)
    assert scaffolded.path == "encoder token ids" and scaffolded.scaffolds.keys == ["isKeyCitation"]
    idx = tf.constant(np.arange(8))
    # The same initial model (seeded) gives the same logits; the step's loss differs by
    # the scaffold's, computed here from the sentence vectors and its head's weights.
    np.testing.assert_allclose(plain.logits("validation"), scaffolded.logits("validation"))
    vectors = scaffolded.sentence_vectors(scaffolded.gather("train", idx), training=True).numpy()
    kernel, bias = (v.numpy() for v in scaffolded.scaffolds.heads[0].weights)
    logits = vectors @ kernel + bias
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    y = scaffolded.scaffolds.labels.numpy()[:8, 0]
    expected = cfg.trainer.scaffold_weight * -logp[np.arange(8), y].mean()
    difference = scaffolded.step_loss(idx).numpy() - plain.step_loss(idx).numpy()
    assert difference == pytest.approx(expected, rel=1e-4)
    # The fixture's isKeyCitation alternates: both classes are labelled in the batch.
    assert set(y) == {0, 1}

    # Its gradient reaches the encoder: every trained encoder variable's differs (but the
    # attention keys' biases, whose gradient is zero either way: softmax ignores a shift).
    def gradients(classifier):
        with tf.GradientTape() as tape:
            loss = classifier.step_loss(idx)
        grads = tape.gradient(loss, classifier.embedding.trainable_variables)
        return [tf.convert_to_tensor(g).numpy() for g in grads]

    encoder = scaffolded.embedding.trainable_variables
    compared = 0
    for a, b, var in zip(gradients(scaffolded), gradients(plain), encoder, strict=True):
        if "key/bias" in var.name:
            assert np.abs(a).max() < 1e-6 and np.abs(b).max() < 1e-6
            continue
        assert not np.allclose(a, b), var.name
        compared += 1
    assert compared > 10


def test_training_with_a_scaffold_changes_the_scores_not_the_predicted_classes(
    tiny_bert,  # noqa: F811
    make_cfg,
):
    _, pair = tiny_bert
    # Without clipping, where the scaffold heads' gradients would change the step's scale.
    steps = (
        "trainer.steps=40",
        "trainer.eval_every=20",
        "trainer.evaluate_test=true",
        "optimizer.clipnorm=null",
    )
    plain = train_and_evaluate(_cfg(make_cfg, pair, *FINE_TUNE, *steps, run="p"))
    run = train_and_evaluate(
        _cfg(make_cfg, pair, *FINE_TUNE, *steps, *SCAFFOLD, "trainer.scaffold_weight=1", run="s")
    )
    assert run.training_path == plain.training_path == "encoder token ids"
    # The same initial model and batches: the scaffold's gradient made the difference.
    assert (run.final, run.test) != (plain.final, plain.test)
    header = (Path(run.run_dir) / "predictions.csv").read_text().splitlines()[0]
    assert header == (Path(plain.run_dir) / "predictions.csv").read_text().splitlines()[0]


def test_a_bag_of_words_module_fine_tuned_with_a_scaffold_takes_the_token_id_path(make_cfg):
    cfg = make_cfg("embedding.trainable=true", *SCAFFOLD, "trainer.xla=true", run="bow")
    result = train_and_evaluate(cfg)
    assert result.training_path == "token ids"  # not the compiled plain-SGD path
    assert np.isfinite(result.final["macro_f1"])
