"""Statistics for results over seeds: bootstrap CIs, IQM, significance tests.

Thin wrappers around scipy.stats that fix the conventions used in every
table (95% BCa bootstrap CI of the mean with a fixed resampling seed, so
tables rebuild identically) and handle the small-sample edge cases
scipy leaves as warnings (one seed, all seeds equal).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95
N_RESAMPLES = 10_000


def _clean(x: Any) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).ravel()
    return x[np.isfinite(x)]


def iqm(x: Any) -> float:
    """Interquartile mean: mean of the middle 50% (robust to a few outlier seeds)."""
    x = _clean(x)
    return float(sps.trim_mean(x, 0.25)) if x.size else float("nan")


def bootstrap_ci(
    x: Any,
    statistic: Callable[..., Any] = np.mean,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    method: str = "BCa",
) -> tuple[float, float]:
    """Bootstrap CI of `statistic` over seeds (scipy.stats.bootstrap).

    NaN/inf entries are dropped. One value gives (nan, nan); identical values
    give a zero-width interval (scipy's BCa is undefined there). BCa falls back
    to the percentile method when its acceleration is undefined.
    """
    x = _clean(x)
    if x.size < 2:
        return float("nan"), float("nan")
    if np.all(x == x[0]):
        v = float(statistic(x))
        return v, v
    rng = np.random.default_rng(seed)
    kw = dict(confidence_level=confidence, n_resamples=n_resamples, vectorized=True)
    with np.errstate(all="ignore"):
        res = sps.bootstrap((x,), _vectorized(statistic), method=method, random_state=rng, **kw)
        lo, hi = res.confidence_interval
        if not (np.isfinite(lo) and np.isfinite(hi)):
            rng = np.random.default_rng(seed)
            res = sps.bootstrap((x,), _vectorized(statistic), method="percentile",
                                random_state=rng, **kw)
            lo, hi = res.confidence_interval
    return float(lo), float(hi)


def _vectorized(statistic: Callable[..., Any]) -> Callable[..., Any]:
    if statistic is np.mean:
        return lambda a, axis=-1: np.mean(a, axis=axis)
    if statistic is iqm:
        return lambda a, axis=-1: sps.trim_mean(a, 0.25, axis=axis)
    return lambda a, axis=-1: np.apply_along_axis(statistic, axis, a)


def summarize(x: Any, confidence: float = CONFIDENCE, seed: int = 0) -> dict[str, float]:
    """mean, 95% bootstrap CI of the mean, n (finite values), std, IQM."""
    x = _clean(x)
    lo, hi = bootstrap_ci(x, confidence=confidence, seed=seed)
    return {
        "mean": float(np.mean(x)) if x.size else float("nan"),
        "ci_low": lo,
        "ci_high": hi,
        "n": int(x.size),
        "std": float(np.std(x, ddof=1)) if x.size > 1 else float("nan"),
        "iqm": iqm(x),
    }


def welch_t(a: Any, b: Any) -> dict[str, float]:
    """Welch's unequal-variance t-test (two-sided)."""
    a, b = _clean(a), _clean(b)
    with warnings.catch_warnings():  # zero-variance groups (e.g. deterministic policies)
        warnings.simplefilter("ignore", RuntimeWarning)
        r = sps.ttest_ind(a, b, equal_var=False)
    return {"statistic": float(r.statistic), "p_value": float(r.pvalue)}


def mann_whitney(a: Any, b: Any) -> dict[str, float]:
    """Mann-Whitney U test (two-sided); no normality assumption."""
    a, b = _clean(a), _clean(b)
    r = sps.mannwhitneyu(a, b, alternative="two-sided")
    return {"statistic": float(r.statistic), "p_value": float(r.pvalue)}


def compare(a: Any, b: Any, alpha: float = 0.05) -> dict[str, Any]:
    """Both tests plus the mean difference; `significant` when both p-values < alpha."""
    w, m = welch_t(a, b), mann_whitney(a, b)
    return {
        "mean_diff": float(np.mean(_clean(a)) - np.mean(_clean(b))),
        "welch_p": w["p_value"],
        "mann_whitney_p": m["p_value"],
        "significant": bool(w["p_value"] < alpha and m["p_value"] < alpha),
    }
