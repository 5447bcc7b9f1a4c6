"""TensorBoard event files for a run: curves, and the HParams plugin's view of the run.

Each run directory gets its own event file, so `tensorboard --logdir results/<experiment>`
lists every single run, grid job, trial and re-run as a TensorBoard run, and the HParams
dashboard (table, parallel coordinates, scatter) compares them. Written with
TensorBoard's own protocol-buffer summaries (the scalar plugin's `scalar_pb`, the
HParams plugin's `hparams_pb`) and its Python event-file writer, not TensorFlow ops: a
frozen trial evaluates 40 times, and 280 eager summary ops cost it ~15%. The HParams
plugin infers the metric columns from the scalar tags. `trainer.tensorboard=false`
writes nothing.
"""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hubsweep.metrics import METRICS
from hubsweep.results.artifacts import flat_config

# Config keys shown as hyperparameters (whole groups by prefix): what a sweep varies or an
# arm sets, without paths, switches for speed or output, and dataset settings.
HPARAM_PREFIXES = ("model.", "optimizer.", "schedule.")
HPARAM_KEYS = (
    "embedding.name",
    "embedding.trainable",
    "embedding.trainable_layers",
    "embedding.pooling",
    "trainer.steps",
    "trainer.batch_size",
    "trainer.seed",
    "trainer.class_weight",
    "trainer.scaffold_weight",
    "trainer.decision",
    "trainer.ema_decay",
    "trainer.label_smoothing",
)
TRAIN_LOSS, LEARNING_RATE = "train/loss", "train/learning_rate"


def metric_tag(split: str, metric: str) -> str:
    return f"{split}/{metric}"


def hparams_of(cfg: DictConfig) -> dict[str, bool | int | float | str]:
    """The run's hyperparameters as the HParams plugin takes them (lists as text)."""
    flat = flat_config(OmegaConf.to_container(cfg, resolve=True))
    chosen = {k: v for k, v in flat.items() if k.startswith(HPARAM_PREFIXES) or k in HPARAM_KEYS}
    if not flat.get("embedding.preprocess_handle"):
        chosen.pop("embedding.pooling", None)  # only BERT-family pairs pool
    if not flat.get("dataset.scaffold_keys"):
        chosen.pop("trainer.scaffold_weight", None)  # weighs nothing without scaffolds
    return {
        k: v if isinstance(v, bool | int | float | str) else str(list(v))
        for k, v in sorted(chosen.items())
        if v is not None
    }


class EventLog:
    """One run's event file, written by a background thread; `close` flushes it."""

    def __init__(self, run_dir: Path, cfg: DictConfig, session: str) -> None:
        from tensorboard.plugins.hparams.summary_v2 import hparams_pb
        from tensorboard.plugins.scalar.summary_v2 import scalar_pb
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._scalar_pb = scalar_pb
        self.writer = EventFileWriter(str(run_dir))
        self._add(hparams_pb(hparams_of(cfg), trial_id=session), step=0)

    def _add(self, summary, step: int) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        # The builders return TensorFlow's Summary class when TensorFlow is installed; the
        # bytes are the same message.
        summary = Summary.FromString(summary.SerializeToString())
        self.writer.add_event(Event(summary=summary, wall_time=time.time(), step=step))

    def _scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self._add(self._scalar_pb(tag, float(value)), step)

    def evaluation(self, step: int, metrics: dict, train_loss: float, lr: float) -> None:
        scalars = {TRAIN_LOSS: train_loss, LEARNING_RATE: lr}
        scalars |= {metric_tag("validation", m): metrics[m] for m in METRICS}
        self._scalars(step, scalars)

    def test(self, step: int, metrics: dict) -> None:
        self._scalars(step, {metric_tag("test", m): metrics[m] for m in METRICS})

    def close(self) -> None:
        self.writer.close()
