"""From collected runs to the benchmark's verdict: per-run derived columns, per-method aggregates
over seeds, the verdict at equal cost against the baseline's budget curve, time-to-accuracy, the
Pareto frontier on each cost axis and the budget recommendations.

"The baseline" of a method's run is its comparator model's baseline (the variant's ``baseline`` key,
else the model the run trains) on the same dataset. Its **budget curve** is that model's baseline
runs at every budget of ``baseline.budgets`` (variant ``b<budget>``; the budget-1 run has no
variant), per seed, on each cost axis (:class:`reuse.stats.Curve`). The verdict of a method is its
**gain at equal cost** on the VALIDATION split: per seed, its validation accuracy minus the curve's at
its cost, with a t-test over seeds and Holm's correction over the variants of its dataset (per cost
axis); test accuracy is reported beside it (``gain_at_cost_<axis>``) and never chooses anything.
The same-recipe difference (the budget-1 baseline of the run's own model, test split) stays as
``diff_*``. Aggregates are over the runs that finished, and say how many of how many.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any, Iterable

import numpy as np
import pandas as pd

from reuse import stats as S
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
# The verdict of a method on a dataset without a validation split: nothing may be chosen on test.
NO_VALIDATION = "no validation split"
# The accuracy every choice reads (recommendations, Pareto flags): test accuracy chooses nothing, so where
# a dataset has no validation split nothing is chosen.
CHOICE = "val_acc"
# Metrics aggregated over seeds with mean, std and a Student-t interval.
STAT_COLS = ["test_acc", "val_acc", "best_test_acc", "test_nll", "test_ece", "robust_acc", "budget", "epochs", "cost_time_full_s",
             "cost_time_marginal_s", "cost_time_amortised_s", "cost_flops_full", "cost_flops_marginal",
             "cost_flops_amortised", "steps", "examples_seen", "train_time_s", "train_flops", "eval_time_s",
             "reused_time_s", "reused_flops"]


def label_of(row: Any) -> str:
    """A short name of an aggregate: ``<method>/<variant> (<model>)``, ``baseline (cnn1d)``."""
    g = row if isinstance(row, dict) else row._asdict() if hasattr(row, "_asdict") else dict(row)
    v = g.get("variant") or ""
    return f"{g['method']}{'/' + v if v else ''} ({g['model']})"


def target_name(t: float | str) -> str:
    return t if isinstance(t, str) else f"{t:g}"


# ----------------------------------------------------------------------------- per run
def is_plain_baseline(df: pd.DataFrame) -> pd.Series:
    """Baseline runs (or aggregates) of the recipe's own budget: method baseline, no variant."""
    v = df["variant"] if "variant" in df else pd.Series("", index=df.index)
    return (df["method"] == BASELINE) & v.map(lambda x: _absent(x) or x == "")


def comparator_of(row: Any) -> str:
    """The model whose baseline a run (or aggregate) is compared with: its variant's ``baseline`` key
    (a like-for-like comparator: e.g. the same architecture trained on the teacher's augmented views),
    else its own model."""
    g = row if isinstance(row, dict) else dict(row._asdict()) if hasattr(row, "_asdict") else dict(row)
    c = g.get("cfg_baseline")
    return g["model"] if _absent(c) or c == "" else str(c)


def _artifact(line: dict) -> tuple[str, str]:
    """What a reused line names, independent of where the results folder sits: its kind and its path
    from the dataset folder on (the results folder's own name dropped)."""
    parts = os.path.normpath(str(line.get("path", ""))).split(os.sep)
    return str(line.get("kind", "other")), "/".join(parts[-5:])


def add_amortised(runs: pd.DataFrame, over: int | None = None) -> pd.DataFrame:
    """``cost_time_amortised_s`` and ``cost_flops_amortised``: the run's own training plus each past
    artifact it reused (past run, cache, score table) divided among the runs that reuse it: the
    finished runs in this table that list it (or, with ``over``, a declared number of future runs).
    Between marginal (reuse free) and full (each reuser pays in full): Busbridge et al. 2025's view,
    where a teacher pays off when it exists anyway or serves many students."""
    import json

    runs = runs.copy()
    lines = [json.loads(x) if isinstance(x, str) and x else [] for x in runs.get("reused_lines", [None] * len(runs))]
    ok = list(runs["status"] == "ok")
    users: dict[tuple[str, str], int] = {}
    for ls, good in zip(lines, ok):
        if good:
            for a in {_artifact(x) for x in ls}:
                users[a] = users.get(a, 0) + 1
    t_out, f_out = [], []
    for ls, t, f in zip(lines, runs["train_time_s"], runs["train_flops"]):
        share_t = share_f = 0.0
        for x in ls:
            k = max(1, int(over) if over else users.get(_artifact(x), 1))
            share_t += float(x.get("time_s", 0.0) or 0.0) / k
            share_f += float(x.get("flops", 0) or 0) / k
        t_out.append(np.nan if _absent(t) else float(t) + share_t)
        f_out.append(np.nan if _absent(f) else float(f) + share_f)
    runs["cost_time_amortised_s"], runs["cost_flops_amortised"] = t_out, f_out
    return runs


