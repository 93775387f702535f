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

from reuse import metrics as M
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
# retrain: (policy, repeat) -> per step (test_acc, own GFLOPs)
RETRAIN = {("scratch", 0): [(0.500, 0.5), (0.600, 1.0)], ("scratch", 1): [(0.525, 0.5), (0.625, 1.0)],
           ("warm", 0): [(0.500, 0.5), (0.650, 0.5)], ("warm", 1): [(0.525, 0.5), (0.650, 0.5)]}
HP = [{"lr": 0.01, "width": 16}, {"lr": 0.05, "width": 32}, {"lr": 0.02, "width": 16}]


def _run(root, scenario, policy, step, repeat, *, test, gflops, val=None, state="COMPLETE", extra=None):
    mark = "t" if scenario == "search" else "p"
    train_seed = repeat * 1000 + step if scenario == "search" else repeat  # as the search stage seeds a trial
    folder = write_run(root, "toy", "small", scenario, f"{policy}_{mark}{step:02d}", train_seed, acc=test,
                       time_s=10 * gflops, flops=gflops * 1e9,
                       config={"scenario": scenario, "policy": policy, "step": step,
                               "init": "best" if policy == "warm" else "scratch"})
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


def _steps_table(rows: list[dict]) -> pd.DataFrame:
    """Cumulative cost and the shipped model per (policy, repeat), in step order, as the stage does: a
    search ships its finished trial with the best validation accuracy so far, retraining its last step."""
    df = pd.DataFrame(rows).sort_values(["policy", "seed", "step"])
    out = []
    for _, g in df.groupby(["policy", "seed"]):
        g = g.copy()
        g["cum_flops"], g["cum_time_s"] = g["own_flops"].cumsum(), g["own_time_s"].cumsum()
        best, ship = None, []
        for r in g.to_dict("records"):
            if r["scenario"] == "retrain" or (r["state"] == "COMPLETE" and (best is None or r["val_acc"] > best["val_acc"])):
                best = r
            ship.append((best["step"], best["val_acc"], best["test_acc"]))
        g["shipped_step"], g["shipped_val_acc"], g["shipped_test_acc"] = zip(*ship)
        out.append(g)
    return pd.concat(out, ignore_index=True)


def _policy_table(steps: pd.DataFrame, anchor: str) -> pd.DataFrame:
    """One row per policy (the columns of the stage's policy study; percentile intervals over 2 repeats)."""
    final = steps.groupby(["policy", "seed"]).tail(1).set_index(["policy", "seed"])
    rows = []
    for pol, g in steps.groupby("policy"):
        fin = final.loc[pol]
        row = {"dataset": "toy", "model": "small", "scenario": steps["scenario"].iloc[0], "policy": pol,
               "anchor": anchor, "is_anchor": pol == anchor, "repeats": 2, "steps": g["step"].nunique(),
               "test_acc": fin["shipped_test_acc"].mean(), "test_acc_lo": fin["shipped_test_acc"].min(),
               "test_acc_hi": fin["shipped_test_acc"].max(), "val_acc": fin["shipped_val_acc"].mean(),
               "total_flops": fin["cum_flops"].mean(), "total_time_s": fin["cum_time_s"].mean(),
               "pruned": int((g["state"] == "PRUNED").sum()), "runs": len(g)}
        for m, col in (("flops", "cum_flops"), ("time", "cum_time_s")):
            ups, reach = [], []
            for seed, gs in g.groupby("seed"):
                hit = gs[gs["shipped_test_acc"] >= final.loc[(anchor, seed), "shipped_test_acc"] - 1e-12]
                cost = hit[col].iloc[0] if len(hit) else np.inf
                reach.append(cost)
                ups.append(final.loc[(anchor, seed), col] / cost)
            row.update({f"speedup_{m}": np.mean(ups), f"speedup_{m}_lo": min(ups), f"speedup_{m}_hi": max(ups),
                        f"reach_{col}": np.mean(reach), "reached": int(np.isfinite(reach).sum())})
        rows.append(row)
    return pd.DataFrame(rows)


