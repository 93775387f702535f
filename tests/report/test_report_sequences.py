"""Sequences of runs in the report (a hyperparameter search, retraining as data arrives): the summary's
scenario, policy and step, the method pages' cumulative-cost curves, policy and trial tables, the
whole sequences on the frontier, and the sentence on the recommendations page.

A hand-made tree (dataset ``toy``, model ``small``, no training): two baselines, a search of 3 trials
per policy (``scratch``, the anchor, and ``warm``) over repeats 0 and 1, and a retraining of 2 steps
per policy (``scratch``, ``warm``), with the study tables the sequence stage writes
(``studies/<scenario>_steps.csv``, ``studies/<scenario>.csv``), numbers chosen by hand below.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.report.checks import chart_specs, check_recommendations, embedded_json
from tests.report.conftest import write_run

REPEATS = [0, 1]
# search: (policy, repeat) -> per trial (val_acc, test_acc, own GFLOPs, state)
SEARCH = {
    ("scratch", 0): [(0.50, 0.550, 1.0, "COMPLETE"), (0.70, 0.650, 1.0, "COMPLETE"), (0.60, 0.750, 1.0, "COMPLETE")],
    ("scratch", 1): [(0.60, 0.600, 1.0, "COMPLETE"), (0.50, 0.700, 1.0, "COMPLETE"), (0.65, 0.600, 1.0, "COMPLETE")],
    ("warm", 0): [(0.50, 0.550, 1.0, "COMPLETE"), (0.75, 0.700, 0.5, "COMPLETE"), (0.30, 0.400, 0.25, "PRUNED")],
    ("warm", 1): [(0.60, 0.600, 1.0, "COMPLETE"), (0.70, 0.700, 0.5, "COMPLETE"), (0.65, 0.650, 0.5, "COMPLETE")],
}
# retrain: (policy, repeat) -> per step (val_acc, test_acc, own GFLOPs); scratch_long, warm's equal-cost
# comparator, runs at the last step only (its cost: warm's cumulative one)
RETRAIN = {("scratch", 0): [(0.48, 0.500, 0.5), (0.58, 0.600, 1.0)], ("scratch", 1): [(0.50, 0.525, 0.5), (0.60, 0.625, 1.0)],
           ("warm", 0): [(0.48, 0.500, 0.5), (0.63, 0.650, 0.5)], ("warm", 1): [(0.50, 0.525, 0.5), (0.62, 0.650, 0.5)],
           ("scratch_long", 0): [None, (0.60, 0.620, 1.0)], ("scratch_long", 1): [None, (0.59, 0.630, 1.0)]}
POLICY_CFG = {"scratch": {}, "warm": {"init": "best"}}
RETRAIN_CFG = {"scratch": {}, "warm": {"init": "previous"}, "scratch_long": {"equal_cost": "warm", "steps": "last"}}
HP = [{"lr": 0.01, "width": 16}, {"lr": 0.05, "width": 32}, {"lr": 0.02, "width": 16}]


def _run(root, scenario, policy, step, repeat, *, test, gflops, val=None, state="COMPLETE", extra=None) -> Path:
    mark = "t" if scenario == "search" else "p"
    train_seed = repeat * 1000 + step if scenario == "search" else repeat  # as the search stage seeds a trial
    pcfg = (POLICY_CFG if scenario == "search" else RETRAIN_CFG)[policy]
    folder = write_run(root, "toy", "small", scenario, f"{policy}_{mark}{step:02d}", train_seed, acc=test,
                       time_s=10 * gflops, flops=gflops * 1e9, val_acc=val,
                       config={"scenario": scenario, "policy": policy, "step": step, **pcfg})
    if folder.name != f"s{repeat}":  # write_run names the folder after run.json's seed: move it to the repeat's
        target = folder.parent / f"s{repeat}"
        folder.rename(target)
        folder = target
    run = json.loads((folder / "run.json").read_text())
    run["sequence"] = {"scenario": scenario, "policy": policy, "step": step, "repeat": repeat,
                       "own_flops": gflops * 1e9, "own_time_s": 10 * gflops, "val_acc": val,
                       "pruned": state == "PRUNED", **(extra or {})}
    if scenario == "search":
        run["trial"] = {"number": step, "state": state, "value": val, "params": HP[step]}
    (folder / "run.json").write_text(json.dumps(run))
    return folder / "run.json"


def make_sequences(root) -> dict[str, pd.DataFrame]:
    """The runs, then the study tables as the sequence stage writes them from the runs' run.json."""
    from reuse.methods.sequences.stage import policy_study, steps_study

    for s in REPEATS:
        write_run(root, "toy", "small", "baseline", None, s, acc=0.6, time_s=10, flops=1e9)
    studies = root / "toy" / "studies"
    studies.mkdir(parents=True, exist_ok=True)
    tables = {}
    for scenario, spec in (("search", SEARCH), ("retrain", RETRAIN)):
        files = []
        for (pol, rep), steps in spec.items():
            for i, x in enumerate(steps):
                if x is None:
                    continue
                if scenario == "search":
                    val, test, gf, state = x
                    step = i
                    extra = {"params": HP[i], **({"init_from": i - 1} if pol == "warm" and i else {})}
                else:
                    (val, test, gf), state, step, extra = x, "COMPLETE", i + 1, {"trained_on": 40 * (i + 1)}
                files.append(str(_run(root, scenario, pol, step, rep, test=test, gflops=gf, val=val, state=state,
                                      extra=extra)))
        kw = {"runs_csvs": [], "baseline_csv": "", "extra": {"runs_json": files}, "params": {"confidence": 0.95}}
        steps_study(**kw, out_csv=str(studies / f"{scenario}_steps.csv"))
        policy_study(**kw, out_csv=str(studies / f"{scenario}.csv"))
        tables[f"{scenario}_steps"] = pd.read_csv(studies / f"{scenario}_steps.csv")
        tables[scenario] = pd.read_csv(studies / f"{scenario}.csv")
    return tables


