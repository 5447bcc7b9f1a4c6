"""Samplers and pruners by name: `sweep.sampler` and `sweep.pruner` look up these registries."""

from __future__ import annotations

from collections.abc import Callable

import optuna

from hubsweep.study.space import Param

# Each takes (params, seed, pending): `pending` says other trials run while one is sampled
# (a population asked at once, or other workers), for samplers that can account for them.
SamplerFactory = Callable[[tuple[Param, ...], int, bool], optuna.samplers.BaseSampler]
PrunerFactory = Callable[..., optuna.pruners.BasePruner]

SAMPLERS: dict[str, SamplerFactory] = {
    "tpe": lambda params, seed, pending: optuna.samplers.TPESampler(
        seed=seed, constant_liar=pending
    ),
    "random": lambda params, seed, pending: optuna.samplers.RandomSampler(seed=seed),
    "grid": lambda params, seed, pending: optuna.samplers.GridSampler(
        {p.key: p.grid() for p in params}, seed=seed
    ),
    "cmaes": lambda params, seed, pending: optuna.samplers.CmaEsSampler(seed=seed),
}

# Each takes (startup trials, warm-up steps, percentile, most steps) and uses what applies
# to it. For successive halving and Hyperband (multi-fidelity: the resource is the training
# step a trial reports at) the warm-up steps are the first rung, the least a trial trains.
# Hyperband is given the most steps a trial of the study can train: left to Optuna's "auto",
# it takes the steps of the first trial to finish, and where trainer.steps is searched that
# trial may have drawn the fewest (250 of up to 500: one bracket, every trial judged at its
# first evaluation).
PRUNERS: dict[str, PrunerFactory] = {
    "median": lambda startup, warmup, pct, most: optuna.pruners.MedianPruner(startup, warmup),
    "percentile": lambda startup, warmup, pct, most: optuna.pruners.PercentilePruner(
        pct, startup, warmup
    ),
    "successive_halving": lambda startup, warmup, pct, most: optuna.pruners.SuccessiveHalvingPruner(
        min_resource=max(warmup, 1)
    ),
    "hyperband": lambda startup, warmup, pct, most: optuna.pruners.HyperbandPruner(
        min_resource=max(warmup, 1), max_resource=max(most, warmup + 1, 2)
    ),
    "none": lambda *_: optuna.pruners.NopPruner(),
}


def make_sampler(
    name: str, params: tuple[Param, ...], seed: int, pending: bool = False
) -> optuna.samplers.BaseSampler:
    return SAMPLERS[name](params, seed, pending)


def make_pruner(name: str, startup: int, warmup: int, percentile: float, most_steps: int):
    return PRUNERS[name](startup, warmup, percentile, most_steps)