def make_sequences(root) -> dict[str, pd.DataFrame]:
    for s in REPEATS:
        write_run(root, "toy", "small", "baseline", None, s, acc=0.6, time_s=10, flops=1e9)
    tables = {}
    for scenario, spec in (("search", SEARCH), ("retrain", RETRAIN)):
        rows = []
        for (pol, rep), steps in spec.items():
            for i, x in enumerate(steps):
                if scenario == "search":
                    val, test, gf, state = x
                    step = i
                    extra = {"params": HP[i], **({"init_from": i - 1} if pol == "warm" and i else {})}
                else:
                    (test, gf), val, state, step, extra = x, None, "COMPLETE", i + 1, {"trained_on": 40 * (i + 1)}
                _run(root, scenario, pol, step, rep, test=test, gflops=gf, val=val, state=state, extra=extra)
                rows.append({"dataset": "toy", "model": "small", "scenario": scenario, "policy": pol, "seed": rep,
                             "step": step, "state": state, "val_acc": val, "test_acc": test, "own_flops": gf * 1e9,
                             "own_time_s": 10 * gf, **{f"hp_{k}": v for k, v in extra.get("params", {}).items()},
                             "init_from": extra.get("init_from"), "trained_on": extra.get("trained_on")})
        steps_df = _steps_table(rows)
        tables[f"{scenario}_steps"], tables[scenario] = steps_df, _policy_table(steps_df, "scratch")
    (root / "toy" / "studies").mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        df.to_csv(root / "toy" / "studies" / f"{name}.csv", index=False)
    return tables


@pytest.fixture(scope="module")
def seq(tmp_path_factory):
    from reuse.report import Options, build

    root = tmp_path_factory.mktemp("seq") / "results"
    tables = make_sequences(root)
    out = build(root, None, Options(figures=[], bootstrap=M.Bootstrap(resamples=200)))
    return root, tables, out


def test_the_hand_made_tables_are_what_the_tests_below_assume(seq):
    _, t, _ = seq
    p = t["search"].set_index("policy")
    # scratch ships 0.65 and 0.60 (mean 0.625) after 3 GFLOPs; warm reaches 0.65 after 1.5 GFLOPs in repeat 0 and
    # 0.60 after 1 GFLOP in repeat 1: speed-ups 2 and 3
    assert p.loc["scratch", "test_acc"] == pytest.approx(0.625) and p.loc["scratch", "total_flops"] == 3e9
    assert p.loc["warm", "reach_cum_flops"] == 1.25e9 and p.loc["warm", "speedup_flops"] == pytest.approx(2.5)
    assert p.loc["warm", "reached"] == 2 and p.loc["warm", "pruned"] == 1
    # retraining: warm ships 0.65 (above scratch's 0.60, 0.625) after 1 of scratch's 1.5 GFLOPs in both repeats
    assert t["retrain"].set_index("policy").loc["warm", "speedup_flops"] == pytest.approx(1.5)


