"""A BERT-architecture encoder in TensorFlow, built from a checkpoint's weights, saved in
TF-Hub's BERT encoder format.

The math is the reference implementation's (Hugging Face `BertModel`): embeddings (word +
absolute position + token type, layer-normalised), then per layer multi-head
self-attention with the padding masked out, residual + LayerNorm, a GELU (erf) feed-forward
block, residual + LayerNorm; the pooled output is tanh(dense(first token)).

Dropout while training, where the reference puts it: after the embeddings' LayerNorm, on
the attention probabilities, and on each sublayer's output before its residual. The rates
are non-trainable variables (`hidden_dropout`, `attention_dropout`; the checkpoint's
`hidden_dropout_prob` and `attention_probs_dropout_prob`), so a caller can set others after
loading. The masks are stateless draws from a seed per step: the same seeds draw the same
masks, whichever way the encoder is called.

The SavedModel's call takes TF-Hub's inputs, a dict of int32 [batch, seq] tensors
`input_word_ids`, `input_mask`, `input_type_ids` (any seq length up to the position
table), and `training`, and returns TF-Hub's outputs: `pooled_output` [batch, hidden],
`sequence_output` [batch, seq, hidden], `encoder_outputs` (one [batch, seq, hidden] per
layer) and `default` (= pooled_output). Its variables are named by layer (`layer_3/...`),
so a caller can fine-tune only the top k layers. The call is `embed`, then `layer(index=i)`
for each layer, then `pool`, all saved too, with the step's dropout seed an argument: a
caller holding layer k-1's outputs (cached, say) runs only the layers from k, and seeds
the masks itself (the call draws its seeds from a counter, `dropout_step`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

INPUT_KEYS = ("input_word_ids", "input_mask", "input_type_ids")


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1

    @classmethod
    def from_json(cls, values: dict) -> BertConfig:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in values.items() if k in names})


def layer_norm(x: tf.Tensor, gamma: tf.Variable, beta: tf.Variable, eps: float) -> tf.Tensor:
    mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(variance + eps) * gamma + beta


def dropout(x: tf.Tensor, rate: tf.Variable, seed: tf.Tensor) -> tf.Tensor:
    """Inverted dropout with a stateless mask (`seed`: int64 [2])."""
    keep = tf.random.stateless_uniform(tf.shape(x), seed=seed) >= rate
    return tf.where(keep, x / (1.0 - rate), tf.zeros_like(x))


def matmul(a: tf.Tensor, b: tf.Tensor, mixed: bool, **kwargs) -> tf.Tensor:
    """a @ b, in bfloat16 when `mixed` (float32 in and out: mixed precision's matmuls)."""
    if not mixed:
        return tf.matmul(a, b, **kwargs)
    product = tf.matmul(tf.cast(a, tf.bfloat16), tf.cast(b, tf.bfloat16), **kwargs)
    return tf.cast(product, tf.float32)


class Dense(tf.Module):
    """x @ kernel + bias over the last axis (kernel [in, out], the transpose of the
    checkpoint's `.weight`)."""

    def __init__(self, kernel: np.ndarray, bias: np.ndarray, name: str) -> None:
        super().__init__(name=name)
        with self.name_scope:  # <layer>/<name>/kernel: the pooler's is named "pooler"
            self.kernel = tf.Variable(kernel, name="kernel")  # [in, out]
            self.bias = tf.Variable(bias, name="bias")

    def __call__(self, x: tf.Tensor, mixed: bool = False) -> tf.Tensor:
        # One 2-D matmul over the batch's tokens: its kernel gradient is one matmul too (a
        # batched matmul broadcasting the kernel computed one product per sentence and
        # summed them, a sixth of a full fine-tuning step; an einsum with "..."
        # materialised a per-example outer product: out of memory).
        shape = tf.shape(x)
        rows = tf.reshape(x, [-1, shape[-1]])
        out = tf.reshape(matmul(rows, self.kernel, mixed), tf.concat([shape[:-1], [-1]], 0))
        return out + self.bias


class Norm(tf.Module):
    """LayerNorm over the last axis (gamma, beta: the checkpoint's `.weight`, `.bias`)."""

    def __init__(self, gamma: np.ndarray, beta: np.ndarray, eps: float, name: str) -> None:
        super().__init__(name=name)
        with self.name_scope:
            self.gamma = tf.Variable(gamma, name="gamma")
            self.beta = tf.Variable(beta, name="beta")
        self.eps = eps

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return layer_norm(x, self.gamma, self.beta, self.eps)


# A layer's parts and the checkpoint's names for them (under `encoder.layer.<i>.`): dense
# layers (`.weight` [out, in], `.bias`) and LayerNorms (`.weight` = gamma, `.bias` = beta).
LAYER_DENSE = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attention_output": "attention.output.dense",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
}
LAYER_NORMS = {"attention_norm": "attention.output.LayerNorm", "output_norm": "output.LayerNorm"}