@pytest.fixture(scope="module")
def seq(tmp_path_factory):
    from reuse.report import Options, build

    root = tmp_path_factory.mktemp("seq") / "results"
    tables = make_sequences(root)
    out = build(root, None, Options(figures=[]))
    return root, tables, out


def test_the_hand_made_tables_are_what_the_tests_below_assume(seq):
    _, t, _ = seq
    p = t["search"].set_index("policy")
    # scratch ships 0.65 and 0.60 on test (mean 0.625) after 3 GFLOPs. Its targets are its final shipped models'
    # validation accuracies, 0.70 (reached at trial 1, 2 GFLOPs) and 0.65 (trial 2, 3 GFLOPs): speed-up 1.
    # warm reaches them after 1.5 GFLOPs in both repeats: speed-ups 2 / 1.5 and 3 / 1.5, geometric mean
    assert p.loc["scratch", "test_acc"] == pytest.approx(0.625) and p.loc["scratch", "total_flops"] == 3e9
    assert p.loc["scratch", "speedup_flops"] == 1.0 and p.loc["scratch", "anchor_reach_cum_flops"] == 2.5e9
    assert p.loc["warm", "reach_cum_flops"] == 1.5e9
    assert p.loc["warm", "speedup_flops"] == pytest.approx(math.sqrt(2 / 1.5 * 3 / 1.5))
    assert p.loc["warm", "reached"] == 2 and p.loc["warm", "pruned"] == 1 and p.loc["warm", "n_censored"] == 0
    # retraining: scratch's targets 0.58 and 0.60 (validation, at its last step, 1.5 GFLOPs); warm gets there
    # after 1 GFLOP in both repeats (1.5x); scratch_long, from scratch for warm's 1 GFLOP, reaches it in
    # repeat 0 only: repeat 1 is censored (an upper bound, 1.5), and warm's gain over it is paired by repeat
    r = t["retrain"].set_index("policy")
    assert r.loc["warm", "speedup_flops"] == pytest.approx(1.5) and r.loc["scratch", "speedup_flops"] == 1.0
    assert r.loc["scratch_long", "total_flops"] == r.loc["warm", "total_flops"] == 1e9
    assert r.loc["scratch_long", "n_censored"] == 1 and r.loc["scratch_long", "speedup_flops_bound"] == "upper"
    assert r.loc["warm", "equal_cost_policy"] == "scratch_long"
    assert r.loc["warm", "gain_test_acc"] == pytest.approx(0.025) and r.loc["warm", "gain_val_acc"] == pytest.approx(0.03)