def test_summary_has_the_scenario_policy_and_step_of_each_run(seq):
    root, _, _ = seq
    s = pd.read_parquet(root / "summary.parquet")
    csv = pd.read_csv(root / "summary.csv")
    assert {"scenario", "policy", "step"} <= set(s.columns) and {"scenario", "policy", "step"} <= set(csv.columns)
    runs = s[s["row"] == "run"]
    assert (runs["status"] == "ok").all() and len(runs) == 2 + 2 * 2 * 3 + 2 * 2 * 2
    search = runs[runs["method"] == "search"].set_index(["variant", "seed"])
    # keyed by the repeat (the folder), not by the trial's own training seed (repeat * 1000 + trial)
    assert sorted(set(search.index.get_level_values("seed"))) == REPEATS
    t = search.loc[("warm_t02", 1)]
    assert (t["scenario"], t["policy"], t["step"], t["train_seed"]) == ("search", "warm", 2, 1002)
    assert sorted(runs[runs["method"] == "retrain"]["step"]) == [1] * 4 + [2] * 4
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
    root, t, _ = seq
    for scen, word in (("search", "trial"), ("retrain", "retraining step")):
        page = root / "report" / f"method-{scen}.html"
        text = page.read_text()
        assert f'id="sequence-toy-{scen}"' in text
        # the cumulative-cost chart: one line per policy, mean cost and accuracy over the repeats at each step
        spec = next(v for k, v in chart_specs(page).items() if k.endswith(f"sequence-toy-{scen}-{scen}"))
        data = pd.DataFrame([r for d in spec["datasets"].values() for r in d if "measure" in r])
        assert set(data["policy"]) == {"scratch", "warm"} and set(data["measure"]) == {"flops", "time"}
        steps = t[f"{scen}_steps"]
        for (pol, step), g in steps.groupby(["policy", "step"]):
            row = data[(data["policy"] == pol) & (data["step"] == step) & (data["measure"] == "flops")].iloc[0]
            assert row["cost"] == pytest.approx(g["cum_flops"].mean())
            assert row["acc"] == pytest.approx(g["shipped_test_acc"].mean())
            assert (row["lo"], row["hi"]) == pytest.approx((g["shipped_test_acc"].min(), g["shipped_test_acc"].max()))
        assert set(data.loc[data["kind"].str.startswith("anchor"), "policy"]) == {"scratch"}
        # the policy table: the anchor and the speed-up with its interval
        table = text.split("Policies against the anchor")[1].split("</table>")[0]
        assert ">scratch (anchor)<" in table
        for pol in ("scratch", "warm"):
            w = t[scen].set_index("policy").loc[pol]
            assert f">{w['speedup_flops']:.2f}× [{w['speedup_flops_lo']:.2f}, {w['speedup_flops_hi']:.2f}]<" in table
        assert ">2 of 2<" in table
        # one collapsible step table per policy; the shipped model marked once per repeat
        assert text.count("<details data-policy=") == 2
        for pol in ("scratch", "warm"):
            block = text.split(f'<details data-policy="{pol}">')[1].split("</details>")[0]
            assert block.count("✓") == len(REPEATS) and f"<th>{word}</th>" in block
        # the raw study tables are not dumped below
        assert f"Study table (results/toy/studies/{scen}.csv)" not in text
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
    out = build(copy, None, Options(figures=[], bootstrap=M.Bootstrap(resamples=50)))
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
                                                                for p in ("scratch", "warm")}
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
    assert s.startswith("toy, search of small (3 trials × 2 repeats, 2 policies): warm reached the anchor scratch's")
    w = t["search"].set_index("policy").loc["warm"]
    assert f"{w['speedup_flops']:.2f}× (95% CI [{w['speedup_flops_lo']:.2f}, {w['speedup_flops_hi']:.2f}])" in s
    assert "validation split only" in s
    assert s in page.read_text().replace("&#x27;", "'")


def _policies(**over) -> pd.DataFrame:
    """A per-policy table: anchor a; b cheapest to reach in FLOPs; c reaches it in one repeat only but has
    the highest mean speed-up; d costlier in FLOPs, cheapest in wall-clock."""
    base = {"dataset": "ds", "model": "m", "scenario": "search", "anchor": "a", "repeats": 3, "steps": 12,
            "test_acc_lo": 0.7, "test_acc_hi": 0.8, "total_time_s": 100.0}
    rows = [dict(policy="a", is_anchor=True, test_acc=0.75, total_flops=1e12, reached=3, reach_cum_flops=1e12,
                 reach_cum_time_s=100.0, speedup_flops=1.0, speedup_flops_lo=1.0, speedup_flops_hi=1.0, speedup_time=1.0,
                 speedup_time_lo=1.0, speedup_time_hi=1.0),
            dict(policy="b", is_anchor=False, test_acc=0.76, total_flops=1e12, reached=3, reach_cum_flops=4e11,
                 reach_cum_time_s=50.0, speedup_flops=2.5, speedup_flops_lo=2.1, speedup_flops_hi=2.9, speedup_time=2.0,
                 speedup_time_lo=1.8, speedup_time_hi=2.2),
            dict(policy="c", is_anchor=False, test_acc=0.70, total_flops=1e12, reached=1, reach_cum_flops=math.inf,
                 reach_cum_time_s=math.inf, speedup_flops=3.3, speedup_flops_lo=0.0, speedup_flops_hi=10.0,
                 speedup_time=3.0, speedup_time_lo=0.0, speedup_time_hi=9.0),
            dict(policy="d", is_anchor=False, test_acc=0.75, total_flops=1e12, reached=3, reach_cum_flops=6e11,
                 reach_cum_time_s=40.0, speedup_flops=1.7, speedup_flops_lo=1.5, speedup_flops_hi=1.9, speedup_time=2.5,
                 speedup_time_lo=2.2, speedup_time_hi=2.8)]
    df = pd.DataFrame([{**base, **r} for r in rows])
    for k, v in over.items():
        df[k] = v
    return df


