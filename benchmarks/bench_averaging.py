"""`trainer.ema_decay`'s update of a fine-tuned MiniLM's weights after each step: the
average as separate TensorFlow ops (`trainer.xla=false`) against one XLA-compiled pass
(`trainer.xla=true`, the default), side by side in one run.

The variables have all-MiniLM-L6-v2's shapes (bench_adamw.py's `minilm_shapes`: 22.6 M
weights). Each way folds the same weights in `--steps` times inside one tf.function, as
the training loop does after each step; timed as the median of repeats after a warm-up
call (compilation), in ms a step; after the timing both averages must be equal.

    python benchmarks/bench_averaging.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_adamw import minilm_shapes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="updates a timed call")
    parser.add_argument("--decay", type=float, default=0.995)
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    from hubsweep.training.averaging import WeightAverage

    shapes = minilm_shapes(30522, 384, 6, 1536)
    weights = [tf.Variable(tf.random.normal(s, seed=i)) for i, s in enumerate(shapes.values())]
    print(f"{sum(int(np.prod(s)) for s in shapes.values()) / 1e6:.1f} M weights")
    averages = {
        "separate ops": WeightAverage(weights, args.decay, compiled=False),
        "XLA": WeightAverage(weights, args.decay, compiled=True),
    }
    times = {}
    for name, average in averages.items():

        @tf.function
        def steps(average=average):
            for _ in tf.range(args.steps):
                average.update()

        steps()  # trace (and compile)
        runs = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            steps()
            runs.append((time.perf_counter() - started) / args.steps)
        times[name] = statistics.median(runs)
        print(f"{name:>13}: {1000 * times[name]:7.2f} ms a step")
    print(f"XLA: {times['separate ops'] / times['XLA']:.2f}x the separate ops")
    for a, b in zip(*(avg.averaged() for avg in averages.values()), strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    print("both averages equal")


if __name__ == "__main__":
    main()