def test_summary_has_the_scenario_policy_and_step_of_each_run(seq):
    root, _, _ = seq
    s = pd.read_parquet(root / "summary.parquet")
    csv = pd.read_csv(root / "summary.csv")
    assert {"scenario", "policy", "step"} <= set(s.columns) and {"scenario", "policy", "step"} <= set(csv.columns)
    runs = s[s["row"] == "run"]
    assert (runs["status"] == "ok").all() and len(runs) == 2 + 2 * 2 * 3 + 2 * 2 * 2 + 2
    search = runs[runs["method"] == "search"].set_index(["variant", "seed"])
    # keyed by the repeat (the folder), not by the trial's own training seed (repeat * 1000 + trial)
    assert sorted(set(search.index.get_level_values("seed"))) == REPEATS
    t = search.loc[("warm_t02", 1)]
    assert (t["scenario"], t["policy"], t["step"], t["train_seed"]) == ("search", "warm", 2, 1002)
    assert sorted(runs[runs["method"] == "retrain"]["step"]) == [1] * 4 + [2] * 6
    base = runs[runs["method"] == "baseline"]
    assert base["scenario"].isna().all() and base["policy"].isna().all() and base["step"].isna().all()
    # each step aggregated like a run, but on no frontier and never recommended
    aggs = s[(s["row"] == "aggregate") & (s["method"] == "search")]
    assert len(aggs) == 6 and set(aggs["policy"]) == {"scratch", "warm"}
    assert (aggs["role_time_full"] == "sequence step").all() and not aggs["frontier_time_full"].any()
    recs = check_recommendations(root)
    assert recs and not any("search/" in r["statement"] or "retrain/" in r["statement"] for r in recs)


def test_a_run_is_matched_to_its_declared_folder_by_its_repeat(seq):
    """A declared trial (folder seed = repeat) is found finished although run.json's seed is 1001."""
    from reuse.report.collect import collect

    root, _, _ = seq
    exp = [{"dataset": "toy", "model": "small", "method": "search", "variant": "scratch_t01", "seed": 1,
            "relpath": "toy/small/search/scratch_t01/s1", "config": {"scenario": "search", "policy": "scratch", "step": 1}},
           {"dataset": "toy", "model": "small", "method": "search", "variant": "scratch_t03", "seed": 1,
            "relpath": "toy/small/search/scratch_t03/s1", "config": {"scenario": "search", "policy": "scratch", "step": 3}}]
    runs = collect(root, exp).runs.set_index(["variant", "seed"])
    assert runs.loc[("scratch_t01", 1), "status"] == "ok" and runs.loc[("scratch_t01", 1), "train_seed"] == 1001
    # a declared step that did not run still says where it sits in its sequence
    missing = runs.loc[("scratch_t03", 1)]
    assert missing["status"] == "missing" and (missing["scenario"], missing["policy"], missing["step"]) == (
        "search", "scratch", 3)
    assert not (runs.index.get_level_values("seed") > 1).any()


