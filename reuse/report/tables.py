"""From collected runs to the benchmark's verdict: per-run derived columns, per-method aggregates
over seeds with bootstrap intervals, paired comparisons with the baseline, time-to-accuracy and
speed-ups, the Pareto frontier on each cost axis and the budget recommendations.

"The baseline" of a run is the baseline run of the same dataset and model (the model the run
trains) with the same seed; aggregates are over the runs that finished, and say how many of how many.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterable

import numpy as np
import pandas as pd

from reuse import metrics as M
from reuse.report.collect import AXES, GROUP, KEY, SEQUENCE, Collected

BASELINE = "baseline"
# The role of an aggregate that is one step of a sequence (a tuning trial, a retraining step): not a
# method one picks on its own (its cost leaves out the steps before it, and picking a trial by its test
# accuracy would choose on the test split), so it is left out of the frontier and the recommendations;
# the whole sequences are placed there instead (:func:`sequence_points`).
SEQUENCE_STEP = "sequence step"
# The role of an aggregate of a method whose test accuracy answers another question than the dataset's
# whole task (``Method.on_frontier`` false: task-aware accuracies of class groups, a target task's):
# not comparable with the baselines, so on no frontier and in no recommendation.
OTHER_QUESTION = "another question"
# Metrics aggregated over seeds with mean, std and a bootstrap interval.
STAT_COLS = ["test_acc", "best_test_acc", "test_nll", "test_ece", "robust_acc", "cost_time_full_s", "cost_time_marginal_s",
             "cost_flops_full", "cost_flops_marginal", "steps", "examples_seen", "train_time_s", "train_flops",
             "eval_time_s", "reused_time_s", "reused_flops"]


def label_of(row: Any) -> str:
    """A short name of an aggregate: ``<method>/<variant> (<model>)``, ``baseline (cnn1d)``."""
    g = row if isinstance(row, dict) else row._asdict() if hasattr(row, "_asdict") else dict(row)
    v = g.get("variant") or ""
    return f"{g['method']}{'/' + v if v else ''} ({g['model']})"


def target_name(t: float | str) -> str:
    return t if isinstance(t, str) else f"{t:g}"


# ----------------------------------------------------------------------------- per run
def add_run_columns(col: Collected, targets: Iterable[float] = ()) -> pd.DataFrame:
    """The run table with each run's baseline accuracy (same dataset, model, seed), its difference
    from it, and time-to-accuracy for the baseline's mean final accuracy and each fixed target."""
    runs = col.runs.copy()
    ok = runs["status"] == "ok"
    base = runs[ok & (runs["method"] == BASELINE)].set_index(["dataset", "model", "seed"])["test_acc"]
    idx = list(zip(runs["dataset"], runs["model"], runs["seed"]))
    runs["baseline_test_acc"] = [base.get(i, np.nan) if ok_ else np.nan for i, ok_ in zip(idx, ok)]
    runs["diff_vs_baseline"] = pd.to_numeric(runs.get("test_acc"), errors="coerce") - runs["baseline_test_acc"]
    base_mean = runs[ok & (runs["method"] == BASELINE)].groupby(["dataset", "model"])["test_acc"].mean()
    curves = {k: g.sort_values("epoch").to_dict("records") for k, g in col.curves.groupby(KEY)} \
        if not col.curves.empty else {}
    tnames = [BASELINE] + [target_name(t) for t in targets]
    new: dict[str, list] = {}
    for r in runs.itertuples(index=False):
        key = tuple(getattr(r, k) for k in KEY)
        curve = curves.get(key, [])
        tvals = [base_mean.get((r.dataset, r.model), np.nan)] + list(targets)
        for name, t in zip(tnames, tvals):
            hit = M.time_to_accuracy(curve, t) if curve and not math.isnan(t) else None
            reused_t = getattr(r, "reused_time_s", 0.0) or 0.0
            reused_f = getattr(r, "reused_flops", 0.0) or 0.0
            vals = {"target": t, "steps": np.nan, "flops": np.nan, "time_s": np.nan, "flops_full": np.nan,
                    "time_s_full": np.nan}
            if hit:
                vals.update(steps=hit["steps"], flops=hit["flops"], time_s=hit["time_s"],
                            flops_full=hit["flops"] + _nz(reused_f), time_s_full=hit["time_s"] + _nz(reused_t))
            for what, v in vals.items():
                new.setdefault(f"tta_{name}_{what}", []).append(v)
    for c, v in new.items():
        runs[c] = v
    return runs


