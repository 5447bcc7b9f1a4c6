"""Optuna studies over `train_and_evaluate`: sampling, pruning, storage, workers, best trial.

Each trial composes the base config plus its sampled overrides through Hydra (so it is
validated like any run) and trains through the common entry point with a reporter that
feeds Optuna's pruner. `n_trials` is a target total for the study: every worker, on any
machine, stops once that many trials have finished, counting those of earlier
invocations. A worker refreshes a heartbeat on its running trial; a trial whose heartbeat
goes stale (its worker was killed) is failed and retried once with the same parameters.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import re
import shlex
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from hubsweep.errors import ConfigError, HubsweepError

log = logging.getLogger(__name__)

HEARTBEAT = "hubsweep:heartbeat"
FAIL_REASON = "fail_reason"
SURPLUS = "surplus"
METRICS = ("macro_f1", "accuracy", "macro_precision", "macro_recall", "loss")
SAMPLERS = ("tpe", "random", "grid", "cmaes")
PRUNERS = ("median", "percentile", "successive_halving", "hyperband", "none")
PARAM_TYPES = ("float", "int", "categorical")
STUDY_FILE = "study.journal"
# Written when a study starts: what the report needs to find and describe it.
INFO_FILE = "study.json"
SUMMARY_FILE = "summary.json"
ARM_NAME = re.compile(r"^[A-Za-z0-9_]+$")


# --- settings -------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    name: str
    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple | None = None

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def grid(self) -> list:
        if self.type == "categorical":
            return list(self.choices)
        if self.step is None:
            raise ConfigError(f"sweep.params.{self.name}: the grid sampler needs choices or a step")
        values = np.arange(self.low, self.high + self.step / 2, self.step)
        return [int(v) for v in values] if self.type == "int" else [float(v) for v in values]


def parse_params(params: DictConfig) -> list[Param]:
    parsed = []
    for name, spec in params.items():
        where = f"sweep.params.{name}"
        spec = OmegaConf.to_container(spec, resolve=True)
        unknown = set(spec) - {"key", "type", "low", "high", "log", "step", "choices"}
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}")
        if not spec.get("key"):
            raise ConfigError(f"{where}.key: name the config key to search, e.g. trainer.steps")
        kind = spec.get("type")
        if kind not in PARAM_TYPES:
            raise ConfigError(f"{where}.type: {kind!r} is not one of {', '.join(PARAM_TYPES)}")
        if kind == "categorical":
            if not spec.get("choices"):
                raise ConfigError(f"{where}.choices: a categorical parameter needs choices")
            parsed.append(Param(name, spec["key"], kind, choices=tuple(spec["choices"])))
            continue
        low, high = spec.get("low"), spec.get("high")
        if low is None or high is None or not low < high:
            raise ConfigError(f"{where}: needs low < high, got low={low} high={high}")
        if spec.get("log") and low <= 0:
            raise ConfigError(f"{where}.low: a log-scale range must be positive")
        if spec.get("log") and spec.get("step"):
            raise ConfigError(f"{where}: log and step cannot be combined")
        parsed.append(
            Param(
                name,
                spec["key"],
                kind,
                float(low),
                float(high),
                bool(spec.get("log")),
                spec.get("step"),
            )
        )
    if not parsed:
        raise ConfigError("sweep.params: the search space is empty")
    return parsed


def direction(s: DictConfig) -> str:
    return s.direction or ("minimize" if s.metric == "loss" else "maximize")


def validate_sweep(cfg: DictConfig) -> list[Param]:
    s = cfg.sweep
    if s is None:
        raise ConfigError("sweep: choose a search space, e.g. sweep=lr_batch_steps")
    checks = [
        (s.metric in METRICS, "sweep.metric", f"{s.metric!r} is not one of {', '.join(METRICS)}"),
        (direction(s) in ("minimize", "maximize"), "sweep.direction", "minimize or maximize"),
        (s.sampler in SAMPLERS, "sweep.sampler", f"{s.sampler!r}: one of {', '.join(SAMPLERS)}"),
        (s.pruner in PRUNERS, "sweep.pruner", f"{s.pruner!r}: one of {', '.join(PRUNERS)}"),
        (s.n_trials > 0, "sweep.n_trials", "must be positive"),
        (s.workers > 0, "sweep.workers", "must be positive"),
        (s.seeds_per_trial > 0, "sweep.seeds_per_trial", "must be positive"),
        (s.retrain_best_seeds >= 0, "sweep.retrain_best_seeds", "must be >= 0"),
        (0 < s.heartbeat_s < s.grace_s, "sweep.grace_s", "must exceed sweep.heartbeat_s"),
    ]
    for ok, key, problem in checks:
        if not ok:
            raise ConfigError(f"{key}: {problem}")
    params = parse_params(s.params)
    for p in params:
        if OmegaConf.select(cfg, p.key, default="__missing__") == "__missing__":
            raise ConfigError(f"sweep.params.{p.name}.key: {p.key!r} is not a config key")
    if s.storage and s.storage.startswith("sqlite") and s.workers > 1:
        raise ConfigError(
            "sweep.storage: SQLite is not safe for several worker processes; leave "
            "sweep.storage unset (a journal file) or use postgresql://..."
        )
    return params


@dataclass(frozen=True)
class Arm:
    """One study of an experiment: its name (None for a plain sweep) and its overrides."""

    name: str | None
    overrides: tuple[str, ...] = ()


def is_study_setting(override: str) -> bool:
    """sweep.*, hydra.* and arms.* overrides set up the study; trials do not compose them."""
    return override.lstrip("+~").startswith(("sweep", "hydra", "arms"))


def experiment_arms(cfg: DictConfig) -> list[Arm]:
    if not cfg.arms:
        return [Arm(None)]
    found = []
    for name, overrides in cfg.arms.items():
        if not ARM_NAME.match(str(name)):
            raise ConfigError(f"arms.{name}: an arm name may use letters, digits and _ only")
        if not isinstance(overrides, Sequence) or isinstance(overrides, str):
            raise ConfigError(f"arms.{name}: give a list of overrides, e.g. [model=mlp]")
        for o in overrides:
            if is_study_setting(str(o)):
                raise ConfigError(
                    f"arms.{name}: {o!r}: arms share the study settings; override run settings only"
                )
        found.append(Arm(str(name), tuple(str(o) for o in overrides)))
    return found


def study_dir(cfg: DictConfig, arm: str | None = None) -> Path:
    """results/<experiment>/<study>, and one folder below it per arm."""
    base = Path(cfg.results_dir) / cfg.experiment_name / cfg.sweep.study_name
    return base / arm if arm else base


def study_name(cfg: DictConfig, arm: str | None = None) -> str:
    return f"{cfg.sweep.study_name}-{arm}" if arm else cfg.sweep.study_name


def storage_url(cfg: DictConfig, arm: str | None = None) -> str:
    url = cfg.sweep.storage
    if not url:
        return f"journal:{study_dir(cfg, arm) / STUDY_FILE}"
    if url.startswith("postgresql://"):
        # SQLAlchemy's default PostgreSQL driver is psycopg2; hubsweep installs psycopg 3.
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def open_storage(url: str) -> optuna.storages.BaseStorage:
    if url.startswith("journal:"):
        path = url.removeprefix("journal:")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(
            path, lock_obj=optuna.storages.journal.JournalFileOpenLock(path)
        )
        return optuna.storages.JournalStorage(backend)
    return optuna.storages.RDBStorage(url)


# --- the study's bookkeeping ------------------------------------------------------------


def counts_toward_target(t: optuna.trial.FrozenTrial) -> bool:
    """Finished or about to run; FAILs count only when the trial itself failed (a reason
    is recorded), not when its worker died (it is retried) or it was surplus."""
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return t.state == TrialState.FAIL and FAIL_REASON in t.user_attrs


def tally(study: optuna.Study) -> tuple[int, int]:
    """(finished, running): trials that count toward n_trials, and trials running now.

    Waiting trials (retries) are not counted as taken: the next worker to ask runs them.
    """
    trials = study.get_trials(deepcopy=False)
    finished = sum(counts_toward_target(t) for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return finished, running


def recover_stale_trials(study: optuna.Study, grace_s: float) -> None:
    """Fail running trials whose worker stopped beating, and retry each once."""
    storage = study._storage
    now = time.time()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = max(t.system_attrs.get(HEARTBEAT, 0.0), t.datetime_start.timestamp())
        if now - beat <= grace_s:
            continue
        try:
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except Exception:  # another worker failed it first
            continue
        failed = storage.get_trial(t._trial_id)
        if failed.system_attrs.get("retry_history"):
            storage.set_trial_user_attr(t._trial_id, FAIL_REASON, "worker died twice")
            log.warning("trial %d: worker died again; not retried", t.number)
        else:
            optuna.storages.RetryFailedTrialCallback(max_retry=1)(study, failed)
            log.warning("trial %d: worker stopped responding; retrying it", t.number)


class _Heartbeat:
    def __init__(self, study: optuna.Study, trial: optuna.Trial, every_s: float) -> None:
        self._stop = threading.Event()
        self._beat = lambda: study._storage.set_trial_system_attr(
            trial._trial_id, HEARTBEAT, time.time()
        )
        self._beat()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)
        self._thread.start()

    def _run(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            self._beat()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# --- trials -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs (plain data, so it crosses process boundaries)."""

    config_dir: str
    overrides: tuple[str, ...]
    study_dir: str
    storage: str
    study_name: str
    sweep: dict
    cache_dir: str | None
    worker_index: int = 0


