"""Metrics and statistics of finished runs: calibration, time-to-accuracy, seed statistics, the
Pareto frontier.

- ECE: expected calibration error over 15 equal-width confidence bins (Guo et al. 2017): with the
  confidence of a prediction the largest softmax probability, bin ``b`` holds the predictions whose
  confidence lies in ``((b-1)/15, b/15]``; ``ECE = sum_b |B_b|/N * |acc(B_b) - conf(B_b)|``.
- NLL: the mean cross-entropy of the test labels under the model's softmax (float64).
- Seed statistics: mean, sample standard deviation and a bootstrap confidence interval of the mean
  (``scipy.stats.bootstrap``, fixed seed). With fewer than two values there is no interval (NaN),
  never an invented one.
- Paired comparison: per-seed differences between a method and its baseline over the seeds both
  have; the verdict comes from the bootstrap interval of the mean difference.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

ECE_BINS = 15

BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no detectable difference"
NO_INTERVAL, NO_PAIRS = "n=1, no interval", "no paired baseline"


# ----------------------------------------------------------------------------- predictions
def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def nll(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean negative log-likelihood (cross-entropy) of ``targets`` under softmax(``logits``)."""
    lp = _log_softmax(logits)
    t = np.asarray(targets, dtype=np.int64)
    return float(-lp[np.arange(len(t)), t].mean())


