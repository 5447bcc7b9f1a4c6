"""Frozen-feature cache: each split embedded once per (module, split content); also a
contextual encoder's frozen hidden states, one row per token (`get_or_build_rows`).

A frozen module maps the same sentence to the same vector on every step of every trial,
so the vectors are computed once and kept in memory and on disk. Entries are keyed by a
fingerprint of the module's files and of the split's texts, so a changed module or
dataset can never be served stale vectors. Files are written to a temporary name and
renamed (safe with concurrent workers), and carry a checksum that is verified on load: a
corrupt or truncated file is rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hubsweep.data.datasets import hash_files

log = logging.getLogger(__name__)

FORMAT_VERSION = "features-v1"
Embed = Callable[[np.ndarray], np.ndarray]
# Per-token rows: texts -> (values [tokens, ...], lengths [texts]).
EmbedRows = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _hash_files(root: Path) -> str:
    return hash_files(sorted(p for p in root.rglob("*") if p.is_file()), root)


def _file_stats(root: Path) -> tuple:
    if not root.is_dir():
        return ()
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)


def module_fingerprint(handle: str) -> str:
    """Content hash of a module's files (a remote handle is resolved to TF-Hub's local copy)."""
    path = Path(handle.removeprefix("file://"))
    if not path.is_dir():
        import tensorflow_hub as hub

        path = Path(hub.resolve(handle))
    return _hash_files(path)


def texts_fingerprint(texts: np.ndarray) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return digest.hexdigest()


def _checksum(features: np.ndarray, lengths: np.ndarray | None = None) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(features).tobytes())
    if lengths is not None:
        digest.update(np.ascontiguousarray(lengths).tobytes())
    return digest.hexdigest()


class FeatureCache:
    """Embedded splits in memory (for the trials of one process) and under `directory`."""

    @classmethod
    def usable(cls, directory: str | Path | None) -> FeatureCache:
        """A cache under `directory`, or in memory only (with a warning) where it cannot be
        written: a slower run, never a failed one."""
        from hubsweep.config.paths import ensure_writable
        from hubsweep.errors import SetupError

        if directory:
            try:
                ensure_writable(directory, "cache_dir")
            except SetupError as e:
                log.warning("%s; the feature cache stays in memory", e)
                directory = None
        return cls(directory)

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = Path(directory) if directory else None
        self._memory: dict[str, Any] = {}  # vectors, or per-token rows (converted)
        self._module_fingerprints: dict[tuple, str] = {}
        # Seconds spent building entries this cache did not hold (embedding and writing
        # them): wall time that a later run reusing the entries does not pay.
        self.build_s = 0.0

    def in_memory(self) -> None:
        """Keep entries in memory only from now on (the directory cannot be written)."""
        self.directory = None

    def _fingerprint(self, handle: str) -> str:
        # Hashing a large module per trial is wasted work; its files' stats say if it changed.
        stamp = (handle, *_file_stats(Path(handle.removeprefix("file://"))))
        if stamp not in self._module_fingerprints:
            self._module_fingerprints[stamp] = module_fingerprint(handle)
        return self._module_fingerprints[stamp]

    def key(self, handle: str, texts: np.ndarray, also: tuple[str, str] | None = None) -> str:
        """`also`: what else decides the vectors, (another module, its settings): a BERT
        pair's preprocessor (fingerprinted like the module) and length and pooling, or for
        per-token rows its length, the layer they are taken below and their dtype."""
        module = self._fingerprint(handle)
        if also is not None:
            module += f":{self._fingerprint(also[0])}:{also[1]}"
        parts = f"{FORMAT_VERSION}:{module}:{texts_fingerprint(texts)}"
        return hashlib.sha256(parts.encode()).hexdigest()[:32]

    def path(self, key: str) -> Path | None:
        return self.directory / f"{key}.npz" if self.directory else None

    def get_or_build(
        self, handle: str, texts: np.ndarray, embed: Embed, also: tuple[str, str] | None = None
    ) -> np.ndarray:
        key = self.key(handle, texts, also)
        if key in self._memory:
            return self._memory[key]
        features = self._load(key)
        if features is None or len(features) != len(texts):
            started = time.perf_counter()
            features = np.asarray(embed(texts), dtype=np.float32)
            self._store(key, features)
            self.build_s += time.perf_counter() - started
        self._memory[key] = features
        return features

    def get_or_build_rows(
        self,
        handle: str,
        texts: np.ndarray,
        embed: EmbedRows,
        also: tuple[str, str],
        convert: Callable[[np.ndarray, np.ndarray], Any] | None = None,
    ):
        """Like `get_or_build`, for a variable number of rows per text (a contextual
        encoder's hidden states, one per token): (values, lengths), values in embed's dtype,
        or what `convert(values, lengths)` makes of them. The memory keeps that one object
        for every later run of the process (hundreds of MB: a fresh copy per run piled up
        until a 16-trial study ran out of memory)."""
        key = self.key(handle, texts, (also[0], f"rows:{also[1]}"))
        if key in self._memory:
            return self._memory[key]
        stored = self._load(key, with_lengths=True)
        if stored is None or len(stored[1]) != len(texts) or stored[1].sum() != len(stored[0]):
            started = time.perf_counter()
            stored = embed(texts)
            self._store(key, *stored)
            self.build_s += time.perf_counter() - started
        self._memory[key] = convert(*stored) if convert else stored
        return self._memory[key]

    def _load(self, key: str, with_lengths: bool = False):
        path = self.path(key)
        if path is None or not path.exists():
            return None
        try:
            with np.load(path) as stored:
                features, checksum = stored["features"], str(stored["sha256"])
                rows = stored["lengths"] if with_lengths else None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            log.warning("feature cache file %s is unreadable (%s); rebuilding it", path, e)
            return None
        if _checksum(features, rows) != checksum:
            log.warning("feature cache file %s fails its checksum; rebuilding it", path)
            return None
        return (features, rows) if with_lengths else features

    def _store(self, key: str, features: np.ndarray, lengths: np.ndarray | None = None) -> None:
        """Write an entry; a cache that cannot be written (a full disk, say) makes a slower
        run, never a failed one: it stays in memory from then on, with one warning."""
        path = self.path(key)
        if path is None:
            return
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex}.tmp.npz")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            extra = {} if lengths is None else {"lengths": lengths}
            np.savez(tmp, features=features, sha256=np.array(_checksum(features, lengths)), **extra)
            os.replace(tmp, path)
        except OSError as e:
            log.warning(
                "cache_dir: cannot write %s (%s); the feature cache stays in memory",
                path,
                e.strerror or e,
            )
            self.in_memory()
        finally:
            tmp.unlink(missing_ok=True)
