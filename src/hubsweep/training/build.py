"""`build_classifier`: the fastest way to compute a run's model that applies to it (see
training/classifier.py for the ways), and the frozen module's cached vectors."""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf
import tf_keras as keras
from omegaconf import DictConfig

from hubsweep.data.datasets import TextDataset
from hubsweep.embeddings.features import FeatureCache
from hubsweep.embeddings.loading import load_embedding_layer
from hubsweep.embeddings.transformer.layer import warn_if_bfloat16_emulated
from hubsweep.errors import EmbeddingError
from hubsweep.training.classifier import (
    Classifier,
    CompiledTokenIdClassifier,
    FeatureClassifier,
    StringClassifier,
    TokenIdClassifier,
)
from hubsweep.training.encoder_path import encoder_classifier
from hubsweep.training.head import build_head
from hubsweep.training.optimizers import build_optimizer
from hubsweep.training.scaffold import Scaffolds

log = logging.getLogger(__name__)


def _embed_in_batches(layer, texts: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate(
        [
            layer(tf.constant(list(texts[i : i + batch_size]))).numpy()
            for i in range(0, len(texts), batch_size)
        ]
    )


def _token_table(layer) -> tf.Variable | None:
    """The embedding table of a hubsweep-exported module (None for any other module)."""
    obj = getattr(layer, "resolved_object", None)
    if hasattr(obj, "token_ids") and hasattr(obj, "embeddings"):
        return obj.embeddings
    return None


def _encoder_identity(e: DictConfig) -> tuple[str, str] | None:
    """What else decides a BERT-family pair's vectors: its preprocessor, length, pooling."""
    if not e.get("preprocess_handle"):
        return None
    return str(e.preprocess_handle), f"seq_length={e.seq_length},pooling={e.pooling}"


def build_classifier(
    cfg: DictConfig, data: TextDataset, cache: FeatureCache | None = None, layer=None
) -> Classifier:
    """`layer`: the embedding layer when the caller holds it loaded (a frozen one)."""
    t, e = cfg.trainer, cfg.embedding
    layer = layer if layer is not None else load_embedding_layer(e)
    head = keras.Sequential(build_head(cfg.model, data.num_classes, t.seed), name="head")
    model = keras.Sequential([layer, head])
    model(tf.constant(["build"]))
    optimizer = build_optimizer(cfg.optimizer, cfg.schedule, t.steps)
    if e.get("layer_lr_decay") is not None:
        optimizer.multipliers = layer.lr_multipliers(e.layer_lr_decay)
    if hasattr(layer, "seed_dropout"):  # a BERT-family pair
        layer.set_dropout(e.get("hidden_dropout"), e.get("attention_dropout"))
        layer.seed_dropout(t.seed)
        if t.mixed_precision and not layer.layerwise:
            raise EmbeddingError(
                "trainer.mixed_precision: needs an encoder exported by hubsweep-export (it "
                f"runs its layers in bfloat16); {e.handle} is not one (export it again)"
            )
        layer.mixed = bool(t.mixed_precision)
        if layer.mixed:
            warn_if_bfloat16_emulated("trainer.mixed_precision")
    scaffolds = None
    if cfg.dataset.get("scaffold_keys"):  # the head's input width: its first layer's
        scaffolds = Scaffolds(cfg, data, int(head.layers[0].kernel.shape[0]))
        for key, share in scaffolds.labelled_fraction().items():
            classes = scaffolds.classes[key]
            log.info(
                "scaffold %s: %d classes (%s), %.0f%% of the training examples labelled",
                key,
                len(classes),
                ", ".join(classes),
                100 * share,
            )
    args = (
        model,
        head,
        optimizer,
        data,
        t.eval_batch_size,
        t.class_weight,
        scaffolds,
        t.ema_decay,
        t.xla,
        t.label_smoothing,
    )
    if not e.trainable and t.feature_cache:
        return FeatureClassifier(*args, features=frozen_features(cfg, data, cache, layer))
    if e.trainable and t.fast_path and getattr(layer, "layerwise", False):
        return encoder_classifier(cfg, data, layer, args, cache)
    table = _token_table(layer) if e.trainable and t.fast_path else None
    if table is not None:
        token_ids = layer.resolved_object.token_ids
        ids = {
            role: token_ids(tf.constant(list(split.texts))) for role, split in data.splits.items()
        }
        plain_sgd = cfg.optimizer.name == "sgd" and not cfg.model.get("dropout", 0)
        if plain_sgd and t.xla and scaffolds is not None:
            log.info("scaffolds: the token-id path, not the compiled plain-SGD one")
        compiled = plain_sgd and t.xla and scaffolds is None and not t.ema_decay
        kind = CompiledTokenIdClassifier if compiled else TokenIdClassifier
        return kind(*args, table=table, ids=ids)
    texts = {role: tf.constant(list(split.texts)) for role, split in data.splits.items()}
    return StringClassifier(*args, texts=texts)


def frozen_features(
    cfg: DictConfig, data: TextDataset, cache: FeatureCache | None, layer
) -> dict[str, tf.Tensor]:
    """Each split's vectors from the frozen module, built once and kept in the cache."""
    e, cache = cfg.embedding, cache or FeatureCache(None)
    return {
        role: tf.constant(
            cache.get_or_build(
                e.handle,
                split.texts,
                lambda x: _embed_in_batches(layer, x, cfg.trainer.eval_batch_size),
                also=_encoder_identity(e),
            )
        )
        for role, split in data.splits.items()
    }
