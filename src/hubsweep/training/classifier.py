"""One model, several ways to compute it; `build_classifier` (training/build.py) picks the
fastest that applies.

- strings: the module runs on raw text every step (any module; the reference way);
- features: the module is frozen, so the head trains on cached vectors (FeatureCache);
- token ids: a hubsweep-exported module being fine-tuned; sentences are tokenised and
  looked up once, and each step gathers the rows it needs from the module's own table
  with the module's own sqrtn combiner (sparse gradients);
- encoder: a hubsweep-exported BERT-family pair being fine-tuned (training/encoder_path.py).

All train on the same batches (a seeded index order) with the same head
initialisation, and run many steps per TensorFlow call, so the Python loop costs little.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tf_keras as keras

from hubsweep.data.datasets import TextDataset
from hubsweep.embeddings.export import sqrtn_combine
from hubsweep.training.averaging import WeightAverage
from hubsweep.training.scaffold import Scaffolds


def _balanced(labels: np.ndarray, num_classes: int) -> np.ndarray:
    counts = np.bincount(labels, minlength=num_classes)
    return (len(labels) / (num_classes * np.maximum(counts, 1))).astype(np.float32)


# `trainer.class_weight`: each class's weight in the training loss, from the training
# labels; None weighs every example alike. "balanced" is scikit-learn's and Keras's
# n / (C * n_c): each class counts alike, what macro-F1 asks, and the weights average 1
# over the training split (when every class occurs in it), so the loss keeps its scale.
CLASS_WEIGHTS = {
    "none": lambda labels, num_classes: None,
    "balanced": _balanced,
}


def _label_loss(smoothing: float, num_classes: int):
    """The label's cross-entropy, `loss(labels, logits, sample_weight)`; with
    `trainer.label_smoothing` ε, against the targets (1 − ε) · one-hot + ε / C (Szegedy et al.
    2016, Keras's `label_smoothing`): the true class's log-likelihood weighs 1 − ε + ε / C,
    every other class's ε / C, so the logits are no longer pushed apart without end. The
    scaffolds' losses keep their own targets as they are."""
    if not smoothing:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    smoothed = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=smoothing)

    def loss(labels: tf.Tensor, logits: tf.Tensor, sample_weight=None) -> tf.Tensor:
        return smoothed(tf.one_hot(labels, num_classes), logits, sample_weight=sample_weight)

    return loss


def batch_order(
    n: int,
    batch_size: int,
    seed: int,
    lengths: np.ndarray | None = None,
    buckets: int = 0,
) -> Iterator[np.ndarray]:
    """Example indices, one seeded permutation per epoch, cut into batches across epochs.

    With `lengths` and `buckets` > 0 (bucketing by length): each epoch's permutation is cut
    into spans of `buckets` batches, each span sorted by length (stably) and cut into
    batches, and the epoch's batches shuffled; the examples of an epoch's last partial
    batch go first into the next. Every example still comes once per epoch, and the stream
    is a function of the seed."""
    rng = np.random.default_rng(seed)
    if lengths is None or buckets <= 0:
        pending = np.empty(0, dtype=np.int32)
        while True:
            while len(pending) < batch_size:
                pending = np.concatenate([pending, rng.permutation(n).astype(np.int32)])
            yield pending[:batch_size]
            pending = pending[batch_size:]
    carry = np.empty(0, dtype=np.int32)
    span = batch_size * buckets
    while True:
        epoch = np.concatenate([carry, rng.permutation(n).astype(np.int32)])
        whole = len(epoch) // batch_size * batch_size
        epoch, carry = epoch[:whole], epoch[whole:]
        batches = []
        for start in range(0, whole, span):
            part = epoch[start : start + span]
            part = part[np.argsort(lengths[part], kind="stable")]
            batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
        for i in rng.permutation(len(batches)):
            yield batches[i]