def _nz(v) -> float:
    return 0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


# ----------------------------------------------------------------------------- aggregates
def aggregate(runs: pd.DataFrame, boot: M.Bootstrap, targets: Iterable[float] = ()) -> pd.DataFrame:
    """One row per (dataset, model, method, variant): counts, seed statistics, the paired comparison
    with the baseline, time-to-accuracy and speed-ups."""
    tnames = [BASELINE] + [target_name(t) for t in targets]
    stat_cols = [c for c in STAT_COLS if c in runs.columns]
    cfg_cols = [c for c in runs.columns if c.startswith("cfg_")]
    ok_all = runs[runs["status"] == "ok"]
    base_by = {k: g.set_index("seed") for k, g in ok_all[ok_all["method"] == BASELINE].groupby(["dataset", "model"])}
    rows = []
    for key, g in runs.groupby(GROUP, sort=True, dropna=False):
        ok = g[g["status"] == "ok"]
        row: dict[str, Any] = dict(zip(GROUP, key))
        row["label"] = label_of(row)
        row["n"], row["n_expected"] = len(ok), len(g)
        row["status"] = "complete" if len(ok) == len(g) else ("missing" if ok.empty else "partial")
        row["seeds"] = ",".join(map(str, sorted(ok["seed"])))
        row["missing_seeds"] = ",".join(f"{s} ({st})" for s, st in sorted(zip(g.loc[g["status"] != "ok", "seed"],
                                                                              g.loc[g["status"] != "ok", "status"])))
        row["n_of"] = f"n={len(ok)}" + ("" if len(ok) == len(g) else f" of {len(g)}")
        x = ok[stat_cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64) if stat_cols else None
        if x is not None and len(ok):
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (e.g. no robust.json): NaN
                mean = np.nanmean(x, axis=0)
                std = np.nanstd(x, axis=0, ddof=1) if len(ok) > 1 else np.full(len(stat_cols), np.nan)
            lo, hi = M.bootstrap_ci(x, boot) if len(ok) > 1 else (np.full(len(stat_cols), np.nan),) * 2
        else:
            mean = std = lo = hi = np.full(len(stat_cols), np.nan)
        for i, c in enumerate(stat_cols):
            row[c], row[f"{c}_std"], row[f"{c}_lo"], row[f"{c}_hi"] = mean[i], std[i], lo[i], hi[i]
        for c in cfg_cols + [c for c in SEQUENCE if c in g]:
            vals = g[c].dropna()
            row[c] = vals.iloc[0] if len(vals) else None
        for c in [c for c in runs.columns if c.startswith("reused_") and c.endswith(("_n", "_time_s", "_flops"))
                  and c not in stat_cols]:
            row[c] = pd.to_numeric(ok[c], errors="coerce").mean() if len(ok) else np.nan
        base = base_by.get((row["dataset"], row["model"]))
        if row["method"] == BASELINE:
            row.update(n_pairs=len(ok), paired_seeds=row["seeds"], diff_mean=0.0, diff_std=np.nan, diff_lo=np.nan,
                       diff_hi=np.nan, verdict=BASELINE)
        else:
            acc = dict(zip(ok["seed"], pd.to_numeric(ok["test_acc"], errors="coerce"))) if len(ok) else {}
            pc = M.paired_comparison(acc, {} if base is None else dict(base["test_acc"]), boot)
            row.update(n_pairs=pc["n_pairs"], paired_seeds=",".join(map(str, pc["seeds"])), diff_mean=pc["diff_mean"],
                       diff_std=pc["diff_std"], diff_lo=pc["diff_lo"], diff_hi=pc["diff_hi"], verdict=pc["verdict"])
        for name in tnames:
            tcol = f"tta_{name}_steps"
            if tcol not in ok.columns:
                continue
            reached = ok[ok[tcol].notna()]
            row[f"tta_{name}_target"] = pd.to_numeric(g[f"tta_{name}_target"], errors="coerce").mean()
            row[f"tta_{name}_reached"] = len(reached)
            for what in ("steps", "flops", "time_s", "flops_full", "time_s_full"):
                c = f"tta_{name}_{what}"
                row[c] = pd.to_numeric(reached[c], errors="coerce").mean() if len(reached) else np.nan
            # speed-up = baseline's cost to reach the target / this run's (same seeds; both must reach it)
            for what, mine in (("steps", "steps"), ("flops", "flops"), ("time_s", "time_s"),
                               ("flops_full", "flops_full"), ("time_s_full", "time_s_full")):
                base_what = what.replace("_full", "")
                b = {} if base is None or f"tta_{name}_{base_what}" not in base else \
                    dict(base[f"tta_{name}_{base_what}"].dropna())
                m = dict(zip(reached["seed"], pd.to_numeric(reached[f"tta_{name}_{mine}"], errors="coerce")))
                r = M.ratio_ci(b, m, boot)
                c = f"speedup_{name}_{what}"
                row[c], row[f"{c}_lo"], row[f"{c}_hi"], row[f"{c}_n"] = r["ratio"], r["lo"], r["hi"], r["n"]
        rows.append(row)
    aggs = pd.DataFrame(rows)
    return add_frontiers(aggs)


