"""Metrics of finished runs: calibration, per-class accuracy, time-to-accuracy, average ranks. (The
statistics over seeds, verdicts and the frontier: :mod:`reuse.stats`.)

- ECE: expected calibration error over 15 equal-width confidence bins (Guo et al. 2017): with the
  confidence of a prediction the largest softmax probability, bin ``b`` holds the predictions whose
  confidence lies in ``((b-1)/15, b/15]``; ``ECE = sum_b |B_b|/N * |acc(B_b) - conf(B_b)|``.
- NLL: the mean cross-entropy of the test labels under the model's softmax (float64).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

ECE_BINS = 15


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

