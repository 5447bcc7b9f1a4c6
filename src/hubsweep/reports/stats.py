"""The statistics behind comparisons that hold up: expected best score against budget,
and paired differences over shared seeds. Pure functions of numbers.

Expected maximum (Dodge et al. 2019, "Show Your Work"): the expected best validation
score of n trials drawn from the N a study ran. The estimator is Tang et al.'s (2020)
unbiased one, n draws without replacement from the N trials: the i-th smallest of N
values is the maximum of a random n-subset with probability C(i-1, n-1) / C(N, n).
The band is a bootstrap over the N trials. (The estimator itself is in `study.flat`: the
study's stop-when-flat rule uses it while it runs.)

Paired comparison: the re-runs of two arms' best configs share their seeds, so the
per-seed differences carry the comparison: their mean with a t-interval, an exact
sign-flip permutation test (every ± assignment of the differences; with 5 seeds the
smallest two-sided p is 2/32 = 0.0625), and the probability that A beats B on a new seed
(the t predictive distribution of one more difference).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from hubsweep.study.flat import expected_max

ALPHA = 0.05
EXACT_SIGN_FLIPS = 16  # up to 2**16 assignments enumerated; sampled beyond


@dataclass(frozen=True)
class Curve:
    budgets: np.ndarray  # n = 1..N trials
    mean: np.ndarray
    low: np.ndarray  # bootstrap band
    high: np.ndarray


def expected_max_curve(
    values: Sequence[float], minimize: bool = False, boot: int = 1000, seed: int = 0
) -> Curve:
    """The curve and its 95% bootstrap band; for a minimised metric, the expected minimum."""
    sign = -1.0 if minimize else 1.0
    v = sign * np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    draws = np.stack([expected_max(rng.choice(v, size=len(v))) for _ in range(boot)])
    low, high = np.percentile(draws, [2.5, 97.5], axis=0)
    curve = expected_max(v)
    if minimize:
        curve, low, high = -curve, -high, -low
    return Curve(np.arange(1, len(v) + 1), curve, low, high)


@dataclass(frozen=True)
class Paired:
    """A − B over the seeds both have."""

    seeds: tuple[int, ...]
    diffs: tuple[float, ...]
    mean: float
    low: float  # 95% t-interval of the mean difference
    high: float
    p_value: float  # two-sided sign-flip permutation test
    p_a_beats_b: float  # on a new seed
    smallest_p: float  # the test's floor with this many seeds

    @property
    def distinguishable(self) -> bool:
        """The t-interval excludes 0 and the test agrees as far as the seeds allow (with
        few seeds its floor is above 0.05: every difference of one sign reaches it)."""
        excludes_zero = self.low > 0 or self.high < 0
        return excludes_zero and self.p_value <= max(ALPHA, self.smallest_p) + 1e-12


def sign_flip_p(diffs: Sequence[float], samples: int = 20000, seed: int = 0) -> float:
    """Two-sided p of the mean difference under random signs (exact for up to 16 pairs)."""
    d = np.asarray(diffs, dtype=float)
    observed = abs(d.mean())
    if len(d) <= EXACT_SIGN_FLIPS:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    else:
        signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(samples, len(d)))
    means = np.abs(signs @ d) / len(d)
    return float(np.mean(means >= observed - 1e-12))


def paired(a: dict[int, float], b: dict[int, float]) -> Paired | None:
    """A − B on the seeds both ran; None with fewer than two shared seeds."""
    seeds = tuple(sorted(set(a) & set(b)))
    if len(seeds) < 2:
        return None
    d = np.array([a[s] - b[s] for s in seeds])
    n, mean, sd = len(d), float(d.mean()), float(d.std(ddof=1))
    t = stats.t.ppf(1 - ALPHA / 2, n - 1)
    half = t * sd / math.sqrt(n)
    if sd > 0:
        p_new = float(stats.t.cdf(mean / (sd * math.sqrt(1 + 1 / n)), n - 1))
    else:
        p_new = 1.0 if mean > 0 else 0.0 if mean < 0 else 0.5
    return Paired(
        seeds=seeds,
        diffs=tuple(float(x) for x in d),
        mean=mean,
        low=mean - half,
        high=mean + half,
        p_value=sign_flip_p(d),
        p_a_beats_b=p_new,
        smallest_p=2 / 2**n if n <= EXACT_SIGN_FLIPS else 0.0,
    )