def add_run_columns(col: Collected, targets: Iterable[float] = (), amortise_over: int | None = None) -> pd.DataFrame:
    """The run table with each run's baseline accuracy (the budget-1 baseline of the same dataset,
    model and seed), its difference from it, the amortised costs and time-to-accuracy for the
    baseline's mean final accuracy and each fixed target."""
    from reuse import metrics as M

    runs = add_amortised(col.runs, amortise_over)
    ok = runs["status"] == "ok"
    plain = ok & is_plain_baseline(runs)
    base = runs[plain].set_index(["dataset", "model", "seed"])["test_acc"]
    idx = list(zip(runs["dataset"], runs["model"], runs["seed"]))
    runs["baseline_test_acc"] = [base.get(i, np.nan) if ok_ else np.nan for i, ok_ in zip(idx, ok)]
    runs["diff_vs_baseline"] = pd.to_numeric(runs.get("test_acc"), errors="coerce") - runs["baseline_test_acc"]
    base_mean = runs[plain].groupby(["dataset", "model"])["test_acc"].mean()
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
                    "time_s_full": np.nan, "reached": bool(hit)}
            if hit:
                vals.update(steps=hit["steps"], flops=hit["flops"], time_s=hit["time_s"],
                            flops_full=hit["flops"] + _nz(reused_f), time_s_full=hit["time_s"] + _nz(reused_t))
            elif curve:  # never reached: the whole run is a lower bound of its cost to reach the target
                last = curve[-1]
                vals.update(steps=last.get("step"), flops=last.get("train_flops"), time_s=last.get("train_time_s"),
                            flops_full=_nz(last.get("train_flops")) + _nz(reused_f),
                            time_s_full=_nz(last.get("train_time_s")) + _nz(reused_t))
            for what, v in vals.items():
                new.setdefault(f"tta_{name}_{what}", []).append(v)
    for c, v in new.items():
        runs[c] = v
    return runs


def _nz(v) -> float:
    return 0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


# ----------------------------------------------------------------------------- aggregates
TTA_WHATS = ("steps", "flops", "time_s", "flops_full", "time_s_full")


def aggregate(runs: pd.DataFrame, confidence: float = 0.95, targets: Iterable[float] = (),
              headline_axis: str = "time_full") -> pd.DataFrame:
    """One row per (dataset, model, method, variant): counts, seed statistics (t-intervals), the
    same-recipe paired comparison with the budget-1 baseline (``diff_*``), time-to-accuracy and its
    censored speed-ups, and the verdict at equal cost (:func:`add_equal_cost`) on every axis;
    ``verdict`` is the one on ``headline_axis``."""
    tnames = [BASELINE] + [target_name(t) for t in targets]
    stat_cols = [c for c in STAT_COLS if c in runs.columns]
    cfg_cols = [c for c in runs.columns if c.startswith("cfg_")]
    ok_all = runs[runs["status"] == "ok"]
    base_by = {k: g.set_index("seed") for k, g in ok_all[is_plain_baseline(ok_all)].groupby(["dataset", "model"])}
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
            lo, hi = S.mean_ci(x, confidence) if len(ok) > 1 else (np.full(len(stat_cols), np.nan),) * 2
        else:
            mean = std = lo = hi = np.full(len(stat_cols), np.nan)
        for i, c in enumerate(stat_cols):
            row[c], row[f"{c}_std"], row[f"{c}_lo"], row[f"{c}_hi"] = mean[i], std[i], lo[i], hi[i]
        for c in cfg_cols + [c for c in SEQUENCE if c in g]:
            vals = g[c].dropna()
            row[c] = vals.iloc[0] if len(vals) else None
        row["comparator"] = comparator_of(row)
        for c in [c for c in runs.columns if c.startswith("reused_") and c.endswith(("_n", "_time_s", "_flops"))
                  and c not in stat_cols]:
            row[c] = pd.to_numeric(ok[c], errors="coerce").mean() if len(ok) else np.nan
        base = base_by.get((row["dataset"], row["model"]))
        if row["method"] == BASELINE:
            row.update(n_pairs=len(ok), paired_seeds=row["seeds"], diff_mean=0.0, diff_std=np.nan, diff_lo=np.nan,
                       diff_hi=np.nan, diff_p=np.nan, same_recipe_verdict=BASELINE)
        else:
            acc = dict(zip(ok["seed"], pd.to_numeric(ok["test_acc"], errors="coerce"))) if len(ok) else {}
            pc = S.paired_comparison(acc, {} if base is None else dict(base["test_acc"]), confidence)
            row.update(n_pairs=pc["n_pairs"], paired_seeds=",".join(map(str, pc["seeds"])), diff_mean=pc["diff_mean"],
                       diff_std=pc["diff_std"], diff_lo=pc["diff_lo"], diff_hi=pc["diff_hi"], diff_p=pc["p"],
                       same_recipe_verdict=pc["verdict"])
        for name in tnames:
            if f"tta_{name}_steps" not in ok.columns:
                continue
            reached = ok[ok[f"tta_{name}_reached"].astype(bool)] if len(ok) else ok
            row[f"tta_{name}_target"] = pd.to_numeric(g[f"tta_{name}_target"], errors="coerce").mean()
            row[f"tta_{name}_reached"] = len(reached)
            for what in TTA_WHATS:
                c = f"tta_{name}_{what}"
                row[c] = pd.to_numeric(reached[c], errors="coerce").mean() if len(reached) else np.nan
            for what in TTA_WHATS:
                sp = tta_speedup(ok, base, name, what, confidence)
                c = f"speedup_{name}_{what}"
                row[c], row[f"{c}_lo"], row[f"{c}_hi"], row[f"{c}_n"] = sp["mean"], sp["lo"], sp["hi"], sp["n"]
                row[f"{c}_censored"], row[f"{c}_bound"] = sp["n_censored"], sp["bound"]
        rows.append(row)
    aggs = add_equal_cost(pd.DataFrame(rows), runs, confidence)
    aggs["verdict"] = aggs[f"verdict_{headline_axis}"]
    return add_frontiers(aggs)


