"""Swivel training over co-occurrence blocks (Shazeer et al., 2016).

Each step takes one (row shard, column shard) block. Observed cells pull row·col (+ biases)
toward their PMI with a weighted squared error whose weight grows like sqrt(count);
unobserved cells get the soft hinge softplus(row·col - PMI*), PMI* being the PMI the cell
would have with a count of 1, which only pushes the estimate down. Training state is
checkpointed after every epoch, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras
from tqdm.auto import tqdm

from hubsweep.swivel.counting import META_FILE, load_block

log = logging.getLogger(__name__)

LOSS_LOG = "loss.jsonl"
OPTIMIZERS = {
    "adagrad": keras.optimizers.legacy.Adagrad,  # the paper's choice
    "adam": keras.optimizers.legacy.Adam,
    "sgd": keras.optimizers.legacy.SGD,
}


@dataclass(frozen=True)
class SwivelSettings:
    """Training settings; their defaults live in config.SwivelConfig (hubsweep-swivel)."""

    dim: int
    epochs: int
    optimizer: str
    learning_rate: float
    # Context-distribution smoothing (Levy et al., 2015): column probabilities from
    # count^alpha; 1.0 is the paper's plain PMI.
    smoothing: float
    seed: int
    # The paper's confidence weight f(x) = base + scale * x^exponent (not exposed in config).
    confidence_base: float = 0.1
    confidence_scale: float = 0.25
    confidence_exponent: float = 0.5


class SwivelModel(tf.Module):
    def __init__(self, vocab_size: int, dim: int, seed: int) -> None:
        super().__init__()
        init = tf.random.stateless_normal
        scale = 1.0 / np.sqrt(dim)
        self.row = tf.Variable(init([vocab_size, dim], seed=[seed, 1]) * scale, name="row")
        self.col = tf.Variable(init([vocab_size, dim], seed=[seed, 2]) * scale, name="col")
        self.row_bias = tf.Variable(tf.zeros([vocab_size]), name="row_bias")
        self.col_bias = tf.Variable(tf.zeros([vocab_size]), name="col_bias")

    def vectors(self) -> np.ndarray:
        """Row plus column embedding, as the original Swivel exports them."""
        return (self.row + self.col).numpy()


class SwivelTrainer:
    def __init__(self, counts_dir: Path, settings: SwivelSettings) -> None:
        self.dir, self.s = counts_dir, settings
        meta = json.loads((counts_dir / META_FILE).read_text())
        self.n, self.size = meta["num_shards"], meta["shard_size"]
        self.vocab_size = meta["vocab_size"]
        marginals = np.maximum(np.load(counts_dir / "marginals.npy"), 1e-12)
        # PMI(i, j) = log x_ij - log x_i - log P(j), with P(j) = x_j^a / sum_k x_k^a.
        log_rows = np.log(marginals)
        smoothed = settings.smoothing * log_rows
        log_col_prob = smoothed - np.logaddexp.reduce(smoothed)
        self.log_rows = tf.constant(log_rows, tf.float32)
        self.log_col_prob = tf.constant(log_col_prob, tf.float32)
        self.model = SwivelModel(self.vocab_size, settings.dim, settings.seed)
        # v2 optimizers update only the rows a block touched (sparse gradients).
        self.optimizer = OPTIMIZERS[settings.optimizer](settings.learning_rate)
        self.epoch = tf.Variable(0, dtype=tf.int64, name="epoch")
        self.blocks = {(r, c): self._observed(r, c) for r in range(self.n) for c in range(self.n)}

    def _observed(self, r: int, c: int) -> tuple[tf.Tensor, ...]:
        """A block's observed cells: (indices, PMI, PMI of a count of 1, confidence weight).

        These never change, so they are computed once; only the estimate is dense.
        """
        rows, cols, counts = load_block(self.dir, r, c)
        log_r = self.log_rows.numpy()[rows.astype(np.int64) * self.n + r]
        log_c = self.log_col_prob.numpy()[cols.astype(np.int64) * self.n + c]
        pmi_one = -log_r - log_c
        weight = self.s.confidence_base + self.s.confidence_scale * np.power(
            counts, self.s.confidence_exponent
        )
        return (
            tf.constant(np.stack([rows, cols], axis=1)),
            tf.constant(np.log(counts) + pmi_one, tf.float32),
            tf.constant(pmi_one, tf.float32),
            tf.constant(weight, tf.float32),
        )

    def _ids(self, shard: int) -> tf.Tensor:
        return tf.range(self.size, dtype=tf.int64) * self.n + shard

    @tf.function
    def _step(self, row_ids, col_ids, indices, pmi, pmi_one, weight) -> tf.Tensor:
        m = self.model
        # Minus the PMI of a count of 1, for every cell of the block.
        shift = (
            tf.gather(self.log_rows, row_ids)[:, None]
            + tf.gather(self.log_col_prob, col_ids)[None, :]
        )
        variables = [m.row, m.col, m.row_bias, m.col_bias]
        with tf.GradientTape() as tape:
            estimate = tf.matmul(
                tf.gather(m.row, row_ids), tf.gather(m.col, col_ids), transpose_b=True
            )
            estimate += tf.gather(m.row_bias, row_ids)[:, None]
            estimate += tf.gather(m.col_bias, col_ids)[None, :]
            # The soft hinge over every cell, then swapped for the squared error where
            # the cell was observed: no dense PMI, weight or mask is ever built.
            seen_estimate = tf.gather_nd(estimate, indices)
            # Summed, as in the paper: a per-cell mean makes gradients too small for
            # Adagrad's initial accumulator.
            loss = (
                tf.reduce_sum(tf.math.softplus(estimate + shift))
                - tf.reduce_sum(tf.math.softplus(seen_estimate - pmi_one))
                + tf.reduce_sum(0.5 * weight * tf.square(seen_estimate - pmi))
            )
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss / (self.size * self.size)

    def train(self, out: Path, progress: bool = True) -> np.ndarray:
        """Train (resuming from `out`'s checkpoint if any); return the exported vectors.

        `out` must belong to these settings and these counts (the pipeline keys it by them):
        a checkpoint is resumed as it is, whatever settings trained it.
        """
        out.mkdir(parents=True, exist_ok=True)
        checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, epoch=self.epoch
        )
        manager = tf.train.CheckpointManager(checkpoint, str(out / "checkpoints"), max_to_keep=2)
        if manager.latest_checkpoint:
            checkpoint.restore(manager.latest_checkpoint)
            log.info("resumed from %s (epoch %d)", manager.latest_checkpoint, int(self.epoch))
        order = list(self.blocks)
        for epoch in range(int(self.epoch), self.s.epochs):
            np.random.default_rng([self.s.seed, epoch]).shuffle(order)
            started, losses = time.perf_counter(), []
            for r, c in tqdm(
                order, desc=f"epoch {epoch + 1}/{self.s.epochs}", disable=not progress, leave=False
            ):
                step = self._step(self._ids(r), self._ids(c), *self.blocks[(r, c)])
                losses.append(float(step))
            self.epoch.assign(epoch + 1)
            manager.save()
            record = {
                "epoch": epoch + 1,
                "loss": float(np.mean(losses)),
                "seconds": round(time.perf_counter() - started, 2),
            }
            with (out / LOSS_LOG).open("a") as f:
                f.write(json.dumps(record) + "\n")
            log.info("epoch %d: loss %.5f (%.1fs)", epoch + 1, record["loss"], record["seconds"])
        return self.model.vectors()
