"""Structured-config schemas, their registration with Hydra, and semantic validation.

The dataclasses make Hydra reject unknown keys and wrongly typed values at composition
time; `validate` catches what types cannot express (ranges, allowed names, paths).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from hubsweep.config.groups import (
    AdagradConfig,
    AdamConfig,
    AdamWConfig,
    ConstantScheduleConfig,
    CosineScheduleConfig,
    ExponentialScheduleConfig,
    LinearHeadConfig,
    MLPHeadConfig,
    MomentumConfig,
    RMSpropConfig,
    SGDConfig,
    WarmupScheduleConfig,
)
from hubsweep.config.paths import require_name
from hubsweep.config.sweep import SweepConfig
from hubsweep.config.tools import AdaptConfig, AnalyzeConfig, SwivelConfig
from hubsweep.errors import require
from hubsweep.metrics import METRICS


@dataclass
class DatasetConfig:
    name: str = MISSING
    # "tfds": a TensorFlow Datasets builder; "jsonl" / "csv": local files, one per split.
    source: str = "tfds"
    tfds_name: str | None = None
    # tfds: a directory of the release files to prepare from offline (no download);
    # jsonl/csv: the directory the split files are resolved against.
    source_dir: str | None = None
    # TFDS data_dir (prepared datasets); null means TFDS's default (~/tensorflow_datasets).
    data_dir: str | None = None
    # Role (train/validation/test) -> TFDS split name or local file name.
    splits: dict[str, str] = field(
        default_factory=lambda: {"train": "train", "validation": "validation", "test": "test"}
    )
    text_key: str = "text"
    # Fields read into each text before text_key's, each followed by text_separator (e.g.
    # SciCite's sectionName: "Discussion: These results ..."); a record where one is
    # missing, empty or NaN goes without it (SciCite's TFDS builder stores NaN as "nan").
    prefix_keys: list[str] = field(default_factory=list)
    text_separator: str = ": "
    label_key: str = "label"
    # Class names in label-id order; for TFDS ClassLabel features they may be left empty.
    label_names: list[str] = field(default_factory=list)
    # Local files: labels are matched by name first. An integer label that names no class is
    # an index into label_names when true; never when false; null: only when no class name
    # is itself an integer (names 1..5 never shift to indices).
    label_index: bool | None = None


@dataclass
class EmbeddingConfig:
    name: str = MISSING
    # TF-Hub handle (URL) or a local SavedModel directory.
    handle: str = MISSING
    trainable: bool = False
    # Expected output width; null accepts whatever the module produces.
    dim: int | None = None
    # For modules that only expose a signature (no __call__); such modules cannot be fine-tuned.
    signature: str | None = None
    output_key: str | None = None
    # BERT-family modules (TF-Hub's preprocessing + encoder pair): set the preprocessing
    # model here and the encoder as `handle`.
    preprocess_handle: str | None = None
    # Longest input in tokens ([CLS] and [SEP] included); batches are padded only as far as
    # their longest sentence needs.
    seq_length: int = 128
    # The sentence vector: the encoder's pooled_output, or the masked mean of its
    # sequence_output (sentence-transformers models are trained for the mean).
    pooling: str = "pooled_output"
    # With trainable=true: fine-tune only the top k transformer layers (null: all of them).
    trainable_layers: int | None = None
    # Layer-wise learning-rate decay (optimizer=adamw): layer l of L trains at
    # lr x decay^(L-l), the embeddings at lr x decay^L, the head at lr (null: one rate).
    layer_lr_decay: float | None = None
    # A hubsweep-exported pair's dropout rates while it trains (null: the checkpoint's
    # hidden_dropout_prob / attention_probs_dropout_prob); off at evaluation and when frozen.
    hidden_dropout: float | None = None
    attention_dropout: float | None = None


@dataclass
class TrainerConfig:
    steps: int = 8000
    batch_size: int = 10
    eval_every: int = 200
    eval_batch_size: int = 512
    # A hubsweep-exported BERT-family pair: its evaluation batches (and its top-k hidden
    # state cache's) take sentences of similar length, at most this many tokens a batch
    # (sentences × the longest one's length, before padding to a multiple of 8; and at most
    # eval_batch_size sentences).
    eval_batch_tokens: int = 1024
    seed: int = 0
    # Test metrics are computed once, at the end, and never used for selection.
    evaluate_test: bool = False
    # Which validation metric picks the "best" evaluation in final.json.
    selection_metric: str = "macro_f1"
    deterministic: bool = True
    progress: bool = True
    # Frozen module: embed each split once and train the head on the cached vectors.
    feature_cache: bool = True
    # Fine-tuned hubsweep module: tokenise once, gather table rows per step; a
    # hubsweep-exported BERT pair: pack once, and with its embeddings frozen train the top
    # layers on the frozen bottom's hidden states, computed once (training/encoder_path.py).
    fast_path: bool = True
    # Those cached hidden states' dtype: float32, or float16 (half the memory and disk).
    hidden_cache_dtype: str = "float32"
    # A hubsweep-exported BERT pair's trained layers multiply in bfloat16 (variables, norms,
    # softmax and residuals stay float32): twice the matmul rate on CPUs with AVX512-BF16
    # and on GPUs; false: float32 throughout.
    mixed_precision: bool = False
    # Frozen module on cached features: train the head in the population program (one
    # member, reused by later runs); false: the Keras feature path, the same model (tested).
    compiled_head: bool = True
    # XLA for the compiled paths (plain-SGD fine-tuning of a hubsweep module, the compiled
    # head); false: plain TensorFlow graphs, slower, the same model.
    xla: bool = True
    # Fine-tuned hubsweep module: write it to <run_dir>/module, loadable with hub.KerasLayer.
    export_module: bool = False
    # TensorBoard event files (curves and the HParams dashboard's data) in the run directory.
    tensorboard: bool = True
    # learning_curve.png at the end of the run. Study trials skip it (a fixed cost per
    # trial): the report draws their curves, and the best trial's is drawn when the study ends.
    learning_curve: bool = True
    # Fine-tuned BERT-family pair: each epoch's shuffled examples are cut into spans of this
    # many batches, each span sorted by length before it is cut into batches (the batches
    # then shuffled), so a batch's padding is small; 0: random batches.
    length_buckets: int = 50
    # Each training example's loss weighed by its class: "balanced" gives class c the
    # weight n / (C * n_c) over the training split (scikit-learn's and Keras's
    # class_weight), so the rare classes count as much as the common ones, as macro-F1
    # counts them; "none": every example alike. The reported train loss is the weighted
    # one (the learning curve says so); evaluation losses never are.
    class_weight: str = "none"


@dataclass
class RunConfig:
    dataset: Any = MISSING
    embedding: Any = MISSING
    model: Any = MISSING
    optimizer: Any = MISSING
    schedule: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    sweep: Any = None
    # hubsweep-sweep runs one study per arm (name -> Hydra overrides every trial of that arm
    # adds), all with the same search space, budget and sampler seed; empty: one study.
    arms: dict[str, list[str]] = field(default_factory=dict)
    # A factorial experiment instead: config key -> levels; one arm per combination.
    factors: dict[str, list[Any]] = field(default_factory=dict)
    experiment_name: str = "default"
    results_dir: str = "results"
    cache_dir: str | None = None
    output_dir: str = MISSING


GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "dataset": {"dataset": DatasetConfig},
    "embedding": {"embedding": EmbeddingConfig},
    "sweep": {"sweep": SweepConfig},
    "model": {"linear": LinearHeadConfig, "mlp": MLPHeadConfig},
    "optimizer": {
        "sgd": SGDConfig,
        "momentum": MomentumConfig,
        "adam": AdamConfig,
        "adamw": AdamWConfig,
        "adagrad": AdagradConfig,
        "rmsprop": RMSpropConfig,
    },
    "schedule": {
        "constant": ConstantScheduleConfig,
        "exponential": ExponentialScheduleConfig,
        "cosine": CosineScheduleConfig,
        "warmup": WarmupScheduleConfig,
    },
}

DATASET_SOURCES = ("tfds", "jsonl", "csv")
SPLIT_ROLES = ("train", "validation", "test")
WARMUP_DECAYS = ("linear", "cosine")
CLASS_WEIGHTINGS = ("none", "balanced")  # training/classifier.py's CLASS_WEIGHTS


def register_configs() -> None:
    """Register the schemas so each YAML file extends its own (`/schema/<group>/<name>`),
    and the config tree's resolver: `${no_trailing_sep:PATH}`, PATH without a trailing
    `/` (so `${no_trailing_sep:${output}}.work` is a sibling of `output=DIR/`, not in it)."""
    if not OmegaConf.has_resolver("no_trailing_sep"):
        OmegaConf.register_new_resolver("no_trailing_sep", lambda path: str(path).rstrip("/"))
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(name="analyze_schema", node=AnalyzeConfig)
    cs.store(name="swivel_schema", node=SwivelConfig)  # hubsweep-swivel's root config
    cs.store(name="adapt_schema", node=AdaptConfig)  # hubsweep-adapt's root config
    for group, schemas in GROUP_SCHEMAS.items():
        for name, schema in schemas.items():
            cs.store(group=f"schema/{group}", name=name, node=schema)


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


def _validate_prefixes(d: DictConfig) -> None:
    """A prefix that is the label would put the answer into the text."""
    keys = list(d.prefix_keys)
    for key in keys:
        require(
            key not in (d.text_key, d.label_key),
            "dataset.prefix_keys",
            f"{key!r} is the dataset's {'label_key' if key == d.label_key else 'text_key'}",
        )
    require(len(set(keys)) == len(keys), "dataset.prefix_keys", f"{keys} names a field twice")
