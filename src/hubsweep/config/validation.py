"""Semantic validation of a composed run config: what the schemas' types cannot express
(ranges, allowed names, settings that need others), each failure one ConfigError naming
the key."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from hubsweep.config.paths import require_name
from hubsweep.config.schema import GROUP_SCHEMAS
from hubsweep.errors import require
from hubsweep.metrics import METRICS, SCORES

DATASET_SOURCES = ("tfds", "jsonl", "csv")
SPLIT_ROLES = ("train", "validation", "test")
WARMUP_DECAYS = ("linear", "cosine")
CLASS_WEIGHTINGS = ("none", "balanced")  # training/classifier.py's CLASS_WEIGHTS
DECISION_RULES = ("argmax", "tuned_offsets")  # training/decision.py's DECISIONS


def _check_name(cfg: DictConfig, group: str) -> None:
    allowed = GROUP_SCHEMAS[group]
    name = cfg[group].name
    require(name in allowed, f"{group}.name", f"unknown {name!r}; allowed: {', '.join(allowed)}")


EMBEDDING_POOLINGS = ("pooled_output", "mean")


def _validate_encoder(e: DictConfig) -> None:
    if e.get("preprocess_handle") is None:
        return
    require(
        e.pooling in EMBEDDING_POOLINGS,
        "embedding.pooling",
        f"{e.pooling!r} is not one of {', '.join(EMBEDDING_POOLINGS)}",
    )
    require(8 <= e.seq_length <= 512, "embedding.seq_length", "must be in [8, 512]")
    if e.trainable_layers is not None:
        require(e.trainable_layers > 0, "embedding.trainable_layers", "must be >= 1 or null")
        require(e.trainable, "embedding.trainable_layers", "needs embedding.trainable=true")


def _validate_recipe(cfg: DictConfig) -> None:
    """The fine-tuning recipe's settings: decay only where it applies."""
    e, o = cfg.embedding, cfg.optimizer
    decay = e.get("layer_lr_decay")
    if decay is not None:
        require(0 < decay <= 1, "embedding.layer_lr_decay", f"must be in (0, 1], got {decay}")
        require(
            e.get("preprocess_handle") is not None and e.trainable,
            "embedding.layer_lr_decay",
            "needs a fine-tuned BERT-family pair (embedding.preprocess_handle, trainable=true)",
        )
        require(o.name == "adamw", "embedding.layer_lr_decay", "needs optimizer=adamw")
    for key in ("hidden_dropout", "attention_dropout"):
        rate = e.get(key)
        if rate is not None:
            require(0 <= rate < 1, f"embedding.{key}", f"must be in [0, 1) or null, got {rate}")
            require(
                e.get("preprocess_handle") is not None,
                f"embedding.{key}",
                "applies to a BERT-family pair (embedding.preprocess_handle)",
            )
    if cfg.trainer.mixed_precision:
        require(
            e.get("preprocess_handle") is not None and e.trainable,
            "trainer.mixed_precision",
            "applies to a fine-tuned BERT-family pair (embedding.preprocess_handle, "
            "trainable=true)",
        )
    dtypes = ("float32", "float16")
    require(
        cfg.trainer.hidden_cache_dtype in dtypes,
        "trainer.hidden_cache_dtype",
        f"{cfg.trainer.hidden_cache_dtype!r} is not one of {', '.join(dtypes)}",
    )
    if o.get("clipnorm") is not None:
        require(o.clipnorm > 0, "optimizer.clipnorm", f"must be > 0 or null, got {o.clipnorm}")
    if o.name == "adamw":
        require(o.weight_decay >= 0, "optimizer.weight_decay", "must be >= 0")


