"""`hubsweep-adapt`: a checkpoint's masked-LM pretraining continued on a dataset's training
texts, then written as a checkpoint (`output/checkpoint`) and its TF-Hub pair
(`output/preprocess`, `output/encoder`), which `embedding.handle` /
`embedding.preprocess_handle` take like any converted pair.

Only the training split's texts are read: validation selects and test reports, so neither
may shape the model (Gururangan et al.'s TAPT uses the task's training text alone).

Resumable: the training state (encoder, head, optimizer, step, the loss so far) is saved
in `work_dir/state/<key>` every `save_every` steps, keyed by what defines the result: the
checkpoint's files, the tokenised training texts and the training settings (not where
things are or go: the same data under another path resumes). The same command continues
from the last save, and a resumed run equals one that never stopped (each step's masks,
dropout and batch are functions of the seed and the step). The output appears whole or not
at all (written beside it, then renamed).
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

from hubsweep.adapt.mlm import MaskedLanguageModel, pretrained_head, train_step
from hubsweep.adapt.vocabulary import Vocabulary, rows_digest
from hubsweep.data.datasets import hash_files, load_dataset
from hubsweep.embeddings.transformer.adapted import ADAPT_FILE, CHECKPOINT_DIR
from hubsweep.embeddings.transformer.bert import BertEncoder
from hubsweep.embeddings.transformer.convert import (
    NEEDED,
    convert_checkpoint,
    locate_checkpoint,
    read_checkpoint,
)
from hubsweep.embeddings.transformer.layer import DROPOUT_SITES, warn_if_bfloat16_emulated
from hubsweep.errors import ConfigError
from hubsweep.training.classifier import batch_order
from hubsweep.training.optimizers import AdamW, WarmupThenDecay

log = logging.getLogger(__name__)

# The checkpoint's files the result depends on (tokenizer_config.json: lower-casing).
READ = (*NEEDED, "tokenizer_config.json")
# Settings that say where things are or go, or how they are shown: not what is trained
# (the checkpoint's and the texts' content stand for `checkpoint` and `dataset`).
PLACES = ("output", "work_dir", "save_every", "progress", "checkpoint", "dataset")


def adaptation_texts(cfg: DictConfig) -> np.ndarray:
    """The texts the model adapts to: the dataset's training split, and nothing else."""
    return load_dataset(cfg.dataset, ["train"]).splits["train"].texts


def training_settings(cfg: DictConfig) -> dict:
    settings = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in settings.items() if k not in PLACES}


def state_key(cfg: DictConfig, checkpoint: Path, texts_digest: str) -> str:
    """What defines the adapted model: the checkpoint's files, the tokenised training
    texts and the training settings."""
    files = [checkpoint / name for name in READ if (checkpoint / name).is_file()]
    parts = [training_settings(cfg), hash_files(files, checkpoint), texts_digest]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _optimizer(cfg: DictConfig) -> AdamW:
    warmup = round(cfg.warmup_fraction * cfg.steps)
    schedule = WarmupThenDecay(cfg.learning_rate, warmup, cfg.steps, "linear", 0.0)
    return AdamW.configured(schedule, cfg)


def _read_losses(path: Path, done: int) -> list[dict]:
    """The loss log up to the saved step: an entry written after the last save, or a line
    cut short by a killed process, goes (and the file is rewritten without it)."""
    history = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("step", done + 1) <= done:
            history.append(entry)
    path.write_text("".join(json.dumps(h) + "\n" for h in history))
    return history