class Classifier:
    """Trains `head` on top of an embedding; subclasses say how inputs reach the head."""

    path = "strings"
    # Per training example, where a batch's padding depends on it (a BERT-family pair).
    padding_lengths: np.ndarray | None = None

    def __init__(
        self,
        model: keras.Sequential,
        head: keras.Sequential,
        optimizer: keras.optimizers.legacy.Optimizer,
        data: TextDataset,
        eval_batch_size: int,
        class_weight: str = "none",
        scaffolds: Scaffolds | None = None,
        ema_decay: float = 0.0,
        xla: bool = False,
        label_smoothing: float = 0.0,
    ) -> None:
        self.model, self.head, self.optimizer = model, head, optimizer
        self.scaffolds = scaffolds
        labels = data.splits["train"].labels
        self.labels = tf.constant(labels)
        weights = CLASS_WEIGHTS[class_weight](np.asarray(labels), data.num_classes)
        self.class_weights = None if weights is None else tf.constant(weights)
        self.sizes = {role: len(split) for role, split in data.splits.items()}
        self.eval_batch_size = eval_batch_size
        self.loss_fn = _label_loss(label_smoothing, data.num_classes)
        self.variables = self.trainable_variables() + (scaffolds.variables if scaffolds else [])
        # Slots must exist before the first step: variables cannot be created in a loop.
        self.optimizer._create_all_weights(self.variables)
        # What evaluations see while it is set (`trainer.ema_decay`; the scaffolds' heads
        # decide no logits): the trained variables' average, swapped in and out.
        self.average = (
            WeightAverage(self.trainable_variables(), ema_decay, compiled=xla)
            if ema_decay
            else None
        )

    def trainable_variables(self) -> list[tf.Variable]:
        return self.model.trainable_variables

    def gather(self, role: str, idx: tf.Tensor):
        raise NotImplementedError

    def loss(self, idx: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        """The batch's mean cross-entropy, each example weighed by its class's weight."""
        labels = tf.gather(self.labels, idx)
        weights = None if self.class_weights is None else tf.gather(self.class_weights, labels)
        return self.loss_fn(labels, logits, sample_weight=weights)

    def forward(self, inputs, training: bool) -> tf.Tensor:
        return self.model(inputs, training=training)

    def sentence_vectors(self, inputs, training: bool) -> tf.Tensor:
        """What the head reads ([batch, dim]); the scaffold heads read it too."""
        return self.model.layers[0](inputs, training=training)

    def step_loss(self, idx: tf.Tensor) -> tf.Tensor:
        """One training batch's loss: the label's, plus the scaffolds' where there are."""
        inputs = self.gather("train", idx)
        if self.scaffolds is None:
            return self.loss(idx, self.forward(inputs, training=True))
        vectors = self.sentence_vectors(inputs, training=True)
        logits = self.head(vectors, training=True)
        return self.loss(idx, logits) + self.scaffolds.loss(idx, vectors)

    def train_chunk(self, order) -> tf.Tensor:
        """Run one step per row of `order` ([steps, batch] indices); return each step's loss."""
        return self._train_chunk(tf.cast(order, tf.int64))

    # One program for chunks of any length: a run's chunks end at each evaluation and every
    # 100 steps, so they come in several lengths, and tracing a fine-tuned encoder's step
    # costs seconds (benchmarks/bench_retracing.py).
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int64)])
    def _train_chunk(self, order: tf.Tensor) -> tf.Tensor:
        steps = tf.shape(order)[0]
        losses = tf.TensorArray(tf.float32, size=steps)
        for i in tf.range(steps):
            idx = order[i]
            with tf.GradientTape() as tape:
                loss = self.step_loss(idx) + tf.add_n([0.0, *self.model.losses])
            grads = tape.gradient(loss, self.variables)
            self.optimizer.apply_gradients(zip(grads, self.variables, strict=True))
            if self.average is not None:
                self.average.update()
            losses = losses.write(i, loss)
        return losses.stack()

    def eval_batches(self, role: str) -> list[np.ndarray]:
        """The row indices of `role`, in the batches evaluation runs (here: eval_batch_size
        rows at a time, as stored)."""
        n, bs = self.sizes[role], self.eval_batch_size
        return [np.arange(i, min(i + bs, n)) for i in range(0, n, bs)]

    @tf.function
    def _eval_logits(self, role: str, idx: tf.Tensor) -> tf.Tensor:
        return self.forward(self.gather(role, idx), training=False)

    def _eval_program(self, role: str):
        """`_eval_logits` for `role`, for batches of any size: traced on the first call,
        then served from the tf.function's own cache."""
        return self._eval_logits.get_concrete_function(role, tf.TensorSpec([None], tf.int64))

    def use_average(self) -> None:
        """When training ends: the averaged weights (`trainer.ema_decay`) become the model's,
        for test, predictions and an exported module alike."""
        if self.average is not None:
            self.average.assign_average()
            self.average = None

    def trained_logits(self, role: str) -> np.ndarray:
        """The logits of the weights as trained, while evaluations see their average."""
        return self._logits(role)

    def logits(self, role: str) -> np.ndarray:
        """The model's logits for every row of `role`, in the split's order, computed batch
        by batch as `eval_batches` groups the rows; while training with `trainer.ema_decay`,
        the averaged weights'."""
        if self.average is None:
            return self._logits(role)
        with self.average.swapped_in():
            return self._logits(role)

    def _logits(self, role: str) -> np.ndarray:
        batches = self.eval_batches(role)
        program = self._eval_program(role)
        pieces = np.concatenate([program(tf.constant(b, tf.int64)).numpy() for b in batches])
        logits = np.empty_like(pieces)
        logits[np.concatenate(batches)] = pieces
        return logits


class StringClassifier(Classifier):
    def __init__(self, *args, texts: dict[str, tf.Tensor]) -> None:
        self.texts = texts
        super().__init__(*args)
        # A BERT-family pair's token counts, for batches bucketed by length.
        tokenize = getattr(self.model.layers[0], "token_lengths", None)
        self.padding_lengths = tokenize(texts["train"]) if tokenize else None

    def gather(self, role: str, idx: tf.Tensor) -> tf.Tensor:
        return tf.gather(self.texts[role], idx)


