"""The report on a hand-made results tree (tests/report/conftest.py): the summary table, missing and
failed runs, time-to-accuracy, the frontier, the recommendations, a method the report code has never
heard of, the CLI, and pages that reference nothing on the network."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from reuse.report.collect import AXES
from tests.helpers import ROOT
from tests.report.checks import chart_specs, check_recommendations, check_verdicts


def _agg(summary: pd.DataFrame, label: str) -> dict:
    a = summary[(summary["row"] == "aggregate") & (summary["label"] == label)]
    assert len(a) == 1, label
    return a.iloc[0].to_dict()


def test_summary_has_a_row_per_run_and_per_aggregate(toy):
    root, _, _ = toy
    summary = pd.read_parquet(root / "summary.parquet")
    csv = pd.read_csv(root / "summary.csv")
    assert len(csv) == len(summary)
    runs = summary[summary["row"] == "run"]
    # 4 seeds x (2 models x 3 budgets + 2 kd + 2 prune + warmstart) + solo's one seed
    assert len(runs) == 4 * 11 + 1
    assert set(summary[summary["row"] == "aggregate"]["label"]) == {
        "baseline (small)", "baseline/b0.5 (small)", "baseline/b2 (small)", "baseline (big)", "baseline/b0.5 (big)",
        "baseline/b2 (big)", "kd/T1 (small)", "kd/T4 (small)", "prune/keep50 (big)", "prune/keep70 (big)",
        "warmstart/w (small)", "solo/x (small)"}
    assert sorted(runs.loc[runs["method"] == "baseline", "budget"].unique()) == [0.5, 1.0, 2.0]
    b = _agg(summary, "baseline (small)")
    assert b["n"] == 4 and b["test_acc"] == pytest.approx(0.6125) and b["test_acc_lo"] < 0.6125 < b["test_acc_hi"]
    assert b["cost_time_full_s"] == b["cost_time_marginal_s"] == 10
    # full cost = own + every reused line; marginal = own training only
    kd = runs[(runs["method"] == "kd") & (runs["status"] == "ok")]
    assert (kd["cost_time_marginal_s"] == 11).all() and (kd["cost_time_full_s"] == 11 + 40 + 1).all()
    assert (kd["reused_past_run_n"] == 1).all() and (kd["reused_logit_cache_time_s"] == 1).all()
    assert (kd["cost_flops_full"] == 1.1e9 + 4e9 + 1e8).all()
    # amortised: each reused artifact shared among the finished runs that reuse it. The big baseline of seed
    # s + 1 serves kd/T1 and kd/T4 of seed s (T4/s2 failed: big s3 has one user) and big s0, s1 serve the 7
    # finished prune runs too; the cache "x" serves the 7 finished kd runs
    k = kd.set_index(["variant", "seed"])
    assert k.loc[("T1", 2), "cost_time_amortised_s"] == pytest.approx(11 + 40 / 1 + 1 / 7)
    assert k.loc[("T1", 0), "cost_time_amortised_s"] == pytest.approx(11 + 40 / 9 + 1 / 7)
    assert (kd["cost_time_marginal_s"] < kd["cost_time_amortised_s"]).all()
    assert (kd["cost_time_amortised_s"] <= kd["cost_time_full_s"]).all()

    # NLL and ECE computed from predictions.npz (run.json has neither)
    assert runs.loc[runs["status"] == "ok", ["test_nll", "test_ece"]].notna().all().all()
    # config columns from run.json's config block
    assert set(runs.loc[runs["method"] == "kd", "cfg_temperature"].dropna()) == {1.0, 4.0}


def test_missing_and_failed_runs_are_shown_never_averaged(toy):
    root, _, _ = toy
    summary = pd.read_parquet(root / "summary.parquet")
    runs = summary[summary["row"] == "run"].set_index(["method", "variant", "seed"])
    assert runs.loc[("prune", "keep70", 3), "status"] == "missing"
    failed = runs.loc[("kd", "T4", 2)]
    assert failed["status"] == "failed" and "boom" in failed["error"]
    keep70 = _agg(summary, "prune/keep70 (big)")
    assert keep70["n"] == 3 and keep70["n_expected"] == 4 and keep70["status"] == "partial"
    assert keep70["n_of"] == "n=3 of 4" and keep70["missing_seeds"] == "3 (missing)"
    assert keep70["test_acc"] == pytest.approx((0.825 + 0.8 + 0.8) / 3)  # over the finished seeds only
    t4 = _agg(summary, "kd/T4 (small)")
    assert t4["n_of"] == "n=3 of 4" and t4["paired_seeds"] == "0,1,3"
    pages = root / "report"
    for page in ("index.html", "runs.html", "method-prune.html", "method-kd.html"):
        text = (pages / page).read_text()
        assert "missing" in text and ("boom" in text or page == "method-prune.html"), page
    assert "n=3 of 4" in (pages / "method-prune.html").read_text()


def test_one_seed_has_no_interval(toy):
    root, _, _ = toy
    solo = _agg(pd.read_parquet(root / "summary.parquet"), "solo/x (small)")
    assert solo["n"] == 1 and math.isnan(solo["test_acc_lo"]) and solo["verdict"] == "n=1, no interval"
    assert "n=1, no interval" in (root / "report" / "method-solo.html").read_text()


def test_same_recipe_differences_stay_as_columns(toy):
    root, _, _ = toy
    s = pd.read_parquet(root / "summary.parquet")
    assert _agg(s, "kd/T1 (small)")["same_recipe_verdict"] == "better"
    assert _agg(s, "kd/T1 (small)")["diff_mean"] == pytest.approx(0.1125)
    assert _agg(s, "prune/keep50 (big)")["same_recipe_verdict"] == "worse"
    assert _agg(s, "prune/keep70 (big)")["same_recipe_verdict"] == "no detectable difference"
    assert _agg(s, "warmstart/w (small)")["same_recipe_verdict"] == "better"


def test_the_verdict_is_at_equal_cost_against_the_budget_curve(toy):
    """The small baseline's curve per seed: (5 s, small - 0.1), (10 s, small), (20 s, small + 0.05), linear in
    log cost. warmstart (5 s own, 15 s full) is far above it: better. kd (11 s own) beats the same recipe by
    +11 points but costs 52 s in full, beyond the curve's 20 s: its gain there is only an upper bound, so
    on the full axis it cannot be called better, while on the own-cost axis it is."""
    root, _, _ = toy
    s = pd.read_parquet(root / "summary.parquet")
    w = _agg(s, "warmstart/w (small)")
    # full cost 15 s: the curve at 15 s is small + 0.05 * log(1.5)/log(2); warmstart is small + 0.15
    assert w["gain_at_cost_time_full"] == pytest.approx(0.15 - 0.05 * math.log(1.5) / math.log(2))
    assert w["verdict_time_full"] == w["verdict"] == "better"
    # speed-up at equal accuracy: warmstart's 0.7625 is beyond the curve's top (0.6625 at 20 s): at least 20/15
    assert w["speedup_at_acc_time_full"] == pytest.approx(20 / 15) and w["speedup_at_acc_time_full_bound"] == "lower"
    kd = _agg(s, "kd/T1 (small)")
    assert kd["gain_at_cost_time_full_bound"] == "upper" and kd["verdict_time_full"] == "no detectable difference"
    assert kd["verdict_time_marginal"] == "better"  # 11 s own: inside the curve
    assert kd["gain_at_cost_time_marginal"] == pytest.approx(
        0.1125 - 0.05 * math.log(1.1) / math.log(2), abs=1e-9)
    keep50 = _agg(s, "prune/keep50 (big)")
    assert keep50["verdict_time_marginal"] == "worse"  # 40 s own, below the big baseline at 40 s
    for axis in AXES:
        assert _agg(s, "baseline/b2 (big)")[f"verdict_{axis}"] == "baseline"
    check_verdicts(s[s["row"] == "aggregate"])


def test_verdicts_are_holm_corrected_over_the_datasets_variants(toy):
    root, _, _ = toy
    s = pd.read_parquet(root / "summary.parquet")
    a = s[(s["row"] == "aggregate") & (s["method"] != "baseline")]
    for axis in AXES:
        p = a[f"val_gain_at_cost_{axis}_p"]
        m = int(p.notna().sum())
        assert (a[f"holm_family_{axis}"] == m).all()
        smallest = p.idxmin()
        assert a.loc[smallest, f"val_gain_at_cost_{axis}_p_holm"] == pytest.approx(min(1.0, m * p.min()))
    # kd/T4 on the full-time axis: p < 0.05 uncorrected, not after Holm over the 5 variants with a p-value
    t4 = _agg(s, "kd/T4 (small)")
    assert t4["val_gain_at_cost_time_full_p"] < 0.05 < t4["val_gain_at_cost_time_full_p_holm"]
    assert t4["verdict_time_full"] == "no detectable difference"


def test_time_to_accuracy_and_speed_up(toy):
    root, _, _ = toy
    s = pd.read_parquet(root / "summary.parquet")
    runs = s[(s["row"] == "run") & (s["status"] == "ok")]
    # curves rise linearly from 0.25 to the final accuracy over 4 epochs (10 steps each). Baseline (small)
    # target = its mean final accuracy 0.6125; seed 0 ends at 0.6 and never reaches it (its whole run, 40
    # steps, is a lower bound of its cost to get there); seed 1 (0.625) first reaches it at epoch 4.
    b = runs[(runs["label"] == "baseline (small)")].set_index("seed")
    assert not b.loc[0, "tta_baseline_reached"] and b.loc[0, "tta_baseline_steps"] == 40
    assert b.loc[1, "tta_baseline_reached"] and b.loc[1, "tta_baseline_steps"] == 40
    assert b.loc[1, "tta_baseline_time_s"] == 10
    # warmstart seed 1 ends at 0.775: 0.25 + 0.525 e/4 >= 0.6125 from epoch 3 (0.64375) -> 30 steps, 3.75 s
    w = runs[runs["label"] == "warmstart/w (small)"].set_index("seed")
    assert w.loc[1, "tta_baseline_steps"] == 30 and w.loc[1, "tta_baseline_time_s"] == pytest.approx(3.75)
    assert w.loc[1, "tta_baseline_time_s_full"] == pytest.approx(13.75)  # + the reused past run
    agg = _agg(s, "warmstart/w (small)")
    # every seed counts: seeds 1, 3 (both reach it): 40/30; seeds 0, 2 (the baseline never does): at least
    # 40/30 too, censored. Geometric mean 4/3, a lower bound.
    assert agg["speedup_baseline_steps"] == pytest.approx(40 / 30) and agg["speedup_baseline_steps_n"] == 4
    assert agg["speedup_baseline_steps_censored"] == 2 and agg["speedup_baseline_steps_bound"] == "lower"
    assert agg["speedup_baseline_time_s"] == pytest.approx(10 / 3.75)
    # the configured absolute target 0.5
    assert agg["tta_0.5_reached"] == 4 and "speedup_0.5_steps" in agg


def test_a_seed_that_never_reaches_the_target_is_censored_not_dropped():
    from reuse.report.tables import tta_speedup

    base = pd.DataFrame({"seed": [0, 1, 2], "tta_t_reached": [True, True, True], "tta_t_steps": [100, 100, 100]}
                        ).set_index("seed")
    ok = pd.DataFrame({"seed": [0, 1, 2], "tta_t_reached": [True, True, False], "tta_t_steps": [50, 50, 80]})
    sp = tta_speedup(ok, base, "t", "steps", 0.95)
    assert sp["n"] == 3 and sp["n_censored"] == 1 and sp["bound"] == "upper"  # at most 100/80 for seed 2
    assert sp["mean"] == pytest.approx((2 * 2 * 1.25) ** (1 / 3))


def test_frontier_and_roles(toy):
    root, _, _ = toy
    s = pd.read_parquet(root / "summary.parquet")
    a = s[s["row"] == "aggregate"].set_index("label")
    # Pareto on validation accuracy; full time: solo 3 s (0.505), small b0.5 5 s, small 10 s, warmstart 15 s
    # (0.7625), big 40 s, big b2 80 s
    on = set(a.index[a["frontier_time_full"]])
    assert on == {"solo/x (small)", "baseline/b0.5 (small)", "baseline (small)", "warmstart/w (small)",
                  "baseline (big)", "baseline/b2 (big)"}
    assert a.loc["warmstart/w (small)", "role_time_full"] == "selected"
    assert a.loc["baseline (big)", "role_time_full"] == "baseline"
    # roles follow the verdict at equal cost, not the Pareto flag
    assert a.loc["kd/T1 (small)", "role_time_full"] == "not better at equal cost"
    assert a.loc["kd/T1 (small)", "role_time_marginal"] in ("better at equal cost", "selected")


def test_recommendations_agree_with_the_summary_table(toy):
    root, _, _ = toy
    recs = check_recommendations(root)
    full = [r for r in recs if r["axis"] == "time_full"]
    assert [(r["budget_lo"], r["recommended"]) for r in full] == [
        (3.0, None), (5.0, "baseline/b0.5 (small)"), (10.0, "baseline (small)"), (15.0, "warmstart/w (small)"),
        (40.0, "baseline (big)"), (80.0, "baseline/b2 (big)")]
    assert [r["no_method_beats_baseline"] for r in full] == [True, True, True, False, True, True]
    # below the cheapest baseline nothing is recommended, and the sentence says why (no "nan")
    assert full[0]["statement"].startswith("from 3 s up to 5 s: no baseline fits this budget")
    assert "solo/x (small)" in full[0]["statement"] and "nan" not in full[0]["statement"]
    assert full[3]["statement"].startswith("from 15 s up to 40 s: use warmstart/w (small) (chosen on validation)")
    assert "Holm-adjusted" in full[3]["statement"] and "at equal cost" in full[3]["statement"]
    assert "no method beats the baseline at equal cost; use baseline (big)" in full[4]["statement"]
    assert (root / "report" / "recommendations.csv").exists()


def test_choices_read_validation_only(toy, tmp_path):
    """The test labels of every run permuted (its test accuracies and curves change): every verdict,
    role, Pareto flag and recommendation stays the same; only the reported test numbers move."""
    import json

    import numpy as np

    from reuse.report import build

    root, cfg, _ = toy
    copy = tmp_path / "results"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("report", "summary.*"))
    rng = np.random.default_rng(0)
    for run_json in copy.rglob("run.json"):
        d = run_json.parent
        with np.load(d / "predictions.npz") as p:
            logits, target = p["logits"], rng.permutation(p["target"])
        np.savez(d / "predictions.npz", idx=np.arange(len(target)), target=target, logits=logits)
        r = json.loads(run_json.read_text())
        r["final"]["test_acc"] = float((logits.argmax(1) == target).mean())
        run_json.write_text(json.dumps(r))
        rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        for m in rows:
            m["test_acc"] = float(rng.uniform(0, 1))
        (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in rows))
    out = build(copy, {**cfg, "results": str(copy)})
    before = pd.read_parquet(root / "summary.parquet")
    after = out["summary"]
    assert not np.allclose(before["test_acc"].fillna(0), after["test_acc"].fillna(0))
    cols = ["label", "verdict"] + [f"{k}_{a}" for a in AXES for k in ("verdict", "role", "frontier")] + \
        [f"val_gain_at_cost_{a}_p_holm" for a in AXES]
    pd.testing.assert_frame_equal(before.loc[before["row"] == "aggregate", cols].reset_index(drop=True),
                                  after.loc[after["row"] == "aggregate", cols].reset_index(drop=True))
    for axis, rec in out["recommendations"].items():
        was = pd.read_csv(root / "report" / "recommendations.csv")
        was = was[was["axis"] == axis]
        assert list(was["recommended"].fillna("")) == list(rec["recommended"].fillna("")), axis


def test_without_validation_nothing_is_chosen(toy, tmp_path):
    """A results folder whose runs hold no validation accuracy: no verdict at equal cost, no
    recommendation, and the page says why (nothing is chosen on test)."""
    import json

    from reuse.report import build

    root, cfg, _ = toy
    copy = tmp_path / "results"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("report", "summary.*"))
    for run_json in copy.rglob("run.json"):
        r = json.loads(run_json.read_text())
        r["final"].pop("val_acc")
        run_json.write_text(json.dumps(r))
    out = build(copy, {**cfg, "results": str(copy)})
    a = out["aggregates"]
    assert set(a.loc[a["method"] != "baseline", "verdict"]) <= {"no validation split", "n=1, no interval"}
    rec = out["recommendations"]["time_full"]
    assert rec["recommended"].isna().all()
    assert "no validation split" in (copy / "report" / "recommendations.html").read_text()


def test_a_new_method_appears_without_touching_the_report_code(toy):
    """warmstart is in no list of methods (nor the config): its runs alone put it on the frontier,
    in the nav, on its own page and in the recommendations."""
    root, _, _ = toy
    pages = root / "report"
    specs = chart_specs(pages / "frontier.html")
    data = [row for spec in specs.values() for ds in spec.get("datasets", {}).values() for row in ds]
    assert any(r.get("method") == "warmstart" and r.get("on_frontier") for r in data)
    assert (pages / "method-warmstart.html").exists()
    assert 'href="method-warmstart.html"' in (pages / "index.html").read_text()
    assert "warmstart/w (small)" in (pages / "recommendations.html").read_text()


def test_sweeps_come_from_the_config_block(toy):
    root, _, _ = toy
    kd = chart_specs(root / "report" / "method-kd.html")
    assert any("sweep" in k and "temperature" in k for k in kd)  # T1, T4
    prune = chart_specs(root / "report" / "method-prune.html")
    assert any("sweep" in k and "keep" in k for k in prune)
    assert "results/toy/studies/prune.csv" in (root / "report" / "method-prune.html").read_text()
    assert 'href="scores-toy.html"' in (root / "report" / "method-prune.html").read_text()


def test_switches_are_not_sweeps_and_absent_settings_are_not_named():
    from reuse.report.build import _Context
    from reuse.report.charts import sweep_chart

    own = pd.DataFrame({"n": [5] * 4, "cfg_keep": [0.5, 0.7, 0.5, 0.7], "cfg_class_balanced": [False, False, True, True],
                        "cfg_score": ["el2n", "el2n", None, None], "test_acc": [0.8, 0.9, 0.7, 0.8],
                        "test_acc_lo": 0.6, "test_acc_hi": 0.95, "label": list("abcd"), "model": "m",
                        "n_of": "n=5", "verdict": "better"})
    assert [k for k, _ in _Context.sweeps(None, own)] == ["cfg_keep"]
    groups = {g for d in sweep_chart(own, "cfg_keep", ["cfg_class_balanced", "cfg_score"]).to_dict()["datasets"].values()
              for g in (r["group"] for r in d)}
    assert groups == {"class_balanced=False score=el2n", "class_balanced=True"}


def test_pages_are_self_contained(toy):
    root, _, out = toy
    pages = sorted((root / "report").glob("*.html"))
    names = {p.name for p in pages}
    assert {"index.html", "frontier.html", "recommendations.html", "runs.html", "method-baseline.html",
            "method-kd.html", "method-prune.html", "method-warmstart.html", "method-solo.html",
            "scores-toy.html"} <= names
    for p in pages:
        text = p.read_text()
        assert not re.search(r"<script[^>]+src=", text), p  # every script inline
        assert not re.search(r"<link[^>]+href=[\"']https?:", text), p
        assert not re.search(r"import\s*\(?\s*[\"']https?:", text), p
    for axis in AXES:
        assert (root / "report" / "figures" / f"frontier_toy_{axis}.svg").exists()
    assert (root / "report" / "figures" / "curves_toy_warmstart.svg").read_text().startswith("<svg")


def test_expected_outputs_are_what_build_writes(toy):
    from reuse.report import expected_outputs

    root, cfg, out = toy
    exp = expected_outputs(cfg)
    files = exp["summary"] + exp["pages"] + exp["tables"] + [f for v in exp["figures"].values() for f in v]
    assert all((root / f).exists() for f in files), [f for f in files if not (root / f).exists()]


def test_cli_builds_the_report_after_a_failed_run(toy, tmp_path):
    """`python -m reuse report --config`: what snakemake --keep-going leaves unbuilt, from what exists."""
    root, cfg, _ = toy
    copy = tmp_path / "results"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("report", "summary.*"))
    shutil.rmtree(copy / "toy" / "small" / "kd" / "T1" / "s0")
    conf = tmp_path / "config.yaml"
    conf.write_text(yaml.safe_dump({**cfg, "results": str(copy)}))
    r = subprocess.run([sys.executable, "-m", "reuse", "report", "--results", str(copy), "--config", str(conf)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "42 of 45 runs finished; 3 shown as missing" in r.stdout, r.stdout
    s = pd.read_parquet(copy / "summary.parquet")
    t1 = s[(s["row"] == "aggregate") & (s["label"] == "kd/T1 (small)")].iloc[0]
    assert t1["n_of"] == "n=3 of 4" and t1["missing_seeds"] == "0 (missing)"
    assert "kd/T1 (small)" in (copy / "report" / "index.html").read_text()
    check_recommendations(copy)


def test_without_a_config_only_what_exists_is_known(toy, tmp_path):
    from reuse.report import Options, build

    root, _, _ = toy
    out = build(root, None, Options(figures=[]), out_dir=tmp_path / "pages")
    runs = out["runs"]
    assert set(runs["status"]) == {"ok", "failed"}  # the failed folder is found; seed 3 of keep70 is unknown
    assert len(runs) == 4 * 11 + 1 - 1  # all but the missing seed 3 of keep70
    assert (tmp_path / "pages" / "index.html").exists()


def test_frontier_labels_do_not_overlap():
    """Eight labelled points on top of each other get eight distinct label rows; points not better at equal
    cost get none."""
    import numpy as np

    from reuse.report.charts import place_labels

    n = 8
    data = pd.DataFrame({"axis": "time_full", "cost": [100.0 + i for i in range(n)] + [50.0],
                         "cost_lo": np.nan, "cost_hi": np.nan, "acc": [0.9] * n + [0.5],
                         "acc_lo": np.nan, "acc_hi": np.nan, "label": [f"method/variant_{i} (model)" for i in range(n)]
                         + ["x"], "role": ["better at equal cost"] * n + ["not better at equal cost"]})
    y = place_labels(data, width=600, height=400)
    assert y.iloc[:n].notna().all() and math.isnan(y.iloc[n])
    px = sorted((y.iloc[:n] - 0.5) / 0.4 * 400)  # accuracy span 0.5..0.9 over 400 px
    assert min(b - a for a, b in zip(px, px[1:])) >= 12 - 1e-6  # one text line apart at least


def test_robust_accuracy_from_robust_json_is_aggregated_and_charted(toy):
    """robust.json beside run.json (any method) gives a robust_acc column with intervals, a table
    column and a chart on the method's page; runs without it stay NaN, not 0."""
    root, _, _ = toy
    s = pd.read_parquet(root / "summary.parquet")
    w = _agg(s, "warmstart/w (small)")
    assert w["robust_acc"] == pytest.approx(0.3 + 0.01 * 1.5) and w["robust_acc_lo"] < w["robust_acc"] < w["robust_acc_hi"]
    assert _agg(s, "baseline (small)")["robust_acc"] == pytest.approx(0.115)
    assert math.isnan(_agg(s, "baseline (big)")["robust_acc"])
    page = root / "report" / "method-warmstart.html"
    assert any(k.endswith("robust-toy-warmstart") for k in chart_specs(page))
    assert "robust accuracy (95% CI)" in page.read_text()
    assert not any("robust" in k for k in chart_specs(root / "report" / "method-kd.html"))


