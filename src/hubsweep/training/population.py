"""Population training: K heads on one frozen module's cached vectors, trained at once.

A frozen trial's arithmetic is tiny (8000 steps of a 128→3 head), so its time is per-step
overhead, and one step that updates K stacked heads costs about what a step of one does.
Each Dense layer of the members is stacked ([K, in, out] kernels); each member keeps what
its own run would have: its initial weights, its learning rate at every step (its schedule,
evaluated ahead), its optimizer's coefficients, its batch stream and its step count.

Batch sizes are grouped, not padded: the members of one population share a batch size
(`group_key`). The program could pad (a member's rows beyond its batch weigh 0), but under
XLA a step's cost grows with K × batch once compiled, and padding a batch of 10 to 128 rows
cost ~7× (measured on a 2-core CPU). A group runs in a program of the next power of two
members (a group of 5 in a program of 8, 3 masked), so a process compiles few programs.

A member that has run its steps, diverged or was pruned is masked out: `tf.where` keeps its
weights and slots (so a NaN cannot leak into them). Every hyperparameter enters the
program as a tensor, so it is traced once per (optimizer, head shapes, K) in a process and
reused by every later population (`program_for`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import tf_keras as keras
from omegaconf import DictConfig

from hubsweep.metrics import classification_metrics
from hubsweep.results.layout import RunStatus
from hubsweep.training.classifier import CLASS_WEIGHTS
from hubsweep.training.head import build_head
from hubsweep.training.loop import LoopResult, OnEvaluation
from hubsweep.training.optimizers import build_schedule

Update = Callable[..., tuple[tf.Tensor, list[tf.Tensor]]]


def _per_member(x: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """A [K] tensor shaped to broadcast against a [K, ...] variable."""
    return tf.reshape(x, [-1] + [1] * (len(like.shape) - 1))


def _sgd(var, grad, slots, lr, coef, t):
    return var - lr * grad, []


def _momentum(var, grad, slots, lr, coef, t):
    """Keras's (legacy) SGD with momentum: accum = m*accum - lr*g; nesterov looks ahead."""
    m, nesterov = _per_member(coef[:, 0], var), _per_member(coef[:, 1], var)
    accum = m * slots[0] - lr * grad
    step = tf.where(nesterov > 0, m * accum - lr * grad, accum)
    return var + step, [accum]


def _adam(var, grad, slots, lr, coef, t):
    """Keras's (legacy) Adam, as its ResourceApplyAdam kernel computes it."""
    b1, b2, eps = (_per_member(coef[:, i], var) for i in range(3))
    lr_t = lr * tf.sqrt(1.0 - tf.pow(b2, t)) / (1.0 - tf.pow(b1, t))
    m = slots[0] + (grad - slots[0]) * (1.0 - b1)
    v = slots[1] + (grad * grad - slots[1]) * (1.0 - b2)
    return var - lr_t * m / (tf.sqrt(v) + eps), [m, v]


@dataclass(frozen=True)
class OptimizerKind:
    update: Update
    slots: int
    coefficients: Callable[[DictConfig], tuple[float, ...]]


# Optimizers a population can train (others run one trial at a time): name -> its update.
OPTIMIZERS: dict[str, OptimizerKind] = {
    "sgd": OptimizerKind(_sgd, 0, lambda c: (0.0,)),
    "momentum": OptimizerKind(_momentum, 1, lambda c: (c.momentum, float(c.nesterov))),
    "adam": OptimizerKind(_adam, 2, lambda c: (c.beta_1, c.beta_2, c.epsilon)),
}


def blocker(cfg: DictConfig, alone: bool = False) -> str | None:
    """Why `cfg` cannot train as a population member (None: it can); `alone`: as a
    one-member population, a single run that may evaluate test."""
    e, t = cfg.embedding, cfg.trainer
    if e.trainable or not t.feature_cache:
        return "only a frozen module on cached features trains in a population"
    if cfg.optimizer.name not in OPTIMIZERS:
        return f"optimizer {cfg.optimizer.name} (a population trains {', '.join(OPTIMIZERS)})"
    if cfg.optimizer.get("clipnorm") is not None:
        return "optimizer.clipnorm (a population does not clip gradients)"
    if cfg.model.get("dropout", 0) > 0:
        return "dropout (a population draws no dropout masks)"
    if t.ema_decay:
        return "trainer.ema_decay (a population keeps no averaged weights)"
    if t.label_smoothing:
        return "trainer.label_smoothing (a population trains on the labels as they are)"
    if not alone and (t.evaluate_test or t.export_module):
        return "trainer.evaluate_test / trainer.export_module (trials need neither)"
    return None


