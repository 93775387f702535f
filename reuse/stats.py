"""The statistics behind every verdict: intervals over seeds, paired differences, multiplicity
correction, censored ratios and the baseline's budget curve. One module, so that every table, study
and page states its numbers the same way.

- **Intervals of a mean** are Student-t intervals, ``mean ± t(1-α/2, n-1) · s/√n``: exact under
  normality at any number of seeds. (A percentile bootstrap of the mean covers a nominal 95 % only
  about 85 % of the time at 5 seeds, 74 % at 3 and 48 % at 2; ``tests/test_stats.py`` simulates it.)
  Fewer than two values have no interval (NaN), never an invented one; equal values have ``[v, v]``.
- **Paired comparisons** are over the seeds both sides have: the t-interval of the per-seed
  differences and the two-sided one-sample t-test's p-value.
- **Many comparisons**: :func:`holm` adjusts a family of p-values (Holm 1979); a verdict reads the
  adjusted value.
- **Censored values**: a seed that never reaches a target is not dropped; its value is a bound
  (``LOWER``: the truth is at least the value; ``UPPER``: at most), and so is a summary that uses it.
- **Budget curves** (:class:`Curve`): one seed's baseline accuracy against cost at several budgets,
  made monotone (more budget never scores lower: the pool-adjacent-violators fit) and interpolated
  linearly in log cost. Outside the measured budgets it answers with a bound, not an extrapolation.

Imports numpy only (scipy's t quantile is imported where an interval is computed), so training jobs
that import :mod:`reuse.metrics` stay light.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no detectable difference"
NO_INTERVAL, NO_PAIRS = "n=1, no interval", "no paired baseline"
# What a censored value (or a summary of some) is: the truth is at least it / at most it.
LOWER, UPPER = "lower", "upper"
ALPHA = 0.05


@dataclass(frozen=True)
class Intervals:
    """How intervals are stated: two-sided Student-t intervals at ``confidence``."""

    confidence: float = 0.95


def _isnan(v) -> bool:
    try:
        return v is None or math.isnan(v)
    except TypeError:
        return False


def t_quantile(confidence: float, dof: int | np.ndarray) -> float | np.ndarray:
    """The two-sided Student-t quantile ``t(1 - (1 - confidence)/2, dof)``."""
    from scipy import stats

    return stats.t.ppf(0.5 + confidence / 2, dof)


# ----------------------------------------------------------------------------- one sample
def mean_ci(values, confidence: float = 0.95, axis: int = 0):
    """Student-t interval of the mean of ``values`` along ``axis`` (NaN entries dropped per column;
    NaN where fewer than two remain; ``[v, v]`` where all are equal). A 1-D input gives two floats."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        lo, hi = mean_ci(x[:, None], confidence)
        return float(lo[0]), float(hi[0])
    x = np.moveaxis(x, axis, 0)
    ok = ~np.isnan(x)
    n = ok.sum(0)
    with np.errstate(all="ignore"):
        mean = np.where(n > 0, np.nansum(x, 0) / np.maximum(n, 1), np.nan)
        dev = np.where(ok, x - mean, 0.0)
        sd = np.sqrt((dev ** 2).sum(0) / np.maximum(n - 1, 1))
        half = np.where(n > 1, t_quantile(confidence, np.maximum(n - 1, 1)) * sd / np.sqrt(np.maximum(n, 1)), np.nan)
    half = np.where((n > 1) & (sd == 0), 0.0, half)
    return mean - half, mean + half


def describe(values: Iterable[float], confidence: float = 0.95) -> dict:
    """``n``, ``mean``, ``std`` (sample, NaN for n < 2), ``lo``/``hi`` (t-interval of the mean)."""
    x = np.asarray([v for v in values if not _isnan(v)], dtype=np.float64)
    n = len(x)
    lo, hi = mean_ci(x, confidence) if n > 1 else (math.nan, math.nan)
    return {"n": n, "mean": float(x.mean()) if n else math.nan, "std": float(x.std(ddof=1)) if n > 1 else math.nan,
            "lo": lo, "hi": hi}


def t_test(values: Iterable[float]) -> float:
    """Two-sided p-value of the one-sample t-test of mean 0 (NaN for n < 2; equal values: 1 if they
    are 0, else 0)."""
    x = np.asarray([v for v in values if not _isnan(v)], dtype=np.float64)
    if len(x) < 2:
        return math.nan
    sd = x.std(ddof=1)
    if sd == 0:
        return 1.0 if x[0] == 0 else 0.0
    from scipy import stats

    t = x.mean() / (sd / math.sqrt(len(x)))
    return float(2 * stats.t.sf(abs(t), len(x) - 1))


