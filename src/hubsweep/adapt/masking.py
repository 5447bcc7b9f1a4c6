"""BERT's masked-language-model inputs: which tokens to predict, and what the model sees there.

Devlin et al.'s scheme, as Hugging Face's `DataCollatorForLanguageModeling` draws it: each
maskable token (not [CLS], [SEP] or padding) is picked with probability `prob`; of the picked,
80% become [MASK], 10% a token drawn uniformly from the whole vocabulary, 10% stay as they
are. The labels are the original ids where picked and -1 elsewhere (no loss there).
"""

from __future__ import annotations

import numpy as np

IGNORED = -1  # a label the loss skips


def pad_batch(rows: list[np.ndarray], multiple: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of token ids padded to the longest rounded up to `multiple`: (ids, int32 mask)."""
    longest = max(len(r) for r in rows)
    width = -(-longest // multiple) * multiple
    ids = np.full((len(rows), width), pad_id, np.int32)
    mask = np.zeros((len(rows), width), np.int32)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
    return ids, mask


def mask_tokens(
    ids: np.ndarray,
    maskable: np.ndarray,
    rng: np.random.Generator,
    prob: float,
    mask_id: int,
    vocab_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(the model's inputs, the labels) for a batch of ids; `maskable`: bool, same shape.

    A batch in which the draw picks nothing gets one maskable token picked at random, so
    every step has a loss."""
    picked = (rng.random(ids.shape) < prob) & maskable
    if not picked.any() and maskable.any():
        candidates = np.flatnonzero(maskable)
        picked.flat[candidates[rng.integers(len(candidates))]] = True
    labels = np.where(picked, ids, IGNORED).astype(np.int32)
    u = rng.random(ids.shape)
    inputs = ids.copy()
    inputs[picked & (u < 0.8)] = mask_id
    swapped = picked & (u >= 0.8) & (u < 0.9)
    inputs[swapped] = rng.integers(0, vocab_size, int(swapped.sum()))
    return inputs, labels