def group_key(cfg: DictConfig) -> tuple:
    """Members of one population share the optimizer kind, the head and the evaluations."""
    return (
        cfg.optimizer.name,
        cfg.trainer.batch_size,
        str(cfg.model),
        cfg.trainer.eval_every,
        cfg.embedding.handle,
        str(cfg.dataset),
    )


def batch_indices(n: int, batch_size: int, seed: int, steps: int) -> np.ndarray:
    """[steps, batch_size] example indices: one seeded permutation per epoch, cut into
    batches across epoch boundaries (the stream `classifier.batch_order` yields)."""
    rng = np.random.default_rng(seed)
    epochs = -(-steps * batch_size // n)
    stream = np.concatenate([rng.permutation(n).astype(np.int32) for _ in range(epochs)])
    return stream[: steps * batch_size].reshape(steps, batch_size)


@dataclass(frozen=True)
class Member:
    """One run's own settings, as the population program takes them."""

    steps: int
    batch_size: int
    order: np.ndarray  # [steps, batch_size] example indices
    rates: np.ndarray  # [steps + 1] learning rate before each step (and after the last)
    coefficients: tuple[float, ...]
    init: tuple[np.ndarray, ...]  # kernel, bias of each Dense layer, as its run starts
    class_weights: np.ndarray  # [num_classes] each class's loss weight (ones: unweighted)

    @classmethod
    def of(cls, cfg: DictConfig, train_labels: np.ndarray, dim: int, num_classes: int) -> Member:
        t = cfg.trainer
        weights = CLASS_WEIGHTS[t.class_weight](train_labels, num_classes)
        schedule = build_schedule(cfg.schedule, cfg.optimizer.learning_rate, t.steps)
        if callable(schedule):  # the legacy optimizers evaluate it at float32 iterations
            rates = schedule(tf.range(t.steps + 1, dtype=tf.float32)).numpy()
        else:
            rates = np.full(t.steps + 1, schedule)
        init, width = [], dim
        for layer in build_head(cfg.model, num_classes, t.seed):  # dropout: see blocker
            layer.build((None, width))  # a Sequential's build costs 10x this
            init += [w.numpy() for w in layer.weights]
            width = layer.units
        return cls(
            steps=t.steps,
            batch_size=t.batch_size,
            order=batch_indices(len(train_labels), t.batch_size, t.seed, t.steps),
            rates=rates.astype(np.float32),
            coefficients=OPTIMIZERS[cfg.optimizer.name].coefficients(cfg.optimizer),
            init=tuple(init),
            class_weights=np.ones(num_classes, np.float32) if weights is None else weights,
        )


def _spec(rank: int, dtype: tf.DType = tf.float32) -> tf.TensorSpec:
    return tf.TensorSpec([None] * rank, dtype)


# Every input as a tensor of unknown size: chunk lengths, batch widths, rates and the step
# offset vary from call to call, and none of them may cause a new trace.
_CHUNK_SIGNATURE = [
    _spec(2),  # features [N, D]
    _spec(1, tf.int32),  # labels [N]
    _spec(3, tf.int32),  # order [steps, K, B]
    _spec(3),  # weight [steps, K, B]: a member's rows' class weights, 0 for padding
    _spec(1),  # scale [K]: 1 / batch size
    _spec(2),  # rates [steps, K]
    _spec(2, tf.bool),  # active [steps, K]
    _spec(2),  # coef [K, n]: the optimizer's coefficients
    _spec(0, tf.int32),  # first: steps done before this chunk
]


class Program:
    """The compiled population step for K members of one optimizer and head shape."""

    def __init__(
        self,
        kind: str,
        shapes: Sequence[tuple[int, ...]],
        activation: str,
        k: int,
        xla: bool = True,
    ) -> None:
        # Compiled per instance: XLA (trainer.xla) or a plain graph.
        self.train_chunk = tf.function(
            self._train_chunk, input_signature=_CHUNK_SIGNATURE, jit_compile=xla
        )
        self.logits = tf.function(self._logits, input_signature=[_spec(2)], jit_compile=xla)
        self.kind, self.k = OPTIMIZERS[kind], k
        self.activation = keras.activations.get(activation)
        self.vars = [tf.Variable(tf.zeros([k, *s])) for s in shapes]
        self.slots = [
            [tf.Variable(tf.zeros([k, *s])) for _ in range(self.kind.slots)] for s in shapes
        ]

    def load(self, members: Sequence[Member]) -> None:
        """Start from each member's initial weights and fresh slots (padding: copies of the
        last member, always inactive)."""
        padded = [*members, *[members[-1]] * (self.k - len(members))]
        for i, var in enumerate(self.vars):
            var.assign(np.stack([m.init[i] for m in padded]))
            for slot in self.slots[i]:
                slot.assign(tf.zeros_like(slot))

    def forward(self, x: tf.Tensor) -> tf.Tensor:
        """[K, B, D] rows (each member its own) or [N, D] (the same for all) -> [K, _, C]."""
        layers = len(self.vars) // 2
        for j in range(layers):
            pattern = "kbd,kdh->kbh" if x.shape.rank == 3 else "bd,kdh->kbh"
            x = tf.einsum(pattern, x, self.vars[2 * j]) + self.vars[2 * j + 1][:, None]
            if j < layers - 1:
                x = self.activation(x)
        return x

    def _train_chunk(self, features, labels, order, weight, scale, rates, active, coef, first):
        """One step per row of `order` ([steps, K, B]); returns each member's loss [steps, K]."""
        steps = tf.shape(order)[0]
        losses = tf.TensorArray(tf.float32, size=steps)
        for i in tf.range(steps):
            idx = order[i]
            with tf.GradientTape() as tape:
                logits = self.forward(tf.gather(features, idx))
                ce = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.gather(labels, idx), logits)
                loss = tf.reduce_sum(ce * weight[i], axis=1) * scale
                total = tf.reduce_sum(loss)
            grads = tape.gradient(total, self.vars)
            t = tf.cast(first + i + 1, tf.float32)
            for var, grad, slots in zip(self.vars, grads, self.slots, strict=True):
                on = _per_member(active[i], var)
                new, new_slots = self.kind.update(
                    var, grad, [s.value() for s in slots], _per_member(rates[i], var), coef, t
                )
                var.assign(tf.where(on, new, var))
                for slot, value in zip(slots, new_slots, strict=True):
                    slot.assign(tf.where(on, value, slot))
            losses = losses.write(i, loss)
        return losses.stack()

    def _logits(self, features: tf.Tensor) -> tf.Tensor:
        """[N, D] vectors -> [K, N, C]."""
        return self.forward(features)


