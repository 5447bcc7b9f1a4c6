"""The `sweep.*` schema: an Optuna study over any config keys, its budget, sampler and
pruner, and what happens after the search (finalists, re-runs with test)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass
class SweepConfig:
    """An Optuna study over any config keys (see sweep/*.yaml)."""

    study_name: str = MISSING
    # name -> {key: <dotted config key>, type: float|int|categorical, low, high, log, step,
    # choices}
    params: dict[str, Any] = field(default_factory=dict)
    # Target total of finished trials (complete, pruned or failed with a reason), across
    # every invocation and worker.
    n_trials: int = 20
    timeout_s: float | None = None
    metric: str = "macro_f1"
    # null: minimize for loss, maximize otherwise.
    direction: str | None = None
    sampler: str = "tpe"
    sampler_seed: int = 0
    pruner: str = "median"
    pruner_startup_trials: int = 5
    pruner_warmup_steps: int = 0
    pruner_percentile: float = 25.0
    # null: a journal file in the study directory; or any SQLAlchemy URL
    # (postgresql://host/db for distributed workers).
    storage: str | None = None
    workers: int = 1
    # Threads (within an op, and ops side by side) of each worker's TensorFlow when
    # workers > 1, every worker then a process of its own; 0: this machine's cores shared
    # evenly among them, so they do not contend for the same cores. One worker runs in this
    # process on TensorFlow's default (every core). On 2 cores, two one-thread workers ran
    # a MiniLM fine-tuning study's trials at 1.34x one two-thread worker's (docs/speed.md).
    worker_threads: int = 0
    # Trials asked at once by each worker (study/rounds.py); those on a frozen module's
    # cached features train together as stacked heads. 16 measured fastest for a 100-trial
    # tutorial study (docs/speed.md); 1: one trial at a time.
    population: int = 16
    # k runs of each sampled config with seeds trainer.seed .. trainer.seed+k-1; the
    # objective is their mean.
    seeds_per_trial: int = 1
    # Finalists (study/finalists.py): the search's top k distinct configs, each re-run on
    # finalist_seeds new seeds (validation only); the best mean is the winner, the config
    # re-run with test and written as the best preset. 1: the search's best trial wins.
    finalists: int = 3
    finalist_seeds: int = 3
    # Re-run the winning config with this many seeds and trainer.evaluate_test=true.
    retrain_best_seeds: int = 0
    # End the search early when its expected-best curve gained less than the seed noise
    # over its second half, after flat_min_trials completed trials (study/flat.py). The
    # noise: the finalists' or re-runs' validation spread, else the trials' own spread over
    # seeds_per_trial seeds, else flat_noise.
    stop_when_flat: bool = False
    flat_min_trials: int = 10
    flat_noise: float = 0.005
    # Start from an earlier study's top warm_start_trials configs (study/warm_start.py): its
    # directory, or <storage URL>#<study name>. Each is checked against this search space.
    warm_start: str | None = None
    warm_start_trials: int = 5
    heartbeat_s: float = 30.0
    # A running trial whose heartbeat is older than this is failed and retried once.
    grace_s: float = 120.0
    # Stop the sweep (exit != 0) after this many trials in a row failed for a reason outside
    # their sampled values (missing module, unwritable directory, full disk); such trials do
    # not count toward n_trials.
    max_environment_failures: int = 3
    # Optuna's tracking integrations by name (study/tracking.py), e.g. [mlflow]; each is
    # imported only when named.
    callbacks: list[str] = field(default_factory=list)