class _SurplusTrial(Exception):
    pass


class _TrialFailed(Exception):
    pass


@contextmanager
def hydra_context(config_dir: str):
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from hubsweep.config import register_configs

    register_configs()  # a spawned worker starts with an empty ConfigStore
    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        yield


def compose_run(spec: WorkerSpec, extra: Sequence[str], with_hydra: bool = False) -> DictConfig:
    """The base config plus `extra` overrides, composed and type-checked by Hydra."""
    from hydra import compose

    with hydra_context(spec.config_dir):
        return compose(
            "config", overrides=[*spec.overrides, *extra], return_hydra_config=with_hydra
        )


def seeded_run(spec: WorkerSpec, extra: Sequence[str], k: int, run_dir: Path) -> DictConfig:
    """The k-th seed (trainer.seed + k) of a composed config, writing to `run_dir`."""
    cfg = compose_run(spec, extra)
    cfg.trainer.seed += k
    cfg.trainer.progress = False
    cfg.output_dir = str(run_dir)
    return cfg


def param_overrides(params: dict[str, Any]) -> list[str]:
    return [f"{key}={value}" for key, value in params.items()]


class Objective:
    def __init__(self, spec: WorkerSpec, params: list[Param], cache) -> None:
        self.spec, self.params, self.cache = spec, params, cache
        self.s = spec.sweep

    def __call__(self, trial: optuna.Trial) -> float:
        study = trial.study
        rank = sum(
            counts_toward_target(t) or t.state in (TrialState.RUNNING, TrialState.WAITING)
            for t in study.get_trials(deepcopy=False)
            if t.number < trial.number
        )
        if rank >= self.s["n_trials"]:
            trial.set_user_attr(SURPLUS, True)
            raise _SurplusTrial(f"trial {trial.number} is beyond n_trials")
        heartbeat = _Heartbeat(study, trial, self.s["heartbeat_s"])
        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except Exception as e:
            if FAIL_REASON not in trial.user_attrs:
                trial.set_user_attr(FAIL_REASON, f"{type(e).__name__}: {e}")
            raise
        finally:
            heartbeat.stop()

    def _run(self, trial: optuna.Trial) -> float:
        from hubsweep.train import train_and_evaluate

        sampled = param_overrides({p.key: p.suggest(trial) for p in self.params})
        metric = self.s["metric"]
        base = Path(self.spec.study_dir) / "trials" / f"{trial.number:04d}"
        values, finals, run_dirs = [], [], []
        for k in range(self.s["seeds_per_trial"]):
            run_dir = base / f"seed{k}"
            cfg = seeded_run(self.spec, sampled, k, run_dir)
            cfg.trainer.evaluate_test = False  # test never feeds the search
            run_dirs.append(str(run_dir))
            trial.set_user_attr("run_dirs", run_dirs)
            reporter = self._reporter(trial, metric) if k == 0 else None
            result = train_and_evaluate(cfg, reporter=reporter, cache=self.cache)
            trial.set_user_attr("status", result.status)
            trial.set_user_attr("steps_done", result.steps_done)
            trial.set_user_attr("wall_time_s", result.wall_time_s)
            if result.status == "stopped":
                raise optuna.TrialPruned(f"pruned at step {result.steps_done}")
            if result.status == "diverged":
                trial.set_user_attr(FAIL_REASON, f"diverged at step {result.diverged_at_step}")
                raise _TrialFailed(f"diverged at step {result.diverged_at_step}")
            values.append(result.final[metric])
            finals.append(result.final)
        self._record_metrics(trial, finals, values)
        return float(np.mean(values))

    def _reporter(self, trial: optuna.Trial, metric: str):
        def report(step: int, metrics: dict) -> bool:
            trial.report(metrics[metric], step)
            return trial.should_prune()

        return report

    @staticmethod
    def _record_metrics(trial: optuna.Trial, finals: list[dict], values: list[float]) -> None:
        for key in METRICS:
            trial.set_user_attr(f"val_{key}", float(np.mean([f[key] for f in finals])))
        for name in finals[0]["per_class"]:
            f1 = np.mean([f["per_class"][name]["f1"] for f in finals])
            trial.set_user_attr(f"val_f1_{name}", float(f1))
        trial.set_user_attr("seed_values", [float(v) for v in values])
        trial.set_user_attr("value_std", float(np.std(values)))