def train(
    cfg: DictConfig,
    model: MaskedLanguageModel,
    vocab: Vocabulary,
    rows: list[np.ndarray],
    state_dir: Path,
    until: int | None = None,
) -> list[dict]:
    """Train `model` to cfg.steps (or stop after step `until`, saving there: a test's
    interruption), resuming from state_dir's last save; the loss log, one entry a save
    (the mean loss since the one before, and the seconds it took)."""
    optimizer = _optimizer(cfg)
    done = tf.Variable(0, dtype=tf.int64, name="steps_done")
    state = tf.train.Checkpoint(model=model, optimizer=optimizer, steps_done=done)
    manager = tf.train.CheckpointManager(state, str(state_dir), max_to_keep=1)
    losses_file = state_dir / "loss.jsonl"
    if manager.latest_checkpoint:
        state.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        log.info("resumed at step %d of %d from %s", int(done), cfg.steps, state_dir)
    history = _read_losses(losses_file, int(done))
    start, stop = int(done), min(cfg.steps, until or cfg.steps)
    lengths = np.array([len(r) for r in rows])
    order = batch_order(len(rows), cfg.batch_size, cfg.seed, lengths, cfg.length_buckets)
    for _ in range(start):  # the stream is a function of the seed: skip what was trained
        next(order)
    if cfg.mixed_precision:
        warn_if_bfloat16_emulated("mixed_precision")
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
            with losses_file.open("a") as f:  # before the state: _read_losses drops it if
                f.write(json.dumps(entry) + "\n")  # the save never happened
            manager.save()
            bar.set_postfix(loss=f"{entry['loss']:.3f}")
            log.info("step %d/%d  masked-LM loss %.4f", k + 1, cfg.steps, entry["loss"])
            recent, started = [], time.perf_counter()
    bar.close()
    return history


def _write(cfg: DictConfig, source: Path, model: MaskedLanguageModel, record: dict) -> Path:
    """output/checkpoint, then the pair converted from it; whole or not at all."""
    from safetensors.numpy import save_file

    output = Path(cfg.output)
    for stale in output.parent.glob(f".{output.name}.tmp-*"):  # left by a killed process
        shutil.rmtree(stale, ignore_errors=True)
    tmp = output.parent / f".{output.name}.tmp-{os.getpid()}"
    try:
        checkpoint = tmp / CHECKPOINT_DIR
        checkpoint.mkdir(parents=True)
        save_file(model.encoder.checkpoint_weights(), str(checkpoint / "model.safetensors"))
        for name in ("config.json", "vocab.txt", "tokenizer_config.json"):
            if (source / name).is_file():
                shutil.copy(source / name, checkpoint / name)
        (checkpoint / ADAPT_FILE).write_text(json.dumps(record, indent=2) + "\n")
        convert_checkpoint(checkpoint, tmp, cfg.seq_length, source=output / CHECKPOINT_DIR)
        if output.exists():
            raise ConfigError(f"output: {output} appeared while adapting; the pair is not moved")
        tmp.rename(output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output


def adapt(cfg: DictConfig, until: int | None = None) -> Path | None:
    """Adapt cfg.checkpoint to cfg.dataset's training texts; the output directory (None
    when stopped after step `until`, the state saved)."""
    from safetensors.numpy import load_file

    source = locate_checkpoint(cfg.checkpoint, key="checkpoint:")
    bert, lower = read_checkpoint(source, key="checkpoint:")
    if cfg.seq_length > bert.max_position_embeddings:
        raise ConfigError(
            f"seq_length: {cfg.seq_length} is above the checkpoint's max_position_embeddings "
            f"({bert.max_position_embeddings}); set seq_length to at most that"
        )
    vocab = Vocabulary(source, lower, cfg.seq_length)
    rows = vocab.rows(adaptation_texts(cfg))
    if not rows:
        raise ConfigError(f"dataset: the {cfg.dataset.name} training split has no text to adapt to")
    weights = load_file(str(source / "model.safetensors"))
    model = MaskedLanguageModel(BertEncoder(weights, bert), cfg.seed, pretrained_head(weights))
    digest = rows_digest(rows)
    key = state_key(cfg, source, digest)
    log.info(
        "adapting %s (%s masked-LM head) to %d %s training texts (%d tokens, %.1f epochs in "
        "%d steps)",
        source,
        "its" if model.pretrained else "a new",
        len(rows),
        cfg.dataset.name,
        sum(len(r) for r in rows),
        cfg.steps * cfg.batch_size / len(rows),
        cfg.steps,
    )
    state_dir = Path(cfg.work_dir) / "state" / key
    state_dir.mkdir(parents=True, exist_ok=True)
    history = train(cfg, model, vocab, rows, state_dir, until)
    if until is not None and until < cfg.steps:
        return None
    record = {
        "source": str(source.resolve()),
        "dataset": cfg.dataset.name,
        "split": "train",
        "texts": len(rows),
        "texts_digest": digest,
        "state_key": key,
        "pretrained_head": model.pretrained,
        "settings": training_settings(cfg),
        "loss": history,
        "trained_parameters": int(sum(np.prod(v.shape) for v in model.trained_encoder)),
    }
    out = _write(cfg, source, model, record)
    log.info("adapted pair written to %s", out)
    return out
