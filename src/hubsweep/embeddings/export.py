"""Export a vocabulary + vector matrix as a TF-Hub-format text-embedding SavedModel.

The module follows the CORD-19 Swivel module card: strings in, tokenised by
`hubsweep.embeddings.text.tokenize`, looked up in a vocabulary with hashed OOV bucket(s),
combined with sqrtn (sum / sqrt(token count); zeros for empty text), and the embedding
matrix exposed as a trainable variable so `hub.KerasLayer(..., trainable=True)` fine-tunes it.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from hubsweep.embeddings.text import tokenize
from hubsweep.errors import EmbeddingError

METADATA_FILE = "hubsweep_module.json"


def sqrtn_combine(table: tf.Tensor, ids: tf.RaggedTensor) -> tf.Tensor:
    """Sum of the token vectors / sqrt(token count); zeros for a text with no tokens."""
    vectors = tf.gather(table, ids.flat_values)
    summed = tf.math.unsorted_segment_sum(vectors, ids.value_rowids(), ids.nrows())
    counts = tf.cast(tf.maximum(ids.row_lengths(), 1), tf.float32)
    return summed / tf.sqrt(counts)[:, tf.newaxis]


class TextEmbeddingModule(tf.train.Checkpoint):
    """TF-Hub's reusable SavedModel: `__call__`, `variables`, `trainable_variables`."""

    def __init__(
        self, vocab_file: str, vectors: np.ndarray, num_oov_buckets: int, lowercase: bool
    ) -> None:
        super().__init__()
        self._vocab_asset = tf.saved_model.Asset(vocab_file)
        initializer = tf.lookup.TextFileInitializer(
            self._vocab_asset,
            key_dtype=tf.string,
            key_index=tf.lookup.TextFileIndex.WHOLE_LINE,
            value_dtype=tf.int64,
            value_index=tf.lookup.TextFileIndex.LINE_NUMBER,
        )
        self._table = tf.lookup.StaticVocabularyTable(initializer, num_oov_buckets)
        self._lowercase = lowercase
        self.embeddings = tf.Variable(vectors, dtype=tf.float32, name="embeddings")
        # hub.KerasLayer reads these lists from the restored object to know what to train.
        self.variables = [self.embeddings]
        self.trainable_variables = [self.embeddings]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def token_ids(self, sentences: tf.Tensor) -> tf.RaggedTensor:
        return tf.ragged.map_flat_values(self._table.lookup, tokenize(sentences, self._lowercase))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, sentences: tf.Tensor) -> tf.Tensor:
        return sqrtn_combine(self.embeddings, self.token_ids(sentences))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="sentences")])
    def serve(self, sentences: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"default": self(sentences)}


def _check_vocabulary(vocab: Sequence[str], vectors: np.ndarray) -> None:
    if vectors.ndim != 2 or vectors.shape[0] != len(vocab) or vectors.shape[1] == 0:
        raise EmbeddingError(
            f"vectors must be a [vocab_size={len(vocab)}, dim] matrix, got shape {vectors.shape}"
        )
    seen: dict[str, int] = {}
    for i, token in enumerate(vocab):
        if not token or token.split() != [token]:
            raise EmbeddingError(f"vocabulary entry {i} ({token!r}) is empty or has whitespace")
        if token in seen:
            raise EmbeddingError(f"vocabulary entry {i} ({token!r}) repeats entry {seen[token]}")
        seen[token] = i
    if not np.all(np.isfinite(vectors)):
        raise EmbeddingError("vectors contain NaN or inf")


def export_text_embedding(
    vocab: Sequence[str],
    vectors: np.ndarray,
    output_dir: str | Path,
    *,
    num_oov_buckets: int = 1,
    lowercase: bool = False,
    oov_vectors: np.ndarray | None = None,
) -> Path:
    """Write a SavedModel mapping a 1-D string tensor to float32 [batch, dim].

    OOV bucket rows start at zero unless given: they add nothing to a frozen embedding and
    are learnt when the module is fine-tuned.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    _check_vocabulary(vocab, vectors)
    if num_oov_buckets < 1:
        raise EmbeddingError("num_oov_buckets must be at least 1")
    if oov_vectors is None:
        oov_vectors = np.zeros((num_oov_buckets, vectors.shape[1]), np.float32)
    if np.shape(oov_vectors) != (num_oov_buckets, vectors.shape[1]):
        raise EmbeddingError(
            f"oov_vectors must be [{num_oov_buckets}, {vectors.shape[1]}], "
            f"got {np.shape(oov_vectors)}"
        )
    output_dir = Path(output_dir)
    table = np.concatenate([vectors, np.asarray(oov_vectors, np.float32)])
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "vocab.txt"
        vocab_file.write_text("".join(f"{t}\n" for t in vocab), encoding="utf-8")
        module = TextEmbeddingModule(str(vocab_file), table, num_oov_buckets, lowercase)
        tf.saved_model.save(module, str(output_dir), signatures={"serving_default": module.serve})
    metadata = {
        "format": "tf-hub text embedding (TF2 SavedModel)",
        "vocab_size": len(vocab),
        "dim": int(vectors.shape[1]),
        "num_oov_buckets": num_oov_buckets,
        "lowercase": lowercase,
        "tokenizer": "delete \\pP, split on whitespace",
        "combiner": "sqrtn",
    }
    (output_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return output_dir


def read_vectors_text(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Read word2vec text format (optional "count dim" header) or GloVe text format."""
    path = Path(path)
    if not path.is_file():
        raise EmbeddingError(f"vectors file {path} does not exist")
    vocab: list[str] = []
    rows: list[np.ndarray] = []
    dim = None
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.rstrip("\n").split(" ")
            if lineno == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec header
            if not line.strip():
                continue
            token, values = parts[0], [p for p in parts[1:] if p]
            if dim is None:
                dim = len(values)
            if len(values) != dim or dim == 0:
                raise EmbeddingError(
                    f"{path}:{lineno}: expected {dim} values after the token, got {len(values)}"
                )
            try:
                rows.append(np.array(values, dtype=np.float32))
            except ValueError:
                raise EmbeddingError(f"{path}:{lineno}: non-numeric vector value") from None
            vocab.append(token)
    if not vocab:
        raise EmbeddingError(f"{path}: no vectors")
    return vocab, np.stack(rows)


def export_finetuned(source_module: str | Path, table: np.ndarray, output_dir: str | Path) -> Path:
    """Re-export a hubsweep module with a (fine-tuned) table of the same shape."""
    source_module = Path(source_module)
    metadata_file = source_module / METADATA_FILE
    if not metadata_file.is_file():
        raise EmbeddingError(f"{source_module} is not a module exported by hubsweep")
    metadata = json.loads(metadata_file.read_text())
    vocab = (source_module / "assets" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    n = metadata["vocab_size"]
    return export_text_embedding(
        vocab,
        table[:n],
        output_dir,
        num_oov_buckets=metadata["num_oov_buckets"],
        lowercase=metadata["lowercase"],
        oov_vectors=table[n:],
    )
