"""Load a text-embedding module (TF-Hub handle or local SavedModel) as a Keras layer."""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf
import tensorflow_hub as hub
from omegaconf import DictConfig

from hubsweep.data.network import require_reachable, tfhub_cached
from hubsweep.errors import EmbeddingError


def _is_remote(handle: str) -> bool:
    return "://" in handle and not handle.startswith("file://")


def _check_handle(handle: str, key: str) -> None:
    """A local SavedModel directory exists; a remote handle is cached or reachable."""
    if not _is_remote(handle) and not Path(handle.removeprefix("file://")).is_dir():
        raise EmbeddingError(f"{key}: no SavedModel directory at {handle!r}")
    if _is_remote(handle) and not tfhub_cached(handle):
        require_reachable(handle, key, f"offline, set {key} to a local SavedModel directory")


def _load_encoder_pair(cfg: DictConfig):
    """A BERT-family preprocessing + encoder pair as one strings -> vectors layer."""
    from hubsweep.embeddings.transformer.layer import BertSentenceEmbedding

    _check_handle(str(cfg.preprocess_handle), "embedding.preprocess_handle")
    try:
        return BertSentenceEmbedding(
            str(cfg.preprocess_handle),
            str(cfg.handle),
            seq_length=cfg.seq_length,
            pooling=cfg.pooling,
            trainable=bool(cfg.trainable),
            trainable_layers=cfg.trainable_layers,
        )
    except EmbeddingError:
        raise
    except Exception as e:
        raise EmbeddingError(
            f"embedding: cannot load the pair preprocess_handle={cfg.preprocess_handle!r}, "
            f"handle={cfg.handle!r}: {e}"
        ) from e


def load_embedding_layer(cfg: DictConfig) -> hub.KerasLayer:
    """`hub.KerasLayer(handle, trainable=...)`, checked to map strings to float32 [batch, dim]
    (for a BERT-family pair, the sentence-embedding layer around both)."""
    handle = str(cfg.handle)
    _check_handle(handle, "embedding.handle")
    if cfg.get("preprocess_handle"):
        layer = _load_encoder_pair(cfg)
        return _checked(layer, cfg, handle)
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
    return _checked(layer, cfg, handle)


def _checked(layer, cfg: DictConfig, handle: str):
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
