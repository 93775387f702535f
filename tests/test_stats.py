"""reuse.stats: interval coverage by simulation, Holm against statsmodels, the t-test against scipy,
censored summaries, and the budget curve's interpolation and bounds."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from reuse import stats as S


# ----------------------------------------------------------------------------- coverage
@pytest.mark.parametrize("n", [2, 3, 5])
def test_t_interval_covers_the_mean_at_small_seed_counts(n):
    """2,000 simulated experiments of n normal seeds: the 95% interval of the mean holds the true mean
    at least 94% of the time (a percentile bootstrap of the mean: about 85% at 5 seeds, 74% at 3, 48% at 2)."""
    rng = np.random.default_rng(1234 + n)
    x = rng.normal(0.7, 0.02, size=(n, 2000))
    lo, hi = S.mean_ci(x, 0.95)
    cover = np.mean((lo <= 0.7) & (0.7 <= hi))
    assert cover >= 0.94, cover
    assert cover <= 0.965, cover  # and not by being needlessly wide


def test_paired_differences_cover_the_true_difference():
    """Method and baseline share a per-seed effect (pairing); the interval of the per-seed differences
    covers the true difference at least 94% of 2,000 experiments with 5 seeds."""
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(2000):
        seed_effect = rng.normal(0, 0.03, 5)
        base = 0.80 + seed_effect + rng.normal(0, 0.005, 5)
        meth = 0.81 + seed_effect + rng.normal(0, 0.005, 5)
        pc = S.paired_comparison(dict(enumerate(meth)), dict(enumerate(base)))
        hits += pc["diff_lo"] <= 0.01 <= pc["diff_hi"]
    assert hits / 2000 >= 0.94


def test_mean_ci_edge_cases():
    assert all(math.isnan(v) for v in S.mean_ci([0.5]))
    assert S.mean_ci([0.5, 0.5, 0.5]) == (0.5, 0.5)
    lo, hi = S.mean_ci(np.array([[1.0, np.nan], [2.0, 3.0], [3.0, np.nan]]))
    assert math.isnan(lo[1]) and math.isnan(hi[1])  # one value left in the column: no interval
    t = sps.t.ppf(0.975, 2)
    assert lo[0] == pytest.approx(2 - t / math.sqrt(3)) and hi[0] == pytest.approx(2 + t / math.sqrt(3))


def test_t_test_matches_scipy():
    x = [0.01, 0.03, -0.005, 0.02, 0.012]
    assert S.t_test(x) == pytest.approx(sps.ttest_1samp(x, 0.0).pvalue)
    assert math.isnan(S.t_test([0.1]))
    assert S.t_test([0.0, 0.0]) == 1.0 and S.t_test([0.2, 0.2]) == 0.0


# ----------------------------------------------------------------------------- multiplicity
def test_holm_matches_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    rng = np.random.default_rng(3)
    for _ in range(20):
        p = rng.uniform(0, 0.2, size=rng.integers(1, 30))
        want = multitest.multipletests(p, method="holm")[1]
        np.testing.assert_allclose(S.holm(p), want, rtol=1e-12)


def test_holm_leaves_nan_out_of_the_family():
    adj = S.holm([0.01, np.nan, 0.04])
    assert math.isnan(adj[1])
    np.testing.assert_allclose(adj[[0, 2]], [0.02, 0.04])


def test_many_variants_need_the_correction():
    """30 variants with no effect at all, 5 seeds each: uncorrected, some look better; Holm keeps the
    family's error rate at 5%."""
    rng = np.random.default_rng(11)
    any_raw = any_holm = 0
    for _ in range(300):
        p = [S.t_test(rng.normal(0, 0.01, 5)) for _ in range(30)]
        any_raw += min(p) < 0.05
        any_holm += np.nanmin(S.holm(p)) < 0.05
    assert any_raw / 300 > 0.5
    assert any_holm / 300 <= 0.08


def test_decide_respects_bounds():
    assert S.decide(0.02, 0.01) == S.BETTER
    assert S.decide(-0.02, 0.01) == S.WORSE
    assert S.decide(0.02, 0.2) == S.NO_DIFFERENCE
    assert S.decide(0.02, 0.01, S.UPPER) == S.NO_DIFFERENCE  # at most +2: cannot say better
    assert S.decide(-0.02, 0.01, S.LOWER) == S.NO_DIFFERENCE  # at least -2: cannot say worse
    assert S.decide(-0.02, 0.01, S.UPPER) == S.WORSE


# ----------------------------------------------------------------------------- censored values
def test_censored_summary_states_its_bound():
    full = S.censored_summary([2.0, 2.0, 2.0], [None, None, None], log=True)
    assert full["mean"] == pytest.approx(2.0) and full["bound"] is None and full["n_censored"] == 0
    up = S.censored_summary([2.0, 1.5, 0.8], [None, None, S.UPPER], log=True)
    assert up["bound"] == S.UPPER and up["n_censored"] == 1 and up["n"] == 3  # counted, not dropped
    assert up["lo"] == 0.0 and math.isfinite(up["hi"])
    low = S.censored_summary([0.01, 0.02], [S.LOWER, None])
    assert low["bound"] == S.LOWER and low["hi"] == math.inf
    mixed = S.censored_summary([1.0, 2.0, 3.0], [S.LOWER, S.UPPER, None])
    assert mixed["bound"] == "mixed" and math.isnan(mixed["lo"]) and not math.isnan(mixed["mean"])


