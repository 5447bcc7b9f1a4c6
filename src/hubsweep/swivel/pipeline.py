"""hubsweep-swivel: corpus → co-occurrence shards → Swivel training → TF-Hub module.

Work files (counts, checkpoints, loss log) live in `work_dir`; counts are reused when
their settings match, and training resumes from its last epoch, so a stopped build
continues instead of starting over.
"""

from __future__ import annotations

import json
import logging
from dataclasses import fields
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from hubsweep.export import export_text_embedding
from hubsweep.swivel.counting import META_FILE, CountSettings, count_corpus
from hubsweep.swivel.training import SwivelSettings, SwivelTrainer

log = logging.getLogger(__name__)


def _settings(cls: type, cfg: DictConfig, **given):
    """`cls` filled from the config keys it shares a name with (the rest keep defaults)."""
    names = {f.name for f in fields(cls)} & set(cfg) - set(given)
    return cls(**{name: cfg[name] for name in names}, **given)


def _count_settings(cfg: DictConfig) -> CountSettings:
    return _settings(CountSettings, cfg, fields=tuple(cfg.fields))


def _counts_match(meta_file: Path, settings: CountSettings) -> bool:
    if not meta_file.is_file():
        return False
    meta = json.loads(meta_file.read_text())
    wanted = {
        "window": settings.window,
        "min_count": settings.min_count,
        "lowercase": settings.lowercase,
        "shard_size": settings.shard_size,
        "fields": list(settings.fields),
    }
    return all(meta.get(k) == v for k, v in wanted.items())


def write_word2vec(path: Path, vocab: list[str], vectors: np.ndarray) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.write(f"{len(vocab)} {vectors.shape[1]}\n")
        for token, row in zip(vocab, vectors, strict=True):
            f.write(token + " " + " ".join(f"{v:.6f}" for v in row) + "\n")


def build_module(cfg: DictConfig) -> dict:
    work, output = Path(cfg.work_dir), Path(cfg.output)
    counts_dir = work / "counts"
    settings = _count_settings(cfg)
    if _counts_match(counts_dir / META_FILE, settings):
        log.info("reusing the co-occurrence counts in %s", counts_dir)
    else:
        meta = count_corpus(Path(cfg.corpus), counts_dir, settings)
        log.info("counted %d tokens at %d tokens/s", meta["tokens"], meta["tokens_per_s"])
    trainer = SwivelTrainer(
        counts_dir,
        _settings(SwivelSettings, cfg),
    )
    vectors = trainer.train(work, progress=cfg.progress)
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