def is_sequence_step(df: pd.DataFrame) -> pd.Series:
    """Rows (runs or aggregates) that are one step of a sequence: those with a ``scenario``."""
    if "scenario" not in df:
        return pd.Series(False, index=df.index)
    return df["scenario"].map(lambda v: not _absent(v) and v != "")


def off_frontier(df: pd.DataFrame) -> pd.Series:
    """Rows whose test accuracy is not one of the dataset's whole task: a step of a sequence, or a run of
    a method whose runs answer another question (``Method.on_frontier`` false: interleaving's
    task-aware accuracies). They are on no frontier, in no recommendation and not on the frontier chart."""
    from reuse.methods import registry

    out = is_sequence_step(df)
    other = {m.name for m in registry.methods() if not m.on_frontier}
    if other and "method" in df:
        out = out | df["method"].isin(other)
    return out


def add_frontiers(aggs: pd.DataFrame) -> pd.DataFrame:
    """``frontier_<axis>``: whether the aggregate is Pareto-optimal (mean cost vs mean accuracy)
    among all finished aggregates of its dataset, for each cost axis. Sequence steps (and the other
    rows of :func:`off_frontier`) are never on it."""
    aggs = aggs.copy()
    for axis, (col, _) in AXES.items():
        aggs[f"frontier_{axis}"] = False
        if col not in aggs.columns:
            continue
        for _, g in aggs[(aggs["n"] > 0) & ~off_frontier(aggs)].groupby("dataset"):
            on = M.pareto_front(g[col].to_numpy(dtype=np.float64), g["test_acc"].to_numpy(dtype=np.float64))
            aggs.loc[g.index, f"frontier_{axis}"] = on
    return aggs


