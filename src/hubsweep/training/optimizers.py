"""Optimizers and learning-rate schedules from config, and AdamW (the fine-tuning recipe's
optimizer, with per-variable rates for layer-wise decay)."""

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


class DenseSparseUpdates:
    """A legacy Keras optimizer's sparse gradient (an embedding table's) applied as the dense
    one it stands for, through its dense update: for Adam-style updates, whose moments move
    every row whether or not a batch touched it."""

    def _resource_apply_sparse(self, grad, var, indices, apply_state=None):
        dense = tf.math.unsorted_segment_sum(grad, indices, tf.shape(var)[0])
        return self._resource_apply_dense(dense, var, apply_state)


class AdamW(DenseSparseUpdates, keras.optimizers.legacy.Optimizer):
    """Adam with decoupled weight decay, as PyTorch's `torch.optim.AdamW` (and Hugging
    Face's fine-tuning scripts) step: w -= lr·wd·w (not for variables named in `no_decay`),
    then the bias-corrected Adam step lr·m̂ / (√v̂ + ε). `multipliers` (variable ref →
    factor) scale one variable's rate, decay included: layer-wise learning-rate decay.

    A legacy (v2) Keras optimizer like the others here, so `global_clipnorm` clips the
    gradients' global norm as they arrive. A sparse gradient (an embedding table's) is
    applied as the dense one it stands for: decay and moments touch every row, as in
    PyTorch.
    """

    def __init__(
        self,
        learning_rate: Schedule,
        weight_decay: float,
        beta_1: float,
        beta_2: float,
        epsilon: float,
        no_decay: tuple[str, ...] = (),
        global_clipnorm: float | None = None,
        name: str = "AdamW",
    ) -> None:
        super().__init__(name, global_clipnorm=global_clipnorm)
        self._set_hyper("learning_rate", learning_rate)
        self.weight_decay, self.beta_1, self.beta_2, self.epsilon = (
            weight_decay,
            beta_1,
            beta_2,
            epsilon,
        )
        self.no_decay = tuple(no_decay)
        self.multipliers: dict = {}

    @classmethod
    def configured(cls, learning_rate: Schedule, cfg: DictConfig) -> AdamW:
        """From a config with AdamWConfig's keys (optimizer=adamw; hubsweep-adapt's)."""
        return cls(
            learning_rate,
            cfg.weight_decay,
            cfg.beta_1,
            cfg.beta_2,
            cfg.epsilon,
            tuple(cfg.no_decay),
            global_clipnorm=cfg.clipnorm,
        )

    def decays(self, var: tf.Variable) -> bool:
        return self.weight_decay > 0 and not any(p in var.name for p in self.no_decay)

    def _create_slots(self, var_list):
        for var in var_list:
            self.add_slot(var, "m")
            self.add_slot(var, "v")

    def _resource_apply_dense(self, grad, var, apply_state=None):
        dtype = var.dtype.base_dtype
        lr = self._decayed_lr(dtype) * self.multipliers.get(var.ref(), 1.0)
        t = tf.cast(self.iterations + 1, dtype)
        if self.decays(var):
            var.assign_sub(var * (lr * self.weight_decay))
        beta_1_power, beta_2_power = tf.pow(self.beta_1, t), tf.pow(self.beta_2, t)
        # TensorFlow's fused Adam kernel (one pass over var, m and v: a fine-tuned BERT's
        # word table alone is 11.7 M weights) adds epsilon to √v, PyTorch to √v̂ =
        # √v / √(1 − β₂ᵗ): the same step with epsilon scaled by √(1 − β₂ᵗ).
        return tf.raw_ops.ResourceApplyAdam(
            var=var.handle,
            m=self.get_slot(var, "m").handle,
            v=self.get_slot(var, "v").handle,
            beta1_power=beta_1_power,
            beta2_power=beta_2_power,
            lr=lr,
            beta1=tf.constant(self.beta_1, dtype),
            beta2=tf.constant(self.beta_2, dtype),
            epsilon=self.epsilon * tf.sqrt(1.0 - beta_2_power),
            grad=grad,
            use_locking=self._use_locking,
        )

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "learning_rate": self._serialize_hyperparameter("learning_rate"),
            "weight_decay": self.weight_decay,
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
            "no_decay": list(self.no_decay),
        }


class Adam(DenseSparseUpdates, keras.optimizers.legacy.Adam):
    """Keras's Adam, a sparse gradient (an embedding table's) applied as the dense one it
    stands for, through the fused kernel. The same step: Adam's moments decay on every row
    either way, and Keras's sparse update reads the moments and the table whole besides
    (after a scatter, each read copies them): 91.8 against 60.5 ms a fine-tuned MiniLM's
    update (benchmarks/bench_adamw.py)."""


def build_schedule(cfg: DictConfig, learning_rate: float, total_steps: int) -> Schedule:
    schedules = keras.optimizers.schedules
    if cfg.name == "exponential":
        return schedules.ExponentialDecay(
            learning_rate, cfg.decay_steps, cfg.decay_rate, staircase=cfg.staircase
        )
    if cfg.name == "cosine":
        return schedules.CosineDecay(learning_rate, cfg.decay_steps or total_steps, cfg.alpha)
    if cfg.name == "warmup":
        fraction = cfg.get("warmup_fraction")
        warmup = cfg.warmup_steps if fraction is None else round(fraction * total_steps)
        return WarmupThenDecay(learning_rate, warmup, total_steps, cfg.decay, cfg.end_factor)
    return learning_rate


def build_optimizer(
    cfg: DictConfig, schedule_cfg: DictConfig, total_steps: int
) -> keras.optimizers.legacy.Optimizer:
    """Keras's v2 ("legacy") optimizers: SGD, momentum, Adagrad and RMSprop apply the sparse
    gradients of an embedding table to the rows a batch touched (measured: SGD 0.03 ms/step
    against 8 ms/step for the current optimizers, which update the whole 34k x 128 table);
    Adam and AdamW, whose moments move every row anyway, update densely, fused."""
    lr = build_schedule(schedule_cfg, cfg.learning_rate, total_steps)
    opt = keras.optimizers.legacy
    if cfg.name == "momentum":
        return opt.SGD(lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.name == "adam":
        return Adam(
            lr,
            beta_1=cfg.beta_1,
            beta_2=cfg.beta_2,
            epsilon=cfg.epsilon,
            global_clipnorm=cfg.get("clipnorm"),
        )
    if cfg.name == "adamw":
        return AdamW.configured(lr, cfg)
    if cfg.name == "adagrad":
        return opt.Adagrad(
            lr, initial_accumulator_value=cfg.initial_accumulator_value, epsilon=cfg.epsilon
        )
    if cfg.name == "rmsprop":
        return opt.RMSprop(lr, rho=cfg.rho, momentum=cfg.momentum, epsilon=cfg.epsilon)
    return opt.SGD(lr)