def test_method_pages_show_the_sequences(seq):
    from reuse.report.charts import COMPARATOR_KIND

    root, t, _ = seq
    for scen, word in (("search", "trial"), ("retrain", "retraining step")):
        policies = {"scratch", "warm"} | ({"scratch_long"} if scen == "retrain" else set())
        page = root / "report" / f"method-{scen}.html"
        text = page.read_text()
        assert f'id="sequence-toy-{scen}"' in text
        # the cumulative-cost chart: one line per policy, mean cost and accuracy over the repeats at each step, the
        # shipped model's validation accuracy (the target's split) or its test accuracy from a menu
        spec = next(v for k, v in chart_specs(page).items() if k.endswith(f"sequence-toy-{scen}-{scen}"))
        data = pd.DataFrame([r for d in spec["datasets"].values() for r in d if "measure" in r])
        assert set(data["policy"]) == policies and set(data["measure"]) == {"flops", "time"}
        assert set(data["split"]) == {"val", "test"}
        steps = t[f"{scen}_steps"]
        for (pol, step), g in steps.groupby(["policy", "step"]):
            at = data[(data["policy"] == pol) & (data["step"] == step) & (data["measure"] == "flops")]
            for split, col in (("test", "shipped_test_acc"), ("val", "shipped_val_acc")):
                row = at[at["split"] == split].iloc[0]
                assert row["cost"] == pytest.approx(g["cum_flops"].mean())
                assert row["acc"] == pytest.approx(g[col].mean())
                assert (row["lo"], row["hi"]) == pytest.approx((g[col].min(), g[col].max()))
                assert row["at_target"] == g["at_target"].sum()
        assert set(data.loc[data["kind"].str.startswith("anchor"), "policy"]) == {"scratch"}
        # the equal-cost comparator is drawn as points at its own cost (warm's cumulative cost at the last step)
        assert set(data.loc[data["kind"] == COMPARATOR_KIND, "policy"]) == ({"scratch_long"} if scen == "retrain"
                                                                           else set())
        # the dotted rule: the target, the mean over repeats of the anchor's final shipped validation accuracy
        rules = [r for d in spec["datasets"].values() for r in d if "y" in r]
        assert len(rules) == 1 and rules[0]["split"] == "val"
        assert rules[0]["y"] == pytest.approx(t[scen].set_index("policy").loc["scratch", "target_val_acc"])
        assert "dotted rule (validation only): the target" in text
        # the policy table: the anchor and the speed-up with its interval
        table = text.split("Policies against the anchor")[1].split("</table>")[0]
        assert ">scratch (anchor)<" in table and ">reached the target (val.; repeats)<" in table
        assert ">target (val., mean)<" in table and ">censored (never reached; repeats)<" in table
        for pol in ("scratch", "warm"):
            w = t[scen].set_index("policy").loc[pol]
            assert f">{w['speedup_flops']:.2f}× [{w['speedup_flops_lo']:.2f}, {w['speedup_flops_hi']:.2f}]<" in table
        assert ">1.00× [1.00, 1.00]<" in table  # the anchor's, exactly
        assert ">2 of 2<" in table
        note = text.split("Policies against the anchor")[1].split("</table>")[1].split("</p>")[0].replace("&#x27;", "'")
        assert "the anchor's is 1" in note and "censored, not dropped" in note and "Student-t" in note
        assert "bootstrap" not in note and "above 1" not in note
        # one collapsible step table per policy; the shipped model marked once per repeat
        assert text.count("<details data-policy=") == len(policies)
        for pol in policies:
            block = text.split(f'<details data-policy="{pol}">')[1].split("</details>")[0]
            assert block.count("✓") == len(REPEATS) and f"<th>{word}</th>" in block
        # the raw study tables are not dumped below
        assert f"Study table (results/toy/studies/{scen}.csv)" not in text
    # retraining: the comparator marked as such, its censored speed-up an upper bound whose interval runs from 0;
    # warm's test gain over it with its interval and verdict
    retrain = (root / "report" / "method-retrain.html").read_text()
    table = retrain.split("Policies against the anchor")[1].split("</table>")[0]
    assert ">scratch_long (equal-cost comparator of warm)<" in table
    assert ">≤ 1.50× [0.00, 1.50]<" in table and ">1 of 2<" in table
    w = t["retrain"].set_index("policy").loc["warm"]
    assert (f">+2.50 points [{100 * w['gain_test_acc_lo']:+.2f}, {100 * w['gain_test_acc_hi']:+.2f}] vs scratch_long: "
            "no detectable difference<") in table
    long = retrain.split('<details data-policy="scratch_long">')[1].split("</details>")[0]
    assert "equal cost to warm" in long and "<th>shipped model at the target</th>" in long
    search = (root / "report" / "method-search.html").read_text()
    warm = search.split('<details data-policy="warm">')[1].split("</details>")[0]
    assert "<th>lr</th>" in warm and "<th>width</th>" in warm and "stopped early" in warm
    assert "warm: 2 repeats × 3 trials, 1 stopped early; shipped: repeat 0: trial 1, repeat 1: trial 1" in search
    assert ">stopped early<" in search.split("Policies against the anchor")[1].split("</table>")[0]
    # no sweep of the steps (the step number and the drawn hyperparameters are no designed sweep)
    assert not any("sweep" in k for k in chart_specs(root / "report" / "method-search.html"))
    assert 'id="sequence-' not in (root / "report" / "method-baseline.html").read_text()