def tta_speedup(ok: pd.DataFrame, base: pd.DataFrame | None, name: str, what: str, confidence: float) -> dict:
    """Per seed, the baseline's cost to first reach target ``name`` over the run's (geometric mean over
    seeds, t-interval on the logs). A seed where one of them never reaches it is censored, not
    dropped: its whole run's cost bounds its cost to reach it from below, so the speed-up is a bound
    (upper when the method never reaches it, lower when the baseline does not); neither: no value."""
    bw = what.replace("_full", "")
    vals, bounds = [], []
    if base is None or f"tta_{name}_{bw}" not in base or not len(ok):
        return S.censored_summary([], [], confidence, log=True)
    for r in ok.to_dict("records"):
        s = r["seed"]
        if s not in base.index:
            continue
        b = base.loc[s]
        m_hit, b_hit = bool(r.get(f"tta_{name}_reached")), bool(b.get(f"tta_{name}_reached"))
        mc, bc = _nz(r.get(f"tta_{name}_{what}")), _nz(b.get(f"tta_{name}_{bw}"))
        if (not m_hit and not b_hit) or mc <= 0 or bc <= 0:
            continue
        vals.append(bc / mc)
        bounds.append(None if m_hit and b_hit else (S.UPPER if not m_hit else S.LOWER))
    return S.censored_summary(vals, bounds, confidence, log=True)


def baseline_curves(runs: pd.DataFrame, col: str, acc: str) -> dict[tuple, S.Curve]:
    """Per (dataset, model, seed): the budget curve of the baseline runs (every budget) on cost column
    ``col`` against accuracy column ``acc``."""
    b = runs[(runs["status"] == "ok") & (runs["method"] == BASELINE)]
    out = {}
    if col not in b or acc not in b:
        return out
    for k, g in b.groupby(["dataset", "model", "seed"]):
        c = S.Curve(pd.to_numeric(g[col], errors="coerce"), pd.to_numeric(g[acc], errors="coerce"))
        if len(c):
            out[k] = c
    return out


