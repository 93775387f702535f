"""Checks of a built report against its summary table, shared by the report tests and the workflow's
end-to-end test. They recompute what the pages claim from results/summary.parquet alone."""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path

import pandas as pd

from reuse.report.collect import AXES


def embedded_json(page: Path, ident: str):
    m = re.search(rf'<script type="application/json" id="{ident}">(.*?)</script>', page.read_text(), re.S)
    assert m, f"{page} has no JSON block {ident}"
    return json.loads(m.group(1).replace("<\\/", "</"))


def chart_specs(page: Path) -> dict:
    m = re.search(r"const SPECS = (\{.*?\});\n", page.read_text(), re.S)
    return json.loads(m.group(1).replace("<\\/", "</")) if m else {}


def check_verdicts(aggs: pd.DataFrame) -> None:
    """Each aggregate's same-recipe verdict is what its interval of the paired difference says; its
    verdict at equal cost on every axis is what the Holm-adjusted validation gain says (a gain that is a
    bound supports only its direction); ``verdict`` is one of them; every interval holds its mean."""
    for r in aggs.to_dict("records"):
        v = r["same_recipe_verdict"]
        if v == "better":
            assert r["diff_lo"] > 0, r
        elif v == "worse":
            assert r["diff_hi"] < 0, r
        elif v == "no detectable difference":
            assert r["diff_lo"] <= 0 <= r["diff_hi"], r
        elif v == "n=1, no interval":
            assert r["n_pairs"] == 1 and math.isnan(r["diff_lo"]), r
        for axis in AXES:
            v, p = r[f"verdict_{axis}"], r[f"val_gain_at_cost_{axis}_p_holm"]
            gain, bound = r[f"val_gain_at_cost_{axis}"], r[f"val_gain_at_cost_{axis}_bound"]
            if v == "better":
                assert p < 0.05 and gain > 0 and bound != "upper", (axis, r)
            elif v == "worse":
                assert p < 0.05 and gain < 0 and bound != "lower", (axis, r)
            elif v == "no detectable difference":
                assert not (p < 0.05) or (gain > 0 and bound == "upper") or (gain < 0 and bound == "lower"), (axis, r)
            if isinstance(p, float) and not math.isnan(p):
                assert p >= r[f"val_gain_at_cost_{axis}_p"] - 1e-12  # Holm only raises p-values
        assert r["verdict"] in {r[f"verdict_{a}"] for a in AXES}, r
        if r["n"] < 2:
            assert math.isnan(r["test_acc_lo"]) and math.isnan(r["test_acc_hi"]), r
        else:
            assert r["test_acc_lo"] <= r["test_acc"] <= r["test_acc_hi"], r


def check_recommendations(results: Path) -> list[dict]:
    """The recommendations page agrees with summary.parquet: for every budget range, the recommended
    aggregate is the highest-VALIDATION-accuracy one among the affordable baselines (every budget) and the
    methods better at equal cost on that axis,
    "no method beats the baseline" exactly when that is a baseline (or nothing), the ranges tile the
    cost axis from the cheapest aggregate, and each statement is printed on the page. The steps of a
    sequence (aggregates with a ``scenario``: a search trial, a retraining step) are no candidates."""
    summary = pd.read_parquet(results / "summary.parquet")
    aggs = summary[summary["row"] == "aggregate"]
    check_verdicts(aggs)
    if "scenario" in aggs:
        steps = aggs[aggs["scenario"].notna()]
        assert (steps["role_time_full"].isin(["sequence step", "missing"])).all(), steps["role_time_full"]
        assert not steps[[f"frontier_{a}" for a in AXES]].any().any()
        aggs = aggs[aggs["scenario"].isna()]
    page = results / "report" / "recommendations.html"
    recs = embedded_json(page, "recommendations")
    text = page.read_text()
    seen = set()
    for r in recs:
        col = AXES[r["axis"]][0]
        g = aggs[(aggs["dataset"] == r["dataset"]) & (aggs["n"] > 0) & aggs[col].notna()]
        afford = g[g[col] <= r["budget_lo"] * (1 + 1e-12)]
        eligible = afford[(afford["method"] == "baseline") | (afford[f"verdict_{r['axis']}"] == "better")]
        if eligible.empty:
            assert r["recommended"] is None and r["no_method_beats_baseline"], r
        else:
            best = eligible["val_acc"].max()
            chosen = eligible[eligible["label"] == r["recommended"]]
            assert len(chosen) == 1 and chosen["val_acc"].iloc[0] == best, (r, eligible[["label", "val_acc"]])
            assert r["no_method_beats_baseline"] == (chosen["method"].iloc[0] == "baseline"), r
            assert math.isclose(r["recommended_acc"], chosen["test_acc"].iloc[0])  # reported, not chosen on
        assert r["highest_val_acc"] == afford["val_acc"].max()
        assert html.escape(r["statement"]) in text, r["statement"]
        seen.add((r["dataset"], r["axis"]))
    for ds, axis in seen:
        rows = [r for r in recs if r["dataset"] == ds and r["axis"] == axis]
        col = AXES[axis][0]
        g = aggs[(aggs["dataset"] == ds) & (aggs["n"] > 0) & aggs[col].notna()]
        assert math.isclose(rows[0]["budget_lo"], g[col].min())
        for a, b in zip(rows, rows[1:]):
            assert a["budget_hi"] == b["budget_lo"]
        assert rows[-1]["budget_hi"] is None  # open-ended (infinity)
    return recs
