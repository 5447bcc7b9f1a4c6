"""Per-trial time: the notebook way against hubsweep's trials, frozen and trainable.

The notebook way is what the public tutorial does: `hub.KerasLayer` on raw strings inside a
Keras model, `model.fit` on a shuffled tf.data pipeline, validation every eval_every steps.
Every way gets the same module, data and hyperparameters (the tutorial preset by default),
as a study's trial gets them (no test evaluation, no learning-curve PNG): one trial at a
time through train_and_evaluate, and (frozen) populations of K trials (seeds 0..K-1)
through train_population, for each K in --population.

    python benchmarks/bench_trials.py                        # synthetic fixture data and module
    python benchmarks/bench_trials.py --scicite ../shared/data/scicite --module modules/M
    python benchmarks/bench_trials.py ... --profile          # where a warm trial's time goes
    python benchmarks/bench_trials.py ... --study 30         # a 30-trial frozen study, end to end
    python benchmarks/bench_trials.py ... --tensorboard 10   # warm frozen trials, events on/off
    python benchmarks/bench_trials.py ... --end-to-end       # the tutorial from a fresh process
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def notebook_trial(handle: str, data, trainable: bool, steps: int, batch: int, every: int, lr):
    import tensorflow as tf
    import tensorflow_hub as hub
    import tf_keras as keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    train, val = data.splits["train"], data.splits["validation"]
    model = keras.Sequential(
        [
            hub.KerasLayer(handle, input_shape=[], dtype=tf.string, trainable=trainable),
            keras.layers.Dense(data.num_classes),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    train_ds = (
        tf.data.Dataset.from_tensor_slices((list(train.texts), train.labels))
        .shuffle(10000, seed=0)
        .repeat()
        .batch(batch)
    )
    val_ds = tf.data.Dataset.from_tensor_slices((list(val.texts), val.labels)).batch(512)
    history = model.fit(
        train_ds,
        steps_per_epoch=every,
        epochs=steps // every,
        validation_data=val_ds,
        verbose=0,
    )
    return history.history["val_accuracy"][-1]


def compose(args, trainable: bool, out: Path, extra: tuple[str, ...] = ()):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from hubsweep.config.schema import register_configs

    register_configs()
    overrides = [
        "experiment=tutorial",
        "trainer.evaluate_test=false",
        "trainer.learning_curve=false",
        "trainer.progress=false",
        f"trainer.steps={args.steps}",
        f"embedding.trainable={str(trainable).lower()}",
        f"embedding.handle={args.module}",
        "embedding.dim=null",
        f"dataset.source_dir={args.scicite}",
        f"dataset.data_dir={out / 'tfds'}",
        "cache_dir=null",
        f"output_dir={out / ('trainable' if trainable else 'frozen') / str(time.time_ns())}",
        *extra,
    ]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


NOTEBOOK_SCRIPT = """
import sys
sys.path.insert(0, {repo!r})
from benchmarks.bench_trials import notebook_trial
from hubsweep.data.datasets import load_dataset
from omegaconf import OmegaConf
cfg = OmegaConf.create({dataset!r})
data = load_dataset(cfg, ["train", "validation"])
print(notebook_trial({module!r}, data, False, {steps}, 10, 200, 0.01))
"""


def tutorial_args(args, out: Path, results: str) -> list[str]:
    """A command line's overrides: the tutorial on the benchmark's module and data."""
    return [
        "experiment=tutorial",
        f"embedding.handle={args.module}",
        "embedding.dim=null",
        f"dataset.source_dir={args.scicite}",
        f"dataset.data_dir={out / 'tfds'}",
        f"results_dir={out / results}",
    ]


def end_to_end(args, out: Path) -> None:
    """The tutorial as a user starts it: a fresh process each, TensorFlow import included.
    Both read the same prepared TFDS directory (prepared before the timings)."""
    from omegaconf import OmegaConf

    dataset = OmegaConf.to_container(compose(args, False, out).dataset, resolve=True)
    script = NOTEBOOK_SCRIPT.format(
        repo=str(REPO), dataset=dataset, module=str(args.module), steps=args.steps
    )
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    notebook = time.perf_counter() - started
    command = [
        shutil.which("hubsweep-train"),
        f"trainer.steps={args.steps}",
        "trainer.progress=false",
        *tutorial_args(args, out, "end-to-end"),
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    hubsweep = time.perf_counter() - started
    print(
        f"\nend to end (fresh process): notebook script {notebook:.1f}s, "
        f"hubsweep-train experiment=tutorial {hubsweep:.1f}s ({notebook / hubsweep:.1f}x; "
        "hubsweep also evaluates test, writes TensorBoard events and the learning curve)"
    )


def study_time(args, out: Path, population: int) -> None:
    """hubsweep-sweep from a fresh process: TensorFlow start-up is paid once, not per trial."""
    command = [
        shutil.which("hubsweep-sweep"),
        "sweep=lr_batch_steps",
        f"sweep.n_trials={args.study}",
        "sweep.pruner=none",
        f"sweep.study_name=bench{population}",
        f"sweep.population={population}",
        *tutorial_args(args, out, "study"),
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    total = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import tensorflow, tensorflow_hub"], check=True)
    start_up = time.perf_counter() - started
    print(
        f"\n{args.study}-trial frozen study (sweep=lr_batch_steps, no pruning, "
        f"sweep.population={population}), end to end: "
        f"{total:.1f}s ({total / args.study:.2f}s per trial; TensorFlow import {start_up:.1f}s, "
        "paid once per process)"
    )


def tensorboard_cost(args, out: Path, pairs: int) -> None:
    """Warm frozen trials with trainer.tensorboard on and off, interleaved in one process."""
    import statistics

    from hubsweep.training.run import train_and_evaluate
    from hubsweep.training.trial_cache import TrialCache

    cache = TrialCache.for_config(compose(args, False, out))
    train_and_evaluate(compose(args, False, out), cache=cache)  # warm: data, features, traces
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(pairs):
        for on in (False, True):
            cfg = compose(args, False, out, (f"trainer.tensorboard={str(on).lower()}",))
            started = time.perf_counter()
            train_and_evaluate(cfg, cache=cache)
            times[on].append(time.perf_counter() - started)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print(
        f"\nTensorBoard events, warm frozen trial ({args.steps} steps), median of {pairs}: "
        f"off {off:.3f}s, on {on:.3f}s, on/off {on / off:.3f} (+{(on - off) * 1000:.0f} ms)"
    )


def fixture(out: Path) -> tuple[Path, Path]:
    import numpy as np

    from hubsweep.embeddings.export import export_text_embedding
    from tests.conftest import VOCAB, write_scicite

    data = write_scicite(out / "scicite", {"train": 2000, "dev": 300, "test": 300})
    vectors = np.random.default_rng(0).normal(size=(len(VOCAB), 32)).astype(np.float32)
    module = export_text_embedding(VOCAB, vectors, out / "module", lowercase=True)
    return data, module


def seeds(args, out: Path, k: int) -> list:
    """The frozen tutorial config with seeds 0..k-1 (each seed its own head and batches)."""
    return [compose(args, False, out, (f"trainer.seed={i}",)) for i in range(k)]


def population_rows(args, out: Path, cache) -> list[tuple]:
    """The tutorial config over seeds 0..K-1 as one population, per K; warm (each K's
    program compiled by a first population, timed separately)."""
    from hubsweep.training.run import train_population

    rows = []
    for k in args.population:
        started = time.perf_counter()
        train_population(seeds(args, out, k), [None] * k, cache)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        results = train_population(seeds(args, out, k), [None] * k, cache)
        seconds = (time.perf_counter() - started) / k
        accuracy = sum(r.final["accuracy"] for r in results) / k
        rows.append((f"population K={k}", seconds, accuracy, f"first {cold:.1f}s (compiles)"))
    if args.profile and args.population:
        k = max(args.population)
        profiler = cProfile.Profile()
        profiler.runcall(train_population, seeds(args, out, k), [None] * k, cache)
        print(f"\n--- profile of a warm population of {k} (cumulative time) ---")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(22)
    return rows


def print_table(title: str, notebook: tuple[float, float], rows: list[tuple]) -> None:
    nb_time, nb_acc = notebook
    print(f"\n{title}")
    header = "way                          trial s  trials/min  val acc  speed-up  note"
    print(header)
    print("-" * len(header))
    for way, seconds, accuracy, note in [("notebook (model.fit)", nb_time, nb_acc, ""), *rows]:
        print(
            f"{way:<28} {seconds:8.3f}  {60 / seconds:10.1f}  {accuracy:7.4f}"
            f"  {nb_time / seconds:7.1f}x  {note}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scicite", type=Path, help="SciCite release files (default: fixture)")
    parser.add_argument("--module", type=Path, help="text-embedding module (default: fixture)")
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--arms", default="frozen,trainable")
    parser.add_argument(
        "--population", default="1,4,16,64", help="population sizes K for the frozen arm"
    )
    parser.add_argument("--profile", action="store_true", help="profile a warm hubsweep trial")
    parser.add_argument("--study", type=int, default=0, help="also time an N-trial frozen study")
    parser.add_argument(
        "--study-population", default="1,4,16", help="sweep.population values for --study"
    )
    parser.add_argument(
        "--end-to-end", action="store_true", help="also time the tutorial from a fresh process"
    )
    parser.add_argument(
        "--tensorboard", type=int, default=0, help="N warm frozen trials with events on and off"
    )
    args = parser.parse_args()
    args.population = [int(k) for k in filter(None, args.population.split(","))]
    out = Path(tempfile.mkdtemp(prefix="hubsweep-bench-"))
    if args.scicite is None or args.module is None:
        args.scicite, args.module = fixture(out)

    from hubsweep.data.datasets import load_dataset
    from hubsweep.training.run import train_and_evaluate
    from hubsweep.training.trial_cache import TrialCache

    tables = []
    for arm in filter(None, args.arms.split(",")):
        trainable = arm == "trainable"
        cfg = compose(args, trainable, out)
        load_dataset(cfg.dataset, ["train", "validation"])  # prepare TFDS outside the timings
        t = cfg.trainer
        started = time.perf_counter()
        data = load_dataset(cfg.dataset, ["train", "validation"])
        nb_acc = notebook_trial(
            str(args.module),
            data,
            trainable,
            t.steps,
            t.batch_size,
            t.eval_every,
            cfg.optimizer.learning_rate,
        )
        nb_time = time.perf_counter() - started
        cache = TrialCache.for_config(cfg)  # one process, many trials: the sweep's situation
        rows = []
        for label in ("first", "next"):  # the first loads data and embeds splits
            cfg = compose(args, trainable, out)
            started = time.perf_counter()
            result = train_and_evaluate(cfg, cache=cache)
            seconds = time.perf_counter() - started
            way = f"one by one, {label} ({result.training_path})"
            rows.append((way, seconds, result.final["accuracy"], ""))
        if not trainable:  # a warm single run on the Keras feature path, for comparison
            cfg = compose(args, trainable, out, ("trainer.compiled_head=false",))
            started = time.perf_counter()
            result = train_and_evaluate(cfg, cache=cache)
            seconds = time.perf_counter() - started
            rows.append(
                (
                    f"one by one, next ({result.training_path})",
                    seconds,
                    result.final["accuracy"],
                    "",
                )
            )
            rows += population_rows(args, out, cache)
        title = (
            f"{arm}: {t.steps} steps x batch {t.batch_size}, eval every {t.eval_every}, "
            f"lr {cfg.optimizer.learning_rate} | {args.module}"
        )
        tables.append((title, (nb_time, nb_acc), rows))
        if args.profile:
            cfg = compose(args, trainable, out)
            profiler = cProfile.Profile()
            profiler.runcall(train_and_evaluate, cfg, None, cache)
            print(f"\n--- profile of a warm {arm} hubsweep trial (cumulative time) ---")
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(18)

    for population in filter(None, args.study_population.split(",")) if args.study else ():
        study_time(args, out, int(population))
    if args.end_to_end:
        end_to_end(args, out)
    if args.tensorboard:
        tensorboard_cost(args, out, args.tensorboard)
    for table in tables:
        print_table(*table)


if __name__ == "__main__":
    main()
