"""The head on top of the embedding: linear (the reference) or an MLP."""

from __future__ import annotations

import tf_keras as keras
from omegaconf import DictConfig


def build_head(cfg: DictConfig, num_classes: int, seed: int) -> list[keras.layers.Layer]:
    """Layers mapping [batch, dim] vectors to logits.

    Initialisers and dropout are seeded from the run seed so every training path
    (strings, cached features, token ids) starts from the same weights.
    """
    layers: list[keras.layers.Layer] = []
    seeds = iter(range(seed * 1000, seed * 1000 + 1000))
    if cfg.name == "mlp":
        for size in cfg.hidden_sizes:
            init = keras.initializers.GlorotUniform(seed=next(seeds))
            layers.append(keras.layers.Dense(size, cfg.activation, kernel_initializer=init))
            if cfg.dropout > 0:
                layers.append(keras.layers.Dropout(cfg.dropout, seed=next(seeds)))
    init = keras.initializers.GlorotUniform(seed=next(seeds))
    layers.append(keras.layers.Dense(num_classes, kernel_initializer=init, name="logits"))
    return layers