# ----------------------------------------------------------------------------- recommendations
def recommend(aggs: pd.DataFrame, axis: str) -> pd.DataFrame:
    """Which aggregate to use at each budget on ``axis``, from the measured table only.

    For a budget ``c``, the affordable aggregates are those (with at least one finished run) whose
    mean cost is at most ``c``. The eligible ones are the affordable baselines and the affordable
    methods whose paired interval says ``better`` than their own baseline. The recommendation is the
    eligible aggregate with the highest mean accuracy; if that is a baseline, no method beats the
    baseline at that budget. Budgets step at every aggregate's mean cost; consecutive budgets with
    the same answer are merged into one range ``[budget_lo, budget_hi)``. Sequence steps are not
    candidates (see :data:`SEQUENCE_STEP`; :func:`sequence_recommendation` speaks for the sequences).
    """
    col = AXES[axis][0]
    out = []
    for ds, g in aggs[(aggs["n"] > 0) & ~off_frontier(aggs)].groupby("dataset", sort=True):
        g = g[g[col].notna() & g["test_acc"].notna()]
        levels = sorted(set(g[col]))
        prev = None
        for i, c in enumerate(levels):
            afford = g[g[col] <= c]
            eligible = afford[(afford["method"] == BASELINE) | (afford["verdict"] == M.BETTER)]
            best_any = afford.loc[afford["test_acc"].idxmax()]
            rec = eligible.loc[eligible["test_acc"].idxmax()] if len(eligible) else None
            base = afford[afford["method"] == BASELINE]
            best_base = base.loc[base["test_acc"].idxmax()] if len(base) else None
            key = (None if rec is None else rec["label"], best_any["label"])
            hi = levels[i + 1] if i + 1 < len(levels) else math.inf
            if prev is not None and prev["_key"] == key:
                prev["budget_hi"] = hi
                continue
            prev = {"_key": key, "dataset": ds, "axis": axis, "cost_column": col, "budget_lo": c, "budget_hi": hi,
                    "recommended": None if rec is None else rec["label"],
                    "recommended_method": None if rec is None else rec["method"],
                    "recommended_acc": np.nan if rec is None else rec["test_acc"],
                    "recommended_acc_lo": np.nan if rec is None else rec["test_acc_lo"],
                    "recommended_acc_hi": np.nan if rec is None else rec["test_acc_hi"],
                    "recommended_n_of": None if rec is None else rec["n_of"],
                    "recommended_cost": np.nan if rec is None else rec[col],
                    "verdict": None if rec is None else rec["verdict"],
                    "diff_mean": np.nan if rec is None else rec["diff_mean"],
                    "diff_lo": np.nan if rec is None else rec["diff_lo"],
                    "diff_hi": np.nan if rec is None else rec["diff_hi"],
                    "no_method_beats_baseline": rec is None or rec["method"] == BASELINE,
                    "highest_mean": best_any["label"], "highest_mean_acc": best_any["test_acc"],
                    "highest_mean_verdict": best_any["verdict"],
                    "best_baseline": None if best_base is None else best_base["label"],
                    "best_baseline_acc": np.nan if best_base is None else best_base["test_acc"]}
            out.append(prev)
    df = pd.DataFrame(out).drop(columns=["_key"], errors="ignore")
    if not df.empty:
        df["statement"] = [statement(r) for r in df.to_dict("records")]
    return df


def fmt_acc(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}%"


def fmt_ci(lo: float, hi: float, pct: bool = True, signed: bool = False) -> str:
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return "no interval"
    f = (lambda v: f"{100 * v:+.2f}" if signed else f"{100 * v:.2f}") if pct else (lambda v: f"{v:.3g}")
    return f"[{f(lo)}, {f(hi)}]" + ("%" if pct else "")


def fmt_cost(v: float, axis: str) -> str:
    if v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v))):
        return "∞" if v == math.inf else "n/a"
    return f"{v:.3g} s" if axis.startswith("time") else f"{v:.3g} FLOPs"