_PROGRAMS: dict[tuple, Program] = {}
# The most steps of one call: with the members' batch streams as its input, a longer chunk
# holds more memory, and the Python loop between chunks costs little.
CHUNK_STEPS = 200


def program_size(members: int) -> int:
    """Programs come in powers of two: a population of any size finds one at most twice its
    size (its spare members are masked out), and a process compiles few of them."""
    return 1 << (members - 1).bit_length()


def program_for(cfg: DictConfig, member: Member, members: int) -> Program:
    """The process's program for this optimizer, head shape and population size."""
    k = program_size(members)
    shapes = tuple(w.shape for w in member.init)
    activation = cfg.model.get("activation", "linear")
    key = (cfg.optimizer.name, shapes, activation, k, cfg.trainer.xla)
    if key not in _PROGRAMS:
        _PROGRAMS[key] = Program(cfg.optimizer.name, shapes, activation, k, cfg.trainer.xla)
    return _PROGRAMS[key]


def _chunk_inputs(
    members: Sequence[Member],
    labels: np.ndarray,
    alive: np.ndarray,
    k: int,
    done: int,
    end: int,
    length: int,
):
    """Order, row weights (a member's class weight of each of its rows, 0 for padding),
    rates and activity of each member's steps in (done, end], padded with inactive steps
    to `length` (XLA compiles one program per shape)."""
    width = max(m.batch_size for m in members)
    order = np.zeros((length, k, width), np.int32)
    weight = np.zeros((length, k, width), np.float32)
    rates = np.zeros((length, k), np.float32)
    active = np.zeros((length, k), bool)
    for j, m in enumerate(members):
        n = min(end, m.steps) - done
        if alive[j] and n > 0:
            order[:n, j, : m.batch_size] = m.order[done : done + n]
            weight[:n, j, : m.batch_size] = m.class_weights[labels[m.order[done : done + n]]]
            rates[:n, j] = m.rates[done : done + n]
            active[:n, j] = True
    return order, weight, rates, active