class FeatureClassifier(Classifier):
    path = "features"

    def __init__(self, *args, features: dict[str, tf.Tensor]) -> None:
        self.features = features
        super().__init__(*args)
        if self.scaffolds is not None:  # config validation refuses it before
            raise ValueError("a frozen embedding's features cannot train a scaffold")

    def trainable_variables(self) -> list[tf.Variable]:
        return self.head.trainable_variables

    def gather(self, role: str, idx: tf.Tensor) -> tf.Tensor:
        return tf.gather(self.features[role], idx)

    def forward(self, inputs, training: bool) -> tf.Tensor:
        return self.head(inputs, training=training)


class TokenIdClassifier(Classifier):
    path = "token ids"

    def __init__(self, *args, table: tf.Variable, ids: dict[str, tf.RaggedTensor]) -> None:
        self.table, self.ids = table, ids
        super().__init__(*args)

    def trainable_variables(self) -> list[tf.Variable]:
        return [self.table, *self.head.trainable_variables]

    def gather(self, role: str, idx: tf.Tensor) -> tf.RaggedTensor:
        return tf.gather(self.ids[role], idx)

    def sentence_vectors(self, inputs, training: bool) -> tf.Tensor:
        return sqrtn_combine(self.table, inputs)

    def forward(self, inputs, training: bool) -> tf.Tensor:
        return self.head(self.sentence_vectors(inputs, training), training=training)


class CompiledTokenIdClassifier(TokenIdClassifier):
    """The token-id path with plain SGD, each chunk of steps one XLA-compiled program.

    Keras's step costs ~0.9 ms here, mostly dispatching ragged ops one by one. This one
    lays each step's token ids out flat ahead (numpy), padded to a power of two with a
    dropped segment, and updates only the touched table rows with a scatter-add: what
    Keras's sparse SGD applies (duplicate rows summed), in one fused program.
    """

    path = "token ids (compiled)"

    def __init__(self, *args, table: tf.Variable, ids: dict[str, tf.RaggedTensor]) -> None:
        super().__init__(*args, table=table, ids=ids)
        if self.scaffolds is not None:  # build_classifier takes the token-id path instead
            raise ValueError("the compiled plain-SGD path trains no scaffold")
        if self.average is not None:  # build_classifier takes the token-id path instead
            raise ValueError("the compiled plain-SGD path keeps no averaged weights")
        train = ids["train"]
        self.flat_ids = train.flat_values.numpy().astype(np.int32)
        self.starts = train.row_splits.numpy()[:-1]
        self.lengths = train.row_lengths().numpy().astype(np.int32)

    def _flatten(self, order: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """[steps, T] token ids and segment ids (padding: segment B, dropped), [steps, B]
        row lengths."""
        steps, batch = order.shape
        lengths = self.lengths[order]
        width = 1 << int(max(lengths.sum(axis=1).max(), 1) - 1).bit_length()
        ids = np.zeros((steps, width), np.int32)
        segments = np.full((steps, width), batch, np.int32)
        for i, idx in enumerate(order):
            tokens = [self.flat_ids[self.starts[j] : self.starts[j] + self.lengths[j]] for j in idx]
            n = int(lengths[i].sum())
            ids[i, :n] = np.concatenate(tokens)
            segments[i, :n] = np.repeat(np.arange(batch, dtype=np.int32), lengths[i])
        return ids, segments, lengths

    def train_chunk(self, order: np.ndarray) -> tf.Tensor:
        ids, segments, lengths = self._flatten(np.asarray(order))
        return self._compiled_chunk(ids, segments, lengths, np.asarray(order, np.int32))

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)] * 4, jit_compile=True)
    def _compiled_chunk(self, ids, segments, lengths, order) -> tf.Tensor:
        steps, batch = tf.shape(order)[0], tf.shape(order)[1]
        losses = tf.TensorArray(tf.float32, size=steps)
        head_vars = self.head.trainable_variables
        for i in tf.range(steps):
            lr = self.optimizer._decayed_lr(tf.float32)
            rows = tf.gather(self.table, ids[i])
            with tf.GradientTape() as tape:
                tape.watch(rows)
                summed = tf.math.unsorted_segment_sum(rows, segments[i], batch + 1)[:batch]
                counts = tf.cast(tf.maximum(lengths[i], 1), tf.float32)
                logits = self.head(summed / tf.sqrt(counts)[:, None], training=True)
                loss = self.loss(order[i], logits)
            grads = tape.gradient(loss, [rows, *head_vars])
            self.table.scatter_add(tf.IndexedSlices(-lr * grads[0], ids[i]))
            for var, grad in zip(head_vars, grads[1:], strict=True):
                var.assign_sub(lr * grad)
            self.optimizer.iterations.assign_add(1)
            losses = losses.write(i, loss)
        return losses.stack()
