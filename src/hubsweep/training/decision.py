"""The decision rule (`trainer.decision`): which class a trained classifier names.

`argmax`: the class with the largest logit, as trained. `tuned_offsets`: the largest logit
after a per-class offset is added, the offsets fitted on the final model's validation
logits to maximise `trainer.selection_metric` (a score), then used for test and
predictions.csv. This is threshold moving (scikit-learn's `TunedThresholdClassifierCV`
for two classes) for any number of classes: cross-entropy trains the most probable class
to win, which maximises accuracy, while macro-F1 counts a rare class's errors as much as a
common one's, so its best decisions sit a little toward or away from a class, by an amount
the training loss never sees. Validation fits, test only reports.

Only the decisions move: the probabilities (loss, predictions.csv's `p_` columns) stay
the model's. The validation score with the offsets is fitted on the very examples it is
measured on, so final.json keeps it apart (`decision`), and every evaluation a study
selects on is the argmax one.
"""

from __future__ import annotations

import numpy as np

from hubsweep.metrics import classification_metrics

# Each class's offset is searched on this grid (logits are log-odds: +-3 moves a decision
# by a factor of e^3 ~ 20 in odds); a round sets each offset in turn, the first class's
# held at 0 (only differences between offsets change a decision).
OFFSET_GRID = np.round(np.arange(-3.0, 3.0 + 1e-9, 0.05), 2)
MAX_ROUNDS = 10


def _plateau_centre(values: np.ndarray, scores: np.ndarray) -> float:
    """The middle of the widest run of consecutive grid values that reach the best score
    (the one nearest 0 among equally wide runs): the scores are step functions of an
    offset, and the middle of a step is the choice least tied to a few examples."""
    best = np.flatnonzero(scores >= scores.max() - 1e-12)
    runs = np.split(best, np.flatnonzero(np.diff(best) > 1) + 1)
    widest = max(len(r) for r in runs)
    run = min((r for r in runs if len(r) == widest), key=lambda r: abs(values[r[len(r) // 2]]))
    return float(values[run[len(run) // 2]])


def fit_offsets(
    labels: np.ndarray, logits: np.ndarray, label_names: tuple[str, ...], metric: str
) -> np.ndarray:
    """Per-class logit offsets that maximise `metric` on (labels, logits), by coordinate
    ascent over OFFSET_GRID from all zeros: an offset moves only where the score rises,
    so logits whose argmax is already best keep offsets of 0."""
    offsets = np.zeros(logits.shape[1])

    def score(candidate: np.ndarray) -> float:
        return classification_metrics(labels, logits, label_names, candidate)[metric]

    best = score(offsets)
    for _ in range(MAX_ROUNDS):
        moved = False
        for c in range(1, logits.shape[1]):
            trial = offsets.copy()
            scores = np.empty(len(OFFSET_GRID))
            for i, value in enumerate(OFFSET_GRID):
                trial[c] = value
                scores[i] = score(trial)
            if scores.max() > best + 1e-12:
                offsets[c] = _plateau_centre(OFFSET_GRID, scores)
                best, moved = float(scores.max()), True  # what the plateau's centre scores
        if not moved:
            break
    return offsets


def _argmax(labels, logits, label_names, metric) -> None:
    return None


# trainer.decision -> the offsets it fits on validation (None: plain argmax).
DECISIONS = {"argmax": _argmax, "tuned_offsets": fit_offsets}
