"""BERT's masked-language-model head over hubsweep's BERT encoder, and its training step.

The head is BERT's (`BertLMPredictionHead`): a dense layer, GELU, LayerNorm, then the word
embeddings as the output projection (tied, so the vocabulary is predicted in the space the
encoder reads it from) plus a bias. Checkpoints trained for sentence embeddings
(all-MiniLM-L6-v2) ship no head: it starts as BERT initialises one (dense N(0, 0.02), the
norm at identity, zero bias). Only the encoder is written back; the head is thrown away, as
fine-tuning would throw it away.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from hubsweep.embeddings.transformer.bert import BertEncoder, Dense, Norm, matmul

INITIALIZER_RANGE = 0.02  # BERT's initializer_range


class MaskedLanguageModel(tf.Module):
    def __init__(self, encoder: BertEncoder, seed: int) -> None:
        super().__init__(name="masked_lm")
        cfg = encoder.config
        rng = np.random.default_rng(seed)
        hidden = cfg.hidden_size
        with self.name_scope:
            kernel = rng.normal(0, INITIALIZER_RANGE, (hidden, hidden)).astype(np.float32)
            self.transform = Dense(kernel, np.zeros(hidden, np.float32), "transform")
            ones, zeros = np.ones(hidden, np.float32), np.zeros(hidden, np.float32)
            self.norm = Norm(ones, zeros, cfg.layer_norm_eps, "norm")
            self.bias = tf.Variable(np.zeros(cfg.vocab_size, np.float32), name="output_bias")
        self.encoder = encoder

    @property
    def trained(self) -> list[tf.Variable]:
        """What trains: the encoder but its pooler (the masked LM never reads it, so it
        stays the checkpoint's), and the head."""
        pooler = {v.ref() for v in self.encoder.pooler.variables} if self.encoder.pooler else set()
        encoder = [v for v in self.encoder.trainable_variables if v.ref() not in pooler]
        return encoder + [*self.transform.variables, *self.norm.variables, self.bias]

    def logits(
        self,
        ids: tf.Tensor,
        mask: tf.Tensor,
        labels: tf.Tensor,
        seed: tf.Tensor,
        training: bool,
        mixed: bool = False,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """(vocabulary logits [picked, vocab], their target ids [picked]) at the positions
        whose label is not -1. `seed`: int64 [2], the step's dropout seed."""
        e = self.encoder
        x = e.embed(ids, tf.zeros_like(ids), seed, training)
        for i in range(len(e.layers)):
            x = e.layer(x, mask, seed, i, training, mixed)
        picked = labels >= 0
        h = tf.nn.gelu(self.transform(tf.boolean_mask(x, picked), mixed), approximate=False)
        h = self.norm(h)
        logits = matmul(h, e.word_embeddings, mixed, transpose_b=True) + self.bias
        return logits, tf.boolean_mask(labels, picked)

    def loss(self, ids, mask, labels, seed, training: bool, mixed: bool = False) -> tf.Tensor:
        """The mean cross-entropy over the picked positions."""
        logits, targets = self.logits(ids, mask, labels, seed, training, mixed)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)
        return tf.reduce_mean(losses)


def train_step(
    model: MaskedLanguageModel, optimizer, mixed: bool
) -> Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tf.Tensor]:
    """One compiled step, traced once for every batch shape: the loss, then the update."""
    ids = tf.TensorSpec([None, None], tf.int32)
    variables = model.trained

    @tf.function(input_signature=[ids, ids, ids, tf.TensorSpec([2], tf.int64)])
    def step(inputs, mask, labels, seed):
        with tf.GradientTape() as tape:
            loss = model.loss(inputs, mask, labels, seed, training=True, mixed=mixed)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss

    return step
