"""Structural scaffolds (Cohan et al. 2019): auxiliary heads that predict, from the same
sentence vector the label's head reads, fields of each training record that are not the
label (`dataset.scaffold_keys`; on SciCite the section the citation sits in).

They change only how the encoder trains: the training loss is the label's cross-entropy
plus `trainer.scaffold_weight` times each scaffold's, and nothing else reads the scaffold
heads. Evaluation, predictions and an exported module classify the text alone, so the task
is the one without scaffolds (unlike `dataset.prefix_keys`, which reads the field into the
text at test time too).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import tensorflow as tf
import tf_keras as keras
from omegaconf import DictConfig

from hubsweep.data.datasets import TextDataset, scaffold_keys
from hubsweep.errors import DataError


def scaffold_classes(values: np.ndarray, key: str, min_count: int) -> tuple[str, ...]:
    """A scaffold's classes: its values seen in at least `min_count` training examples,
    sorted (the heads' outputs do not depend on the order the records come in)."""
    counts = Counter(v for v in values if v)
    classes = tuple(sorted(v for v, n in counts.items() if n >= min_count))
    if len(classes) < 2:
        common = ", ".join(f"{v!r} ({n})" for v, n in counts.most_common(3)) or "none"
        raise DataError(
            f"dataset.scaffold_keys: {key!r} has {len(classes)} value(s) in at least "
            f"dataset.scaffold_min_count={min_count} training examples, a scaffold needs 2 "
            f"(values compared case-folded, letters only; most common: {common})"
        )
    return classes


class Scaffolds:
    """The scaffold heads, their training labels ([n_train, keys], -1 where an example's
    value is missing or rare) and their loss."""

    def __init__(self, cfg: DictConfig, data: TextDataset, dim: int) -> None:
        self.keys = scaffold_keys(cfg.dataset)
        values = data.splits["train"].scaffolds
        if values is None or values.shape[1] != len(self.keys):
            raise DataError(
                f"dataset.scaffold_keys: the training split holds no values of {self.keys}"
            )
        self.classes: dict[str, tuple[str, ...]] = {}
        ids = np.full(values.shape, -1, np.int32)
        for k, key in enumerate(self.keys):
            classes = scaffold_classes(values[:, k], key, cfg.dataset.scaffold_min_count)
            index = {v: i for i, v in enumerate(classes)}
            ids[:, k] = [index.get(v, -1) for v in values[:, k]]
            self.classes[key] = classes
        self.labels = tf.constant(ids)
        self.weight = float(cfg.trainer.scaffold_weight)
        seed = cfg.trainer.seed
        self.heads = [
            keras.layers.Dense(
                len(self.classes[key]),
                kernel_initializer=keras.initializers.GlorotUniform(seed=seed * 1000 + 900 + k),
                name=f"scaffold_{k}",
            )
            for k, key in enumerate(self.keys)
        ]
        for head in self.heads:
            head.build((None, dim))

    @property
    def variables(self) -> list[tf.Variable]:
        return [v for head in self.heads for v in head.trainable_variables]

    def labelled_fraction(self) -> dict[str, float]:
        """Per key, the share of training examples its loss counts."""
        ids = self.labels.numpy()
        return {key: float((ids[:, k] >= 0).mean()) for k, key in enumerate(self.keys)}

    def loss(self, idx: tf.Tensor, vectors: tf.Tensor) -> tf.Tensor:
        """`scaffold_weight` × the sum over scaffolds of the mean cross-entropy over the
        batch's examples that scaffold labels (0 for a batch it labels none of)."""
        labels = tf.gather(self.labels, idx)
        vectors = tf.cast(vectors, tf.float32)
        total = tf.constant(0.0)
        for k, head in enumerate(self.heads):
            y = labels[:, k]
            keep = tf.cast(y >= 0, tf.float32)
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.maximum(y, 0), logits=head(vectors)
            )
            total += tf.reduce_sum(ce * keep) / tf.maximum(tf.reduce_sum(keep), 1.0)
        return self.weight * total