def _absent(v: Any) -> bool:
    """None, or the NaN a pandas round trip turns None into."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def statement(r: dict) -> str:
    """The sentence the recommendations page prints for one budget range."""
    axis = r["axis"]
    rng = f"from {fmt_cost(r['budget_lo'], axis)}" + (
        f" up to {fmt_cost(r['budget_hi'], axis)}" if not math.isinf(r["budget_hi"]) else " upwards")
    if _absent(r["recommended"]):
        return (f"{rng}: no baseline fits this budget and no method within it is shown better than its "
                f"baseline: the highest mean is "
                f"{r['highest_mean']} ({fmt_acc(r['highest_mean_acc'])}), whose comparison with its baseline says "
                f"'{r['highest_mean_verdict']}'.")
    if r["no_method_beats_baseline"]:
        s = f"{rng}: no method beats the baseline; use {r['recommended']} ({fmt_acc(r['recommended_acc'])}, " \
            f"95% CI {fmt_ci(r['recommended_acc_lo'], r['recommended_acc_hi'])}, {r['recommended_n_of']})."
        if r["highest_mean"] != r["recommended"]:
            s += (f" {r['highest_mean']} has a higher mean ({fmt_acc(r['highest_mean_acc'])}) but its comparison "
                  f"with its baseline says '{r['highest_mean_verdict']}'.")
        return s
    s = (f"{rng}: use {r['recommended']} ({fmt_acc(r['recommended_acc'])}, 95% CI "
         f"{fmt_ci(r['recommended_acc_lo'], r['recommended_acc_hi'])}, {r['recommended_n_of']}), "
         f"{100 * r['diff_mean']:+.2f} points over its own baseline, 95% CI "
         f"{fmt_ci(r['diff_lo'], r['diff_hi'], signed=True)}: better.")
    if not _absent(r["best_baseline"]) and r["best_baseline"] != r["recommended"]:
        s += f" The best baseline within this budget is {r['best_baseline']} ({fmt_acc(r['best_baseline_acc'])})."
    return s


def add_roles(aggs: pd.DataFrame, recs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """``role_<axis>``: baseline, selected (recommended at some budget), frontier (Pareto-optimal) or
    dominated; ``missing`` for aggregates with no finished run; ``sequence step`` for a step of a
    sequence and ``another question`` for a method whose accuracy is not of the dataset's whole task
    (both on no frontier, see :func:`off_frontier`)."""
    aggs = aggs.copy()
    step = list(is_sequence_step(aggs))
    other = list(off_frontier(aggs))
    for axis in AXES:
        chosen = set()
        if axis in recs and not recs[axis].empty:
            chosen = {(d, lbl) for d, lbl in zip(recs[axis]["dataset"], recs[axis]["recommended"]) if lbl}
        roles = []
        for i, r in enumerate(aggs.itertuples(index=False)):
            if r.n == 0:
                roles.append("missing")
            elif step[i]:
                roles.append(SEQUENCE_STEP)
            elif other[i]:
                roles.append(OTHER_QUESTION)
            elif r.method == BASELINE:
                roles.append("baseline")
            elif (r.dataset, r.label) in chosen:
                roles.append("selected")
            elif getattr(r, f"frontier_{axis}"):
                roles.append("frontier")
            else:
                roles.append("dominated")
        aggs[f"role_{axis}"] = roles
    return aggs


def summary_table(runs: pd.DataFrame, aggs: pd.DataFrame) -> pd.DataFrame:
    """One table: a row per run (``row == "run"``) and one per aggregate (``row == "aggregate"``)."""
    r = runs.copy()
    r.insert(0, "row", "run")
    r["label"] = [label_of(x) for x in r[GROUP].to_dict("records")]
    a = aggs.copy()
    a.insert(0, "row", "aggregate")
    a["seed"] = pd.NA
    df = pd.concat([r, a], ignore_index=True, sort=False)
    df["seed"] = df["seed"].astype("Int64")
    if "step" in df:
        df["step"] = pd.to_numeric(df["step"], errors="coerce").astype("Int64")
    front = ["row", "dataset", "model", "method", "variant", "seed", *SEQUENCE, "label", "status", "n", "n_expected",
             "n_of"]
    return df[[c for c in front if c in df.columns] + [c for c in df.columns if c not in front]]


# ----------------------------------------------------------------------------- sequences
# The study tables of a sequence scenario (a hyperparameter tuning sequence, retraining as data arrives), known
# by their columns, not their names: per step (``<scenario>_steps.csv``: one row per policy, repeat and
# step, with the cumulative cost and the model the policy would ship) and per policy (``<scenario>.csv``).
STEP_COLS = {"scenario", "policy", "seed", "step", "cum_flops", "cum_time_s", "shipped_test_acc"}
POLICY_COLS = {"scenario", "policy", "test_acc", "total_flops", "total_time_s"}
# The cost measures of a sequence: name, cumulative column (steps table), total column and reach column
# (policy table), label.
SEQ_MEASURES = {"flops": ("cum_flops", "total_flops", "reach_cum_flops", "FLOPs"),
                "time": ("cum_time_s", "total_time_s", "reach_cum_time_s", "wall-clock")}


def step_word(scenario: str) -> str:
    from reuse.methods import registry

    try:  # a scenario is its method's name; the method says what its steps are called
        return getattr(registry.get(scenario), "step_word", "steps")
    except Exception:
        return "steps"


def sequence_tables(studies: dict[str, pd.DataFrame], scenarios: Iterable[str] | None = None
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-step and per-policy sequence tables among a dataset's studies (all of them, or those
    rows whose ``scenario`` is one of ``scenarios``), each concatenated over the studies that have
    the columns, with the study's name in ``study``."""
    want = None if scenarios is None else set(scenarios)
    found: dict[str, list[pd.DataFrame]] = {"steps": [], "policies": []}
    for name, df in studies.items():
        for kind, cols in (("steps", STEP_COLS), ("policies", POLICY_COLS)):
            if cols <= set(df.columns) and not (kind == "policies" and "step" in df.columns):
                rows = df if want is None else df[df["scenario"].isin(want)]
                if len(rows):
                    found[kind].append(rows.assign(study=name))
    return tuple(pd.concat(v, ignore_index=True) if v else pd.DataFrame() for v in (found["steps"], found["policies"]))


