"""hubsweep-swivel: corpus → co-occurrence shards → Swivel training → TF-Hub module.

Work files (counts, checkpoints, loss log) live in `work_dir`. Counts are reused only when
the settings and the corpus files (names, sizes, modification times) that produced them
match; otherwise they are counted again. Checkpoints live in a directory keyed by the
counts and every training setting but the epoch count, so a stopped build resumes (or a
longer one continues) while a changed learning rate, optimizer or smoothing trains anew.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from hubsweep.embeddings.export import export_text_embedding
from hubsweep.swivel.corpus import corpus_files
from hubsweep.swivel.counting import META_FILE, CountSettings, count_corpus
from hubsweep.swivel.training import SwivelSettings, SwivelTrainer

log = logging.getLogger(__name__)


def _settings(cls: type, cfg: DictConfig, **given):
    """`cls` filled from the config keys it shares a name with (the rest keep defaults)."""
    names = {f.name for f in fields(cls)} & set(cfg) - set(given)
    return cls(**{name: cfg[name] for name in names}, **given)


def _count_settings(cfg: DictConfig) -> CountSettings:
    return _settings(CountSettings, cfg, fields=tuple(cfg.fields))


def _key(*parts) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def counts_key(corpus: Path, settings: CountSettings) -> str:
    """What the counts depend on: the counting settings and the corpus files as they are."""
    files = [corpus] if corpus.is_file() else corpus_files(corpus)
    stamp = [
        (
            str(f.relative_to(corpus)) if f != corpus else f.name,
            f.stat().st_size,
            f.stat().st_mtime_ns,
        )
        for f in files
    ]
    # How the counting runs (processes, memory bound) does not change the counts.
    ignored = ("processes", "max_pairs_in_memory")
    counted = {k: v for k, v in asdict(settings).items() if k not in ignored}
    return _key(counted, stamp)


def training_key(counts: str, settings: SwivelSettings) -> str:
    """Checkpoints belong to these counts and settings; more epochs continue them."""
    return _key(counts, {k: v for k, v in asdict(settings).items() if k != "epochs"})


def _counts_match(meta_file: Path, key: str) -> bool:
    if not meta_file.is_file():
        return False
    try:
        return json.loads(meta_file.read_text()).get("key") == key
    except ValueError:
        return False


def write_word2vec(path: Path, vocab: list[str], vectors: np.ndarray) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.write(f"{len(vocab)} {vectors.shape[1]}\n")
        for token, row in zip(vocab, vectors, strict=True):
            f.write(token + " " + " ".join(f"{v:.6f}" for v in row) + "\n")


def build_module(cfg: DictConfig) -> dict:
    work, output = Path(cfg.work_dir), Path(cfg.output)
    counts_dir = work / "counts"
    settings = _count_settings(cfg)
    key = counts_key(Path(cfg.corpus), settings)
    if _counts_match(counts_dir / META_FILE, key):
        log.info("reusing the co-occurrence counts in %s", counts_dir)
    else:
        if (counts_dir / META_FILE).is_file():
            log.info("corpus or counting settings changed: counting again")
            shutil.rmtree(counts_dir)
        meta = count_corpus(Path(cfg.corpus), counts_dir, settings)
        (counts_dir / META_FILE).write_text(json.dumps({**meta, "key": key}, indent=2) + "\n")
        log.info("counted %d tokens at %d tokens/s", meta["tokens"], meta["tokens_per_s"])
    swivel = _settings(SwivelSettings, cfg, optimizer=cfg.solver)
    trainer = SwivelTrainer(counts_dir, swivel)
    vectors = trainer.train(work / f"training-{training_key(key, swivel)}", progress=cfg.progress)
    if cfg.normalize:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12) * cfg.scale
    vocab = (counts_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    export_text_embedding(
        vocab, vectors, output, num_oov_buckets=cfg.num_oov_buckets, lowercase=cfg.lowercase
    )
    (output / "vocab.txt").write_text("".join(f"{t}\n" for t in vocab), encoding="utf-8")
    write_word2vec(output / "vectors.txt", vocab, vectors)
    meta = json.loads((counts_dir / META_FILE).read_text())
    summary = {
        "module": str(output),
        "vocab_size": len(vocab),
        "dim": cfg.dim,
        "epochs": cfg.epochs,
        "learning_rate": cfg.learning_rate,
        "smoothing": cfg.smoothing,
        "normalize": cfg.normalize,
        "scale": cfg.scale,
        "counts": meta,
    }
    (output / "swivel.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("exported %d x %d Swivel vectors to %s", len(vocab), cfg.dim, output)
    return summary
