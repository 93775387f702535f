"""reuse.metrics: ECE and NLL by hand, per-class accuracy, time-to-accuracy, average ranks. (Seed
statistics, verdicts and the frontier: tests/test_stats.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest

from reuse import metrics as M

def _logits_for(probs: np.ndarray) -> np.ndarray:
    return np.log(np.asarray(probs, dtype=np.float64))


def test_ece_matches_a_hand_computed_example():
    # 4 examples, 2 classes. Confidences 0.9, 0.9, 0.6, 0.55; correct: yes, no, yes, yes.
    probs = [[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.45, 0.55]]
    targets = [0, 1, 1, 1]
    # 15 equal-width bins: 0.9 is in (13/15, 14/15] = (0.8667, 0.9333]; 0.6 in (8/15, 9/15] = (0.5333, 0.6];
    # 0.55 in (0.5333, 0.6] too. Bin A (0.9, 0.9): acc 0.5, conf 0.9 -> |0.4| * 2/4 = 0.2
    # Bin B (0.6, 0.55): acc 1.0, conf 0.575 -> |0.425| * 2/4 = 0.2125.  ECE = 0.4125
    assert M.ece(_logits_for(probs), targets) == pytest.approx(0.4125)
    # with 2 bins both fall in (0.5, 1]: acc 0.75, conf 0.7375 -> 0.0125
    assert M.ece(_logits_for(probs), targets, bins=2) == pytest.approx(0.0125)
    # a confidence exactly on a bin edge belongs to the lower bin: (b-1)/15 < conf <= b/15
    # (0.6 with 15 bins: edge 9/15). Right at 0.6 and wrong at 0.55 share (0.5333, 0.6]: |0.5 - 0.575| = 0.075
    edge = [[0.6, 0.4], [0.55, 0.45]]
    assert M.ece(_logits_for(edge), [0, 1]) == pytest.approx(0.075)


def test_nll_is_the_mean_cross_entropy():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    assert M.nll(_logits_for(probs), [0, 1]) == pytest.approx(-(math.log(0.7) + math.log(0.1)) / 2)
    # shift invariance of logits
    assert M.nll(_logits_for(probs) + 100.0, [0, 1]) == pytest.approx(M.nll(_logits_for(probs), [0, 1]))


def test_per_class_accuracy():
    logits = np.eye(3)[[0, 1, 1, 2]]
    acc = M.per_class_accuracy(logits, np.array([0, 0, 1, 2]), num_classes=4)
    assert acc[:3].tolist() == [0.5, 1.0, 1.0] and math.isnan(acc[3])


def test_time_to_accuracy_takes_the_first_epoch_at_or_above_the_target():
    curve = [{"epoch": e, "step": 10 * e, "train_flops": 100 * e, "train_time_s": 2.0 * e, "examples_seen": 5 * e,
              "test_acc": a} for e, a in zip(range(1, 6), [0.2, 0.5, 0.45, 0.7, 0.69])]
    assert M.time_to_accuracy(curve, 0.5) == {"epoch": 2, "steps": 20, "flops": 200, "time_s": 4.0,
                                              "examples_seen": 10}
    assert M.time_to_accuracy(curve, 0.7)["steps"] == 50 - 10  # epoch 4
    assert M.time_to_accuracy(curve, 0.71) is None


@pytest.mark.parametrize("seed", range(6))
def test_average_ranks_are_pandas_ranks(seed):
    """reuse.metrics.average_ranks (the loss re-weighting's ranks, without pandas) equals pandas'
    rank(method="average") bit for bit, ties included; NaN is refused."""
    import pandas as pd

    from reuse.metrics import average_ranks

    rng = np.random.default_rng(seed)
    for n in (0, 1, 2, 17, 300):
        x = rng.integers(0, 1 + seed * 3, n).astype(float) if seed % 2 else rng.normal(size=n)
        assert np.array_equal(average_ranks(x), pd.Series(x).rank(method="average").to_numpy())
    with pytest.raises(ValueError, match="NaN"):
        average_ranks(np.array([1.0, np.nan]))