def test_sequence_pages_before_the_study_tables_are_built(seq, tmp_path):
    """Only the search's step table (its policy table not yet written), no retraining tables: the search page
    draws its curves without an anchor, the retraining page says what is missing, the frontier has no cross."""
    from reuse.report import Options, build
    from reuse.report.charts import SEQUENCE_ROLE

    root, _, _ = seq
    copy = tmp_path / "results"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("report", "summary.*"))
    for name in ("search.csv", "retrain.csv", "retrain_steps.csv"):
        (copy / "toy" / "studies" / name).unlink()
    out = build(copy, None, Options(figures=[]))
    assert out["sequences"].empty
    search = (copy / "report" / "method-search.html").read_text()
    assert any(k.endswith("sequence-toy-search-search") for k in chart_specs(copy / "report" / "method-search.html"))
    assert "Policies against the anchor" not in search and search.count("<details data-policy=") == 2
    retrain = (copy / "report" / "method-retrain.html").read_text()
    assert "results/toy/studies/retrain_steps.csv, retrain.csv) are not built yet" in retrain
    spec = next(v for k, v in chart_specs(copy / "report" / "frontier.html").items() if k.endswith("frontier-toy"))
    assert not any(r.get("role") == SEQUENCE_ROLE for d in spec["datasets"].values() for r in d)


def test_the_frontier_shows_each_whole_sequence_at_its_full_cost(seq):
    from reuse.report.charts import SEQUENCE_ROLE

    root, t, _ = seq
    spec = next(v for k, v in chart_specs(root / "report" / "frontier.html").items() if k.endswith("frontier-toy"))
    rows = pd.DataFrame([r for d in spec["datasets"].values() for r in d if "axis" in r])
    seq_rows = rows[rows["role"] == SEQUENCE_ROLE]
    assert set(zip(seq_rows["method"], seq_rows["variant"])) == {(s, p) for s in ("search", "retrain")
                                                                for p in ("scratch", "warm")} | {
        ("retrain", "scratch_long")}
    assert not seq_rows["on_frontier"].any()
    for scen in ("search", "retrain"):
        for r in t[scen].to_dict("records"):
            pts = seq_rows[(seq_rows["method"] == scen) & (seq_rows["variant"] == r["policy"])].set_index("axis")
            assert pts.loc["flops_full", "cost"] == pytest.approx(r["total_flops"])
            assert pts.loc["time_full", "cost"] == pytest.approx(r["total_time_s"])
            assert pts.loc["flops_full", "acc"] == pytest.approx(r["test_acc"])
            assert pts.loc["flops_full", "acc_lo"] == pytest.approx(r["test_acc_lo"])
    # the single steps are not on the chart at all; the baseline still is, and is on the frontier
    assert not rows["label"].str.startswith(("search/", "retrain/")).any()
    assert rows[rows["method"] == "baseline"]["on_frontier"].any()
    assert "Sequences (whole tuning / retraining, full cost)" in (root / "report" / "frontier.html").read_text()


def test_the_recommendations_page_names_the_cheapest_policy_to_the_anchor(seq):
    root, t, _ = seq
    page = root / "report" / "recommendations.html"
    recs = {r["scenario"]: r for r in embedded_json(page, "sequence_recommendations")}
    assert recs["search"]["best_flops"] == "warm" and recs["retrain"]["best_flops"] == "warm"
    s = recs["search"]["statement"]
    assert s.startswith("toy, search of small (3 trials × 2 repeats, 2 policies): warm reached the target, the "
                        "anchor scratch's final shipped model's validation accuracy (67.50% on average over the "
                        "repeats; the anchor reached it after 2.5e+09 FLOPs of its 3e+09 FLOPs on average) in 2 of 2 "
                        "repeats at the lowest cost, 1.5e+09 FLOPs on average")
    w = t["search"].set_index("policy").loc["warm"]
    assert f"{w['speedup_flops']:.2f}× (95% CI [{w['speedup_flops_lo']:.2f}, {w['speedup_flops_hi']:.2f}])" in s
    assert "over the anchor's own cost to reach it (geometric means over the repeats)" in s
    assert "validation split only" in s and "equal-cost" not in s
    assert s in page.read_text().replace("&#x27;", "'")
    # retraining: warm's gain over its equal-cost comparator, on test (reported, with its verdict) and validation
    r = recs["retrain"]["statement"]
    w = t["retrain"].set_index("policy").loc["warm"]
    assert (f"Against its equal-cost comparator scratch_long (from scratch on the data seen so far, trained on as "
            f"many examples as warm's chain; equal training FLOPs), warm's final shipped model at retraining step 2 "
            f"gains +2.50 test points (95% CI [{100 * w['gain_test_acc_lo']:+.2f}, "
            f"{100 * w['gain_test_acc_hi']:+.2f}], "
            f"2 repeats; verdict: no detectable difference, Holm-adjusted p = {w['gain_test_acc_p_holm']:.2g}), "
            "reported, not used to choose. Its validation gain, the one any choice between the two would read: "
            "+3.00 validation points (95% CI [+3.00, +3.00]).") in r
    assert "The target, whether a policy reaches it, and every choice inside a sequence" in r
    note = page.read_text().split("Sequences: which policy reaches the anchor")[1].split("</p>")[0]
    assert "validation accuracy" in note and "censored, not dropped" in note and "Student-t" in note
    assert "bootstrap" not in note


