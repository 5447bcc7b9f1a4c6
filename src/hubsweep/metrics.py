"""Multi-class classification metrics: loss, accuracy, macro and per-class P/R/F1.

The reference notebook applied binary precision/recall to three classes; these are the
standard multi-class definitions (a class never predicted has precision 0). Macro scores
average over the classes present in a split's labels or predictions (scikit-learn's rule):
a class with no example that is never predicted has no defined recall or F1, and counting
it as 0 would pull every macro score down by a class the split does not hold.
"""

from __future__ import annotations

import numpy as np

# The scalar metrics of an evaluation, in the order tables list them; `loss` is minimised.
METRICS = ("macro_f1", "accuracy", "macro_precision", "macro_recall", "loss")
SCORES = tuple(m for m in METRICS if m != "loss")
MACRO_RULE = "mean over the classes present in the split's labels or predictions"


def lower_is_better(metric: str) -> bool:
    return metric == "loss"


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    return np.bincount(
        labels * num_classes + predictions, minlength=num_classes * num_classes
    ).reshape(num_classes, num_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def classification_metrics(
    labels: np.ndarray,
    logits: np.ndarray,
    label_names: tuple[str, ...],
    offsets: np.ndarray | None = None,
) -> dict:
    """The metrics of one split. `offsets`: added to the logits before the argmax that
    decides each example's class (training/decision.py); the loss is the model's own."""
    n = len(label_names)
    # A diverging model's logits overflow; its loss is then reported as inf/NaN, not raised.
    with np.errstate(over="ignore", invalid="ignore"):
        log_probs = logits - logits.max(axis=1, keepdims=True)
        log_probs = log_probs - np.log(np.exp(log_probs).sum(axis=1, keepdims=True))
        loss = float(-log_probs[np.arange(len(labels)), labels].mean())
    decided = logits if offsets is None else logits + offsets
    cm = confusion_matrix(labels, decided.argmax(axis=1), n)
    tp = np.diag(cm).astype(np.float64)
    precision = _ratio(tp, cm.sum(axis=0))
    recall = _ratio(tp, cm.sum(axis=1))
    f1 = _ratio(2 * precision * recall, precision + recall)
    present = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    return {
        "loss": loss,
        "accuracy": float(tp.sum() / cm.sum()),
        "macro_precision": float(precision[present].mean()),
        "macro_recall": float(recall[present].mean()),
        "macro_f1": float(f1[present].mean()),
        "macro_classes": [name for name, p in zip(label_names, present, strict=True) if p],
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(cm[i].sum()),
            }
            for i, name in enumerate(label_names)
        },
        "confusion_matrix": cm.tolist(),
    }