def add_equal_cost(aggs: pd.DataFrame, runs: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """For every method aggregate and cost axis, against its comparator's budget curve, paired by seed:

    - ``gain_at_cost_<axis>`` (``_lo``/``_hi``, ``_bound``): test accuracy minus the curve's test
      accuracy at the run's cost (reported, never used to choose);
    - ``speedup_at_acc_<axis>`` (``_lo``/``_hi``, ``_bound``, ``_censored``): the curve's cost to reach
      the run's test accuracy over the run's cost, a bound where the accuracy lies beyond the curve;
    - ``val_gain_at_cost_<axis>`` (``_lo``/``_hi``, ``_p``, ``_p_holm``, ``_bound``): the same gain on
      the validation split, its t-test, and Holm's adjustment over the dataset's variants on the axis;
    - ``verdict_<axis>``: better / worse / no detectable difference from the Holm-adjusted validation
      gain (a gain that is a bound supports only its direction).

    With a comparator other than the run's own model, ``gain_own_<axis>`` is the test gain against the
    own model's curve too (both comparisons shown). Steps of sequences and runs of another question
    get no verdict; baseline aggregates are the curves."""
    runs_ok = runs[runs["status"] == "ok"]
    by_group = {k: g for k, g in runs_ok.groupby(GROUP, dropna=False)}
    off = off_frontier(aggs)
    step = is_sequence_step(aggs)
    new: dict[str, Any] = {}
    for axis, (col, _) in AXES.items():
        test_curves = baseline_curves(runs, col, "test_acc")
        val_curves = baseline_curves(runs, col, "val_acc") if "val_acc" in runs else {}
        out: dict[str, list] = {}

        def put(**kw):
            for k, v in kw.items():
                out.setdefault(k, []).append(v)

        for i, a in enumerate(aggs.to_dict("records")):
            g = by_group.get(tuple(a[k] for k in GROUP))
            res = {"g": (np.nan, np.nan, np.nan, None), "s": (np.nan, np.nan, np.nan, None, 0),
                   "v": (np.nan, np.nan, np.nan, np.nan, None), "own": (np.nan, np.nan, np.nan)}
            if a["method"] != BASELINE and not off.iloc[i] and g is not None and len(g):
                res = _equal_cost_row(g, a, col, test_curves, val_curves, confidence)
            gm, glo, ghi, gb = res["g"]
            sm, slo, shi, sb, sc = res["s"]
            vm, vlo, vhi, vp, vb = res["v"]
            om, olo, ohi = res["own"]
            put(**{f"gain_at_cost_{axis}": gm, f"gain_at_cost_{axis}_lo": glo, f"gain_at_cost_{axis}_hi": ghi,
                   f"gain_at_cost_{axis}_bound": gb, f"speedup_at_acc_{axis}": sm, f"speedup_at_acc_{axis}_lo": slo,
                   f"speedup_at_acc_{axis}_hi": shi, f"speedup_at_acc_{axis}_bound": sb,
                   f"speedup_at_acc_{axis}_censored": sc, f"val_gain_at_cost_{axis}": vm,
                   f"val_gain_at_cost_{axis}_lo": vlo, f"val_gain_at_cost_{axis}_hi": vhi,
                   f"val_gain_at_cost_{axis}_p": vp, f"val_gain_at_cost_{axis}_bound": vb,
                   f"gain_own_{axis}": om, f"gain_own_{axis}_lo": olo, f"gain_own_{axis}_hi": ohi})
        # Holm over the dataset's method variants that are candidates (not steps, not another question)
        p = pd.to_numeric(pd.Series(out[f"val_gain_at_cost_{axis}_p"], index=aggs.index), errors="coerce")
        family = ~off & (aggs["method"] != BASELINE)
        adj = pd.Series(np.nan, index=aggs.index)
        for _, g in aggs[family].groupby("dataset"):
            adj.loc[g.index] = S.holm(p.loc[g.index].to_numpy())
        out[f"val_gain_at_cost_{axis}_p_holm"] = list(adj)
        sizes = (family & p.notna()).groupby(aggs["dataset"]).sum()
        out[f"holm_family_{axis}"] = [int(sizes.get(d, 0)) for d in aggs["dataset"]]
        verdicts = []
        for i, a in enumerate(aggs.to_dict("records")):
            gain, bound = out[f"val_gain_at_cost_{axis}"][i], out[f"val_gain_at_cost_{axis}_bound"][i]
            if a["method"] == BASELINE:
                verdicts.append(BASELINE)
            elif step.iloc[i]:
                verdicts.append(SEQUENCE_STEP)
            elif off.iloc[i]:
                verdicts.append(OTHER_QUESTION)
            elif a["n"] == 0:
                verdicts.append(S.NO_PAIRS)
            elif _absent(gain):
                verdicts.append(NO_VALIDATION)
            else:
                verdicts.append(S.decide(gain, adj.iloc[i], bound))
        out[f"verdict_{axis}"] = verdicts
        new.update(out)
    return pd.concat([aggs.drop(columns=[c for c in new if c in aggs]), pd.DataFrame(new, index=aggs.index)], axis=1)


def _equal_cost_row(g: pd.DataFrame, a: dict, col: str, test_curves: dict, val_curves: dict,
                    confidence: float) -> dict:
    ds, comp = a["dataset"], comparator_of(a)
    gains, gb, sps, sb, vg, vb, own = [], [], [], [], [], [], []

    def keep(measure, curve, cost, acc, values, bounds):
        """``measure(curve, cost, acc)`` into ``values``/``bounds`` where the curve and the value exist."""
        if curve is None or _absent(acc):
            return
        v, b = measure(curve, cost, float(acc))
        if not _absent(v):
            values.append(v)
            bounds.append(b)

    for r in g.to_dict("records"):
        cost = pd.to_numeric(r.get(col), errors="coerce")
        tc, vc = test_curves.get((ds, comp, r["seed"])), val_curves.get((ds, comp, r["seed"]))
        keep(S.gain_at_cost, tc, cost, r.get("test_acc"), gains, gb)
        keep(S.speedup_at_acc, tc, cost, r.get("test_acc"), sps, sb)
        keep(S.gain_at_cost, vc, cost, r.get("val_acc"), vg, vb)
        if comp != a["model"]:  # the own model's curve too: both comparisons are shown
            keep(S.gain_at_cost, test_curves.get((ds, a["model"], r["seed"])), cost, r.get("test_acc"), own, [])
    G = S.censored_summary(gains, gb, confidence)
    SP = S.censored_summary(sps, sb, confidence, log=True)
    V = S.censored_summary(vg, vb, confidence)
    O = S.describe(own, confidence)
    return {"g": (G["mean"], G["lo"], G["hi"], G["bound"]),
            "s": (SP["mean"], SP["lo"], SP["hi"], SP["bound"], SP["n_censored"]),
            "v": (V["mean"], V["lo"], V["hi"], S.t_test(vg) if len(vg) else np.nan, V["bound"]),
            "own": (O["mean"], O["lo"], O["hi"])}


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
    """``frontier_<axis>``: whether the aggregate is Pareto-optimal (mean cost vs mean VALIDATION
    accuracy) among all finished aggregates of its dataset, for each cost axis; none where the dataset
    has no validation split. Sequence steps (and the other rows of :func:`off_frontier`) are never on it."""
    aggs = aggs.copy()
    acc = CHOICE
    for axis, (col, _) in AXES.items():
        aggs[f"frontier_{axis}"] = False
        if col not in aggs.columns or acc not in aggs.columns:
            continue
        for _, g in aggs[(aggs["n"] > 0) & ~off_frontier(aggs)].groupby("dataset"):
            on = S.pareto_front(g[col].to_numpy(dtype=np.float64), g[acc].to_numpy(dtype=np.float64))
            aggs.loc[g.index, f"frontier_{axis}"] = on
    return aggs


# ----------------------------------------------------------------------------- recommendations
def recommend(aggs: pd.DataFrame, axis: str) -> pd.DataFrame:
    """Which aggregate to use at each budget on ``axis``, chosen on the validation split only.

    For a budget ``c``, the affordable aggregates are those (with at least one finished run) whose
    mean cost is at most ``c``. The eligible ones are the affordable baselines (every budget of every
    model: the curves' points) and the affordable methods whose verdict at equal cost on this axis is
    ``better`` (validation, Holm-adjusted). The recommendation is the eligible aggregate with the
    highest mean validation accuracy; its test accuracy and its test gain at equal cost are reported.
    If it is a baseline, no method beats the baseline at that budget. Budgets step at every
    aggregate's mean cost; consecutive budgets with the same answer are merged into one range
    ``[budget_lo, budget_hi)``. Sequence steps and runs of another question are not candidates.
    A dataset without a validation split gets no recommendation (nothing may be chosen on test).
    """
    col = AXES[axis][0]
    acc = CHOICE
    out = []
    for ds, g in aggs[(aggs["n"] > 0) & ~off_frontier(aggs)].groupby("dataset", sort=True):
        g = g[g[col].notna()]
        if acc not in g or g[acc].isna().all():
            out.append({"dataset": ds, "axis": axis, "cost_column": col, "budget_lo": np.nan, "budget_hi": np.nan,
                        "recommended": None, "no_validation": True, "no_method_beats_baseline": True})
            continue
        g = g[g[acc].notna()]
        levels = sorted(set(g[col]))
        prev = None
        for i, c in enumerate(levels):
            afford = g[g[col] <= c]
            eligible = afford[(afford["method"] == BASELINE) | (afford[f"verdict_{axis}"] == S.BETTER)]
            best_any = _best(afford, acc, col)
            rec = _best(eligible, acc, col) if len(eligible) else None
            base = afford[afford["method"] == BASELINE]
            best_base = _best(base, acc, col) if len(base) else None
            key = (None if rec is None else rec["label"], best_any["label"])
            hi = levels[i + 1] if i + 1 < len(levels) else math.inf
            if prev is not None and prev["_key"] == key:
                prev["budget_hi"] = hi
                continue

            def get(r, c_, default=np.nan):
                return default if r is None else r.get(c_, default)

            prev = {"_key": key, "dataset": ds, "axis": axis, "cost_column": col, "budget_lo": c, "budget_hi": hi,
                    "no_validation": False,
                    "recommended": get(rec, "label", None), "recommended_method": get(rec, "method", None),
                    "recommended_val_acc": get(rec, "val_acc"),
                    "recommended_acc": get(rec, "test_acc"), "recommended_acc_lo": get(rec, "test_acc_lo"),
                    "recommended_acc_hi": get(rec, "test_acc_hi"), "recommended_n_of": get(rec, "n_of", None),
                    "recommended_cost": get(rec, col), "verdict": get(rec, f"verdict_{axis}", None),
                    "gain": get(rec, f"gain_at_cost_{axis}"), "gain_lo": get(rec, f"gain_at_cost_{axis}_lo"),
                    "gain_hi": get(rec, f"gain_at_cost_{axis}_hi"), "gain_bound": get(rec, f"gain_at_cost_{axis}_bound", None),
                    "val_gain": get(rec, f"val_gain_at_cost_{axis}"),
                    "p_holm": get(rec, f"val_gain_at_cost_{axis}_p_holm"),
                    "holm_family": get(rec, f"holm_family_{axis}"),
                    "speedup": get(rec, f"speedup_at_acc_{axis}"), "speedup_lo": get(rec, f"speedup_at_acc_{axis}_lo"),
                    "speedup_hi": get(rec, f"speedup_at_acc_{axis}_hi"),
                    "speedup_bound": get(rec, f"speedup_at_acc_{axis}_bound", None),
                    "comparator": get(rec, "comparator", None),
                    "diff_mean": get(rec, "diff_mean"), "diff_lo": get(rec, "diff_lo"), "diff_hi": get(rec, "diff_hi"),
                    "no_method_beats_baseline": rec is None or rec["method"] == BASELINE,
                    "highest_val": best_any["label"], "highest_val_acc": best_any["val_acc"],
                    "highest_val_verdict": best_any[f"verdict_{axis}"],
                    "best_baseline": get(best_base, "label", None), "best_baseline_val_acc": get(best_base, "val_acc"),
                    "best_baseline_acc": get(best_base, "test_acc")}
            out.append(prev)
    df = pd.DataFrame(out).drop(columns=["_key"], errors="ignore")
    if not df.empty:
        df["statement"] = [statement(r) for r in df.to_dict("records")]
    return df


def _best(df: pd.DataFrame, acc: str, col: str) -> dict:
    """The row with the highest mean ``acc`` (ties: the cheaper, then the label)."""
    d = df.assign(_a=-pd.to_numeric(df[acc], errors="coerce"), _c=pd.to_numeric(df[col], errors="coerce"))
    return d.sort_values(["_a", "_c", "label"], kind="stable").iloc[0].drop(["_a", "_c"]).to_dict()


def fmt_acc(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}%"


def fmt_ci(lo: float, hi: float, pct: bool = True, signed: bool = False) -> str:
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return "no interval"
    if pct:
        def f(v):
            return ("+∞" if v > 0 else "−∞") if math.isinf(v) else (f"{100 * v:+.2f}" if signed else f"{100 * v:.2f}")
    else:
        def f(v):
            return "∞" if math.isinf(v) else f"{v:.3g}"
    return f"[{f(lo)}, {f(hi)}]" + ("%" if pct else "")


def fmt_cost(v: float, axis: str) -> str:
    if v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v))):
        return "∞" if v == math.inf else "n/a"
    return f"{v:.3g} s" if axis.startswith("time") else f"{v:.3g} FLOPs"