def test_a_shared_study_table_shows_on_each_method_it_names(toy):
    """studies/shared.csv has a `method` column: the warmstart page shows its warmstart and baseline rows;
    a method it does not name (kd) does not show it."""
    root, _, _ = toy
    page = (root / "report" / "method-warmstart.html").read_text()
    assert "results/toy/studies/shared.csv" in page
    table = page.split("results/toy/studies/shared.csv")[1].split("</table>")[0]
    assert ">warmstart<" in table and ">baseline<" in table and ">other<" not in table
    assert "studies/shared.csv" not in (root / "report" / "method-kd.html").read_text()


def test_a_method_off_the_frontier_is_never_on_it_nor_recommended():
    """interleave's task-aware accuracies (Method.on_frontier false) sit beside, not on, the frontier."""
    from reuse.report.collect import AXES
    from reuse.report.tables import OTHER_QUESTION, add_frontiers, add_roles, off_frontier

    rows = [("baseline", 0.80, 10.0), ("interleave", 0.95, 5.0), ("kd", 0.85, 20.0)]
    aggs = pd.DataFrame([{"dataset": "d", "n": 5, "method": m, "variant": "", "label": m, "scenario": None,
                          "test_acc": acc, "val_acc": acc, **{f"verdict_{a}": "better" for a in AXES},
                          **{col: cost for col, _ in AXES.values()}} for m, acc, cost in rows])
    assert off_frontier(aggs).tolist() == [False, True, False]
    out = add_frontiers(aggs)
    for axis in AXES:
        assert out[f"frontier_{axis}"].tolist() == [True, False, True]
    # its role says why it is beside the frontier, not that a cheaper, better run dominates it
    roles = add_roles(out, {})
    for axis in AXES:
        assert roles[f"role_{axis}"].tolist() == ["baseline", OTHER_QUESTION, "better at equal cost"]