def _sampler(s: dict, params: list[Param], seed: int) -> optuna.samplers.BaseSampler:
    if s["sampler"] == "grid":
        return optuna.samplers.GridSampler({p.key: p.grid() for p in params}, seed=seed)
    if s["sampler"] == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s["sampler"] == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(s: dict) -> optuna.pruners.BasePruner:
    startup, warmup = s["pruner_startup_trials"], s["pruner_warmup_steps"]
    if s["pruner"] == "median":
        return optuna.pruners.MedianPruner(startup, warmup)
    if s["pruner"] == "percentile":
        return optuna.pruners.PercentilePruner(s["pruner_percentile"], startup, warmup)
    if s["pruner"] == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if s["pruner"] == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def _watch_parent(parent_pid: int) -> None:
    """A spawned worker ends when the sweep process that started it is gone (even SIGKILL)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def run_worker(spec: WorkerSpec, parent_pid: int | None = None) -> None:
    """Run trials until the study has `n_trials` finished trials (or the timeout passes)."""
    if parent_pid is not None:
        _watch_parent(parent_pid)
        logging.basicConfig(level=logging.INFO, format=f"[worker {spec.worker_index}] %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from hubsweep.cache import TrialCache
    from hubsweep.features import FeatureCache

    s = spec.sweep
    params = parse_params(OmegaConf.create(s["params"]))
    storage = open_storage(spec.storage)
    existing = len(optuna.load_study(study_name=spec.study_name, storage=storage).trials)
    # Distinct per worker and per invocation, yet reproducible for a fresh single-worker study.
    seed = s["sampler_seed"] + 10007 * spec.worker_index + existing
    study = optuna.load_study(
        study_name=spec.study_name,
        storage=storage,
        sampler=_sampler(s, params, seed),
        pruner=_pruner(s),
    )
    objective = Objective(spec, params, TrialCache(FeatureCache(spec.cache_dir)))
    deadline = time.time() + s["timeout_s"] if s["timeout_s"] else math.inf
    poll_s = min(s["heartbeat_s"], 5.0)
    while time.time() < deadline:
        recover_stale_trials(study, s["grace_s"])
        finished, running = tally(study)
        if finished >= s["n_trials"]:
            break
        if finished + running >= s["n_trials"]:
            time.sleep(poll_s)  # the remaining trials are running elsewhere
            continue
        study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=False)


# --- the sweep ----------------------------------------------------------------------------


def run_sweep(cfg: DictConfig, overrides: Sequence[str], config_dir: str) -> dict:
    """Run the study of `cfg.sweep` (one per arm) with `sweep.workers` processes each.

    `overrides` are the command-line overrides of the base config (sweep.*, hydra.* and
    arms.* ones are dropped): every trial composes them, its arm's, and its sampled
    parameters.
    Returns the study's summary, or {"arms": {arm: summary}} for an experiment with arms.
    """
    params = validate_sweep(cfg)
    s = cfg.sweep
    if s.sampler == "grid":
        size = math.prod(len(p.grid()) for p in params)
        if s.n_trials > size:
            log.info("grid of %d configs: n_trials lowered from %d", size, s.n_trials)
            s.n_trials = size
    trial_overrides = tuple(o for o in overrides if not is_study_setting(o))
    specs = {arm: _spec(cfg, arm, trial_overrides, config_dir) for arm in experiment_arms(cfg)}
    for arm, spec in specs.items():
        if arm.name:
            _check_arm(arm, spec)
    command = shlex.join(["hubsweep-sweep", *overrides])
    summaries = {
        arm.name: _run_study(cfg, arm, i, spec, command)
        for i, (arm, spec) in enumerate(specs.items())
    }
    return {"arms": summaries} if cfg.arms else summaries[None]


def _spec(cfg: DictConfig, arm: Arm, overrides: tuple[str, ...], config_dir: str) -> WorkerSpec:
    return WorkerSpec(
        config_dir=config_dir,
        overrides=(*overrides, *arm.overrides),
        study_dir=str(study_dir(cfg, arm.name)),
        storage=storage_url(cfg, arm.name),
        study_name=study_name(cfg, arm.name),
        sweep=OmegaConf.to_container(cfg.sweep, resolve=True),
        cache_dir=cfg.cache_dir,
    )


def _check_arm(arm: Arm, spec: WorkerSpec) -> None:
    """An arm's config must compose and validate before any study starts."""
    from hubsweep.config import validate

    try:
        validate(compose_run(spec, []))
    except ConfigError as e:
        raise ConfigError(f"arms.{arm.name}: {e}") from None
    except Exception as e:  # Hydra's composition errors name the bad override
        raise ConfigError(f"arms.{arm.name}: {type(e).__name__}: {e}") from None


