"""Stop when flat: end an arm's search once more trials stopped paying.

The expected best validation score of n trials (Dodge et al. 2019, with Tang et al.'s
unbiased estimator, `expected_max`) is the study's own budget curve. With
`sweep.stop_when_flat=true`, before each round a worker checks it over the completed
trials (warm-started ones left out): once there are `sweep.flat_min_trials` of them and
the curve gained less than the arm's seed noise from half of them to all, the search
stops (after the trials still running elsewhere finish). The noise is the spread of one
config over seeds: the finalists' or re-runs' validation standard deviation where a
previous run of the study left them, else the trials' own spread over `seeds_per_trial`
seeds, else `sweep.flat_noise`. The stop is stored in the study (what, when, why) so
every worker and the report see it; a resume with a larger `sweep.n_trials` continues the
search for at least `flat_min_trials` more completed trials before the rule applies again.

The estimator lives here, below the report stage, because the study uses it while it runs;
the report's budget curves import it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import optuna
from optuna.trial import TrialState
from scipy import special

from hubsweep.study.finalists import FINALISTS_ATTR
from hubsweep.study.liveness import SURPLUS, WARM_START
from hubsweep.study.retrain import RETRAIN_ATTR

log = logging.getLogger(__name__)

FLAT_ATTR = "hubsweep:stopped_flat"  # the study's record of an early stop


def expected_max(values: Sequence[float]) -> np.ndarray:
    """E[max of n trials], n = 1..N, drawing n of the N `values` without replacement: the
    i-th smallest of N values is the maximum of a random n-subset with probability
    C(i-1, n-1) / C(N, n)."""
    v = np.sort(np.asarray(values, dtype=float))
    big_n = len(v)
    i = np.arange(1, big_n + 1)
    curve = np.empty(big_n)
    for n in range(1, big_n + 1):
        log_w = np.full(big_n, -np.inf)
        ok = i >= n
        log_w[ok] = _log_comb(i[ok] - 1, n - 1) - _log_comb(big_n, n)
        curve[n - 1] = float(np.exp(log_w) @ v)
    return curve


def _log_comb(n, k):
    return special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)


def second_half_gain(values: Sequence[float], minimize: bool) -> float:
    """How much the expected best improved from half the trials to all of them."""
    sign = -1.0 if minimize else 1.0
    curve = expected_max(sign * np.asarray(values, dtype=float))
    n = len(curve)
    return float(curve[-1] - curve[max(n // 2, 1) - 1])


def seed_noise(
    study: optuna.Study, metric: str, seeds_per_trial: int, default: float
) -> tuple[float, str]:
    """The spread of one config's validation score over seeds, and where it came from."""
    attrs = study.user_attrs
    raced = attrs.get(FINALISTS_ATTR) or {}
    stds = [f["std"] for f in raced.get("finalists", []) if len(f.get("values", [])) > 1]
    if stds:
        return float(np.mean(stds)), "the finalists' spread over seeds"
    retrain = (attrs.get(RETRAIN_ATTR) or {}).get("validation", {})
    if metric in retrain and len(retrain[metric].get("values", [])) > 1:
        return float(retrain[metric]["std"]), "the best config's re-runs"
    if seeds_per_trial > 1:
        spreads = [
            t.user_attrs["value_std"]
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if "value_std" in t.user_attrs
        ]
        if spreads:
            # value_std is the population std of k seeds; the sample std is what is meant.
            k = seeds_per_trial
            return float(np.mean(spreads) * np.sqrt(k / (k - 1))), "the trials' own seeds"
    return default, "sweep.flat_noise"


def check(study: optuna.Study, settings) -> dict | None:
    """The stop record if the search is flat (stored in the study), else None."""
    # Warm-started trials are an earlier study's best, not draws of this search: with them
    # the curve would start flat.
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not t.user_attrs.get(SURPLUS) and not t.user_attrs.get(WARM_START)
    ]
    stored = study.user_attrs.get(FLAT_ATTR)
    needed = settings.flat_min_trials
    if isinstance(stored, dict):
        if settings.n_trials <= stored["n_trials"]:
            return stored  # stopped before at this budget: still stopped
        needed = stored["complete_trials"] + settings.flat_min_trials  # a larger budget continues
    if len(complete) < needed:
        return None
    minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
    gain = second_half_gain([t.value for t in complete], minimize)
    noise, source = seed_noise(
        study, settings.metric, settings.seeds_per_trial, settings.flat_noise
    )
    if gain >= noise:
        return None
    record = {
        "n_trials": settings.n_trials,
        "complete_trials": len(complete),
        "gain": gain,
        "noise": noise,
        "noise_from": source,
    }
    study.set_user_attr(FLAT_ATTR, record)
    log.info(
        "stopping the search: the expected best gained %+.4f over the second half of %d "
        "completed trials, less than the seed noise %.4f (%s)",
        gain,
        len(complete),
        noise,
        source,
    )
    return record


def stop_sentence(record: dict) -> str:
    """How the report says it."""
    return (
        f"stopped early (sweep.stop_when_flat): the expected best gained {record['gain']:+.4f} "
        f"over the second half of {record['complete_trials']} completed trials, less than the seed "
        f"noise {record['noise']:.4f} ({record['noise_from']}); raise sweep.n_trials above "
        f"{record['n_trials']} to continue"
    )