def test_the_sequence_choices_read_no_test_accuracy(seq):
    """The recommendation's choice of policy per scenario is the same with every test accuracy of the policy
    tables replaced: only the reported numbers may change."""
    from reuse.report.tables import sequence_recommendation

    _, t, _ = seq
    pols = pd.concat([t["search"], t["retrain"]], ignore_index=True)
    other = pols.copy()
    rng = np.random.default_rng(1)
    for c in [c for c in other.columns if "test" in c and pd.api.types.is_numeric_dtype(other[c])]:
        other[c] = rng.uniform(0, 1, len(other))
    a, b = sequence_recommendation(pols), sequence_recommendation(other)
    for col in ("scenario", "anchor", "best_flops", "best_time"):
        assert a[col].tolist() == b[col].tolist()
    assert a.set_index("scenario").loc["search", "best_flops"] == "warm"


def _policies(**over) -> pd.DataFrame:
    """A per-policy table as the stage writes it: anchor a (target 72 % validation, reached after 8e+11 of its
    1e+12 FLOPs); b cheapest to reach in FLOPs; c reaches it in one repeat only (its speed-up an upper bound)
    but has the highest mean speed-up; d costlier in FLOPs, cheapest in wall-clock; e, b's equal-cost
    comparator, reaches it in one repeat."""
    base = {"dataset": "ds", "model": "m", "scenario": "search", "anchor": "a", "repeats": 3, "pairs": 3, "steps": 12,
            "test_acc_lo": 0.7, "test_acc_hi": 0.8, "total_time_s": 100.0, "total_flops": 1e12,
            "target_val_acc": 0.72, "anchor_reach_cum_flops": 8e11, "anchor_reach_cum_time_s": 80.0,
            "speedup_flops_bound": None, "speedup_time_bound": None, "reach_bound": None, "n_censored": 0,
            "equal_cost_of": None, "equal_cost_policy": None}
    up = {"speedup_flops_bound": "upper", "speedup_time_bound": "upper", "reach_bound": "lower"}
    rows = [dict(policy="a", is_anchor=True, test_acc=0.75, reached=3, reach_cum_flops=8e11,
                 reach_cum_time_s=80.0, speedup_flops=1.0, speedup_flops_lo=1.0, speedup_flops_hi=1.0, speedup_time=1.0,
                 speedup_time_lo=1.0, speedup_time_hi=1.0),
            dict(policy="b", is_anchor=False, test_acc=0.76, reached=3, reach_cum_flops=4e11,
                 reach_cum_time_s=50.0, speedup_flops=2.5, speedup_flops_lo=2.1, speedup_flops_hi=2.9, speedup_time=2.0,
                 speedup_time_lo=1.8, speedup_time_hi=2.2, equal_cost_policy="e", gain_step=12, gain_pairs=3,
                 gain_test_acc=0.012, gain_test_acc_lo=-0.01, gain_test_acc_hi=0.034, gain_test_acc_p=0.2,
                 gain_test_acc_p_holm=0.2, gain_test_verdict="no detectable difference", gain_val_acc=0.02,
                 gain_val_acc_lo=0.005, gain_val_acc_hi=0.035, gain_cost_ratio_flops=1.0),
            dict(policy="c", is_anchor=False, test_acc=0.70, reached=1, n_censored=2, reach_cum_flops=9e11,
                 reach_cum_time_s=90.0, speedup_flops=3.3, speedup_flops_lo=0.0, speedup_flops_hi=10.0,
                 speedup_time=3.0, speedup_time_lo=0.0, speedup_time_hi=9.0, **up),
            dict(policy="d", is_anchor=False, test_acc=0.75, reached=3, reach_cum_flops=6e11,
                 reach_cum_time_s=40.0, speedup_flops=1.7, speedup_flops_lo=1.5, speedup_flops_hi=1.9, speedup_time=2.5,
                 speedup_time_lo=2.2, speedup_time_hi=2.8),
            dict(policy="e", is_anchor=False, test_acc=0.748, reached=1, n_censored=2, reach_cum_flops=1e12,
                 reach_cum_time_s=100.0, speedup_flops=0.8, speedup_flops_lo=0.0, speedup_flops_hi=1.2,
                 speedup_time=0.8, speedup_time_lo=0.0, speedup_time_hi=1.2, equal_cost_of="b", **up)]
    df = pd.DataFrame([{**base, **r} for r in rows])
    for k, v in over.items():
        df[k] = v
    return df