def _run_study(cfg: DictConfig, arm: Arm, index: int, spec: WorkerSpec, command: str) -> dict:
    directory = Path(spec.study_dir)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        study = optuna.create_study(
            study_name=spec.study_name,
            storage=open_storage(spec.storage),
            direction=direction(cfg.sweep),
            load_if_exists=True,
        )
    except Exception as e:
        raise HubsweepError(f"sweep.storage: cannot open {spec.storage!r}: {e}") from e
    info = {
        "study_name": spec.study_name,
        "storage": spec.storage,
        "arm": arm.name,
        "arm_index": index,  # the experiment's order, for reports
        "arm_overrides": list(arm.overrides),
        "experiment_name": cfg.experiment_name,
        "overrides": list(spec.overrides),
        "command": command,
        "sweep": spec.sweep,
    }
    (directory / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    finished, _ = tally(study)
    log.info(
        "study %s: %d of %d trials finished; %d worker(s); storage %s",
        spec.study_name,
        finished,
        cfg.sweep.n_trials,
        cfg.sweep.workers,
        spec.storage,
    )
    started = time.perf_counter()
    _run_workers(spec, cfg.sweep.workers)
    summary = finish_study(cfg, spec, time.perf_counter() - started)
    (directory / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _run_workers(spec: WorkerSpec, workers: int) -> None:
    ctx = multiprocessing.get_context("spawn")
    children = [
        ctx.Process(
            target=run_worker,
            args=(WorkerSpec(**{**spec.__dict__, "worker_index": i}), os.getpid()),
            daemon=False,
        )
        for i in range(1, workers)
    ]
    for child in children:
        child.start()
    run_worker(spec)
    for child in children:
        child.join()


def _state_counts(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    return counts


def finish_study(cfg: DictConfig, spec: WorkerSpec, wall_s: float) -> dict:
    from hubsweep.best import retrain_best, write_best_preset

    study = optuna.load_study(study_name=spec.study_name, storage=open_storage(spec.storage))
    summary: dict[str, Any] = {
        "study": spec.study_name,
        "storage": spec.storage,
        "trials": _state_counts(study),
        "wall_time_s": round(wall_s, 1),
    }
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        log.warning("no trial completed; no best config")
        return summary
    best = study.best_trial
    summary["best"] = {"trial": best.number, "value": best.value, "params": best.params}
    preset = write_best_preset(cfg, spec, best)
    summary["best"]["preset"] = str(preset)
    log.info(
        "best trial %d: %s %.4f with %s", best.number, cfg.sweep.metric, best.value, best.params
    )
    if cfg.sweep.retrain_best_seeds:
        summary["retrain"] = retrain_best(cfg, spec, best, study)
    return summary
