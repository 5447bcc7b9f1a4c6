"""Fine-tuning a hubsweep-exported BERT-family pair without re-tokenising, and without
recomputing what is frozen.

The string path tokenises every batch and runs the whole encoder at every step. This path
packs each split's sentences once ([CLS] ... [SEP], unpadded) and each step pads only its
batch, as the string path pads it (so the same dropout masks are drawn). When the
embeddings are frozen (`embedding.trainable_layers=k`), it goes further: the frozen
bottom maps each sentence to the same hidden states on every step, so they are computed
once per (module, preprocessor, split content, length, layer, dtype), kept in the
feature cache (unpadded, one row per token), and each step runs only the top k layers, the
pooling and the head. With `trainer.feature_cache=false` they are recomputed at every step
(the frozen layers in inference mode, as cached).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from omegaconf import DictConfig

from hubsweep.embeddings.features import FeatureCache
from hubsweep.training.classifier import Classifier

CACHE_DTYPES = {"float32": np.float32, "float16": np.float16}


def length_batches(lengths: np.ndarray, max_rows: int, max_tokens: int) -> list[np.ndarray]:
    """Row indices in batches of similar length, shortest first: each holds at most
    `max_rows` rows, and at most `max_tokens` tokens counted as rows × its longest row's
    length (one row at least; the batch is then padded up to a multiple of PAD_MULTIPLE).
    On 2 CPU cores a large padded batch ran a forward pass at about a third of the rate of
    small ones (its activations outgrow the caches; docs/speed.md)."""
    batches: list[np.ndarray] = []
    current: list[int] = []
    for i in np.argsort(lengths, kind="stable"):
        if current and (len(current) >= max_rows or (len(current) + 1) * lengths[i] > max_tokens):
            batches.append(np.array(current))
            current = []
        current.append(int(i))
    if current:
        batches.append(np.array(current))
    return batches


def _hidden_states(
    layer, ids: tf.RaggedTensor, max_rows: int, max_tokens: int
) -> tuple[np.ndarray, np.ndarray]:
    """The first trained layer's input for each row of `ids`, unpadded: (float32
    [tokens, hidden], int64 [rows] lengths), computed in `length_batches`."""
    lengths = ids.row_lengths().numpy()
    pieces: list[np.ndarray] = [None] * len(lengths)  # type: ignore[list-item]
    ids_spec = tf.TensorSpec([None, None], tf.int32)
    below = tf.function(  # one tracing for every batch shape
        lambda x, m: layer.hidden_below(x, m, training=False), input_signature=[ids_spec] * 2
    )
    for chosen in length_batches(lengths, max_rows, max_tokens):
        x, mask = layer.padded(tf.gather(ids, chosen))
        out = below(x, mask).numpy()
        for row, j in enumerate(chosen):
            pieces[j] = out[row, : lengths[j]]
    return np.concatenate(pieces), lengths


class EncoderClassifier(Classifier):
    """Trains what of the encoder trains, and the head, on `inputs[role]`: unpadded token ids
    ([n, (length)]; the frozen layers, if any, run at every step), or the cached first
    trained layer's input ([n, (length), hidden])."""

    def __init__(
        self, *args, inputs: dict[str, tf.RaggedTensor], from_ids: bool, eval_tokens: int
    ) -> None:
        self.inputs, self.from_ids, self.eval_tokens = inputs, from_ids, eval_tokens
        self.path = "encoder token ids" if from_ids else "encoder cached below the top layers"
        super().__init__(*args)
        self.embedding = self.model.layers[0]
        self.padding_lengths = inputs["train"].row_lengths().numpy()

    def gather(self, role: str, idx: tf.Tensor):
        return self.embedding.padded(tf.gather(self.inputs[role], idx))

    def eval_batches(self, role: str) -> list[np.ndarray]:
        """Batches of similar length (`length_batches`): in the split's order a batch pads
        to its longest sentence (the logits do not depend on the padding: it is masked)."""
        lengths = self.inputs[role].row_lengths().numpy()
        return length_batches(lengths, self.eval_batch_size, self.eval_tokens)

    def sentence_vectors(self, inputs, training: bool) -> tf.Tensor:
        x, mask = inputs
        e = self.embedding
        if self.from_ids:
            x = e.hidden_below(x, mask, training)
        x = tf.cast(x, tf.float32)
        return e.sentence_vectors(e.hidden_above(x, mask, training), mask)

    def forward(self, inputs, training: bool) -> tf.Tensor:
        return self.head(self.sentence_vectors(inputs, training), training=training)


def encoder_classifier(
    cfg: DictConfig, data, layer, args: tuple, cache: FeatureCache | None
) -> EncoderClassifier:
    """The path for a layer-wise pair (`layer.layerwise`) being fine-tuned."""
    rows, tokens = cfg.trainer.eval_batch_size, cfg.trainer.eval_batch_tokens
    if layer.embeddings_trained or not cfg.trainer.feature_cache:
        ids = {role: layer.packed(list(split.texts)) for role, split in data.splits.items()}
        return EncoderClassifier(*args, inputs=ids, from_ids=True, eval_tokens=tokens)
    e, cache = cfg.embedding, cache or FeatureCache(None)
    dtype = CACHE_DTYPES[cfg.trainer.hidden_cache_dtype]
    inputs = {}
    for role, split in data.splits.items():

        def build(texts):  # packed only where the cache does not hold the rows
            values, lengths = _hidden_states(layer, layer.packed(list(texts)), rows, tokens)
            return values.astype(dtype), lengths

        inputs[role] = cache.get_or_build_rows(
            e.handle,
            split.texts,
            build,
            also=(
                str(e.preprocess_handle),
                f"seq_length={e.seq_length},below_layer={layer.frozen_layers},{dtype.__name__}",
            ),
            # One tensor for every run of the process (the trials of a study).
            convert=lambda values, lengths: tf.RaggedTensor.from_row_lengths(
                tf.constant(values), lengths
            ),
        )
    return EncoderClassifier(*args, inputs=inputs, from_ids=False, eval_tokens=tokens)