def eval_logits(program: Program, features: tf.Tensor, batch: int) -> np.ndarray:
    """[K, N, C], in batches of `batch` rows; the last is padded to `batch` rows so that
    one compiled shape serves every evaluation."""
    n = int(features.shape[0])
    batch = min(batch, n)
    parts = []
    for i in range(0, n, batch):
        rows = features[i : i + batch]
        if rows.shape[0] < batch:
            rows = tf.pad(rows, [[0, batch - rows.shape[0]], [0, 0]])
        parts.append(program.logits(rows).numpy()[:, : min(batch, n - i)])
    return np.concatenate(parts, axis=1)


def run_population(
    program: Program,
    members: Sequence[Member],
    features: dict[str, tf.Tensor],
    labels: dict[str, np.ndarray],
    label_names: tuple[str, ...],
    eval_every: int,
    eval_batch_size: int,
    callbacks: Sequence[OnEvaluation],
) -> list[LoopResult]:
    """Train the members together; each member's evaluations go to its own callback (a
    truthy return prunes it) and it gets the LoopResult its own `run_loop` would return.
    A chunk's stepping time is shared among the members it stepped."""
    k = program.k
    program.load(members)
    results = [LoopResult(status=RunStatus.COMPLETED, steps_done=0) for _ in members]
    alive = np.array([True] * len(members) + [False] * (k - len(members)))
    pending: list[list[np.ndarray]] = [[] for _ in members]
    coef = np.zeros((k, len(members[0].coefficients)), np.float32)
    coef[: len(members)] = [m.coefficients for m in members]
    scale = np.ones(k, np.float32)
    scale[: len(members)] = [1.0 / m.batch_size for m in members]
    last = max(m.steps for m in members)
    length = min(eval_every, CHUNK_STEPS)
    ends = set(range(eval_every, last, eval_every)) | set(range(length, last, length))
    ends = sorted(ends | {m.steps for m in members})
    train_labels = tf.constant(labels["train"])
    done = 0
    for end in ends:
        if not alive.any():
            break
        order, weight, rates, active = _chunk_inputs(
            members, labels["train"], alive, k, done, end, length
        )
        started = time.perf_counter()
        losses = program.train_chunk(
            features["train"], train_labels, order, weight, scale, rates, active, coef, done
        ).numpy()
        share = (time.perf_counter() - started) / max(active.any(axis=0).sum(), 1)
        for j in np.flatnonzero(active.any(axis=0)):
            r, chunk = results[j], losses[: active[:, j].sum(), j]
            r.train_time_s += share
            bad = np.flatnonzero(~np.isfinite(chunk))
            if bad.size:
                r.steps_done = done + int(bad[0]) + 1
                r.diverged_at_step, r.status, alive[j] = r.steps_done, RunStatus.DIVERGED, False
                continue
            r.steps_done = done + len(chunk)
            pending[j].append(chunk)
        done = end
        due = [
            j
            for j, m in enumerate(members)
            if alive[j] and end <= m.steps and (end % eval_every == 0 or end == m.steps)
        ]
        if not due:
            continue
        logits = eval_logits(program, features["validation"], eval_batch_size)
        for j in due:
            metrics = classification_metrics(labels["validation"], logits[j], label_names)
            train_loss = float(np.concatenate(pending[j]).mean())
            pending[j] = []
            r = results[j]
            r.history.append({"step": end, **metrics, "train_loss": train_loss})
            r.last_logits = logits[j]
            if callbacks[j](end, metrics, train_loss):
                r.status, alive[j] = RunStatus.STOPPED, False
            elif end == members[j].steps:
                alive[j] = False
    return results