def fmt_gain(mean: float, lo: float, hi: float, bound: str | None = None, confidence: float = 0.95) -> str:
    """``+1.23 points [+0.40, +2.06]`` (test points at equal cost), ``≤ `` / ``≥ `` for a bound."""
    if _absent(mean):
        return "n/a"
    b = "" if _absent(bound) else S.bound_word(bound)
    ci = fmt_ci(lo, hi, signed=True).replace("%", "")
    return f"{b}{100 * mean:+.2f} points, {100 * confidence:g}% CI {ci}"


def fmt_speedup(mean: float, lo: float, hi: float, bound: str | None = None) -> str:
    if _absent(mean):
        return "n/a"
    b = "" if _absent(bound) else S.bound_word(bound)
    ci = "" if _absent(lo) or _absent(hi) else f" [{fmt_ci(lo, hi, pct=False)[1:-1]}]"
    return f"{b}{mean:.2f}×{ci}"


def _absent(v: Any) -> bool:
    """None, or the NaN a pandas round trip turns None into."""
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA


def statement(r: dict) -> str:
    """The sentence the recommendations page prints for one budget range."""
    axis = r["axis"]
    if r.get("no_validation"):
        return (f"{r['dataset']}: no recommendation: the dataset has no validation split, and nothing is chosen on "
                f"test accuracy; set datasets.{r['dataset']}.holdout.")
    rng = f"from {fmt_cost(r['budget_lo'], axis)}" + (
        f" up to {fmt_cost(r['budget_hi'], axis)}" if not math.isinf(r["budget_hi"]) else " upwards")
    if _absent(r["recommended"]):
        return (f"{rng}: no baseline fits this budget and no method within it is better than its baseline at equal "
                f"cost: the highest validation accuracy is {r['highest_val']}'s, whose verdict at equal cost is "
                f"'{r['highest_val_verdict']}'.")
    if r["no_method_beats_baseline"]:
        s = (f"{rng}: no method beats the baseline at equal cost; use {r['recommended']} (chosen on validation; "
             f"{fmt_acc(r['recommended_acc'])} test accuracy, 95% CI "
             f"{fmt_ci(r['recommended_acc_lo'], r['recommended_acc_hi'])}, {r['recommended_n_of']}).")
        if r["highest_val"] != r["recommended"]:
            s += (f" {r['highest_val']} has a higher validation accuracy but its verdict at equal cost is "
                  f"'{r['highest_val_verdict']}'.")
        return s
    s = (f"{rng}: use {r['recommended']} (chosen on validation): {fmt_gain(r['gain'], r['gain_lo'], r['gain_hi'], r['gain_bound'])} "
         f"of test accuracy over the {r['comparator']} baseline at equal cost "
         f"({fmt_acc(r['recommended_acc'])} test accuracy, {r['recommended_n_of']}); speed-up at equal accuracy "
         f"{fmt_speedup(r['speedup'], r['speedup_lo'], r['speedup_hi'], r['speedup_bound'])}; validation gain "
         f"Holm-adjusted p = {r['p_holm']:.3g} over {int(r['holm_family'])} variants: better.")
    if not _absent(r["best_baseline"]) and r["best_baseline"] != r["recommended"]:
        s += f" The best baseline within this budget is {r['best_baseline']} ({fmt_acc(r['best_baseline_acc'])} test)."
    return s