# ----------------------------------------------------------------------------- paired
def paired(method: Mapping[int, float], baseline: Mapping[int, float]) -> tuple[list[int], np.ndarray]:
    """The seeds both have (no NaN) and ``method[s] - baseline[s]`` on them."""
    seeds = sorted(s for s in method if s in baseline and not _isnan(method[s]) and not _isnan(baseline[s]))
    return seeds, np.array([method[s] - baseline[s] for s in seeds], dtype=np.float64)


def verdict(lo: float, hi: float, n: int) -> str:
    """What an interval of a difference (method minus baseline) says, uncorrected."""
    if n == 0:
        return NO_PAIRS
    if n < 2 or _isnan(lo) or _isnan(hi):
        return NO_INTERVAL
    if lo > 0:
        return BETTER
    if hi < 0:
        return WORSE
    return NO_DIFFERENCE


def paired_comparison(method: Mapping[int, float], baseline: Mapping[int, float], confidence: float = 0.95) -> dict:
    """Per-seed differences ``method[s] - baseline[s]``: their mean, std, t-interval, p-value and the
    uncorrected verdict."""
    seeds, d = paired(method, baseline)
    st = describe(d, confidence)
    return {"n_pairs": len(seeds), "seeds": seeds, "diff_mean": st["mean"], "diff_std": st["std"],
            "diff_lo": st["lo"], "diff_hi": st["hi"], "p": t_test(d), "verdict": verdict(st["lo"], st["hi"], len(seeds))}


# ----------------------------------------------------------------------------- many comparisons
def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN entries are not in the family and
    stay NaN): the k-th smallest of m is multiplied by m - k + 1, made monotone, capped at 1."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = len(idx)
    if not m:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    adj = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out[order] = adj
    return out


def decide(mean: float, p_adjusted: float, bound: str | None = None, alpha: float = ALPHA) -> str:
    """The verdict of a difference from its (multiplicity-adjusted) p-value: ``better``/``worse`` when
    ``p_adjusted < alpha``, else no detectable difference. A difference that is a bound (``UPPER``: the
    truth is at most it, ``LOWER``: at least) can only support the direction the bound allows."""
    if _isnan(p_adjusted) or _isnan(mean):
        return NO_INTERVAL
    if p_adjusted < alpha and mean > 0 and bound != UPPER:
        return BETTER
    if p_adjusted < alpha and mean < 0 and bound != LOWER:
        return WORSE
    return NO_DIFFERENCE


# ----------------------------------------------------------------------------- censored values
def combine_bounds(bounds: Iterable[str | None]) -> str | None:
    """The bound of a summary (a mean) of values some of which are bounds: ``LOWER`` if any is a lower
    bound and none an upper, ``UPPER`` likewise, ``"mixed"`` if both kinds occur, None if none."""
    b = {x for x in bounds if x}
    return None if not b else (b.pop() if len(b) == 1 else "mixed")


def flip(bound: str | None) -> str | None:
    """The bound of ``-x`` (or ``1/x``) given that of ``x``."""
    return {LOWER: UPPER, UPPER: LOWER}.get(bound, bound)


def censored_summary(values: Sequence[float], bounds: Sequence[str | None], confidence: float = 0.95,
                     log: bool = False) -> dict:
    """Mean and t-interval of per-seed values of which some are bounds (``bounds[i]``: None, LOWER or
    UPPER). With ``log`` the mean is geometric (a ratio such as a speed-up; non-positive values are
    dropped). Where the values hold lower bounds, the mean and the interval's low end are lower
    bounds and the high end is unknown (inf); upper bounds the other way (low end 0 for a ratio,
    -inf otherwise); both kinds: only the mean, no interval. ``n``, ``n_censored`` and ``bound`` say so."""
    v = np.asarray(values, dtype=np.float64)
    b = list(bounds)
    keep = ~np.isnan(v) & ((v > 0) if log else True)
    v, b = v[keep], [x for x, k in zip(b, keep) if k]
    out = {"n": len(v), "n_censored": sum(1 for x in b if x), "bound": combine_bounds(b), "mean": math.nan,
           "lo": math.nan, "hi": math.nan}
    if not len(v):
        return out
    x = np.log(v) if log else v
    st = describe(x, confidence)
    tr = (lambda z: math.exp(z)) if log else (lambda z: z)
    out["mean"] = tr(st["mean"])
    lo, hi = (tr(st["lo"]), tr(st["hi"])) if len(v) > 1 else (math.nan, math.nan)
    if out["bound"] == LOWER:
        hi = math.inf
    elif out["bound"] == UPPER:
        lo = 0.0 if log else -math.inf
    elif out["bound"] == "mixed":
        lo = hi = math.nan
    out["lo"], out["hi"] = lo, hi
    return out


def bound_word(bound: str | None) -> str:
    """``≥ `` / ``≤ `` before a value that is a bound."""
    return {LOWER: "≥ ", UPPER: "≤ "}.get(bound, "")


