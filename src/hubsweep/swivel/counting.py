"""Vocabulary and windowed co-occurrence counts, sharded as Swivel trains on them.

Tokens come from `hubsweep.embeddings.text.tokenize`, the function exported modules apply at lookup,
so training text and lookup text are split identically. Counting runs in worker
processes over document chunks; partial counts are merged in memory and spilled to disk
as sorted runs past `max_pairs_in_memory`, so memory is bounded by the counts, not the
corpus. The result is one file per (row shard, column shard) block, as in the paper:
token i (by descending frequency) sits in shard i % num_shards at position i // num_shards.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from hubsweep.errors import DataError
from hubsweep.swivel.corpus import documents

log = logging.getLogger(__name__)

CHUNK_DOCS = 1000
META_FILE = "counts.json"


@dataclass(frozen=True)
class CountSettings:
    lowercase: bool
    window: int
    min_count: int
    max_vocab: int
    shard_size: int
    fields: tuple[str, ...]
    max_pairs_in_memory: int = 50_000_000
    processes: int = 0  # 0: every core


def _chunks(files: Iterable[Path], fields: tuple[str, ...]) -> Iterator[list[str]]:
    chunk: list[str] = []
    for path in files:
        for doc in documents(path, fields):
            chunk.append(doc)
            if len(chunk) == CHUNK_DOCS:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


# Worker state: set once per process by the pool initialiser (TensorFlow is heavy to set up).
_STATE: dict = {}


def _init_worker(lowercase: bool, window: int) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _STATE.update(lowercase=lowercase, window=window, vocab_file=None)


def _lookup_table(vocab_file: str):
    """The vocabulary as a TensorFlow table, built once per worker."""
    import tensorflow as tf

    if _STATE["vocab_file"] != vocab_file:
        vocab = Path(vocab_file).read_text(encoding="utf-8").splitlines()
        init = tf.lookup.KeyValueTensorInitializer(
            tf.constant(vocab), tf.range(len(vocab), dtype=tf.int64)
        )
        _STATE.update(
            vocab_file=vocab_file,
            table=tf.lookup.StaticHashTable(init, default_value=-1),
            size=len(vocab),
        )
    return _STATE["table"]


def _tokens(texts: list[str]):
    import tensorflow as tf

    from hubsweep.embeddings.text import tokenize

    return tokenize(tf.constant(texts), _STATE["lowercase"])


def _count_tokens(texts: list[str]) -> Counter:
    return Counter(_tokens(texts).flat_values.numpy().tolist())


def pairs(ids: np.ndarray, row_ids: np.ndarray, window: int, size: int):
    """(keys, weights) of a batch: key = i * size + j for tokens i, j within `window` of
    each other in one document, weight 1/distance, both orders; unique keys, summed."""
    keys, weights = [], []
    for d in range(1, window + 1):
        ok = (row_ids[:-d] == row_ids[d:]) & (ids[:-d] >= 0) & (ids[d:] >= 0)
        a, b = ids[:-d][ok], ids[d:][ok]
        keys += [a * size + b, b * size + a]
        weights += [np.full(2 * len(a), 1.0 / d, np.float32)]
    return _reduce(np.concatenate(keys), np.concatenate(weights))


def _reduce(keys: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    unique, inverse = np.unique(keys, return_inverse=True)
    return unique, np.bincount(inverse, weights=weights).astype(np.float32)


def _count_pairs(task: tuple[list[str], str]) -> tuple[np.ndarray, np.ndarray, int]:
    texts, vocab_file = task
    ids = _lookup_table(vocab_file).lookup(_tokens(texts))
    flat = ids.flat_values.numpy()
    keys, weights = pairs(flat, ids.value_rowids().numpy(), _STATE["window"], _STATE["size"])
    return keys, weights, len(flat)


def _pool(settings: CountSettings):
    processes = settings.processes or os.cpu_count() or 1
    ctx = multiprocessing.get_context("spawn")
    return ctx.Pool(processes, _init_worker, (settings.lowercase, settings.window))


def build_vocabulary(
    files: list[Path], settings: CountSettings, pool
) -> tuple[list[str], np.ndarray]:
    """Tokens seen at least min_count times, most frequent first, cut to whole shards."""
    counts: Counter = Counter()
    chunks = _chunks(files, settings.fields)
    for partial in tqdm(pool.imap(_count_tokens, chunks), desc="vocabulary", unit="chunk"):
        counts.update(partial)
    ranked = [(t, n) for t, n in counts.most_common() if n >= settings.min_count]
    size = min(len(ranked), settings.max_vocab)
    size -= size % settings.shard_size
    if size == 0:
        raise DataError(
            f"vocabulary: only {len(ranked)} tokens occur >= {settings.min_count} times, fewer "
            f"than one shard of {settings.shard_size}; lower min_count or shard_size"
        )
    tokens = [t.decode("utf-8") for t, _ in ranked[:size]]
    return tokens, np.array([n for _, n in ranked[:size]], dtype=np.int64)


class _Accumulator:
    """Sums (key, weight) partials; spills sorted runs to disk past a size bound."""

    def __init__(self, spill_dir: Path, limit: int) -> None:
        self.spill_dir, self.limit = spill_dir, limit
        self.parts: list[tuple[np.ndarray, np.ndarray]] = []
        self.held = 0
        self.runs: list[Path] = []

    def add(self, keys: np.ndarray, weights: np.ndarray) -> None:
        self.parts.append((keys, weights))
        self.held += len(keys)
        if self.held > self.limit:
            keys, weights = self._merged()
            if len(keys) > self.limit // 2:
                self.spill_dir.mkdir(parents=True, exist_ok=True)
                run = self.spill_dir / f"run-{len(self.runs):05d}.npz"
                np.savez(run, keys=keys, weights=weights)
                self.runs.append(run)
                log.info("spilled %d pairs to %s", len(keys), run)
            else:
                self.parts = [(keys, weights)]
                self.held = len(keys)

    def _merged(self) -> tuple[np.ndarray, np.ndarray]:
        keys = np.concatenate([k for k, _ in self.parts])
        weights = np.concatenate([w for _, w in self.parts])
        self.parts, self.held = [], 0
        return _reduce(keys, weights)

    def pieces(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self.parts:
            yield self._merged()
        for run in self.runs:
            with np.load(run) as stored:
                yield stored["keys"], stored["weights"]


def _write_blocks(acc: _Accumulator, size: int, num_shards: int, out: Path) -> int:
    """One file per (row shard, col shard); merges each row shard separately."""
    staging = out / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    for p, (keys, weights) in enumerate(acc.pieces()):
        row_shard = (keys // size) % num_shards
        for r in range(num_shards):
            mask = row_shard == r
            np.savez(staging / f"r{r:04d}-p{p:05d}.npz", keys=keys[mask], weights=weights[mask])
    nonzero = 0
    for r in range(num_shards):
        files = sorted(staging.glob(f"r{r:04d}-p*.npz"))
        loaded = [np.load(f) for f in files]
        keys, weights = _reduce(
            np.concatenate([d["keys"] for d in loaded]),
            np.concatenate([d["weights"] for d in loaded]),
        )
        for d, f in zip(loaded, files, strict=True):
            d.close()
            f.unlink()
        rows, cols = keys // size, keys % size
        col_shard = cols % num_shards
        for c in range(num_shards):
            mask = col_shard == c
            np.savez(
                out / f"block-{r:04d}-{c:04d}.npz",
                rows=(rows[mask] // num_shards).astype(np.int32),
                cols=(cols[mask] // num_shards).astype(np.int32),
                counts=weights[mask],
            )
        nonzero += len(keys)
    staging.rmdir()
    for run in acc.runs:
        run.unlink()
    return nonzero


def count_corpus(corpus: Path | list[Path], out: Path, settings: CountSettings) -> dict:
    """Count `corpus` into `out`; returns (and writes) the counts' metadata."""
    from hubsweep.swivel.corpus import corpus_files

    files = corpus if isinstance(corpus, list) else corpus_files(corpus)
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    acc = _Accumulator(out / "spill", settings.max_pairs_in_memory)
    tokens = 0
    with _pool(settings) as pool:
        vocab, _ = build_vocabulary(files, settings, pool)
        size, num_shards = len(vocab), len(vocab) // settings.shard_size
        log.info("vocabulary: %d tokens (%d shards of %d)", size, num_shards, settings.shard_size)
        vocab_file = out / "vocab.txt"
        vocab_file.write_text("".join(f"{t}\n" for t in vocab), encoding="utf-8")
        counting_started = time.perf_counter()
        tasks = ((chunk, str(vocab_file)) for chunk in _chunks(files, settings.fields))
        for keys, weights, n in tqdm(
            pool.imap(_count_pairs, tasks), desc="co-occurrences", unit="chunk"
        ):
            acc.add(keys, weights)
            tokens += n
        counting_s = time.perf_counter() - counting_started
    nonzero = _write_blocks(acc, size, num_shards, out)
    marginals = np.zeros(size, np.float64)
    for r in range(num_shards):
        for c in range(num_shards):
            with np.load(out / f"block-{r:04d}-{c:04d}.npz") as block:
                np.add.at(
                    marginals, block["rows"].astype(np.int64) * num_shards + r, block["counts"]
                )
    np.save(out / "marginals.npy", marginals)
    meta = {
        "vocab_size": size,
        "num_shards": num_shards,
        "shard_size": settings.shard_size,
        "window": settings.window,
        "min_count": settings.min_count,
        "lowercase": settings.lowercase,
        "fields": list(settings.fields),
        "tokens": tokens,
        "nonzero_cells": nonzero,
        "counting_s": round(counting_s, 1),
        "tokens_per_s": round(tokens / counting_s) if counting_s else None,
        "total_s": round(time.perf_counter() - started, 1),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def load_block(directory: Path, r: int, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(directory / f"block-{r:04d}-{c:04d}.npz") as block:
        return block["rows"], block["cols"], block["counts"]
