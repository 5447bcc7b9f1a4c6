"""Structured-config schemas and validation of the tools beside the runs: hubsweep-analyze
and hubsweep-swivel (registered with Hydra by config.schema.register_configs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from hubsweep.errors import require

SWIVEL_OPTIMIZERS = ("adagrad", "adam", "sgd")


@dataclass
class AnalyzeConfig:
    """hubsweep-analyze: term similarity and nearest neighbours of one module."""

    embedding: Any = MISSING
    groups: list[list[str]] = field(default_factory=list)
    # Terms to list neighbours for; empty means every term of the groups.
    neighbours: list[str] = field(default_factory=list)
    top_k: int = 10
    # One token per line; null uses the module's assets/vocab.txt (or tokens.txt).
    vocab_file: str | None = None
    results_dir: str = "results"
    output_dir: str = MISSING


@dataclass
class SwivelConfig:
    """hubsweep-swivel: train Swivel embeddings on a corpus and export a TF-Hub module."""

    corpus: str = MISSING
    output: str = MISSING
    work_dir: str = MISSING
    fields: list[str] = field(
        default_factory=lambda: ["title", "authors", "abstract", "body_text", "ref_titles"]
    )
    lowercase: bool = True
    window: int = 10
    min_count: int = 5
    max_vocab: int = 135168
    shard_size: int = 4096
    dim: int = 128
    epochs: int = 20
    # The optimizer: adagrad (the paper's), adam or sgd. Not named `optimizer`: that name is
    # a config group of the run config in the same tree, so Hydra would refuse it.
    solver: str = "adagrad"
    learning_rate: float = 0.1
    # Context-distribution smoothing exponent for column probabilities (1.0: plain PMI).
    smoothing: float = 1.0
    num_oov_buckets: int = 1
    # Export each word vector at length `scale`. Raw row+col vectors of frequent words are
    # long and dominate the sqrtn sum; normalised ones measured +2.8 points test accuracy
    # with a tuned head. 5.0 puts the tutorial head's SGD rate 0.01 near the tuned optimum
    # (0.26 for unit vectors; a linear head's effective rate grows with scale squared).
    normalize: bool = True
    scale: float = 5.0
    seed: int = 0
    processes: int = 0
    progress: bool = True


def validate_analyze(cfg: DictConfig) -> None:
    require(len(cfg.groups) > 0, "groups", "list at least one group of terms")
    require(all(len(g) > 0 for g in cfg.groups), "groups", "a group is empty")
    require(cfg.top_k > 0, "top_k", "must be positive")


def validate_swivel(cfg: DictConfig) -> None:
    require(
        not OmegaConf.is_missing(cfg, "corpus"),
        "corpus",
        "required: corpus=PATH, a CORD-19 release (a directory with metadata.csv and "
        "document_parses/, or its .tar.gz), JSON lines or text files",
    )
    for key in ("window", "min_count", "shard_size", "dim", "epochs"):
        require(cfg[key] > 0, key, f"must be a positive integer, got {cfg[key]}")
    require(cfg.max_vocab >= cfg.shard_size, "max_vocab", "must hold at least one shard")
    require(cfg.learning_rate > 0, "learning_rate", "must be positive")
    require(0 < cfg.smoothing <= 1, "smoothing", "must be in (0, 1]")
    require(cfg.scale > 0, "scale", "must be positive")
    require(
        cfg.solver in SWIVEL_OPTIMIZERS,
        "solver",
        f"{cfg.solver!r} is not one of {', '.join(SWIVEL_OPTIMIZERS)}",
    )
    require(Path(cfg.corpus).exists(), "corpus", f"{cfg.corpus} does not exist")