# ----------------------------------------------------------------------------- frontier
def pareto_front(cost: Sequence[float], acc: Sequence[float]) -> np.ndarray:
    """Which points are Pareto-optimal when lower cost and higher accuracy are better: no other point
    has cost <= and accuracy >= with at least one strict. Points with a NaN are never on it."""
    c, a = np.asarray(cost, dtype=np.float64), np.asarray(acc, dtype=np.float64)
    ok = ~(np.isnan(c) | np.isnan(a))
    on = np.zeros(len(c), dtype=bool)
    for i in np.where(ok)[0]:
        dominated = ok & (c <= c[i]) & (a >= a[i]) & ((c < c[i]) | (a > a[i]))
        on[i] = not dominated.any()
    return on


# ----------------------------------------------------------------------------- budget curves
def isotonic(y: Sequence[float]) -> np.ndarray:
    """The non-decreasing least-squares fit to ``y`` (pool adjacent violators, equal weights)."""
    blocks: list[list[float]] = []  # [mean, weight]
    for v in np.asarray(y, dtype=np.float64):
        blocks.append([v, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m2, w2), (m1, w1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2])
    return np.concatenate([np.full(int(w), m) for m, w in blocks]) if blocks else np.zeros(0)


class Curve:
    """One seed's baseline accuracy against cost, measured at a few budgets: monotone (isotonic in
    cost) and linear in log cost between the measured points.

    :meth:`acc_at` and :meth:`cost_at` return ``(value, bound)``: inside the measured range the bound
    is None; outside it the curve only bounds the answer (monotonicity), and says which way.
    """

    def __init__(self, cost: Sequence[float], acc: Sequence[float]):
        c, a = np.asarray(cost, dtype=np.float64), np.asarray(acc, dtype=np.float64)
        ok = ~(np.isnan(c) | np.isnan(a)) & (c > 0)
        c, a = c[ok], a[ok]
        order = np.lexsort((a, c))
        self.cost, self.raw = c[order], a[order]
        self.acc = isotonic(self.raw)
        self.logc = np.log(self.cost)

    def __len__(self) -> int:
        return len(self.cost)

    def acc_at(self, cost: float) -> tuple[float, str | None]:
        """The curve's accuracy at ``cost``; beyond its largest budget the accuracy there, a lower
        bound (more budget never scores lower); below its smallest, the accuracy there, an upper bound."""
        if not len(self) or _isnan(cost):
            return math.nan, None
        if cost > self.cost[-1] * (1 + 1e-9):
            return float(self.acc[-1]), LOWER
        if cost < self.cost[0] * (1 - 1e-9):
            return float(self.acc[0]), UPPER
        return float(np.interp(math.log(max(cost, self.cost[0])), self.logc, self.acc)), None

    def cost_at(self, acc: float) -> tuple[float, str | None]:
        """The least cost at which the curve reaches ``acc``; above its top, its largest cost, a lower
        bound (the baseline needs more than every measured budget); at or below its lowest point, its
        smallest cost, an upper bound."""
        if not len(self) or _isnan(acc):
            return math.nan, None
        if acc > self.acc[-1] + 1e-12:
            return float(self.cost[-1]), LOWER
        if acc <= self.acc[0] + 1e-12:
            return float(self.cost[0]), (UPPER if acc < self.acc[0] - 1e-12 else None)
        j = int(np.argmax(self.acc >= acc - 1e-12))  # the first point at or above acc (j >= 1)
        a0, a1 = self.acc[j - 1], self.acc[j]
        f = 0.0 if a1 == a0 else (acc - a0) / (a1 - a0)
        return float(math.exp(self.logc[j - 1] + f * (self.logc[j] - self.logc[j - 1]))), None


def gain_at_cost(curve: Curve, cost: float, acc: float) -> tuple[float, str | None]:
    """``acc`` minus the curve at ``cost``, and its bound (the curve value's, flipped)."""
    base, b = curve.acc_at(cost)
    return (acc - base if not _isnan(acc) else math.nan), flip(b)


def speedup_at_acc(curve: Curve, cost: float, acc: float) -> tuple[float, str | None]:
    """The curve's cost to reach ``acc`` over ``cost`` (NaN for a run that cost nothing), and its bound."""
    if _isnan(cost) or cost <= 0 or _isnan(acc):
        return math.nan, None
    c, b = curve.cost_at(acc)
    return c / cost, b


__all__ = ["ALPHA", "BETTER", "Curve", "Intervals", "LOWER", "NO_DIFFERENCE", "NO_INTERVAL", "NO_PAIRS", "UPPER",
           "WORSE", "bound_word", "censored_summary", "combine_bounds", "decide", "describe", "flip", "gain_at_cost",
           "holm", "isotonic", "mean_ci", "paired", "paired_comparison", "pareto_front", "speedup_at_acc", "t_quantile", "t_test",
           "verdict"]
