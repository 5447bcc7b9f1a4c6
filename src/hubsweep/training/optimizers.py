"""Optimizers and learning-rate schedules from config."""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras
from omegaconf import DictConfig

Schedule = float | keras.optimizers.schedules.LearningRateSchedule


class WarmupThenDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to the peak rate, then linear or cosine decay to end_factor × peak."""

    def __init__(
        self, peak: float, warmup_steps: int, total_steps: int, decay: str, end_factor: float
    ) -> None:
        self.peak = peak
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.decay = decay
        self.end_factor = end_factor

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = self.peak * (step + 1.0) / max(self.warmup_steps, 1)
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
        if self.decay == "cosine":
            shape = 0.5 * (1.0 + tf.cos(math.pi * progress))
        else:
            shape = 1.0 - progress
        decayed = self.peak * (self.end_factor + (1.0 - self.end_factor) * shape)
        return tf.where(step < self.warmup_steps, warm, decayed)

    def get_config(self) -> dict:
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "decay": self.decay,
            "end_factor": self.end_factor,
        }


def build_schedule(cfg: DictConfig, learning_rate: float, total_steps: int) -> Schedule:
    schedules = keras.optimizers.schedules
    if cfg.name == "exponential":
        return schedules.ExponentialDecay(
            learning_rate, cfg.decay_steps, cfg.decay_rate, staircase=cfg.staircase
        )
    if cfg.name == "cosine":
        return schedules.CosineDecay(learning_rate, cfg.decay_steps or total_steps, cfg.alpha)
    if cfg.name == "warmup":
        return WarmupThenDecay(
            learning_rate, cfg.warmup_steps, total_steps, cfg.decay, cfg.end_factor
        )
    return learning_rate


def build_optimizer(
    cfg: DictConfig, schedule_cfg: DictConfig, total_steps: int
) -> keras.optimizers.legacy.Optimizer:
    """Keras's v2 ("legacy") optimizers: they apply the sparse gradients of an embedding
    table to the rows a batch touched (measured: SGD 0.03 ms/step against 8 ms/step for
    the current optimizers, which update the whole 34k x 128 table)."""
    lr = build_schedule(schedule_cfg, cfg.learning_rate, total_steps)
    opt = keras.optimizers.legacy
    if cfg.name == "momentum":
        return opt.SGD(lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.name == "adam":
        return opt.Adam(lr, beta_1=cfg.beta_1, beta_2=cfg.beta_2, epsilon=cfg.epsilon)
    if cfg.name == "adagrad":
        return opt.Adagrad(
            lr, initial_accumulator_value=cfg.initial_accumulator_value, epsilon=cfg.epsilon
        )
    if cfg.name == "rmsprop":
        return opt.RMSprop(lr, rho=cfg.rho, momentum=cfg.momentum, epsilon=cfg.epsilon)
    return opt.SGD(lr)
