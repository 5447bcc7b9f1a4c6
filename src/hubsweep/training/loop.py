"""The training loop: steps a classifier, evaluates on validation, returns what happened.

It writes no file and keeps no run state: `run.py` wraps it as the recorder (claims
the run directory, writes metrics as evaluations arrive, writes final.json whatever
happens). Keeping the two apart means the loop can be called, and tested, on its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from hubsweep.data.datasets import TextDataset
from hubsweep.metrics import classification_metrics
from hubsweep.results.layout import RunStatus
from hubsweep.training.classifier import Classifier, batch_order

log = logging.getLogger(__name__)

# Called after each validation evaluation with (step, metrics, mean train loss since the
# last one); a truthy return stops the loop.
OnEvaluation = Callable[[int, dict, float], bool | None]


@dataclass
class LoopResult:
    status: RunStatus  # completed, stopped (on_evaluation asked) or diverged
    steps_done: int
    history: list[dict] = field(default_factory=list)  # one entry per validation evaluation
    train_time_s: float = 0.0  # stepping only, evaluations excluded
    diverged_at_step: int | None = None
    # Validation logits of the last evaluation: the final model's unless it diverged.
    last_logits: np.ndarray | None = None


def chunk_ends(steps: int, eval_every: int, most: int = 100) -> list[int]:
    """Step counts at which to hand control back to Python: every evaluation, and at least
    every `most` steps so the progress bar moves."""
    ends = set(range(eval_every, steps, eval_every)) | set(range(most, steps, most)) | {steps}
    return sorted(ends)


def evaluate(classifier: Classifier, data: TextDataset, role: str) -> tuple[dict, np.ndarray]:
    split = data.splits[role]
    logits = classifier.logits(role)
    return classification_metrics(split.labels, logits, data.label_names), logits


def run_loop(
    classifier: Classifier,
    data: TextDataset,
    steps: int,
    batch_size: int,
    eval_every: int,
    seed: int,
    on_evaluation: OnEvaluation,
    progress: bool = False,
    buckets: int = 0,
) -> LoopResult:
    """Train for `steps` steps in chunks, evaluating on validation every `eval_every` steps
    and at the last; stop at the first non-finite loss (diverged). `buckets`: batches
    bucketed by length (`batch_order`) where the classifier knows its examples' lengths."""
    order = batch_order(
        len(data.splits["train"]), batch_size, seed, classifier.padding_lengths, buckets
    )
    result = LoopResult(status=RunStatus.COMPLETED, steps_done=0)
    losses: list[np.ndarray] = []
    started, eval_time = time.perf_counter(), 0.0
    bar = tqdm(total=steps, desc="train", unit="step", disable=not progress, leave=False)
    for end in chunk_ends(steps, eval_every):
        k = end - result.steps_done
        chunk = classifier.train_chunk(np.stack([next(order) for _ in range(k)])).numpy()
        bad = np.flatnonzero(~np.isfinite(chunk))
        if bad.size:
            result.steps_done += int(bad[0]) + 1
            result.diverged_at_step, result.status = result.steps_done, RunStatus.DIVERGED
            log.warning("loss became %s at step %d: run diverged", chunk[bad[0]], result.steps_done)
            break
        result.steps_done = end
        losses.append(chunk)
        bar.update(k)
        if end % eval_every and end != steps:
            continue
        eval_started = time.perf_counter()
        metrics, result.last_logits = evaluate(classifier, data, "validation")
        train_loss = float(np.concatenate(losses).mean())
        losses = []
        result.history.append({"step": end, **metrics, "train_loss": train_loss})
        stop = on_evaluation(end, metrics, train_loss)
        eval_time += time.perf_counter() - eval_started
        bar.set_postfix(acc=f"{metrics['accuracy']:.3f}", f1=f"{metrics['macro_f1']:.3f}")
        if stop:
            result.status = RunStatus.STOPPED
            log.info("asked to stop at step %d", end)
            break
    result.train_time_s = time.perf_counter() - started - eval_time
    bar.close()
    return result
