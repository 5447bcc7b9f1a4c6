"""`hubsweep-adapt`: a checkpoint's masked-LM pretraining continued on a dataset's training
texts, then written as a checkpoint (`output/checkpoint`) and its TF-Hub pair
(`output/preprocess`, `output/encoder`), which `embedding.handle` /
`embedding.preprocess_handle` take like any converted pair.

Only the training split's texts are read: validation selects and test reports, so neither
may shape the model (Gururangan et al.'s TAPT uses the task's training text alone).

Resumable: the training state (encoder, head, optimizer, step, the loss so far) is saved
in `work_dir/state/<key>` every `save_every` steps, keyed by everything that defines the
result (the checkpoint's and the data's content, every setting but where things go); the
same command continues from the last save, and a resumed run equals one that never
stopped (each step's masks, dropout and batch are functions of the seed and the step).
The output appears whole or not at all (written beside it, then renamed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from hubsweep.adapt.masking import mask_tokens, pad_batch
from hubsweep.adapt.mlm import MaskedLanguageModel, train_step
from hubsweep.adapt.record import ADAPT_FILE, CHECKPOINT_DIR
from hubsweep.data.datasets import hash_files, load_dataset, source_fingerprint
from hubsweep.embeddings.transformer.bert import BertConfig, BertEncoder
from hubsweep.embeddings.transformer.convert import (
    NEEDED,
    convert_checkpoint,
    locate_checkpoint,
    read_checkpoint,
)
from hubsweep.embeddings.transformer.layer import DROPOUT_SITES, PAD_MULTIPLE
from hubsweep.errors import ConfigError, EmbeddingError, Interrupted
from hubsweep.training.classifier import batch_order
from hubsweep.training.optimizers import AdamW, WarmupThenDecay

log = logging.getLogger(__name__)

COPIED = ("config.json", "vocab.txt", "tokenizer_config.json")
# Settings that say where things go or how they are shown, not what is trained.
PLACES = ("output", "work_dir", "save_every", "progress")


def adaptation_texts(cfg: DictConfig) -> np.ndarray:
    """The texts the model adapts to: the dataset's training split, and nothing else."""
    return load_dataset(cfg.dataset, ["train"]).splits["train"].texts


class Vocabulary:
    """The checkpoint's WordPiece tokenisation, packed as the converted pair packs it."""

    def __init__(self, checkpoint: Path, lower: bool, seq_length: int) -> None:
        from hubsweep.embeddings.transformer.preprocess import BertPreprocess

        tokens = (checkpoint / "vocab.txt").read_text(encoding="utf-8").splitlines()
        if "[MASK]" not in tokens:
            raise EmbeddingError(
                f"{checkpoint / 'vocab.txt'}: no [MASK] token; masked-LM adaptation needs one"
            )
        self.size = len(tokens)
        self.mask_id = tokens.index("[MASK]")
        self.preprocess = BertPreprocess(checkpoint / "vocab.txt", lower, seq_length)
        self.special = (self.preprocess.cls_id, self.preprocess.sep_id, self.preprocess.pad_id)
        self.seq_length = seq_length

    def rows(self, texts: np.ndarray, batch: int = 1024) -> list[np.ndarray]:
        """Each text as [CLS] wordpieces [SEP], trimmed to seq_length."""
        import tensorflow_text  # noqa: F401  (registers the tokeniser's ops)

        cls_id, sep_id, _ = self.special
        rows = []
        for start in range(0, len(texts), batch):
            chunk = tf.constant([str(t) for t in texts[start : start + batch]])
            pieces = self.preprocess.tokenize(chunk).merge_dims(-2, -1)
            for row in pieces.numpy():
                body = np.asarray(row, np.int32)[: self.seq_length - 2]
                rows.append(np.concatenate([[cls_id], body, [sep_id]]).astype(np.int32))
        return rows

    def masked(self, rows: list[np.ndarray], rng: np.random.Generator, prob: float):
        """A batch's (inputs, mask, labels): padded, BERT-masked."""
        ids, mask = pad_batch(rows, PAD_MULTIPLE, self.preprocess.pad_id)
        maskable = (mask == 1) & ~np.isin(ids, self.special)
        inputs, labels = mask_tokens(ids, maskable, rng, prob, self.mask_id, self.size)
        return inputs, mask, labels