# ----------------------------------------------------------------------------- budget curves
def test_isotonic_pools_violators():
    np.testing.assert_allclose(S.isotonic([0.5, 0.7, 0.6, 0.8]), [0.5, 0.65, 0.65, 0.8])
    np.testing.assert_allclose(S.isotonic([0.3, 0.2, 0.1]), [0.2, 0.2, 0.2])


def test_curve_interpolates_in_log_cost_and_bounds_outside():
    c = S.Curve([10, 20, 40, 80], [0.5, 0.6, 0.7, 0.75])
    assert c.acc_at(20) == (pytest.approx(0.6), None)
    v, b = c.acc_at(20 * math.sqrt(2))  # half-way in log cost
    assert v == pytest.approx(0.65) and b is None
    assert c.acc_at(160) == (pytest.approx(0.75), S.LOWER)  # more budget scores at least the top
    assert c.acc_at(5) == (pytest.approx(0.5), S.UPPER)
    cost, b = c.cost_at(0.65)
    assert cost == pytest.approx(20 * math.sqrt(2)) and b is None
    assert c.cost_at(0.9) == (pytest.approx(80), S.LOWER)
    assert c.cost_at(0.4) == (pytest.approx(10), S.UPPER)
    assert c.cost_at(0.5) == (pytest.approx(10), None)


def test_curve_is_monotone_even_when_a_budget_scores_lower():
    c = S.Curve([10, 20, 40], [0.6, 0.7, 0.68])
    assert c.acc_at(40)[0] == pytest.approx(0.69) and c.acc_at(20)[0] == pytest.approx(0.69)
    assert c.cost_at(0.69) == (pytest.approx(20), None)  # the least cost that reaches it


def test_gain_and_speedup_at_equal_cost():
    c = S.Curve([10, 20, 40], [0.6, 0.7, 0.8])
    assert S.gain_at_cost(c, 20, 0.75) == (pytest.approx(0.05), None)
    g, b = S.gain_at_cost(c, 80, 0.85)  # beyond the curve: the baseline there is at least 0.8
    assert g == pytest.approx(0.05) and b == S.UPPER
    sp, b = S.speedup_at_acc(c, 10, 0.7)  # reaches at cost 10 what the baseline reaches at 20
    assert sp == pytest.approx(2.0) and b is None
    sp, b = S.speedup_at_acc(c, 10, 0.9)  # beyond the top: the baseline needs more than 40
    assert sp == pytest.approx(4.0) and b == S.LOWER
    assert math.isnan(S.speedup_at_acc(c, 0.0, 0.7)[0])



def test_describe_with_one_value_has_no_interval():
    d = S.describe([0.7])
    assert d["n"] == 1 and d["mean"] == 0.7 and math.isnan(d["std"]) and math.isnan(d["lo"]) and math.isnan(d["hi"])
    assert S.describe([])["n"] == 0


def test_paired_comparison_signs_and_verdicts():
    base = {0: 0.60, 1: 0.62, 2: 0.61, 3: 0.63}
    better = S.paired_comparison({s: v + 0.05 + 0.01 * (s % 2) for s, v in base.items()}, base)
    assert better["verdict"] == S.BETTER and better["diff_lo"] > 0 and better["diff_mean"] == pytest.approx(0.055)
    worse = S.paired_comparison({s: v - 0.05 - 0.01 * (s % 2) for s, v in base.items()}, base)
    assert worse["verdict"] == S.WORSE and worse["diff_hi"] < 0
    noise = S.paired_comparison({0: 0.62, 1: 0.60, 2: 0.63, 3: 0.61}, base)
    assert noise["verdict"] == S.NO_DIFFERENCE and noise["diff_lo"] < 0 < noise["diff_hi"]
    # only the seeds both have are paired
    some = S.paired_comparison({1: 0.7, 2: 0.72, 9: 0.1}, base)
    assert some["seeds"] == [1, 2] and some["n_pairs"] == 2
    one = S.paired_comparison({0: 0.9}, base)
    assert one["verdict"] == S.NO_INTERVAL == "n=1, no interval" and math.isnan(one["diff_lo"])
    assert S.paired_comparison({7: 0.9}, base)["verdict"] == S.NO_PAIRS


def test_pareto_front_on_a_hand_made_table():
    #            a     b     c     d     e     f (dup of b)  g (nan)
    cost = [1.0, 2.0, 3.0, 2.5, 4.0, 2.0, np.nan]
    acc = [0.5, 0.7, 0.69, 0.8, 0.8, 0.7, 0.99]
    # a: cheapest; b/f tie (neither dominates the other); c dominated by b; d best under 4; e dominated by d
    assert S.pareto_front(cost, acc).tolist() == [True, True, False, True, False, True, False]