def validate(cfg: DictConfig) -> None:
    """Check the value constraints of a composed config; raise ConfigError naming the key."""
    require_name(cfg.experiment_name, "experiment_name")
    for group in ("model", "optimizer", "schedule"):
        _check_name(cfg, group)
    _validate_encoder(cfg.embedding)
    _validate_recipe(cfg)
    t = cfg.trainer
    for key in ("steps", "batch_size", "eval_every", "eval_batch_size", "eval_batch_tokens"):
        require(t[key] > 0, f"trainer.{key}", f"must be a positive integer, got {t[key]}")
    require(t.length_buckets >= 0, "trainer.length_buckets", "must be >= 0 (0: off)")
    require(
        t.class_weight in CLASS_WEIGHTINGS,
        "trainer.class_weight",
        f"{t.class_weight!r} is not one of {', '.join(CLASS_WEIGHTINGS)}",
    )
    require(
        t.selection_metric in METRICS,
        "trainer.selection_metric",
        f"{t.selection_metric!r} is not one of {', '.join(METRICS)}",
    )
    require(
        t.decision in DECISION_RULES,
        "trainer.decision",
        f"{t.decision!r} is not one of {', '.join(DECISION_RULES)}",
    )
    if t.decision != "argmax":
        require(
            t.selection_metric in SCORES,
            "trainer.decision",
            f"{t.decision} fits offsets to a score; trainer.selection_metric "
            f"{t.selection_metric!r} is not one (allowed: {', '.join(SCORES)})",
        )
    require(
        0 <= t.ema_decay < 1,
        "trainer.ema_decay",
        f"must be in [0, 1) (0: off; 0.99 averages ~100 steps), got {t.ema_decay}",
    )
    require(
        0 <= t.label_smoothing < 1,
        "trainer.label_smoothing",
        f"must be in [0, 1) (0: off; 0.1 is usual), got {t.label_smoothing}",
    )
    require(cfg.optimizer.learning_rate > 0, "optimizer.learning_rate", "must be > 0")

    d = cfg.dataset
    require(
        d.source in DATASET_SOURCES,
        "dataset.source",
        f"{d.source!r} is not one of {', '.join(DATASET_SOURCES)}",
    )
    if d.source == "tfds":
        require(bool(d.tfds_name), "dataset.tfds_name", "required when dataset.source=tfds")
    else:
        require(
            len(d.label_names) > 1,
            "dataset.label_names",
            f"list the class names (at least two) for dataset.source={d.source}",
        )
    for role in ("train", "validation"):
        require(role in d.splits, f"dataset.splits.{role}", "is required")
    unknown = set(d.splits) - set(SPLIT_ROLES)
    require(
        not unknown,
        "dataset.splits",
        f"unknown role(s) {sorted(unknown)}; allowed: {', '.join(SPLIT_ROLES)}",
    )
    if t.evaluate_test:
        require("test" in d.splits, "dataset.splits.test", "required when evaluate_test=true")
    if d.source_dir is not None:
        require(
            Path(d.source_dir).is_dir(),
            "dataset.source_dir",
            f"directory {d.source_dir!r} does not exist",
        )

    e = cfg.embedding
    require(
        not (e.signature and e.trainable),
        "embedding.trainable",
        "a module used through a signature cannot be fine-tuned; set embedding.trainable=false",
    )
    require(e.dim is None or e.dim > 0, "embedding.dim", "must be positive or null")
    require(
        not t.export_module or e.trainable,
        "trainer.export_module",
        "only a fine-tuned module (embedding.trainable=true) is exported",
    )

    if cfg.model.name == "mlp":
        require(
            all(h > 0 for h in cfg.model.hidden_sizes),
            "model.hidden_sizes",
            "sizes must be positive",
        )
        require(0.0 <= cfg.model.dropout < 1.0, "model.dropout", "must be in [0, 1)")
    s = cfg.schedule
    if s.name == "warmup":
        require(
            s.decay in WARMUP_DECAYS,
            "schedule.decay",
            f"{s.decay!r} is not one of {', '.join(WARMUP_DECAYS)}",
        )
        fraction = s.get("warmup_fraction")
        if fraction is None:
            require(
                0 <= s.warmup_steps < t.steps,
                "schedule.warmup_steps",
                f"must be in [0, trainer.steps={t.steps})",
            )
        require(
            fraction is None or 0 <= fraction < 1, "schedule.warmup_fraction", "must be in [0, 1)"
        )
    if s.name == "exponential":
        require(s.decay_steps > 0, "schedule.decay_steps", "must be positive")
    _validate_prefixes(cfg.dataset)
    _validate_scaffolds(cfg)


def _validate_fields(d: DictConfig, setting: str, keys: list[str]) -> None:
    """Fields read beside the text (`dataset.<setting>`): neither the label (the answer in
    the text or the auxiliary loss) nor the text itself, none named twice."""
    for key in keys:
        require(
            key not in (d.text_key, d.label_key),
            f"dataset.{setting}",
            f"{key!r} is the dataset's {'label_key' if key == d.label_key else 'text_key'}",
        )
    require(len(set(keys)) == len(keys), f"dataset.{setting}", f"{keys} names a field twice")


def _validate_prefixes(d: DictConfig) -> None:
    _validate_fields(d, "prefix_keys", list(d.prefix_keys))


def _validate_scaffolds(cfg: DictConfig) -> None:
    """A scaffold teaches the trained encoder; on a frozen one it would train a head nothing
    reads."""
    d = cfg.dataset
    keys = list(d.get("scaffold_keys") or [])
    if not keys:
        return
    _validate_fields(d, "scaffold_keys", keys)
    read = sorted(set(keys) & set(d.get("prefix_keys") or []))
    require(
        not read,
        "dataset.scaffold_keys",
        f"{read} also in dataset.prefix_keys: a head would predict what its text says",
    )
    require(d.scaffold_min_count >= 1, "dataset.scaffold_min_count", "must be at least 1")
    require(
        cfg.embedding.trainable,
        "dataset.scaffold_keys",
        "needs embedding.trainable=true (a frozen embedding learns nothing from a scaffold)",
    )
    require(cfg.trainer.scaffold_weight > 0, "trainer.scaffold_weight", "must be positive")
