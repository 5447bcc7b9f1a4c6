"""BERT's masked-language-model head over hubsweep's BERT encoder, and its training step.

The head is BERT's (`BertLMPredictionHead`): a dense layer, GELU, LayerNorm, then the word
embeddings as the output projection (tied, so the vocabulary is predicted in the space the
encoder reads it from) plus a bias. A checkpoint that ships its pretrained head
(`cls.predictions.*`, as BertForMaskedLM and BertForPreTraining save it) continues with it;
one trained for sentence embeddings (all-MiniLM-L6-v2) ships none, and the head starts as
BERT initialises one (dense N(0, 0.02), the norm at identity, zero biases). Only the
encoder is written back: fine-tuning throws the head away.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from hubsweep.embeddings.transformer.bert import BertEncoder, Dense, Norm, matmul

INITIALIZER_RANGE = 0.02  # BERT's initializer_range


HEAD = "cls.predictions."


def pretrained_head(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """The checkpoint's masked-LM head as (kernel [in, out], bias, gamma, beta, output
    bias), or None when it ships none. LayerNorm's parameters go by `weight`/`bias` or,
    in older checkpoints, `gamma`/`beta`."""
    if HEAD + "transform.dense.weight" not in weights:
        return None
    norm = HEAD + "transform.LayerNorm."
    gamma, beta = ("weight", "bias") if norm + "weight" in weights else ("gamma", "beta")
    return {
        "kernel": np.asarray(weights[HEAD + "transform.dense.weight"], np.float32).T,
        "bias": np.asarray(weights[HEAD + "transform.dense.bias"], np.float32),
        "gamma": np.asarray(weights[norm + gamma], np.float32),
        "beta": np.asarray(weights[norm + beta], np.float32),
        "output_bias": np.asarray(weights[HEAD + "bias"], np.float32),
    }


def _new_head(hidden: int, vocab: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    zeros = np.zeros(hidden, np.float32)
    return {
        "kernel": rng.normal(0, INITIALIZER_RANGE, (hidden, hidden)).astype(np.float32),
        "bias": zeros,
        "gamma": np.ones(hidden, np.float32),
        "beta": zeros,
        "output_bias": np.zeros(vocab, np.float32),
    }


class MaskedLanguageModel(tf.Module):
    """`head`: the checkpoint's (`pretrained_head`), or None for a new one drawn from `seed`."""

    def __init__(self, encoder: BertEncoder, seed: int, head: dict | None = None) -> None:
        super().__init__(name="masked_lm")
        cfg = encoder.config
        self.pretrained = head is not None
        w = head if head is not None else _new_head(cfg.hidden_size, cfg.vocab_size, seed)
        with self.name_scope:
            self.transform = Dense(w["kernel"], w["bias"], "transform")
            self.norm = Norm(w["gamma"], w["beta"], cfg.layer_norm_eps, "norm")
            self.bias = tf.Variable(w["output_bias"], name="output_bias")
        self.encoder = encoder

    @property
    def trained_encoder(self) -> list[tf.Variable]:
        """The encoder but its pooler (the masked LM never reads it: it stays the
        checkpoint's)."""
        pooler = {v.ref() for v in self.encoder.pooler.variables} if self.encoder.pooler else set()
        return [v for v in self.encoder.trainable_variables if v.ref() not in pooler]

    @property
    def trained(self) -> list[tf.Variable]:
        """What trains: the encoder but its pooler, and the head."""
        return [*self.trained_encoder, *self.transform.variables, *self.norm.variables, self.bias]

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
    """One compiled step, one tracing for any batch shape: the loss, then the update."""
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
