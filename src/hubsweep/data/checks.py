"""What a run must know about its splits before its numbers mean anything: a training split
of fewer than two classes is refused; a split without some class (its macro scores average
over the classes present) and held-out texts that also appear in the training split are
warned about, once per process rather than once per run or trial."""

from __future__ import annotations

import logging

from hubsweep.data.datasets import TextDataset
from hubsweep.errors import DataError

log = logging.getLogger(__name__)

_WARNED: set[str] = set()  # each warning once per process, not once per run or trial


def _warn_once(message: str, *args) -> None:
    text = message % args
    if text not in _WARNED:
        _WARNED.add(text)
        log.warning("%s", text)


def check_splits(dataset: TextDataset) -> None:
    """What a run must know about its splits before its numbers mean anything: a training
    split of fewer than two classes is refused; a split without some class, and held-out
    texts that also appear in the training split, are warned about (once per process)."""
    check_classes(dataset)
    train = set(dataset.splits["train"].texts.tolist()) if "train" in dataset.splits else set()
    for role in ("validation", "test"):
        if role not in dataset.splits or not train:
            continue
        texts = dataset.splits[role].texts
        shared = sum(text in train for text in texts.tolist())
        if shared:
            _warn_once(
                "dataset %s: %d of %d %s texts also appear in the training split (exact "
                "duplicates); scores on them overstate how the model generalises",
                dataset.name,
                shared,
                len(texts),
                role,
            )


def check_classes(dataset: TextDataset) -> None:
    """Refuse a training split with fewer than two classes; warn about each other split's
    classes with no example (its macro scores average over the classes present)."""
    absent = dataset.absent_classes()
    held = [n for n in dataset.label_names if n not in absent.get("train", [])]
    if len(held) < 2:
        raise DataError(
            f"dataset.splits.train: the training split of {dataset.name} holds examples of "
            f"{len(held)} class(es) ({', '.join(held) or 'none'}) of "
            f"{', '.join(dataset.label_names)}; a classifier needs at least two"
        )
    for role, missing in absent.items():
        _warn_once(
            "dataset %s: the %s split has no example of %s; its macro scores are the mean "
            "over the classes present in its labels or predictions",
            dataset.name,
            role,
            ", ".join(repr(m) for m in missing),
        )