def ece(logits: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error over ``bins`` equal-width confidence bins ``((b-1)/bins, b/bins]``."""
    p = np.exp(_log_softmax(logits))
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == np.asarray(targets)).astype(np.float64)
    # bin b (0-based) holds conf in (b/bins, (b+1)/bins]; conf is > 0, so ceil(conf*bins)-1 is in [0, bins-1].
    # The 1e-9 keeps a confidence on an edge (up to float rounding of the softmax) in the lower bin.
    idx = np.clip(np.ceil(conf * bins - 1e-9).astype(np.int64) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() * abs(correct[m].mean() - conf[m].mean())
    return float(total / len(conf))


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, ties sharing the mean of their ranks (pandas' ``rank(method="average")``,
    bit for bit, without importing pandas). NaN is refused."""
    x = np.asarray(x, dtype=np.float64)
    if np.isnan(x).any():
        raise ValueError("average_ranks: the values hold NaN")
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.r_[0, np.flatnonzero(xs[1:] != xs[:-1]) + 1] if len(x) else np.zeros(0, dtype=np.int64)
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def per_class_accuracy(logits: np.ndarray, targets: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Accuracy on the test examples of each class (NaN for a class with no example)."""
    t = np.asarray(targets, dtype=np.int64)
    c = num_classes if num_classes is not None else int(max(t.max() + 1, np.asarray(logits).shape[1]))
    right = np.asarray(logits).argmax(axis=1) == t
    n = np.bincount(t, minlength=c).astype(np.float64)
    k = np.bincount(t, weights=right, minlength=c)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, k / n, np.nan)


def prediction_metrics(logits: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Accuracy, NLL, ECE and per-class accuracy of test-set logits."""
    logits = np.asarray(logits, dtype=np.float64)
    return {"test_acc": float((logits.argmax(1) == np.asarray(targets)).mean()), "test_nll": nll(logits, targets),
            "test_ece": ece(logits, targets, bins), "per_class": per_class_accuracy(logits, targets)}


# ----------------------------------------------------------------------------- time to accuracy
def time_to_accuracy(curve: Sequence[Mapping], target: float) -> dict | None:
    """The first evaluated epoch whose test accuracy reaches ``target``, with the training cost spent up
    to the end of that epoch (``step``, ``train_flops``, ``train_time_s``, ``examples_seen``, running
    totals as in metrics.jsonl); None if the run never reaches it. Epoch granularity: no
    interpolation between evaluations."""
    for m in curve:
        acc = m.get("test_acc")
        if acc is not None and acc >= target - 1e-12:
            return {"epoch": m["epoch"], "steps": m["step"], "flops": m["train_flops"],
                    "time_s": m["train_time_s"], "examples_seen": m["examples_seen"]}
    return None


# ----------------------------------------------------------------------------- seed statistics
@dataclass(frozen=True)
class Bootstrap:
    """How intervals are computed: ``resamples`` bootstrap resamples at ``confidence``, with
    ``method`` (scipy's BCa, percentile or basic) and a fixed ``seed``."""

    resamples: int = 10000
    confidence: float = 0.95
    method: str = "BCa"
    seed: int = 0


def bootstrap_ci(values: Iterable[float] | np.ndarray, boot: Bootstrap = Bootstrap(), axis: int = 0
                 ) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Bootstrap interval of the mean of ``values`` along ``axis`` (NaN where fewer than two values).

    A column whose values are all equal gets the degenerate interval [v, v]. Rows holding NaN are
    dropped per column.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        lo, hi = bootstrap_ci(x[:, None], boot)
        return float(lo[0]), float(hi[0])
    x = np.moveaxis(x, axis, 0)
    lo, hi = np.full(x.shape[1:], np.nan), np.full(x.shape[1:], np.nan)
    flat, flo, fhi = x.reshape(x.shape[0], -1), lo.reshape(-1), hi.reshape(-1)
    ok = ~np.isnan(flat)
    counts = ok.sum(0)
    # Columns without NaN share one vectorised call per count; the rest go one at a time.
    full = np.where(counts == flat.shape[0])[0]
    groups = [full] if len(full) else []
    groups += [np.array([j]) for j in np.where(counts < flat.shape[0])[0]]
    for cols in groups:
        sub = flat[:, cols]
        if len(cols) == 1:
            sub = sub[ok[:, cols[0]]]
        if sub.shape[0] < 2:
            continue
        const = np.ptp(sub, axis=0) == 0
        flo[cols[const]] = fhi[cols[const]] = sub[0, const]
        var = ~const
        if var.any():
            l, h = _scipy_ci(sub[:, var], boot)
            flo[cols[var]], fhi[cols[var]] = l, h
    return flo.reshape(lo.shape), fhi.reshape(hi.shape)


def _scipy_ci(x: np.ndarray, boot: Bootstrap) -> tuple[np.ndarray, np.ndarray]:
    from scipy import stats

    def run(method: str):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = stats.bootstrap((x,), np.mean, axis=0, n_resamples=boot.resamples, confidence_level=boot.confidence,
                                method=method, vectorized=True, rng=np.random.default_rng(boot.seed))
        return np.asarray(r.confidence_interval.low, dtype=np.float64), np.asarray(r.confidence_interval.high,
                                                                                   dtype=np.float64)

    lo, hi = run(boot.method)
    bad = np.isnan(lo) | np.isnan(hi)
    if bad.any() and boot.method != "percentile":  # BCa is undefined for some tiny samples
        plo, phi = run("percentile")
        lo, hi = np.where(bad, plo, lo), np.where(bad, phi, hi)
    return lo, hi


def describe(values: Iterable[float], boot: Bootstrap = Bootstrap()) -> dict:
    """``n``, ``mean``, ``std`` (sample, NaN for n < 2), ``lo``/``hi`` (bootstrap CI of the mean)."""
    x = np.asarray([v for v in values if v is not None and not _isnan(v)], dtype=np.float64)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    std = float(x.std(ddof=1)) if n > 1 else math.nan
    lo, hi = bootstrap_ci(x, boot) if n > 1 else (math.nan, math.nan)
    return {"n": n, "mean": mean, "std": std, "lo": lo, "hi": hi}


def verdict(lo: float, hi: float, n: int) -> str:
    """What an interval of a difference (method minus baseline) says."""
    if n == 0:
        return NO_PAIRS
    if n < 2 or _isnan(lo) or _isnan(hi):
        return NO_INTERVAL
    if lo > 0:
        return BETTER
    if hi < 0:
        return WORSE
    return NO_DIFFERENCE


def paired_comparison(method: Mapping[int, float], baseline: Mapping[int, float],
                      boot: Bootstrap = Bootstrap()) -> dict:
    """Per-seed differences ``method[s] - baseline[s]`` over the seeds both have: their mean, the
    bootstrap interval of the mean and the verdict."""
    seeds = sorted(s for s in method if s in baseline and not _isnan(method[s]) and not _isnan(baseline[s]))
    d = np.array([method[s] - baseline[s] for s in seeds], dtype=np.float64)
    st = describe(d, boot)
    return {"n_pairs": len(seeds), "seeds": seeds, "diff_mean": st["mean"], "diff_std": st["std"],
            "diff_lo": st["lo"], "diff_hi": st["hi"], "verdict": verdict(st["lo"], st["hi"], len(seeds))}


def ratio_ci(numerator: Mapping[int, float], denominator: Mapping[int, float], boot: Bootstrap = Bootstrap()) -> dict:
    """``mean(numerator) / mean(denominator)`` over the seeds both have, with a paired bootstrap
    interval (e.g. a speed-up: the baseline's cost over the method's)."""
    from scipy import stats

    seeds = sorted(s for s in numerator if s in denominator and not _isnan(numerator[s]) and not _isnan(denominator[s]))
    a = np.array([numerator[s] for s in seeds], dtype=np.float64)
    b = np.array([denominator[s] for s in seeds], dtype=np.float64)
    out = {"n": len(seeds), "ratio": float(a.mean() / b.mean()) if len(seeds) and b.mean() > 0 else math.nan,
           "lo": math.nan, "hi": math.nan}
    if len(seeds) >= 2 and b.mean() > 0:
        if np.ptp(a) == 0 and np.ptp(b) == 0:
            out["lo"] = out["hi"] = out["ratio"]
            return out

        def stat(x, y, axis=-1):
            return x.mean(axis=axis) / y.mean(axis=axis)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.bootstrap((a, b), stat, paired=True, vectorized=True, n_resamples=boot.resamples,
                                  confidence_level=boot.confidence, method="percentile",
                                  rng=np.random.default_rng(boot.seed))
        out["lo"], out["hi"] = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return out


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


def _isnan(v) -> bool:
    try:
        return math.isnan(v)
    except TypeError:
        return False
