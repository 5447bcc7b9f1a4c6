"""Load a text-embedding module (TF-Hub handle or local SavedModel) as a Keras layer."""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf
import tensorflow_hub as hub
from omegaconf import DictConfig

from hubsweep.errors import EmbeddingError
from hubsweep.network import require_reachable, tfhub_cached


def _is_remote(handle: str) -> bool:
    return "://" in handle and not handle.startswith("file://")


def load_embedding_layer(cfg: DictConfig) -> hub.KerasLayer:
    """`hub.KerasLayer(handle, trainable=...)`, checked to map strings to float32 [batch, dim]."""
    handle = str(cfg.handle)
    if not _is_remote(handle) and not Path(handle.removeprefix("file://")).is_dir():
        raise EmbeddingError(f"embedding.handle: no SavedModel directory at {handle!r}")
    if _is_remote(handle) and not tfhub_cached(handle):
        require_reachable(
            handle,
            "embedding.handle",
            "offline, set embedding.handle to a local SavedModel directory",
        )
    kwargs = {}
    if cfg.signature:
        kwargs = {"signature": cfg.signature, "output_key": cfg.output_key or "default"}
    try:
        layer = hub.KerasLayer(
            handle, trainable=bool(cfg.trainable), input_shape=[], dtype=tf.string, **kwargs
        )
    except Exception as e:
        hint = ""
        if _is_remote(handle):
            hint = " (offline? set embedding.handle to a local SavedModel directory)"
        raise EmbeddingError(f"embedding.handle: cannot load {handle!r}: {e}{hint}") from e
    if cfg.trainable and not layer.trainable_weights:
        raise EmbeddingError(
            f"embedding.trainable=true but {handle!r} exposes no trainable variables"
        )
    dim = output_dim(layer, handle)
    if cfg.dim is not None and dim != cfg.dim:
        raise EmbeddingError(
            f"embedding.dim={cfg.dim} but {handle!r} outputs {dim}-d vectors; "
            f"set embedding.dim={dim} (or null)"
        )
    return layer


def output_dim(layer: hub.KerasLayer, handle: str) -> int:
    try:
        out = layer(tf.constant(["a probe sentence", ""]))
    except Exception as e:
        raise EmbeddingError(
            f"embedding.handle: {handle!r} does not accept a 1-D string tensor: {e}"
        ) from e
    if out.dtype != tf.float32 or out.shape.rank != 2 or out.shape[0] != 2:
        raise EmbeddingError(
            f"embedding.handle: {handle!r} must return float32 [batch, dim], "
            f"got {out.dtype.name} {out.shape}"
        )
    return int(out.shape[1])