def test_the_sequence_sentence_picks_the_policy_that_reaches_the_anchor_cheapest():
    from reuse.report.tables import sequence_recommendation

    r = sequence_recommendation(_policies()).iloc[0]
    assert (r["best_flops"], r["best_time"]) == ("b", "d")  # not c: it reached the anchor in 1 of 3 repeats only
    s = r["statement"]
    assert s.startswith("ds, search of m (12 trials × 3 repeats, 4 policies): b reached the anchor a's final test "
                        "accuracy (75.00%")
    assert "in 3 of 3 repeats at the lowest cost, 4e+11 FLOPs on average" in s
    assert "2.50× (95% CI [2.10, 2.90]) in FLOPs and 2.00× (95% CI [1.80, 2.20]) in wall-clock" in s
    assert "In wall-clock, d got there first (40 s on average, speed-up 2.50× (95% CI [2.20, 2.80]))." in s
    assert "validation split only" in s
    assert "higher mean speed-up" not in s
    # a narrower confidence level is named as such
    assert "90% CI [2.10, 2.90]" in sequence_recommendation(_policies(), confidence=0.9).iloc[0]["statement"]
    # the lowest mean cost to reach the anchor decides, not the mean of the per-repeat speed-ups (which can rank
    # policies otherwise); the sentence says so
    df = _policies()
    df.loc[df["policy"] == "d", "speedup_flops"] = 2.7
    r = sequence_recommendation(df).iloc[0]
    assert r["best_flops"] == "b"
    assert "d has a higher mean speed-up (2.70× (95% CI [1.50, 1.90]), a mean of per-repeat ratios) but a higher " \
           "mean cost to reach it (6e+11 FLOPs)." in r["statement"]


def test_the_sequence_sentence_when_no_policy_reaches_the_anchor_in_every_repeat():
    from reuse.report.tables import sequence_recommendation

    df = _policies()
    df.loc[df["policy"] != "a", ["reached"]] = [2, 1, 0]
    df.loc[df["policy"] != "a", ["reach_cum_flops", "reach_cum_time_s"]] = math.inf
    r = sequence_recommendation(df).iloc[0]
    assert r["best_flops"] is None and r["best_time"] is None
    assert "no policy other than the anchor reached the anchor a's final test accuracy" in r["statement"]
    assert "the closest, b, reached it in 2 of 3 repeats" in r["statement"]
    none = sequence_recommendation(_policies(anchor=None)).iloc[0]["statement"]
    assert "no anchor policy" in none


@pytest.mark.skipif(shutil.which("chromium") is None and not Path("/usr/bin/chromium").exists(),
                    reason="chromium is not installed: run tools/bootstrap.sh as root")
def test_the_sequence_pages_render_offline(seq, tmp_path):
    from tests.report.test_browser import check_pages

    root, _, _ = seq
    pages = tmp_path / "pages"
    pages.mkdir()
    for name in ("method-search.html", "frontier.html"):
        shutil.copy(root / "report" / name, pages / name)
    out = check_pages(pages, tmp_path / "shots")
    for name, p in out.items():
        assert p["errors"] == [] and p["remote"] == [], (name, p)
        assert all(n > 0 for n in p["marks"].values()), (name, p["marks"])
    assert any(k.startswith("sequence-toy-search") for k in out["method-search.html"]["marks"])
