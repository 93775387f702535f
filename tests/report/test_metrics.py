"""reuse.metrics: ECE and NLL by hand, time-to-accuracy, bootstrap intervals, paired verdicts, the
Pareto frontier."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reuse import metrics as M

BOOT = M.Bootstrap(resamples=2000, seed=0)


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


def test_bootstrap_interval_covers_the_mean_and_is_reproducible():
    x = np.array([0.80, 0.82, 0.81, 0.79, 0.85])
    lo, hi = M.bootstrap_ci(x, BOOT)
    assert lo < x.mean() < hi and x.min() <= lo and hi <= x.max()
    assert (lo, hi) == M.bootstrap_ci(x, BOOT)  # fixed seed
    # normal data: the 95% interval of the mean covers the true mean in most of 40 samples
    rng = np.random.default_rng(1)
    cover = sum(lo <= 0.0 <= hi for lo, hi in (M.bootstrap_ci(rng.normal(0, 1, 30), BOOT) for _ in range(40)))
    assert cover >= 34
    # vectorised over columns, NaN dropped per column, constant columns degenerate
    cols = np.array([[1.0, 5.0, 1.0], [2.0, 5.0, np.nan], [3.0, 5.0, 3.0]])
    lo, hi = M.bootstrap_ci(cols, BOOT)
    assert lo[0] < 2 < hi[0] and lo[1] == hi[1] == 5.0 and lo[2] <= 2 <= hi[2]


def test_describe_with_one_value_has_no_interval():
    d = M.describe([0.7], BOOT)
    assert d["n"] == 1 and d["mean"] == 0.7 and math.isnan(d["std"]) and math.isnan(d["lo"]) and math.isnan(d["hi"])
    assert M.describe([], BOOT)["n"] == 0


def test_paired_comparison_signs_and_verdicts():
    base = {0: 0.60, 1: 0.62, 2: 0.61, 3: 0.63}
    better = M.paired_comparison({s: v + 0.05 + 0.01 * (s % 2) for s, v in base.items()}, base, BOOT)
    assert better["verdict"] == M.BETTER and better["diff_lo"] > 0 and better["diff_mean"] == pytest.approx(0.055)
    worse = M.paired_comparison({s: v - 0.05 - 0.01 * (s % 2) for s, v in base.items()}, base, BOOT)
    assert worse["verdict"] == M.WORSE and worse["diff_hi"] < 0
    noise = M.paired_comparison({0: 0.62, 1: 0.60, 2: 0.63, 3: 0.61}, base, BOOT)
    assert noise["verdict"] == M.NO_DIFFERENCE and noise["diff_lo"] < 0 < noise["diff_hi"]
    # only the seeds both have are paired
    some = M.paired_comparison({1: 0.7, 2: 0.72, 9: 0.1}, base, BOOT)
    assert some["seeds"] == [1, 2] and some["n_pairs"] == 2
    one = M.paired_comparison({0: 0.9}, base, BOOT)
    assert one["verdict"] == M.NO_INTERVAL == "n=1, no interval" and math.isnan(one["diff_lo"])
    assert M.paired_comparison({7: 0.9}, base, BOOT)["verdict"] == M.NO_PAIRS


def test_ratio_interval_of_a_speed_up():
    r = M.ratio_ci({0: 100, 1: 120, 2: 110}, {0: 50, 1: 60, 2: 55}, BOOT)
    assert r["ratio"] == pytest.approx(2.0) and r["lo"] == pytest.approx(2.0) and r["hi"] == pytest.approx(2.0)
    r = M.ratio_ci({0: 100, 1: 120, 2: 110, 3: 90}, {0: 40, 1: 60, 2: 55, 3: 50}, BOOT)
    assert r["lo"] <= r["ratio"] <= r["hi"] and r["n"] == 4
    assert math.isnan(M.ratio_ci({0: 1.0}, {0: 2.0}, BOOT)["lo"])


def test_pareto_front_on_a_hand_made_table():
    #            a     b     c     d     e     f (dup of b)  g (nan)
    cost = [1.0, 2.0, 3.0, 2.5, 4.0, 2.0, np.nan]
    acc = [0.5, 0.7, 0.69, 0.8, 0.8, 0.7, 0.99]
    # a: cheapest; b/f tie (neither dominates the other); c dominated by b; d best under 4; e dominated by d
    assert M.pareto_front(cost, acc).tolist() == [True, True, False, True, False, True, False]


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