def test_the_sequence_sentence_picks_the_policy_that_reaches_the_anchor_cheapest():
    from reuse.report.tables import sequence_recommendation

    r = sequence_recommendation(_policies()).iloc[0]
    # not c nor e: they reached the target in 1 of 3 repeats only
    assert (r["best_flops"], r["best_time"]) == ("b", "d")
    s = r["statement"]
    assert s.startswith("ds, search of m (12 trials × 3 repeats, 5 policies): b reached the target, the anchor a's "
                        "final shipped model's validation accuracy (72.00% on average over the repeats; the anchor "
                        "reached it after 8e+11 FLOPs of its 1e+12 FLOPs on average) in 3 of 3 repeats")
    assert "in 3 of 3 repeats at the lowest cost, 4e+11 FLOPs on average" in s
    assert ("2.50× (95% CI [2.10, 2.90]) in FLOPs and 2.00× (95% CI [1.80, 2.20]) in wall-clock over the anchor's "
            "own cost to reach it (geometric means over the repeats)") in s
    assert "In wall-clock, d got there first (40 s on average, speed-up 2.50× (95% CI [2.20, 2.80]))." in s
    assert "higher speed-up" not in s and "final test accuracy" not in s
    # b's gain over its equal-cost comparator e: the test gain (reported, with its verdict), then the validation one
    assert ("Against its equal-cost comparator e (from scratch on the data seen so far, trained on as many examples "
            "as b's chain; equal training FLOPs), b's final shipped model at trial 12 gains +1.20 test points (95% CI "
            "[-1.00, +3.40], 3 repeats; verdict: no detectable difference, Holm-adjusted p = 0.2), reported, not used "
            "to choose. Its validation gain, the one any choice between the two would read: +2.00 validation points "
            "(95% CI [+0.50, +3.50]).") in s
    assert s.endswith("The target, whether a policy reaches it, and every choice inside a sequence (the model a "
                      "policy ships, its teachers and starting weights, which trials stop early) read the validation "
                      "split only; test accuracy is only reported.")
    # a narrower confidence level is named as such
    assert "90% CI [2.10, 2.90]" in sequence_recommendation(_policies(), confidence=0.9).iloc[0]["statement"]
    # the lowest mean cost to reach the target decides, not the geometric mean of the per-repeat speed-ups (which
    # can rank policies otherwise); the sentence says so
    df = _policies()
    df.loc[df["policy"] == "d", "speedup_flops"] = 2.7
    r = sequence_recommendation(df).iloc[0]
    assert r["best_flops"] == "b"
    assert "d has a higher speed-up (2.70× (95% CI [1.50, 1.90]), a geometric mean of per-repeat ratios) but a " \
           "higher mean cost to reach it (6e+11 FLOPs)." in r["statement"]
    # a comparator whose matched policy costs more (its caches are outside the budget) says by how much
    df = _policies()
    df.loc[df["policy"] == "b", "gain_cost_ratio_flops"] = 1.07
    assert "b's whole cost 1.07× the comparator's there" in sequence_recommendation(df).iloc[0]["statement"]