def sequence_curve(steps: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, model, scenario, policy, step), over the repeats: the mean cumulative cost (FLOPs,
    wall-clock) and the shipped model's test accuracy (mean, min, max, number of repeats that ship
    one by then: a tuning sequence ships nothing before its first finished trial)."""
    if steps.empty:
        return pd.DataFrame()
    keys = [k for k in ("dataset", "model", "scenario", "policy", "step") if k in steps]
    d = steps.copy()
    d["shipped_test_acc"] = pd.to_numeric(d["shipped_test_acc"], errors="coerce")
    g = d.groupby(keys, sort=True)
    out = g.agg(cum_flops=("cum_flops", "mean"), cum_time_s=("cum_time_s", "mean"),
                acc=("shipped_test_acc", "mean"), acc_min=("shipped_test_acc", "min"),
                acc_max=("shipped_test_acc", "max"), n=("shipped_test_acc", "count"),
                repeats=("seed", "nunique")).reset_index()
    return out


def sequence_points(policies: pd.DataFrame) -> pd.DataFrame:
    """One point per (dataset, model, scenario, policy): the whole sequence's mean total cost (every
    step's own cost: a sequence reuses only its own earlier steps) and its final shipped model's mean
    test accuracy with its interval, from the per-policy table."""
    if policies.empty:
        return pd.DataFrame()
    d = policies.copy()
    for c in ("test_acc_lo", "test_acc_hi", "repeats", "steps", "model", "is_anchor"):
        if c not in d:
            d[c] = np.nan
    d["label"] = [f"{s}: {p}" + ("" if _absent(m) else f" ({m})") for s, p, m in zip(d["scenario"], d["policy"],
                                                                                      d["model"])]
    return d


def _speedup_text(r: dict, measure: str, confidence: float) -> str:
    c = f"speedup_{measure}"
    v = r.get(c)
    if _absent(v):
        return "n/a"
    lo, hi = r.get(f"{c}_lo"), r.get(f"{c}_hi")
    ci = (f" ({100 * confidence:g}% CI [{lo:.2f}, {hi:.2f}])" if not (_absent(lo) or _absent(hi))
          else " (one repeat, no interval)")
    return f"{v:.2f}×{ci}"


def sequence_recommendation(policies: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per (dataset, model, scenario) of a per-policy sequence table: which policy reached the anchor's
    final test accuracy (the anchor: the policy that reuses nothing) at the lowest mean cost, in FLOPs
    and in wall-clock, among those that reached it in every repeat; and the sentence that says so."""
    out = []
    if policies.empty:
        return pd.DataFrame()
    keys = [k for k in ("dataset", "model", "scenario") if k in policies]
    for key, g in policies.groupby(keys, sort=True, dropna=False):
        rec: dict[str, Any] = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        scen, ds, model = rec.get("scenario"), rec.get("dataset", ""), rec.get("model")
        anchor = next((a for a in g.get("anchor", pd.Series(dtype=object)) if not _absent(a)), None)
        arow = g[g["policy"] == anchor]
        a = arow.iloc[0].to_dict() if len(arow) else None
        n_steps = int(g["steps"].max()) if "steps" in g and g["steps"].notna().any() else None
        n_rep = int(g["repeats"].max()) if "repeats" in g and g["repeats"].notna().any() else None
        size = (f"{n_steps} {step_word(scen)} × {n_rep} repeats" if n_steps is not None and n_rep is not None
                else "size unknown")
        head = f"{ds}, {scen} of {model} ({size}, {g['policy'].nunique()} policies)"
        rec.update(anchor=anchor, steps=n_steps, repeats=n_rep)
        if a is None:
            rec.update(best_flops=None, best_time=None,
                       statement=f"{head}: no anchor policy (one that reuses nothing), so no speed-ups.")
            out.append(rec)
            continue
        others = g[g["policy"] != anchor]
        full = others[pd.to_numeric(others.get("reached"), errors="coerce") >= pd.to_numeric(others["repeats"])] \
            if "reached" in others else others.iloc[:0]
        best, best_ties = {}, {}
        for m, (_, total, reach, _) in SEQ_MEASURES.items():
            cand = full[np.isfinite(pd.to_numeric(full[reach], errors="coerce"))] if reach in full else full.iloc[:0]
            if len(cand):
                cand = cand.assign(_c=pd.to_numeric(cand[reach]), _s=-pd.to_numeric(cand[f"speedup_{m}"]))
                cand = cand.sort_values(["_c", "_s", "policy"])
                best[m] = cand.iloc[0].to_dict()
                best_ties[m] = list(cand.loc[np.isclose(cand["_c"], cand["_c"].iloc[0], rtol=1e-9, atol=0), "policy"])
            rec[f"best_{m}"] = best[m]["policy"] if m in best else None
        target = (f"the anchor {anchor}'s final test accuracy ({fmt_acc(a['test_acc'])}, "
                  f"after its whole sequence of {fmt_cost(a['total_flops'], 'flops')}, {fmt_cost(a['total_time_s'], 'time')})")
        if "flops" in best:
            b = best["flops"]
            tied = [t for t in best_ties["flops"] if t != b["policy"]]
            s = (f"{head}: {b['policy']} reached {target} in {int(b['repeats'])} of {int(b['repeats'])} repeats at "
                 f"the lowest cost" + (f" (tied with {', '.join(tied)})" if tied else "") + ", "
                 f"{fmt_cost(b['reach_cum_flops'], 'flops')} on average: a speed-up of "
                 f"{_speedup_text(b, 'flops', confidence)} in FLOPs and {_speedup_text(b, 'time', confidence)} in "
                 f"wall-clock over the anchor's whole sequence. Its final shipped model: "
                 f"{fmt_acc(b['test_acc'])} test accuracy ({100 * confidence:g}% CI "
                 f"{fmt_ci(b.get('test_acc_lo', np.nan), b.get('test_acc_hi', np.nan))}).")
            sp = pd.to_numeric(full["speedup_flops"], errors="coerce") if "speedup_flops" in full else None
            if sp is not None and sp.notna().any() and sp.max() > b["speedup_flops"] + 1e-9:
                h = full.loc[sp.idxmax()]
                s += (f" {h['policy']} has a higher mean speed-up ({_speedup_text(h, 'flops', confidence)}, a mean of "
                      f"per-repeat ratios) but a higher mean cost to reach it ({fmt_cost(h['reach_cum_flops'], 'flops')}).")
            t = best.get("time")
            if t is not None and t["policy"] != b["policy"]:
                s += (f" In wall-clock, {t['policy']} got there first ({fmt_cost(t['reach_cum_time_s'], 'time')} "
                      f"on average, speed-up {_speedup_text(t, 'time', confidence)}).")
        else:
            s = f"{head}: no policy other than the anchor reached {target} in every repeat"
            if len(others) and "reached" in others:
                o = others.assign(_r=pd.to_numeric(others["reached"], errors="coerce"),
                                  _s=pd.to_numeric(others.get("speedup_flops"), errors="coerce"))
                c = o.sort_values(["_r", "_s", "policy"], ascending=[False, False, True]).iloc[0].to_dict()
                s += (f"; the closest, {c['policy']}, reached it in {int(c['_r'])} of {int(c['repeats'])} repeats "
                      f"(mean speed-up {_speedup_text(c, 'flops', confidence)} in FLOPs, counting 0 for the "
                      "repeats that never reach it).")
            else:
                s += "."
        s += (" Choices inside a sequence (the model a policy ships, its teachers and starting weights, which trials stop "
              "early) are made on the validation split only; test accuracy is only reported.")
        rec["statement"] = s
        out.append(rec)
    return pd.DataFrame(out)
