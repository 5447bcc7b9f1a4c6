"""TensorBoard event files, read back with TensorBoard's own readers: the curves, and the
HParams plugin's session data carrying the run's hyperparameters."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata

from hubsweep.results.artifacts import read_metrics
from hubsweep.training.run import train_and_evaluate


def _events(run_dir: str) -> EventAccumulator:
    acc = EventAccumulator(run_dir, size_guidance={"tensors": 0})
    acc.Reload()
    return acc


def _scalar(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    import tensorflow as tf

    return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]


def test_a_run_writes_curves_and_hparams_tensorboard_reads(make_cfg):
    cfg = make_cfg("trainer.evaluate_test=true", "model=mlp", "optimizer=adam", "schedule=cosine")
    result = train_and_evaluate(cfg)
    acc = _events(result.run_dir)
    lines = read_metrics(result.run_dir)
    validation = [m for m in lines if m["split"] == "validation"]
    for metric in ("accuracy", "macro_f1", "loss"):
        assert _scalar(acc, f"validation/{metric}") == [
            (m["step"], pytest.approx(m[metric], rel=1e-6)) for m in validation
        ]
    test = [m for m in lines if m["split"] == "test"][0]
    assert _scalar(acc, "test/accuracy") == [(60, pytest.approx(test["accuracy"], rel=1e-6))]
    assert _scalar(acc, "train/loss") == [
        (m["step"], pytest.approx(m["train_loss"], rel=1e-6)) for m in validation
    ]
    lr = [v for _, v in _scalar(acc, "train/learning_rate")]
    assert lr[0] < cfg.optimizer.learning_rate and lr == sorted(lr, reverse=True)  # cosine

    # The HParams plugin's session start: the run's hyperparameters, typed.
    content = acc.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    start = hparams_metadata.parse_session_start_info_plugin_data(
        content[hparams_metadata.SESSION_START_INFO_TAG]
    )
    values = {
        k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
        for k, v in start.hparams.items()
    }
    assert values["optimizer.name"] == "adam"
    assert values["optimizer.learning_rate"] == pytest.approx(cfg.optimizer.learning_rate)
    assert values["model.name"] == "mlp" and values["model.hidden_sizes"] == "[256]"
    assert values["trainer.batch_size"] == cfg.trainer.batch_size
    assert values["embedding.trainable"] is False
    assert "embedding.pooling" not in values  # a bag-of-words module does not pool tokens
    assert not any(k.startswith(("dataset.", "output_dir", "cache_dir")) for k in values)
    assert start.group_name == str(Path(result.run_dir).resolve())  # outside results_dir


def _session(run_dir: str) -> str:
    content = _events(run_dir).PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    tag = hparams_metadata.SESSION_START_INFO_TAG
    return hparams_metadata.parse_session_start_info_plugin_data(content[tag]).group_name


def test_each_run_is_its_own_session_under_the_experiment(make_cfg, tmp_path):
    # Trial 0 of two arms: TensorBoard merges sessions that share a name, so the name is the
    # run's path under results/<experiment>, as `tensorboard --logdir` shows it.
    names = []
    for arm in ("frozen", "finetuned"):
        out = tmp_path / "results" / "exp" / "s" / arm / "trials" / "0000" / "seed0"
        cfg = make_cfg(f"results_dir={tmp_path / 'results'}", "experiment_name=exp", run=str(out))
        names.append(_session(train_and_evaluate(cfg).run_dir))
    assert names == ["s/frozen/trials/0000/seed0", "s/finetuned/trials/0000/seed0"]


def test_tensorboard_off_writes_no_event_file(make_cfg):
    result = train_and_evaluate(make_cfg("trainer.tensorboard=false"))
    assert not list(Path(result.run_dir).glob("events.out.tfevents.*"))