# What a role says (per cost axis): the verdict at equal cost decides it, not the Pareto flag.
ROLE_BETTER, ROLE_NOT_BETTER = "better at equal cost", "not better at equal cost"


def add_roles(aggs: pd.DataFrame, recs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """``role_<axis>``: baseline (a point of a budget curve), selected (recommended at some budget),
    better at equal cost (its verdict on this axis), not better at equal cost (no detectable
    difference, worse, or no verdict); ``missing`` for aggregates with no finished run; ``sequence
    step`` for a step of a sequence and ``another question`` for a method whose accuracy is not of the
    dataset's whole task (both on no frontier, see :func:`off_frontier`). Every role is decided on the
    validation split."""
    aggs = aggs.copy()
    step = list(is_sequence_step(aggs))
    other = list(off_frontier(aggs))
    for axis in AXES:
        chosen = set()
        if axis in recs and not recs[axis].empty and "recommended" in recs[axis]:
            chosen = {(d, lbl) for d, lbl in zip(recs[axis]["dataset"], recs[axis]["recommended"]) if not _absent(lbl)}
        roles = []
        for i, r in enumerate(aggs.to_dict("records")):
            if r["n"] == 0:
                roles.append("missing")
            elif step[i]:
                roles.append(SEQUENCE_STEP)
            elif other[i]:
                roles.append(OTHER_QUESTION)
            elif r["method"] == BASELINE:
                roles.append("baseline")
            elif (r["dataset"], r["label"]) in chosen:
                roles.append("selected")
            elif r.get(f"verdict_{axis}") == S.BETTER:
                roles.append(ROLE_BETTER)
            else:
                roles.append(ROLE_NOT_BETTER)
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
    wall-clock), the shipped model's test accuracy (mean, min, max, number of repeats that ship one by
    then: a tuning sequence ships nothing before its first finished trial) and validation accuracy
    (``val``, ``val_min``, ``val_max``, ``n_val``), the repeats whose shipped model is at the target by
    then (``at_target``), the mean target (``target_val_acc``) and, for an equal-cost comparator, the
    policy it matches (``equal_cost``); columns a table lacks are NaN."""
    if steps.empty:
        return pd.DataFrame()
    keys = [k for k in ("dataset", "model", "scenario", "policy", "step") if k in steps]
    d = steps.copy()
    for c in ("shipped_test_acc", "shipped_val_acc", "target_val_acc"):
        d[c] = pd.to_numeric(d[c], errors="coerce") if c in d else np.nan
    d["at_target"] = d["at_target"].map(_is_true).astype(float) if "at_target" in d else np.nan
    if "equal_cost" not in d:
        d["equal_cost"] = None
    g = d.groupby(keys, sort=True)
    out = g.agg(cum_flops=("cum_flops", "mean"), cum_time_s=("cum_time_s", "mean"),
                acc=("shipped_test_acc", "mean"), acc_min=("shipped_test_acc", "min"),
                acc_max=("shipped_test_acc", "max"), n=("shipped_test_acc", "count"),
                val=("shipped_val_acc", "mean"), val_min=("shipped_val_acc", "min"),
                val_max=("shipped_val_acc", "max"), n_val=("shipped_val_acc", "count"),
                at_target=("at_target", "sum"), target_val_acc=("target_val_acc", "mean"),
                equal_cost=("equal_cost", "first"), repeats=("seed", "nunique")).reset_index()
    return out


def _is_true(v: Any) -> bool:
    """A boolean cell of a CSV (True, "True", 1); NaN and None are False."""
    return not _absent(v) and str(v).strip().lower() in ("true", "1", "1.0")


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


def _bound(r: dict, col: str) -> str | None:
    """The bound of a censored summary in column ``col`` of a row (``upper``, ``lower``, ``mixed``), or None."""
    b = r.get(col)
    return None if _absent(b) or str(b).strip() == "" else str(b)


def _speedup_text(r: dict, measure: str, confidence: float) -> str:
    """``2.50× (95% CI [2.10, 2.90])`` from a per-policy sequence row; a censored summary (some repeats never
    reach the target) is a bound: ``≤ 0.97× (95% CI [0.00, 2.10])`` (an upper bound's interval runs from 0, a
    lower bound's to ∞; both kinds of bound: no interval)."""
    c = f"speedup_{measure}"
    v = r.get(c)
    if _absent(v):
        return "n/a"
    bound = _bound(r, f"{c}_bound")
    lo, hi = r.get(f"{c}_lo"), r.get(f"{c}_hi")
    if bound == S.UPPER:
        lo = 0.0
    elif bound == S.LOWER:
        hi = math.inf
    if bound == "mixed":
        ci = " (censored both ways, no interval)"
    elif _absent(lo) or _absent(hi) or (bound == S.UPPER and math.isinf(hi)):
        ci = " (one repeat, no interval)"
    else:
        ci = f" ({100 * confidence:g}% CI [{lo:.2f}, {'∞' if math.isinf(hi) else f'{hi:.2f}'}])"
    return f"{S.bound_word(bound) if bound in (S.UPPER, S.LOWER) else ''}{v:.2f}×{ci}"


def _censored_text(r: dict, measure: str = "flops") -> str:
    """``, an upper bound: 1 of 3 repeats never reach it and count at their whole cost`` for a row whose
    speed-up is censored, else ``""``."""
    bound = _bound(r, f"speedup_{measure}_bound")
    if bound is None:
        return ""
    n = r.get("pairs") if not _absent(r.get("pairs")) else r.get("repeats")
    k = r.get("n_censored")
    if _absent(k) and not (_absent(n) or _absent(r.get("reached"))):
        k = int(n) - int(r["reached"])
    what = {S.UPPER: "an upper bound", S.LOWER: "a lower bound"}.get(bound, "a bound both ways")
    if _absent(k) or _absent(n):
        return f", {what}: some repeats never reach it and count at their whole cost"
    rest = "reaches it and counts at its" if int(k) == 1 else "reach it and count at their"
    return f", {what}: {int(k)} of {int(n)} repeats never {rest} whole cost"


def _points_text(mean: float, lo: Any, hi: Any, what: str, confidence: float, n: Any = None, more: str = "") -> str:
    """``+2.50 test points (95% CI [-3.85, +8.85], 2 repeats<more>)``."""
    ci = "no interval" if _absent(lo) or _absent(hi) else \
        f"{100 * confidence:g}% CI {fmt_ci(lo, hi, signed=True).replace('%', '')}"
    return f"{100 * mean:+.2f} {what} points ({ci}" + ("" if _absent(n) else f", {int(n)} repeats") + f"{more})"


def _equal_cost_text(r: dict, scen: str, confidence: float) -> str:
    """The sentences on a policy's gain over its equal-cost comparator (a row with ``equal_cost_policy``), or
    ``""``: the test gain with its interval and verdict (reported), and the validation gain (what a choice
    between the two would read)."""
    comp, gain = r.get("equal_cost_policy"), r.get("gain_test_acc")
    if _absent(comp) or str(comp).strip() == "" or _absent(gain):
        return ""
    one = step_word(scen).removesuffix("s")
    at = "" if _absent(r.get("gain_step")) else f" at {one} {int(r['gain_step'])}"
    ratio = r.get("gain_cost_ratio_flops")
    cost = ("" if _absent(ratio) else "; equal training FLOPs" + (
        "" if abs(ratio - 1) < 1e-3 else f", {r['policy']}'s whole cost {ratio:.2f}× the comparator's there (its "
                                         "caches are not in the budget)"))
    verdict, p = r.get("gain_test_verdict"), r.get("gain_test_acc_p_holm")
    vtext = ("" if _absent(verdict) else f"; verdict: {verdict}" +
             ("" if _absent(p) else f", Holm-adjusted p = {p:.2g}"))
    val = ("" if _absent(r.get("gain_val_acc")) else
           " Its validation gain, the one any choice between the two would read: " +
           _points_text(r["gain_val_acc"], r.get("gain_val_acc_lo"), r.get("gain_val_acc_hi"), "validation",
                        confidence) + ".")
    return (f" Against its equal-cost comparator {comp} (from scratch on the data seen so far, trained on as many "
            f"examples as {r['policy']}'s chain{cost}), {r['policy']}'s final shipped model{at} gains "
            + _points_text(gain, r.get("gain_test_acc_lo"), r.get("gain_test_acc_hi"), "test", confidence,
                           r.get("gain_pairs"), vtext)
            + f", reported, not used to choose.{val}")


def sequence_recommendation(policies: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per (dataset, model, scenario) of a per-policy sequence table: which policy reached the target (per
    repeat, the validation accuracy of the model the anchor, the policy that reuses nothing, ships after its
    last step) at the lowest mean cost, in FLOPs and in wall-clock, among those that reached it in every
    repeat; each policy's gain over its equal-cost comparator where it has one; and the sentence that says so."""
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
        # reach_cum_* is always finite (a censored repeat counts at its whole cost): only the policies that
        # reached the target in every repeat are candidates, so their mean cost to reach it is no bound
        full = others[pd.to_numeric(others.get("reached"), errors="coerce") >= pd.to_numeric(others["repeats"])] \
            if "reached" in others else others.iloc[:0]
        best, best_ties = {}, {}
        for m, (_, total, reach, _) in SEQ_MEASURES.items():
            cand = full if reach in full else full.iloc[:0]
            if len(cand):
                cand = cand.assign(_c=pd.to_numeric(cand[reach]), _s=-pd.to_numeric(cand[f"speedup_{m}"]))
                cand = cand.sort_values(["_c", "_s", "policy"])
                best[m] = cand.iloc[0].to_dict()
                best_ties[m] = list(cand.loc[np.isclose(cand["_c"], cand["_c"].iloc[0], rtol=1e-9, atol=0), "policy"])
            rec[f"best_{m}"] = best[m]["policy"] if m in best else None
        anchor_reach = a.get("anchor_reach_cum_flops", a.get("reach_cum_flops"))
        target = (f"the target, the anchor {anchor}'s final shipped model's validation accuracy "
                  f"({fmt_acc(a.get('target_val_acc', np.nan))} on average over the repeats; the anchor reached it "
                  f"after {fmt_cost(anchor_reach, 'flops')} of its {fmt_cost(a['total_flops'], 'flops')} on average)")
        if "flops" in best:
            b = best["flops"]
            tied = [t for t in best_ties["flops"] if t != b["policy"]]
            s = (f"{head}: {b['policy']} reached {target} in {int(b['repeats'])} of {int(b['repeats'])} repeats at "
                 f"the lowest cost" + (f" (tied with {', '.join(tied)})" if tied else "") + ", "
                 f"{fmt_cost(b['reach_cum_flops'], 'flops')} on average: a speed-up of "
                 f"{_speedup_text(b, 'flops', confidence)} in FLOPs and {_speedup_text(b, 'time', confidence)} in "
                 f"wall-clock over the anchor's own cost to reach it (geometric means over the repeats). Its final "
                 f"shipped model: {fmt_acc(b['test_acc'])} test accuracy ({100 * confidence:g}% CI "
                 f"{fmt_ci(b.get('test_acc_lo', np.nan), b.get('test_acc_hi', np.nan))}).")
            sp = pd.to_numeric(full["speedup_flops"], errors="coerce") if "speedup_flops" in full else None
            if sp is not None and sp.notna().any() and sp.max() > b["speedup_flops"] + 1e-9:
                h = full.loc[sp.idxmax()]
                s += (f" {h['policy']} has a higher speed-up ({_speedup_text(h, 'flops', confidence)}, a geometric "
                      f"mean of per-repeat ratios) but a higher mean cost to reach it "
                      f"({fmt_cost(h['reach_cum_flops'], 'flops')}).")
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
                s += (f"; the closest, {c['policy']}, reached it in {_int_text(c['_r'])} of {_int_text(c['repeats'])} "
                      f"repeats (speed-up {_speedup_text(c, 'flops', confidence)} in FLOPs{_censored_text(c)}).")
            else:
                s += "."
        for r in g.sort_values("policy").to_dict("records"):
            s += _equal_cost_text(r, scen, confidence)
        s += (" The target, whether a policy reaches it, and every choice inside a sequence (the model a policy "
              "ships, its teachers and starting weights, which trials stop early) read the validation split only; "
              "test accuracy is only reported.")
        rec["statement"] = s
        out.append(rec)
    return pd.DataFrame(out)


def _int_text(v: Any) -> str:
    return "?" if _absent(v) else str(int(v))