def state_key(cfg: DictConfig, checkpoint: Path) -> str:
    """What defines the adapted model: the settings (not where things go), the checkpoint's
    files and the training texts' source."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    for place in PLACES:
        settings.pop(place, None)
    parts = [
        settings,
        hash_files([checkpoint / name for name in NEEDED], checkpoint),
        source_fingerprint(cfg.dataset),
    ]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _optimizer(cfg: DictConfig) -> AdamW:
    warmup = round(cfg.warmup_fraction * cfg.steps)
    schedule = WarmupThenDecay(cfg.learning_rate, warmup, cfg.steps, "linear", 0.0)
    return AdamW(
        schedule,
        cfg.weight_decay,
        cfg.beta_1,
        cfg.beta_2,
        cfg.epsilon,
        tuple(cfg.no_decay),
        global_clipnorm=cfg.clipnorm,
    )


def train(
    cfg: DictConfig,
    model: MaskedLanguageModel,
    vocab: Vocabulary,
    rows: list[np.ndarray],
    state_dir: Path,
    until: int | None = None,
) -> list[dict]:
    """Train `model` to cfg.steps (or stop after step `until`, saving there: a test's
    interruption), resuming from state_dir's last save; the loss log, one entry a save."""
    optimizer = _optimizer(cfg)
    done = tf.Variable(0, dtype=tf.int64, name="steps_done")
    state = tf.train.Checkpoint(model=model, optimizer=optimizer, steps_done=done)
    manager = tf.train.CheckpointManager(state, str(state_dir), max_to_keep=1)
    losses_file = state_dir / "loss.jsonl"
    history: list[dict] = []
    if manager.latest_checkpoint:
        state.restore(manager.latest_checkpoint).expect_partial()
        history = [json.loads(line) for line in losses_file.read_text().splitlines()]
        # An entry written after the last save (the process stopped in between) goes.
        history = [h for h in history if h["step"] <= int(done)]
        losses_file.write_text("".join(json.dumps(h) + "\n" for h in history))
        log.info("resumed at step %d of %d from %s", int(done), cfg.steps, state_dir)
    start, stop = int(done), min(cfg.steps, until or cfg.steps)
    lengths = np.array([len(r) for r in rows])
    order = batch_order(len(rows), cfg.batch_size, cfg.seed, lengths, cfg.length_buckets)
    for _ in range(start):  # the stream is a function of the seed: skip what was trained
        next(order)
    step = train_step(model, optimizer, cfg.mixed_precision)
    recent: list[float] = []
    started = time.perf_counter()
    bar = tqdm(total=cfg.steps, initial=start, desc="adapt", unit="step", disable=not cfg.progress)
    for k in range(start, stop):
        batch = [rows[i] for i in next(order)]
        rng = np.random.default_rng([cfg.seed, k])  # the step's masks, resumed or not
        inputs, mask, labels = vocab.masked(batch, rng, cfg.mask_prob)
        seed = tf.constant([k, cfg.seed * DROPOUT_SITES], tf.int64)
        loss = float(step(inputs, mask, labels, seed))
        if not np.isfinite(loss):
            raise ConfigError(
                f"learning_rate: the masked-LM loss became {loss} at step {k + 1} "
                f"(learning_rate={cfg.learning_rate}); lower it"
            )
        recent.append(loss)
        bar.update(1)
        if (k + 1) % cfg.save_every == 0 or k + 1 == stop:
            entry = {
                "step": k + 1,
                "loss": round(float(np.mean(recent)), 4),
                "seconds": round(time.perf_counter() - started, 1),
            }
            history.append(entry)
            done.assign(k + 1)
            with losses_file.open("a") as f:
                f.write(json.dumps(entry) + "\n")
            manager.save()
            bar.set_postfix(loss=f"{entry['loss']:.3f}")
            log.info("step %d/%d  masked-LM loss %.4f", k + 1, cfg.steps, entry["loss"])
            recent, started = [], time.perf_counter()
    bar.close()
    return history


def _write(
    cfg: DictConfig,
    source: Path,
    encoder: BertEncoder,
    bert: BertConfig,
    history: list[dict],
    texts: int,
) -> Path:
    """output/checkpoint, then the pair converted from it; whole or not at all."""
    from safetensors.numpy import save_file

    output = Path(cfg.output)
    tmp = output.parent / f".{output.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    checkpoint = tmp / CHECKPOINT_DIR
    checkpoint.mkdir(parents=True)
    save_file(encoder.checkpoint_weights(), str(checkpoint / "model.safetensors"))
    for name in COPIED:
        if (source / name).is_file():
            shutil.copy(source / name, checkpoint / name)
    record = {
        "source": str(source.resolve()),
        "dataset": cfg.dataset.name,
        "texts": texts,
        "split": "train",
        "settings": {
            k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in PLACES
        }
        | {"dataset": cfg.dataset.name},
        "loss": history,
        "parameters": int(sum(np.prod(v.shape) for v in encoder.trainable_variables)),
        "layers": bert.num_hidden_layers,
    }
    (checkpoint / ADAPT_FILE).write_text(json.dumps(record, indent=2) + "\n")
    convert_checkpoint(checkpoint, tmp, cfg.seq_length, source=output / CHECKPOINT_DIR)
    tmp.rename(output)
    return output


def adapt(cfg: DictConfig, until: int | None = None) -> Path | None:
    """Adapt cfg.checkpoint to cfg.dataset's training texts; the output directory (None
    when stopped after step `until`, the state saved)."""
    from safetensors.numpy import load_file

    source = locate_checkpoint(cfg.checkpoint)
    bert, lower = read_checkpoint(source)
    if cfg.seq_length > bert.max_position_embeddings:
        raise ConfigError(
            f"seq_length: {cfg.seq_length} is above the checkpoint's max_position_embeddings "
            f"({bert.max_position_embeddings}); set seq_length to at most that"
        )
    vocab = Vocabulary(source, lower, cfg.seq_length)
    texts = adaptation_texts(cfg)
    rows = vocab.rows(texts)
    tokens = sum(len(r) for r in rows)
    log.info(
        "adapting %s to %d %s training texts (%d tokens, %.1f epochs of them in %d steps)",
        source,
        len(rows),
        cfg.dataset.name,
        tokens,
        cfg.steps * cfg.batch_size / len(rows),
        cfg.steps,
    )
    encoder = BertEncoder(load_file(str(source / "model.safetensors")), bert)
    model = MaskedLanguageModel(encoder, cfg.seed)
    state_dir = Path(cfg.work_dir) / "state" / state_key(cfg, source)
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        history = train(cfg, model, vocab, rows, state_dir, until)
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted; the state saved every {cfg.save_every} steps is in {state_dir}: "
            "run the same command to resume"
        ) from None
    if history and history[-1]["step"] < cfg.steps:
        return None
    out = _write(cfg, source, encoder, bert, history, len(rows))
    log.info("adapted pair written to %s (masked-LM loss %.4f)", out, history[-1]["loss"])
    return out
