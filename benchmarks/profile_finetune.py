"""Where a fine-tuning step's time goes: MiniLM on SciCite, all layers, batch 16.

One real step of hubsweep's encoder path, cut into what it does, each timed apart (median
of repeats, after a warm-up) in one run: the forward pass (dropout on), the forward and
backward pass, the optimizer's update of every trained variable (Adam, as
bench_finetune.py steps; AdamW's decay adds one multiply-add per weight), and the whole step
(`train_chunk`, one compiled step); beside them, the time the step's matmul FLOPs would
take at this machine's dense matmul rate. Float32, and with trainer.mixed_precision.
Then the whole step by TensorFlow op type: a `tf.profiler` trace of a few steps, each op's
time summed over the threads that ran it, per step (so the ops' sum can exceed the step's
wall time when two ran at once), the largest first; and the rate of each of the step's
dense-layer products alone (its token rows × the hidden and feed-forward widths).

    python benchmarks/profile_finetune.py --scicite ../shared/data/scicite --pair modules/minilm
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_finetune import compose_run, encoder_shape, matmul_gflops, training_flops  # noqa: E402


def _median_s(fn, repeats: int) -> float:
    fn()  # warm-up: traces
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def profile(args, out: Path, mixed: bool) -> dict[str, float]:
    import numpy as np
    import tensorflow as tf

    from hubsweep.data.datasets import load_dataset
    from hubsweep.training.build import build_classifier

    cfg = compose_run(args, out, 10, None, mixed)
    data = load_dataset(cfg.dataset)
    classifier = build_classifier(cfg, data)
    lengths = classifier.padding_lengths
    # A typical bucketed batch: 16 sentences of about the median length.
    order = np.argsort(lengths)
    middle = len(order) // 2
    idx = tf.constant(order[middle : middle + args.batch], tf.int32)
    variables = classifier.variables

    @tf.function
    def forward():
        return classifier.loss(idx, classifier.forward(classifier.gather("train", idx), True))

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            loss = classifier.loss(idx, classifier.forward(classifier.gather("train", idx), True))
        return tape.gradient(loss, variables)

    grads = forward_backward()

    @tf.function
    def update():
        classifier.optimizer.apply_gradients(zip(grads, variables, strict=True))

    step = tf.constant([order[middle : middle + args.batch]], tf.int32)
    times = {
        "forward": _median_s(lambda: forward().numpy(), args.repeats),
        "forward + backward": _median_s(
            lambda: [g.numpy() if hasattr(g, "numpy") else g for g in forward_backward()][:1],
            args.repeats,
        ),
        "optimizer update": _median_s(lambda: update(), args.repeats),
        "whole step": _median_s(lambda: classifier.train_chunk(step).numpy(), args.repeats),
    }
    padded = int(-(-lengths[order[middle : middle + args.batch]].max() // 8) * 8)
    shape = encoder_shape(args.pair / "encoder")
    real = list(lengths[order[middle : middle + args.batch]])
    times["_flops"] = training_flops(shape, real, padded, shape["num_hidden_layers"])
    times["_padded"] = padded
    times["_shape"] = shape
    times["_ops"] = op_times(lambda: classifier.train_chunk(step).numpy(), out / f"trace-{mixed}")
    return times


def op_times(step, logdir: Path, steps: int = 3) -> dict[str, float]:
    """Seconds per step by op type, from a profiler trace of `steps` calls of `step`."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    step()
    tf.profiler.experimental.start(str(logdir))
    for _ in range(steps):
        step()
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    space.ParseFromString(next(logdir.rglob("*.xplane.pb")).read_bytes())
    totals: dict[str, float] = {}
    for plane in space.planes:
        for line in plane.lines:
            for event in line.events:
                # An op's event is "<op name>:<op type>"; the executor's own events
                # ("ExecutorState::Process") and function calls ("…: __inference_…") hold
                # ops, not time of their own.
                full = plane.event_metadata[event.metadata_id].name
                name, _, kind = full.rpartition(":")
                if not name or "::" in full or " " in full or not kind.isidentifier():
                    continue
                totals[kind] = totals.get(kind, 0.0) + event.duration_ps * 1e-12 / steps
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scicite", type=Path, required=True)
    parser.add_argument("--pair", type=Path, default=Path("modules/minilm"))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--top-ops", type=int, default=12, help="op types listed")
    args = parser.parse_args()
    limit = matmul_gflops()
    with tempfile.TemporaryDirectory() as tmp:
        results = {mixed: profile(args, Path(tmp), mixed) for mixed in (False, True)}
    print(
        f"\nMiniLM, all layers, batch {args.batch} at the median length; dense matmul "
        f"{limit:.0f} GFLOP/s (float32)"
    )
    for mixed, t in results.items():
        whole = t["whole step"]
        at_limit = t["_flops"] / (limit * 1e9)
        print(f"\n{'bfloat16 matmuls' if mixed else 'float32'} (padded to {t['_padded']}):")
        rows = [
            ("forward", t["forward"]),
            ("backward", t["forward + backward"] - t["forward"]),
            ("optimizer update", t["optimizer update"]),
            ("rest of the step", whole - t["forward + backward"] - t["optimizer update"]),
            ("whole step", whole),
            ("its matmuls at the float32 limit", at_limit),
        ]
        for name, seconds in rows:
            print(f"  {name:34} {seconds * 1000:8.1f} ms  {seconds / whole:6.1%}")
        print("  the whole step by op type (summed over threads):")
        ops = t["_ops"]
        for name, seconds in list(ops.items())[: args.top_ops]:
            print(f"    {name:32} {seconds * 1000:8.1f} ms  {seconds / whole:6.1%}")
        rest = sum(list(ops.values())[args.top_ops :])
        print(
            f"    {'the other ' + str(max(len(ops) - args.top_ops, 0)) + ' types':32} "
            f"{rest * 1000:8.1f} ms  {rest / whole:6.1%}"
        )

    rows = results[False]["_padded"] * args.batch
    shape = results[False]["_shape"]
    hidden, ffn = shape["hidden_size"], shape["intermediate_size"]
    print(f"\nthe step's dense products alone ({rows} token rows), float32:")
    for k, n, what in (
        (hidden, hidden, "attention projections"),
        (hidden, ffn, "feed-forward in"),
        (ffn, hidden, "feed-forward out"),
    ):
        print(f"  {rows} × {k} × {n} ({what}): {matmul_gflops(rows, k, n, repeats=50):.0f} GFLOP/s")


if __name__ == "__main__":
    main()