class _Layer(tf.Module):
    def __init__(self, w: dict[str, np.ndarray], cfg: BertConfig, index: int) -> None:
        super().__init__(name=f"layer_{index}")
        p = f"encoder.layer.{index}."
        with self.name_scope:
            for attr, key in LAYER_DENSE.items():
                setattr(self, attr, Dense(w[p + key + ".weight"].T, w[p + key + ".bias"], attr))
            for attr, key in LAYER_NORMS.items():
                norm = Norm(w[p + key + ".weight"], w[p + key + ".bias"], cfg.layer_norm_eps, attr)
                setattr(self, attr, norm)
        self.heads = cfg.num_attention_heads
        self.head_size = cfg.hidden_size // cfg.num_attention_heads

    def _split(self, x: tf.Tensor) -> tf.Tensor:
        shape = tf.shape(x)
        x = tf.reshape(x, [shape[0], shape[1], self.heads, self.head_size])
        return tf.transpose(x, [0, 2, 1, 3])  # [batch, heads, seq, head_size]

    def __call__(self, x: tf.Tensor, bias: tf.Tensor, drops=None, mixed: bool = False):
        """`drops`: while training, the dropout of the attention probabilities and of the
        two sublayers' outputs; None at inference. `mixed`: the matmuls in bfloat16 (the
        norms, softmax and residuals stay float32)."""
        attention, middle, out = drops or [lambda t: t] * 3
        q, k, v = (self._split(f(x, mixed)) for f in (self.query, self.key, self.value))
        scores = matmul(q, k, mixed, transpose_b=True) / math.sqrt(self.head_size) + bias
        context = matmul(attention(tf.nn.softmax(scores, axis=-1)), v, mixed)
        context = tf.transpose(context, [0, 2, 1, 3])
        shape = tf.shape(x)
        context = tf.reshape(context, [shape[0], shape[1], self.heads * self.head_size])
        x = self.attention_norm(middle(self.attention_output(context, mixed)) + x)
        hidden = tf.nn.gelu(self.intermediate(x, mixed), approximate=False)
        return self.output_norm(out(self.output(hidden, mixed)) + x)


