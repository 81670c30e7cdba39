"""The two intervals jaxres's reports use, over the seeds of a setting (scipy.stats).

* ``welch(xa, xb)``: the difference of means, a - b, with its confidence interval by Welch's t
  (unequal variances, Welch-Satterthwaite degrees of freedom; ``scipy.stats.ttest_ind(equal_var=False)``).
* ``mean_interval(x)``: a mean with its one-sample t interval (``scipy.stats.ttest_1samp``).
* ``contrast(groups, weights)``: any weighted sum of independent groups' means (a difference of differences:
  (plain56 - resnet56) - (plain20 - resnet20)) with Welch's interval generalized: variance sum(w^2 s^2 / n),
  Welch-Satterthwaite degrees of freedom. For weights (1, -1) it is ``welch``.

Both need ``MIN_SEEDS`` values on each side; with fewer the interval is None. Values without any
spread give the degenerate interval (the mean itself), not an error.
"""
from __future__ import annotations

import statistics
import warnings
from collections.abc import Sequence
from typing import NamedTuple

CONFIDENCE = 0.95
MIN_SEEDS = 2  # a variance on each side; 3 seeds (the comparison presets) is the default


class Estimate(NamedTuple):
    value: float                              # a mean, or a difference of means
    ci: tuple[float, float] | None            # the CONFIDENCE interval, None with too few values
    df: float | None                          # degrees of freedom of the t distribution (None: no spread)


def welch(xa: Sequence[float], xb: Sequence[float], level: float = CONFIDENCE) -> Estimate:
    """mean(xa) - mean(xb) and its Welch interval."""
    from scipy import stats

    d = statistics.fmean(xa) - statistics.fmean(xb)
    if len(xa) < MIN_SEEDS or len(xb) < MIN_SEEDS:
        return Estimate(d, None, None)
    if statistics.variance(xa) + statistics.variance(xb) == 0:
        return Estimate(d, (d, d), None)
    with warnings.catch_warnings():  # one side without spread (convergence epochs 5, 5) is exact, not a "precision
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)  # loss" as scipy warns
        t = stats.ttest_ind(xa, xb, equal_var=False)
    ci = t.confidence_interval(level)
    return Estimate(d, (float(ci.low), float(ci.high)), float(t.df))


def mean_interval(x: Sequence[float], level: float = CONFIDENCE) -> Estimate:
    """mean(x) and its one-sample t interval."""
    from scipy import stats

    m = statistics.fmean(x)
    if len(x) < MIN_SEEDS:
        return Estimate(m, None, None)
    if statistics.variance(x) == 0:
        return Estimate(m, (m, m), None)
    t = stats.ttest_1samp(x, m)
    ci = t.confidence_interval(level)
    return Estimate(m, (float(ci.low), float(ci.high)), float(t.df))


def contrast(groups: Sequence[Sequence[float]], weights: Sequence[float], level: float = CONFIDENCE) -> Estimate:
    """sum(w * mean(x)) over independent groups, and its Welch-Satterthwaite t interval."""
    from scipy import stats

    value = sum(w * statistics.fmean(x) for w, x in zip(weights, groups, strict=True))
    if any(len(x) < MIN_SEEDS for x in groups):
        return Estimate(value, None, None)
    parts = [w * w * statistics.variance(x) / len(x) for w, x in zip(weights, groups)]
    var = sum(parts)
    if var == 0:
        return Estimate(value, (value, value), None)
    df = var * var / sum(p * p / (len(x) - 1) for p, x in zip(parts, groups) if p)
    half = float(stats.t.ppf(0.5 + level / 2, df)) * var ** 0.5
    return Estimate(value, (value - half, value + half), df)