def test_the_sequence_sentence_when_no_policy_reaches_the_anchor_in_every_repeat():
    """Censored repeats make the speed-up an upper bound: ≤, its interval from 0, how many repeats it counts at
    their whole cost."""
    from reuse.report.tables import sequence_recommendation

    df = _policies()
    for pol, reached in {"b": 2, "c": 1, "d": 0}.items():
        row = df["policy"] == pol
        df.loc[row, ["reached", "n_censored", "reach_cum_flops", "reach_cum_time_s"]] = [reached, 3 - reached, 1e12,
                                                                                         100.0]
        df.loc[row, ["speedup_flops_bound", "speedup_time_bound", "reach_bound"]] = ["upper", "upper", "lower"]
        df.loc[row, ["speedup_flops_lo", "speedup_time_lo"]] = 0.0
    r = sequence_recommendation(df).iloc[0]
    assert r["best_flops"] is None and r["best_time"] is None
    s = r["statement"]
    assert ("no policy other than the anchor reached the target, the anchor a's final shipped model's validation "
            "accuracy (72.00% on average") in s
    assert ("the closest, b, reached it in 2 of 3 repeats (speed-up ≤ 2.50× (95% CI [0.00, 2.90]) in FLOPs, an "
            "upper bound: 1 of 3 repeats never reaches it and counts at its whole cost).") in s
    assert "counting 0" not in s and "final test accuracy" not in s
    # b still has its equal-cost comparison, and the closing sentence
    assert "Against its equal-cost comparator e" in s and s.endswith("test accuracy is only reported.")
    df.loc[df["policy"] == "b", "reached"] = 1
    s = sequence_recommendation(df).iloc[0]["statement"]
    assert "the closest, c, reached it in 1 of 3 repeats (speed-up ≤ 3.30× (95% CI [0.00, 10.00]) in FLOPs, an " \
           "upper bound: 2 of 3 repeats never reach it and count at their whole cost)." in s
    none = sequence_recommendation(_policies(anchor=None)).iloc[0]["statement"]
    assert "no anchor policy" in none


def test_the_speedup_text_of_a_bound():
    """The sentence's speed-up: ≤ with an interval from 0 (upper bound), ≥ with one to ∞ (lower), none (mixed)."""
    from reuse.report.tables import _speedup_text

    r = {"speedup_flops": 1.5, "speedup_flops_lo": 1.2, "speedup_flops_hi": 1.9}
    assert _speedup_text(r, "flops", 0.95) == "1.50× (95% CI [1.20, 1.90])"
    assert _speedup_text({**r, "speedup_flops_bound": float("nan")}, "flops", 0.95) == "1.50× (95% CI [1.20, 1.90])"
    assert _speedup_text({**r, "speedup_flops_bound": "upper", "speedup_flops_lo": 0.0}, "flops", 0.95) == \
        "≤ 1.50× (95% CI [0.00, 1.90])"
    assert _speedup_text({**r, "speedup_flops_bound": "lower", "speedup_flops_hi": math.inf}, "flops", 0.95) == \
        "≥ 1.50× (95% CI [1.20, ∞])"
    assert _speedup_text({**r, "speedup_flops_bound": "mixed"}, "flops", 0.95) == \
        "1.50× (censored both ways, no interval)"
    assert _speedup_text({"speedup_flops": 2.0, "speedup_flops_lo": 0.0, "speedup_flops_hi": float("nan"),
                          "speedup_flops_bound": "upper"}, "flops", 0.95) == "≤ 2.00× (one repeat, no interval)"


@pytest.mark.skipif(shutil.which("chromium") is None and not Path("/usr/bin/chromium").exists(),
                    reason="chromium is not installed: run tools/bootstrap.sh as root")
def test_the_sequence_pages_render_offline(seq, tmp_path):
    from tests.report.test_browser import check_pages

    root, _, _ = seq
    pages = tmp_path / "pages"
    pages.mkdir()
    for name in ("method-search.html", "method-retrain.html", "frontier.html"):
        shutil.copy(root / "report" / name, pages / name)
    out = check_pages(pages, tmp_path / "shots")
    for name, p in out.items():
        assert p["errors"] == [] and p["remote"] == [], (name, p)
        assert all(n > 0 for n in p["marks"].values()), (name, p["marks"])
    assert any(k.startswith("sequence-toy-search") for k in out["method-search.html"]["marks"])
    # the retraining chart, with its equal-cost comparator's diamonds and bars and the target's rule
    assert any(k.startswith("sequence-toy-retrain") for k in out["method-retrain.html"]["marks"])
