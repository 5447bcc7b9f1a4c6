"""A BERT-family TF-Hub module pair (preprocessing + encoder) as a sentence-embedding layer:
strings -> [batch, hidden], like the bag-of-words modules, so the classifier, the
frozen-feature cache and every training path take it unchanged.

- The sentence vector is the encoder's `pooled_output`, or the masked mean of its
  `sequence_output` (`embedding.pooling=mean`, what sentence-transformers models use).
- Dynamic padding: each batch is packed only to the shortest of `PACK_LENGTHS` that holds
  its longest sentence (capped at `embedding.seq_length`), so short sentences do not pay
  for the full length. Each length is one branch of a `tf.switch_case`, calling the
  preprocessor's `bert_pack_inputs(..., seq_length=N)` with a Python int, as TF-Hub's own
  preprocessors require.
- `embedding.trainable_layers=k` fine-tunes only the top k transformer layers (and the
  pooler, when its output is used): the others and the embeddings stay frozen.
- `embedding.layer_lr_decay=d` (with optimizer=adamw) gives each trained variable its
  layer's rate factor (`lr_multipliers`).
"""

from __future__ import annotations

import re

import numpy as np
import tensorflow as tf
import tensorflow_hub as hub
import tf_keras as keras

from hubsweep.embeddings.transformer.bert import masked_mean
from hubsweep.embeddings.transformer.preprocess import PACK_LENGTHS
from hubsweep.errors import EmbeddingError

LAYER_INDEX = re.compile(r"(?:^|/)(?:layer|transformer/layer)_(\d+)/")


def _layer_of(variable: tf.Variable) -> int | None:
    match = LAYER_INDEX.search(variable.name)
    return int(match.group(1)) if match else None


def _position_limit(variables: list[tf.Variable]) -> int | None:
    """The encoder's max_position_embeddings: the rows of its position-embedding table
    (hubsweep's converter names it `position`, TF-Hub's BERTs `position_embedding/...`)."""
    for v in variables:
        leaf = v.name.rsplit("/", 2)
        if len(v.shape) == 2 and any(part.startswith("position") for part in leaf):
            return int(v.shape[0])
    return None


class BertSentenceEmbedding(keras.layers.Layer):
    def __init__(
        self,
        preprocess_handle: str,
        encoder_handle: str,
        seq_length: int,
        pooling: str,
        trainable: bool,
        trainable_layers: int | None,
        **kwargs,
    ) -> None:
        super().__init__(trainable=trainable, dtype=tf.string, **kwargs)
        import tensorflow_text  # noqa: F401  (registers the preprocessing graph's ops)

        self.preprocess = hub.load(preprocess_handle)
        self.encoder = hub.KerasLayer(encoder_handle, trainable=trainable)
        limit = _position_limit(self.encoder.weights)
        if limit is not None and seq_length > limit:
            raise EmbeddingError(
                f"embedding.seq_length={seq_length} is above the encoder's position limit "
                f"(max_position_embeddings={limit} in {encoder_handle}); set "
                f"embedding.seq_length to at most {limit}"
            )
        self.pooling = pooling
        self.lengths = self._packable({n for n in PACK_LENGTHS if n < seq_length} | {seq_length})
        self.trainable_layers = trainable_layers

    def _packable(self, lengths: set[int]) -> tuple[int, ...]:
        """The lengths this preprocessor packs to (a SavedModel holds the tracings it was
        saved with); the full length must be one of them."""
        probe = self.preprocess.tokenize(tf.constant(["probe"]))
        usable = []
        for n in sorted(lengths):
            try:
                self._pack(probe, n)
                usable.append(n)
            except (TypeError, ValueError, tf.errors.InvalidArgumentError):
                continue
        if max(lengths) not in usable:
            raise EmbeddingError(
                f"embedding.seq_length={max(lengths)}: the preprocessing model cannot pack to "
                f"this length (it can: {usable or 'none'})"
            )
        return tuple(usable)

    def _top_k(self, variables: list[tf.Variable]) -> list[tf.Variable]:
        layers = {_layer_of(v) for v in variables} - {None}
        if self.trainable_layers is None or not layers:
            return variables
        if self.trainable_layers > len(layers):
            raise EmbeddingError(
                f"embedding.trainable_layers={self.trainable_layers} but the encoder has "
                f"{len(layers)} layers"
            )
        first = max(layers) + 1 - self.trainable_layers
        pooler = self.pooling == "pooled_output"
        return [
            v
            for v in variables
            if (_layer_of(v) is not None and _layer_of(v) >= first)
            or (pooler and "pooler" in v.name)
        ]

    def lr_multipliers(self, decay: float) -> dict:
        """Layer-wise learning-rate decay: variable ref → decay^(L-l) for layer l of L
        (1-based), decay^L for the embeddings below them, 1 for the pooler."""
        layers = {_layer_of(v) for v in self.encoder.weights} - {None}
        if not layers:
            raise EmbeddingError(
                "embedding.layer_lr_decay: the encoder's variables are not named by layer "
                "(layer_<i>/...), so their layer is unknown"
            )
        count = max(layers) + 1
        out = {}
        for v in self.trainable_weights:
            index = _layer_of(v)
            if index is not None:
                out[v.ref()] = decay ** (count - 1 - index)
            else:
                out[v.ref()] = 1.0 if "pooler" in v.name else decay**count
        return out

    @property
    def trainable_weights(self) -> list[tf.Variable]:
        return self._top_k(self.encoder.trainable_weights) if self.trainable else []

    @property
    def non_trainable_weights(self) -> list[tf.Variable]:
        chosen = {id(v) for v in self.trainable_weights}
        return [v for v in self.encoder.weights if id(v) not in chosen]

    def token_lengths(self, sentences: tf.Tensor) -> np.ndarray:
        """Each sentence's packed length ([CLS] and [SEP] included, capped at seq_length)."""
        tokens = self.preprocess.tokenize(tf.reshape(sentences, [-1])).merge_dims(-2, -1)
        return np.minimum(tokens.row_lengths().numpy() + 2, max(self.lengths))

    def _pack(self, tokens: tf.RaggedTensor, length: int) -> dict[str, tf.Tensor]:
        return self.preprocess.bert_pack_inputs([tokens], seq_length=length)

    def call(self, sentences: tf.Tensor) -> tf.Tensor:
        tokens = self.preprocess.tokenize(tf.reshape(sentences, [-1]))
        lengths = tokens.merge_dims(-2, -1).row_lengths()
        longest = tf.reduce_max(tf.concat([lengths, [0]], axis=0)) + 2  # [CLS] ... [SEP]
        bucket = tf.minimum(
            tf.searchsorted(tf.constant(self.lengths, tf.int64), longest[tf.newaxis])[0],
            len(self.lengths) - 1,
        )
        branches = [lambda n=n: self._embed(self._pack(tokens, n)) for n in self.lengths]
        return tf.switch_case(tf.cast(bucket, tf.int32), branches)

    def _embed(self, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
        out = self.encoder(inputs)
        if self.pooling == "mean":
            return masked_mean(out["sequence_output"], inputs["input_mask"])
        return out["pooled_output"]
