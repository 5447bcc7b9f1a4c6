"""Structured-config schemas and their registration with Hydra.

The dataclasses make Hydra reject unknown keys and wrongly typed values at composition
time; `validation.validate` catches what types cannot express (ranges, allowed names,
paths).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

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
from hubsweep.config.sweep import SweepConfig
from hubsweep.config.tools import AdaptConfig, AnalyzeConfig, SwivelConfig


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
    # Structural scaffolds (Cohan et al. 2019): fields an auxiliary head predicts from each
    # training text, beside the label, so the encoder learns what they say (e.g. SciCite's
    # sectionName); never read into the text, and unused at evaluation: the model still
    # classifies the text alone. Values are compared case-folded, letters only ("1.
    # Introduction" is "introduction"; digits where a value has no letters); a value seen in
    # fewer than scaffold_min_count training examples, or missing, adds no scaffold loss.
    scaffold_keys: list[str] = field(default_factory=list)
    scaffold_min_count: int = 20
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
    # The scaffold heads' share of the training loss (dataset.scaffold_keys): the label's
    # cross-entropy plus this times each scaffold's (over the examples it labels).
    scaffold_weight: float = 0.1
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
    # Which class the trained model names (training/decision.py): "argmax", the largest
    # logit; "tuned_offsets", the largest after per-class offsets fitted on the final
    # model's validation logits to maximise selection_metric, then applied to test and
    # predictions.csv. Evaluations a study selects on stay argmax.
    decision: str = "argmax"
    # Evaluate an exponential moving average of the trained weights (training/averaging.py):
    # after each step average <- decay * average + (1 - decay) * weights, bias-corrected;
    # validation, test, predictions and an exported module see the average, training the
    # raw weights. 0: off (the trained weights); 0.99 averages over ~the last 100 steps.
    ema_decay: float = 0.0
    # The label's training targets smoothed: (1 - label_smoothing) * one-hot +
    # label_smoothing / num_classes (Keras's label_smoothing). 0: the labels as they are.
    # Evaluation losses and scaffolds' losses never are smoothed.
    label_smoothing: float = 0.0


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