class BertEncoder(tf.Module):
    """The encoder, from a checkpoint's weights named as Hugging Face's BertModel names them
    (a `bert.` prefix, as in BertForPreTraining checkpoints, is stripped)."""

    def __init__(self, weights: dict[str, np.ndarray], cfg: BertConfig) -> None:
        super().__init__(name="bert_encoder")
        w = {k.removeprefix("bert."): np.asarray(v, dtype=np.float32) for k, v in weights.items()}
        self.config = cfg
        with self.name_scope:
            self.word_embeddings = tf.Variable(w["embeddings.word_embeddings.weight"], name="word")
            self.position_embeddings = tf.Variable(
                w["embeddings.position_embeddings.weight"], name="position"
            )
            self.type_embeddings = tf.Variable(
                w["embeddings.token_type_embeddings.weight"], name="type"
            )
            self.embedding_norm = Norm(
                w["embeddings.LayerNorm.weight"],
                w["embeddings.LayerNorm.bias"],
                cfg.layer_norm_eps,
                "embedding_norm",
            )
            self.layers = [_Layer(w, cfg, i) for i in range(cfg.num_hidden_layers)]
            self.pooler = None
            if "pooler.dense.weight" in w:
                self.pooler = Dense(w["pooler.dense.weight"].T, w["pooler.dense.bias"], "pooler")
            # float(): config.json may say 0 (an int variable could not be compared).
            self.hidden_dropout = tf.Variable(
                float(cfg.hidden_dropout_prob), trainable=False, name="hidden_dropout"
            )
            self.attention_dropout = tf.Variable(
                float(cfg.attention_probs_dropout_prob), trainable=False, name="attention_dropout"
            )
            self.dropout_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="dropout_step")

    def checkpoint_weights(self) -> dict[str, np.ndarray]:
        """The variables' values under the checkpoint's names, as `__init__` read them: what
        `safetensors.numpy.save_file` writes for the converter to read back (a checkpoint
        trained further here, `hubsweep-adapt`)."""
        w = {
            "embeddings.word_embeddings.weight": self.word_embeddings.numpy(),
            "embeddings.position_embeddings.weight": self.position_embeddings.numpy(),
            "embeddings.token_type_embeddings.weight": self.type_embeddings.numpy(),
            "embeddings.LayerNorm.weight": self.embedding_norm.gamma.numpy(),
            "embeddings.LayerNorm.bias": self.embedding_norm.beta.numpy(),
        }
        for i, layer in enumerate(self.layers):
            p = f"encoder.layer.{i}."
            for attr, key in LAYER_DENSE.items():
                dense = getattr(layer, attr)
                w[p + key + ".weight"] = np.ascontiguousarray(dense.kernel.numpy().T)
                w[p + key + ".bias"] = dense.bias.numpy()
            for attr, key in LAYER_NORMS.items():
                w[p + key + ".weight"] = getattr(layer, attr).gamma.numpy()
                w[p + key + ".bias"] = getattr(layer, attr).beta.numpy()
        if self.pooler is not None:
            w["pooler.dense.weight"] = np.ascontiguousarray(self.pooler.kernel.numpy().T)
            w["pooler.dense.bias"] = self.pooler.bias.numpy()
        return w

    def _drop(self, seed: tf.Tensor, site: int, attention: bool = False):
        def drop(t: tf.Tensor) -> tf.Tensor:
            at = seed + tf.constant([0, site], tf.int64)
            return dropout(t, self.attention_dropout if attention else self.hidden_dropout, at)

        return drop

    def embed(
        self, ids: tf.Tensor, types: tf.Tensor, seed: tf.Tensor, training: bool = False
    ) -> tf.Tensor:
        """The embeddings' output [batch, seq, hidden] (layer 0's input). `seed`: int64 [2],
        this step's dropout seed (each site adds its id to the second word)."""
        seq = tf.shape(ids)[1]
        x = (
            tf.gather(self.word_embeddings, ids)
            + self.position_embeddings[tf.newaxis, :seq]
            + tf.gather(self.type_embeddings, types)
        )
        x = self.embedding_norm(x)
        return self._drop(seed, 0)(x) if training else x

    def layer(
        self,
        x: tf.Tensor,
        mask: tf.Tensor,
        seed: tf.Tensor,
        index: int,
        training: bool = False,
        mixed: bool = False,
    ) -> tf.Tensor:
        """Layer `index` on the previous one's outputs x (`mixed`: bfloat16 matmuls)."""
        # Padding gets a large negative score before the softmax, as the reference does.
        bias = (1.0 - tf.cast(mask, tf.float32))[:, tf.newaxis, tf.newaxis, :] * -1e9
        drops = None
        if training:
            drops = [self._drop(seed, 1 + 3 * index + j, attention=j == 0) for j in range(3)]
        return self.layers[index](x, bias, drops, mixed)

    def pool(self, sequence: tf.Tensor) -> tf.Tensor:
        """`pooled_output`: tanh(dense(first token)), or the first token without a pooler."""
        first = sequence[:, 0]
        return tf.tanh(self.pooler(first)) if self.pooler is not None else first

    def __call__(self, inputs: dict[str, tf.Tensor], training: bool = False) -> dict:
        """TF-Hub's call; training, each call is one dropout step (`dropout_step` + 1)."""
        ids, mask, types = (inputs[k] for k in INPUT_KEYS)
        seed = tf.stack([self.dropout_step, tf.constant(0, tf.int64)])
        x = self.embed(ids, types, seed, training)
        outputs = []
        for i in range(len(self.layers)):
            x = self.layer(x, mask, seed, i, training)
            outputs.append(x)
        if training:  # after the reads above (a tf.function keeps the program's order)
            self.dropout_step.assign_add(1)
        pooled = self.pool(x)
        return {
            "pooled_output": pooled,
            "sequence_output": x,
            "encoder_outputs": outputs,
            "default": pooled,
        }


def masked_mean(sequence: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """The mean of the token vectors where mask is 1 (sentence-transformers' pooling)."""
    m = tf.cast(mask, sequence.dtype)[:, :, tf.newaxis]
    return tf.reduce_sum(sequence * m, axis=1) / tf.maximum(tf.reduce_sum(m, axis=1), 1e-9)
