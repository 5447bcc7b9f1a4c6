"""A BERT-family TF-Hub module pair (preprocessing + encoder) as a sentence-embedding layer:
strings -> [batch, hidden], like the bag-of-words modules, so the classifier, the
frozen-feature cache and every training path take it unchanged.

- The sentence vector is the encoder's `pooled_output`, or the masked mean of its
  `sequence_output` (`embedding.pooling=mean`, what sentence-transformers models use).
- Dynamic padding: each batch is packed to `embedding.seq_length` (the preprocessor's
  `bert_pack_inputs(..., seq_length=N)` takes a Python int, as TF-Hub's own preprocessors
  require) and cut to its longest sentence rounded up to a multiple of `PAD_MULTIPLE`, so
  short sentences do not pay for the full length (the encoders take any length).
- `embedding.trainable_layers=k` fine-tunes only the top k transformer layers (and the
  pooler, when its output is used): the others and the embeddings stay frozen.
- `embedding.layer_lr_decay=d` (with optimizer=adamw) gives each trained variable its
  layer's rate factor (`lr_multipliers`).
- A hubsweep-exported encoder is run layer by layer (`layerwise`): what is frozen (the
  embeddings, the layers below the top k) in inference mode (`hidden_below`), what trains
  with dropout (`hidden_above`), one seeded dropout step per training call. Its outputs
  below the top k are the same on every step, so a caller may compute them once and train
  on them (training/encoder_path.py). Other pairs run whole, through `hub.KerasLayer`.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import tensorflow as tf
import tensorflow_hub as hub
import tf_keras as keras

from hubsweep.embeddings.transformer.bert import masked_mean
from hubsweep.errors import EmbeddingError

# Batches are padded to a multiple of this: a few shapes, little padding.
PAD_MULTIPLE = 8
# Dropout sites an encoder may have (the embeddings' + 3 per layer, 1 + 3 × 24 for
# BERT-large): a run's seed word leaves room for them.
DROPOUT_SITES = 4096
log = logging.getLogger(__name__)
LAYER_INDEX = re.compile(r"(?:^|/)(?:layer|transformer/layer)_(\d+)/")
# CPU flags of native bfloat16 arithmetic: x86's AVX512-BF16 and AMX, Arm's BF16.
BFLOAT16_FLAGS = re.compile(r"\b(avx512_bf16|amx_bf16|bf16)\b")
_warned_bfloat16 = False


def bfloat16_native(cpuinfo: str | None = None) -> bool | None:
    """Whether this machine multiplies bfloat16 natively: a GPU, or a CPU whose flags
    (`cpuinfo`: /proc/cpuinfo's text) name a bfloat16 instruction set; None: unknown."""
    if tf.config.list_physical_devices("GPU"):
        return True
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return None
    return bool(BFLOAT16_FLAGS.search(cpuinfo))


def warn_if_bfloat16_emulated(key: str, cpuinfo: str | None = None) -> None:
    """Once per process: `key` asks for bfloat16 matmuls on a CPU without bfloat16
    instructions, where they are converted to float32 and no faster (docs/speed.md)."""
    global _warned_bfloat16
    if _warned_bfloat16 or bfloat16_native(cpuinfo) is not False:
        return
    _warned_bfloat16 = True
    log.warning(
        "%s=true: this CPU has no bfloat16 instructions (no avx512_bf16, amx_bf16 or bf16 "
        "among its flags), so bfloat16 matmuls are converted and gain nothing: measured on "
        "such a CPU at 1.00x float32's steps/s fine-tuning all MiniLM layers and 0.67x the "
        "top 2 (docs/speed.md); %s=false may be as fast or faster (the scores differ a "
        "little)",
        key,
        key,
    )


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
        self.seq_length = seq_length
        self._check_packs()
        self.trainable_layers = trainable_layers
        self.encoder_layers = self.layer_count()  # 0: its variables are not named by layer
        self._check_layers()
        saved = self.encoder.resolved_object
        self.layerwise = all(hasattr(saved, f) for f in ("embed", "layer", "pool"))
        self.saved = saved
        count = self.encoder_layers
        # The layers below the first trained one, and whether the embeddings train.
        # (With trainable_layers = all of them, the embeddings are frozen: layer 0's input
        # then has no dropout, as in any top-k run.)
        self.frozen_layers = count - (trainable_layers or count) if trainable else count
        self.embeddings_trained = trainable and trainable_layers is None
        # Dropout seeds, [training calls so far, run seed × SITES + site]: every step and
        # run its own masks (the encoder's own `dropout_step` serves only TF-Hub's call).
        self.training_calls = tf.Variable(0, dtype=tf.int64, trainable=False, name="calls")
        self.dropout_seed = tf.Variable(0, dtype=tf.int64, trainable=False, name="seed")
        # trainer.mixed_precision: the trained layers' matmuls in bfloat16 (what is frozen,
        # and so cached, stays float32).
        self.mixed = False

    def _check_packs(self) -> None:
        """The preprocessor packs to seq_length (a SavedModel holds only the tracings it was
        saved with)."""
        probe = self.preprocess.tokenize(tf.constant(["probe"]))
        try:
            self._pack(probe, self.seq_length)
        except (TypeError, ValueError, tf.errors.InvalidArgumentError):
            raise EmbeddingError(
                f"embedding.seq_length={self.seq_length}: the preprocessing model cannot pack "
                "to this length"
            ) from None

    def layer_count(self) -> int:
        layers = {_layer_of(v) for v in self.encoder.weights} - {None}
        return max(layers) + 1 if layers else 0

    def _check_layers(self) -> None:
        count = self.encoder_layers
        if self.trainable_layers is not None and count and self.trainable_layers > count:
            raise EmbeddingError(
                f"embedding.trainable_layers={self.trainable_layers} but the encoder has "
                f"{count} layers"
            )

    def _top_k(self, variables: list[tf.Variable]) -> list[tf.Variable]:
        """The variables that train: the top k layers' (all, with the embeddings, when k is
        null), and the pooler's where its output is used."""
        pooler = self.pooling == "pooled_output"
        if not pooler:
            variables = [v for v in variables if "pooler" not in v.name]
        layers = {_layer_of(v) for v in variables} - {None}
        if self.trainable_layers is None or not layers:
            return variables
        first = max(layers) + 1 - self.trainable_layers
        return [
            v
            for v in variables
            if (_layer_of(v) is not None and _layer_of(v) >= first)
            or (pooler and "pooler" in v.name)
        ]

    def lr_multipliers(self, decay: float) -> dict:
        """Layer-wise learning-rate decay: variable ref → decay^(L-l) for layer l of L
        (1-based), decay^L for the embeddings below them, 1 for the pooler."""
        count = self.encoder_layers
        if not count:
            raise EmbeddingError(
                "embedding.layer_lr_decay: the encoder's variables are not named by layer "
                "(layer_<i>/...), so their layer is unknown"
            )
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

    def _variable(self, leaf: str) -> tf.Variable | None:
        return next((v for v in self.encoder.weights if v.name.endswith(f"/{leaf}:0")), None)

    def set_dropout(self, hidden: float | None, attention: float | None) -> None:
        """Override the checkpoint's dropout rates (None keeps one)."""
        for key, leaf, rate in (
            ("hidden", "hidden_dropout", hidden),
            ("attention", "attention_dropout", attention),
        ):
            if rate is None:
                continue
            variable = self._variable(leaf)
            if variable is None:
                raise EmbeddingError(
                    f"embedding.{key}_dropout: this encoder has no {leaf} rate to set (a "
                    "TF-Hub BERT fixes its dropout inside; a hubsweep-exported one can)"
                )
            variable.assign(rate)

    def seed_dropout(self, seed: int) -> None:
        """This run's dropout masks: from its seed, starting again at step 0."""
        self.dropout_seed.assign(int(seed) * DROPOUT_SITES)
        self.training_calls.assign(0)

    def packed(self, sentences) -> tf.RaggedTensor:
        """Each sentence's token ids as the encoder sees them ([CLS] ... [SEP], trimmed to
        seq_length), unpadded: int32 [n, (length)]."""
        tokens = self.preprocess.tokenize(tf.reshape(tf.convert_to_tensor(sentences), [-1]))
        inputs = self._pack(tokens, self.seq_length)
        lengths = tf.reduce_sum(inputs["input_mask"], axis=1)
        return tf.RaggedTensor.from_tensor(inputs["input_word_ids"], lengths=lengths)

    def _width(self, lengths: tf.Tensor) -> tf.Tensor:
        """A batch's padded length: its longest row rounded up to PAD_MULTIPLE."""
        longest = tf.reduce_max(tf.concat([tf.cast(lengths, tf.int32), [1]], axis=0))
        return tf.minimum(
            (longest + PAD_MULTIPLE - 1) // PAD_MULTIPLE * PAD_MULTIPLE, self.seq_length
        )

    def padded(self, rows: tf.RaggedTensor) -> tuple[tf.Tensor, tf.Tensor]:
        """A batch of unpadded rows ([n, (length), ...]) padded as `call` pads its batches
        (`_width`): (values, int32 mask)."""
        lengths = tf.cast(rows.row_lengths(), tf.int32)
        width = self._width(lengths)
        values = rows.to_tensor(
            shape=tf.concat(
                [[rows.nrows(out_type=tf.int32), width], tf.shape(rows.flat_values)[1:]], axis=0
            )
        )
        return values, tf.sequence_mask(lengths, width, dtype=tf.int32)

    def _seed(self) -> tf.Tensor:
        return tf.stack([self.training_calls, self.dropout_seed])

    def hidden_below(self, ids: tf.Tensor, mask: tf.Tensor, training: bool) -> tf.Tensor:
        """The first trained layer's input: the embeddings' output (with dropout when they
        train) through the frozen layers (inference)."""
        types = tf.zeros_like(ids)
        x = self.saved.embed(
            ids, types, self._seed(), training=training and self.embeddings_trained
        )
        for i in range(self.frozen_layers):
            x = self.saved.layer(x, mask, self._seed(), index=i, training=False)
        return x

    def hidden_above(self, x: tf.Tensor, mask: tf.Tensor, training: bool) -> tf.Tensor:
        """The sequence output from the first trained layer's input; training, one dropout
        step."""
        for i in range(self.frozen_layers, self.encoder_layers):
            x = self.saved.layer(
                x, mask, self._seed(), index=i, training=training, mixed=self.mixed
            )
        if training:  # after the reads above (a tf.function keeps the program's order)
            self.training_calls.assign_add(1)
        return x

    def sentence_vectors(self, sequence: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        if self.pooling == "mean":
            return masked_mean(sequence, mask)
        return self.saved.pool(sequence)

    def token_lengths(self, sentences: tf.Tensor) -> np.ndarray:
        """Each sentence's packed length ([CLS] and [SEP] included, capped at seq_length)."""
        return self.packed(sentences).row_lengths().numpy()

    def _pack(self, tokens: tf.RaggedTensor, length: int) -> dict[str, tf.Tensor]:
        return self.preprocess.bert_pack_inputs([tokens], seq_length=length)

    def call(self, sentences: tf.Tensor, training=None) -> tf.Tensor:
        training = bool(training)  # a Python bool: it picks which saved tracing runs
        tokens = self.preprocess.tokenize(tf.reshape(sentences, [-1]))
        inputs = self._pack(tokens, self.seq_length)
        width = self._width(tf.reduce_sum(inputs["input_mask"], axis=1))
        return self._embed({k: v[:, :width] for k, v in inputs.items()}, training)

    def _embed(self, inputs: dict[str, tf.Tensor], training: bool) -> tf.Tensor:
        if self.layerwise:
            ids, mask = inputs["input_word_ids"], inputs["input_mask"]
            below = self.hidden_below(ids, mask, training)
            return self.sentence_vectors(self.hidden_above(below, mask, training), mask)
        out = self.encoder(inputs, training=training)
        if self.pooling == "mean":
            return masked_mean(out["sequence_output"], inputs["input_mask"])
        return out["pooled_output"]
