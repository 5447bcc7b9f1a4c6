"""The schemas of the config groups that say how a head learns: `model` (the head),
`optimizer` and `schedule`, one typed dataclass per choice (`GROUP_SCHEMAS` in `schema`
registers them)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LinearHeadConfig:
    name: str = "linear"


@dataclass
class MLPHeadConfig:
    name: str = "mlp"
    hidden_sizes: list[int] = field(default_factory=lambda: [256])
    activation: str = "relu"
    dropout: float = 0.0


@dataclass
class SGDConfig:
    name: str = "sgd"
    learning_rate: float = 0.01


@dataclass
class MomentumConfig:
    name: str = "momentum"
    learning_rate: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False


@dataclass
class AdamConfig:
    name: str = "adam"
    learning_rate: float = 0.001
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    # Clip the gradients' global norm to this (null: no clipping).
    clipnorm: float | None = None


@dataclass
class AdamWConfig:
    """Adam with decoupled weight decay (Loshchilov & Hutter), the fine-tuning recipe of
    Devlin et al. and the sentence-transformers scripts: lr 2e-5, weight decay 0.01 on all
    but biases and LayerNorm, epsilon 1e-6, the global gradient norm clipped to 1."""

    name: str = "adamw"
    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-6
    clipnorm: float | None = 1.0
    # Variables with one of these in their name get no weight decay (biases, LayerNorm's
    # gamma and beta, the embeddings' norm).
    no_decay: list[str] = field(default_factory=lambda: ["bias", "gamma", "beta", "norm"])


@dataclass
class AdagradConfig:
    name: str = "adagrad"
    learning_rate: float = 0.01
    initial_accumulator_value: float = 0.1
    epsilon: float = 1e-7


@dataclass
class RMSpropConfig:
    name: str = "rmsprop"
    learning_rate: float = 0.001
    rho: float = 0.9
    momentum: float = 0.0
    epsilon: float = 1e-7


@dataclass
class ConstantScheduleConfig:
    name: str = "constant"


@dataclass
class ExponentialScheduleConfig:
    name: str = "exponential"
    decay_steps: int = 1000
    decay_rate: float = 0.9
    staircase: bool = False


@dataclass
class CosineScheduleConfig:
    name: str = "cosine"
    # null: decay over the whole run (trainer.steps).
    decay_steps: int | None = None
    # Final learning rate as a fraction of the initial one.
    alpha: float = 0.0


@dataclass
class WarmupScheduleConfig:
    name: str = "warmup"
    warmup_steps: int = 500
    # The warm-up as a share of trainer.steps instead (the recipe's 10%; searchable).
    warmup_fraction: float | None = None
    # What follows the linear warm-up: "linear" or "cosine" decay to end_factor × lr.
    decay: str = "linear"
    end_factor: float = 0.0
