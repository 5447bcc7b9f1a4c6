"""The checkpoint's WordPiece vocabulary as the adaptation uses it: the training texts
tokenised and packed as the converted pair packs them ([CLS] wordpieces [SEP], trimmed to
`seq_length`), and each step's batch padded and BERT-masked."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import tensorflow as tf

from hubsweep.adapt.masking import mask_tokens, pad_batch
from hubsweep.embeddings.transformer.layer import PAD_MULTIPLE
from hubsweep.embeddings.transformer.preprocess import BertPreprocess
from hubsweep.errors import EmbeddingError

log = logging.getLogger(__name__)

NEEDED_TOKENS = ("[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]")


class Vocabulary:
    def __init__(self, checkpoint: Path, lower: bool, seq_length: int) -> None:
        path = checkpoint / "vocab.txt"
        tokens = path.read_text(encoding="utf-8").splitlines()
        missing = [t for t in NEEDED_TOKENS if t not in tokens]
        if missing:
            raise EmbeddingError(
                f"{path}: no {', '.join(missing)} token; masked-LM adaptation needs "
                f"{', '.join(NEEDED_TOKENS)}"
            )
        self.size = len(tokens)
        self.mask_id = tokens.index("[MASK]")
        self.preprocess = BertPreprocess(path, lower, seq_length)
        self.special = (self.preprocess.cls_id, self.preprocess.sep_id, self.preprocess.pad_id)
        self.seq_length = seq_length

    def rows(self, texts: np.ndarray, batch: int = 1024) -> list[np.ndarray]:
        """Each text as [CLS] wordpieces [SEP], trimmed to seq_length; a text with no
        wordpiece (empty, only spaces) is left out: it has nothing to predict."""
        cls_id, sep_id, _ = self.special
        rows = []
        for start in range(0, len(texts), batch):
            chunk = tf.constant([str(t) for t in texts[start : start + batch]])
            pieces = self.preprocess.tokenize(chunk).merge_dims(-2, -1)
            for row in pieces.numpy():
                body = np.asarray(row, np.int32)[: self.seq_length - 2]
                if len(body):
                    rows.append(np.concatenate([[cls_id], body, [sep_id]]).astype(np.int32))
        if len(rows) < len(texts):
            log.info(
                "%d of %d texts have no wordpiece: left out", len(texts) - len(rows), len(texts)
            )
        return rows

    def masked(self, rows: list[np.ndarray], rng: np.random.Generator, prob: float):
        """A batch's (inputs, mask, labels): padded, BERT-masked ([CLS], [SEP] and padding
        are never picked)."""
        ids, mask = pad_batch(rows, PAD_MULTIPLE, self.preprocess.pad_id)
        maskable = (mask == 1) & ~np.isin(ids, self.special)
        inputs, labels = mask_tokens(ids, maskable, rng, prob, self.mask_id, self.size)
        return inputs, mask, labels


def rows_digest(rows: list[np.ndarray]) -> str:
    """The packed texts' content (ids and lengths): what the model is adapted to, exactly."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(np.int32(len(row)).tobytes() + row.astype(np.int32).tobytes())
    return digest.hexdigest()[:16]
