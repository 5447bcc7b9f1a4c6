"""The classifier: embedding layer → head (linear, as in the reference, or an MLP)."""

from __future__ import annotations

import tf_keras as keras
from omegaconf import DictConfig


def build_head(cfg: DictConfig, num_classes: int) -> list[keras.layers.Layer]:
    layers: list[keras.layers.Layer] = []
    if cfg.name == "mlp":
        for size in cfg.hidden_sizes:
            layers.append(keras.layers.Dense(size, activation=cfg.activation))
            if cfg.dropout > 0:
                layers.append(keras.layers.Dropout(cfg.dropout))
    layers.append(keras.layers.Dense(num_classes, name="logits"))
    return layers


def build_classifier(
    embedding: keras.layers.Layer, cfg: DictConfig, num_classes: int
) -> keras.Sequential:
    """Strings in, logits out."""
    return keras.Sequential([embedding, *build_head(cfg, num_classes)])
