"""Altair charts of the report. Every chart takes tidy tables and knows no method by name; every
accuracy it draws carries its Student-t interval over seeds (error bars or bands) and its number of
seeds; the frontier draws each model's baseline budget curve as a line with its band."""

from __future__ import annotations

import math

import altair as alt
import numpy as np
import pandas as pd

from reuse import stats as S
from reuse.report.collect import AXES
from reuse.report.tables import (BASELINE, ROLE_BETTER, ROLE_NOT_BETTER, SEQ_MEASURES, fmt_gain, off_frontier,
                                 step_word)

WIDTH = 620
ROLE_SHAPES = {"baseline": "square", "selected": "diamond", ROLE_BETTER: "circle", ROLE_NOT_BETTER: "triangle-up"}
# a whole sequence (every step of a tuning sequence or a retraining, one point per policy) on the frontier chart
SEQUENCE_ROLE = "sequence (whole tuning / retraining, full cost)"
SEQUENCE_SHAPE = "cross"
VERDICT_COLORS = {"baseline": "#555555", "better": "#1a9850", "worse": "#d73027", "no detectable difference": "#4575b4",
                  "n=1, no interval": "#fdae61", "no paired baseline": "#999999", "no validation split": "#bbbbbb",
                  "sequence step": "#cccccc", "another question": "#dddddd"}
# a censored speed-up (some seeds never reached the target): what its value is
TTA_STATUS = {S.UPPER: "at most (the method missed it in some seeds)",
              S.LOWER: "at least (the baseline missed it in some seeds)", "mixed": "both missed it in some seeds"}
TTA_WHATS = {"steps": "optimisation steps", "flops": "training FLOPs", "time_s": "wall-clock (s)",
             "flops_full": "FLOPs incl. reused", "time_s_full": "wall-clock incl. reused (s)"}


def _clean(df: pd.DataFrame) -> pd.DataFrame:
    """Infinite values are not JSON; NaN becomes null in the chart data."""
    return df.replace([np.inf, -np.inf], np.nan)


def _absent(v) -> bool:
    """None or NaN (a setting a variant does not have)."""
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA


def _pct(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}%"


def _ci_text(lo, hi, n) -> str:
    if n is not None and n < 2:
        return "n=1, no interval" if n == 1 else "no runs"
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return "no interval"
    return f"[{100 * lo:.2f}, {100 * hi:.2f}]%"


# ----------------------------------------------------------------------------- frontier
def frontier_data(aggs: pd.DataFrame, sequences: pd.DataFrame | None = None) -> pd.DataFrame:
    """Long table: one row per (finished aggregate, cost axis), sequence steps left out; and with
    ``sequences`` (:func:`reuse.report.tables.sequence_points`) one row per (whole sequence, cost
    axis), role :data:`SEQUENCE_ROLE`, at its total cost (wall-clock or FLOPs: the same on the full
    and the marginal axis, since a sequence reuses only its own steps), on no frontier."""
    rows = []
    for r in (sequences if sequences is not None else pd.DataFrame()).to_dict("records"):
        for axis, (_, label) in AXES.items():
            cost = r.get("total_time_s" if axis.startswith("time") else "total_flops")
            if _absent(cost):
                continue
            n = r.get("repeats")
            steps = "" if _absent(r.get("steps")) else f" × {int(r['steps'])} {step_word(r['scenario'])}"
            rows.append({"axis": axis, "axis_label": label, "cost": cost, "cost_lo": None, "cost_hi": None,
                         "acc": r["test_acc"], "acc_lo": r.get("test_acc_lo"), "acc_hi": r.get("test_acc_hi"),
                         "label": r["label"], "method": r["scenario"], "model": r.get("model"),
                         "variant": r["policy"], "role": SEQUENCE_ROLE, "on_frontier": False,
                         "n_of": ("" if _absent(n) else f"{int(n)} repeats") + steps,
                         "acc_text": _pct(r["test_acc"]),
                         "ci_text": _ci_text(r.get("test_acc_lo"), r.get("test_acc_hi"), None if _absent(n) else n),
                         "verdict": "anchor (reuses nothing)" if not _absent(r.get("is_anchor")) and bool(r["is_anchor"])
                         else "",
                         "diff_text": "" if _absent(r.get("speedup_flops")) else
                         f"speed-up to the target over the anchor "
                         f"{'' if _absent(r.get('speedup_flops_bound')) else S.bound_word(r['speedup_flops_bound'])}"
                         f"{r['speedup_flops']:.2f}× (FLOPs)"})
    for r in aggs[(aggs["n"] > 0) & ~off_frontier(aggs)].to_dict("records"):
        for axis, (col, label) in AXES.items():
            if col not in r or r[col] is None or (isinstance(r[col], float) and math.isnan(r[col])):
                continue
            rows.append({"axis": axis, "axis_label": label, "cost": r[col], "cost_lo": r.get(f"{col}_lo"),
                         "cost_hi": r.get(f"{col}_hi"), "acc": r["test_acc"], "acc_lo": r.get("test_acc_lo"),
                         "acc_hi": r.get("test_acc_hi"), "label": r["label"], "method": r["method"],
                         "model": r["model"], "variant": r["variant"], "role": r.get(f"role_{axis}", ""),
                         "on_frontier": bool(r.get(f"frontier_{axis}", False)), "n_of": r["n_of"],
                         "acc_text": _pct(r["test_acc"]), "ci_text": _ci_text(r.get("test_acc_lo"),
                                                                                r.get("test_acc_hi"), r["n"]),
                         "verdict": r.get(f"verdict_{axis}", ""), "curve": r["method"] == BASELINE,
                         "budget": r.get("budget"),
                         "diff_text": "" if r["method"] == BASELINE else
                         fmt_gain(r.get(f"gain_at_cost_{axis}"), r.get(f"gain_at_cost_{axis}_lo"),
                                  r.get(f"gain_at_cost_{axis}_hi"), r.get(f"gain_at_cost_{axis}_bound"))
                         + f" vs the {r.get('comparator', r['model'])} baseline curve"})
    return _clean(pd.DataFrame(rows))


FRONTIER_HEIGHT = 440
LABELLED = ("baseline", "selected", ROLE_BETTER)


def place_labels(data: pd.DataFrame, width: int = WIDTH, height: int = FRONTIER_HEIGHT,
                 char_px: float = 5.6, line_px: float = 12.0) -> pd.Series:
    """The y (accuracy units) at which each labelled point's label is drawn, so that labels do not
    overlap: per cost axis, points are mapped to approximate pixels (log x, linear y, both spanning
    the data and its intervals, as the chart's scales do) and each label, in order of accuracy,
    takes the first vertical offset from its point whose box hits no label placed before it.
    Unlabelled points get NaN."""
    out = pd.Series(np.nan, index=data.index, dtype=float)
    if data.empty:
        return out
    for _, g in data.groupby("axis"):
        cost = pd.to_numeric(g["cost"], errors="coerce")
        lows = pd.concat([cost, pd.to_numeric(g.get("cost_lo"), errors="coerce")]).where(lambda v: v > 0).dropna()
        highs = pd.concat([cost, pd.to_numeric(g.get("cost_hi"), errors="coerce")]).dropna()
        accs = pd.concat([g["acc"], g.get("acc_lo"), g.get("acc_hi")]).astype(float).dropna()
        if lows.empty or accs.empty:
            continue
        lx0, lx1 = math.log10(lows.min()), math.log10(max(highs.max(), lows.min() * 1.0001))
        a0, a1 = accs.min(), max(accs.max(), accs.min() + 1e-9)
        px_per_acc = height / (a1 - a0)
        placed: list[tuple[float, float, float, float]] = []
        rows = g[g["role"].isin(LABELLED)].sort_values("acc", ascending=False)
        for i, r in rows.iterrows():
            if not (r["cost"] > 0):
                continue
            x = width * (math.log10(r["cost"]) - lx0) / (lx1 - lx0) + 8
            y = height * (r["acc"] - a0) / (a1 - a0)  # pixels up from the bottom
            w = char_px * len(str(r["label"]))
            for k in range(40):  # offsets +6, -8, +20, -22, ... pixels
                dy = 6 + 14 * (k // 2) if k % 2 == 0 else -(8 + 14 * (k // 2))
                box = (x, y + dy - line_px / 2, x + w, y + dy + line_px / 2)
                if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                    break
            placed.append(box)
            out[i] = r["acc"] + dy / px_per_acc
    return out


def frontier_chart(aggs: pd.DataFrame, axis: str | None = None, default_axis: str = "time_full",
                   title: str = "", sequences: pd.DataFrame | None = None) -> alt.Chart:
    """Accuracy against cost, every finished aggregate with its 95% intervals (accuracy and cost),
    each model's baseline budget curve (line and band), the Pareto frontier (on validation accuracy) as
    a dashed step line, shapes by role (decided by the verdict at equal cost). ``axis=None``: a menu picks the cost axis.
    ``sequences``: whole sequences as extra points (shape :data:`SEQUENCE_SHAPE`, on no frontier)."""
    data = frontier_data(aggs, sequences)
    if data.empty:
        return _empty("no finished runs to place on the frontier")
    data["label_y"] = place_labels(data)
    base = alt.Chart(data)
    if axis is None:
        pick = alt.param(name="cost_axis", value=default_axis,
                         bind=alt.binding_select(options=list(AXES), labels=[v[1] for v in AXES.values()],
                                                 name="cost axis: "))
        base = base.add_params(pick).transform_filter(alt.datum.axis == pick)
        xtitle = "cost (log scale; the menu below picks the axis)"
    else:
        base = base.transform_filter(alt.datum.axis == axis)
        xtitle = f"{AXES[axis][1]} (log scale)"
    legend_sel = alt.selection_point(fields=["method"], bind="legend")
    x = alt.X("cost:Q", scale=alt.Scale(type="log", zero=False, nice=True), title=xtitle)
    y = alt.Y("acc:Q", scale=alt.Scale(zero=False), title="test accuracy (mean over seeds, 95% CI)",
              axis=alt.Axis(format=".1%"))
    tooltip = [alt.Tooltip("label:N", title="run"), alt.Tooltip("n_of:N", title="seeds"),
               alt.Tooltip("acc_text:N", title="accuracy"), alt.Tooltip("ci_text:N", title="95% CI"),
               alt.Tooltip("cost:Q", title="cost", format=".3s"), alt.Tooltip("axis_label:N", title="axis"),
               alt.Tooltip("role:N"), alt.Tooltip("verdict:N", title="verdict at equal cost (val., Holm)"),
               alt.Tooltip("diff_text:N", title="test gain at equal cost")]
    opacity = alt.condition(legend_sel, alt.value(1.0), alt.value(0.15))
    yerr = base.mark_rule(strokeWidth=1.5).encode(x=x, y=alt.Y("acc_lo:Q"), y2="acc_hi:Q",
                                                   color=alt.Color("method:N"), opacity=opacity)
    xerr = base.mark_rule(strokeWidth=1.5).encode(x=alt.X("cost_lo:Q"), x2="cost_hi:Q", y=y,
                                                   color=alt.Color("method:N"), opacity=opacity)
    front = base.transform_filter(alt.datum.on_frontier).mark_line(interpolate="step-after", color="#333",
                                                                     strokeDash=[4, 3]).encode(
        x=alt.X("cost:Q"), y=alt.Y("acc:Q"), order="cost:Q")
    # each model's baseline budget curve: its budgets' mean points joined, with the band of their intervals
    curve = base.transform_filter(alt.datum.curve)
    band = curve.mark_area(opacity=0.12, color="#555").encode(x=alt.X("cost:Q"), y=alt.Y("acc_lo:Q"), y2="acc_hi:Q",
                                                            detail="model:N", order="cost:Q")
    line = curve.mark_line(color="#555", strokeWidth=1.2).encode(x=alt.X("cost:Q"), y=alt.Y("acc:Q"),
                                                                 detail="model:N", order="cost:Q")
    shapes = dict(ROLE_SHAPES, **({SEQUENCE_ROLE: SEQUENCE_SHAPE} if (data["role"] == SEQUENCE_ROLE).any() else {}))
    points = base.mark_point(filled=True, size=110, stroke="black", strokeWidth=0.6).encode(
        x=x, y=y, color=alt.Color("method:N", title="method (click to highlight)", scale=alt.Scale(scheme="tableau10")),
        shape=alt.Shape("role:N", title="role", scale=alt.Scale(domain=list(shapes), range=list(shapes.values())),
                        legend=alt.Legend(labelLimit=320)),
        opacity=opacity, tooltip=tooltip).add_params(legend_sel)
    # labels of the baselines, the selected and the Pareto-optimal points, moved apart (place_labels)
    labels = base.transform_filter("isValid(datum.label_y)").mark_text(
        align="left", baseline="middle", dx=8, fontSize=10).encode(
        x=alt.X("cost:Q"), y=alt.Y("label_y:Q"), text="label:N", opacity=opacity)
    leaders = base.transform_filter("isValid(datum.label_y)").mark_rule(color="#999", strokeWidth=0.6).encode(
        x=alt.X("cost:Q"), y=alt.Y("acc:Q"), y2="label_y:Q", opacity=opacity)
    return alt.layer(band, line, front, yerr, xerr, leaders, points, labels).properties(width=WIDTH, height=FRONTIER_HEIGHT,
                                                                            title=title)


# ----------------------------------------------------------------------------- sequences
ANCHOR_KIND, REUSE_KIND = "anchor (reuses nothing)", "reuses earlier steps"
COMPARATOR_KIND = "equal-cost comparator (one run)"
# the accuracy the sequence chart draws (menu): the split the target and the speed-ups read, or the reported one
SEQ_SPLITS = {"val": ("val", "val_min", "val_max", "n_val", "validation (the target's split)"),
              "test": ("acc", "acc_min", "acc_max", "n", "test (reported only)")}


def sequence_chart_data(curve: pd.DataFrame) -> pd.DataFrame:
    """Long table of :func:`reuse.report.tables.sequence_curve`: one row per (policy, step, measure, split),
    ``split`` the accuracy drawn (the shipped model's validation or test accuracy); ``kind`` says whether
    the policy is the anchor, an equal-cost comparator (one run per step, drawn as points) or reuses its steps."""
    if curve.empty:
        return pd.DataFrame()
    many = curve["model"].nunique() > 1 if "model" in curve else False
    rows = []
    for r in curve.to_dict("records"):
        series = f"{r['policy']} ({r['model']})" if many else str(r["policy"])
        comp = r.get("equal_cost")
        kind = (ANCHOR_KIND if bool(r.get("is_anchor", False)) else
                COMPARATOR_KIND if not _absent(comp) and str(comp).strip() else REUSE_KIND)
        for m, (col, _, _, label) in SEQ_MEASURES.items():
            for split, (acc, lo, hi, n, split_label) in SEQ_SPLITS.items():
                a, lo_v, hi_v = r.get(acc, math.nan), r.get(lo, math.nan), r.get(hi, math.nan)
                rows.append({"measure": m, "measure_label": label, "split": split, "split_label": split_label,
                             "cost": r[col], "acc": a, "lo": lo_v, "hi": hi_v, "n": r.get(n, math.nan),
                             "repeats": r["repeats"], "at_target": r.get("at_target", math.nan),
                             "step": r["step"], "policy": series, "kind": kind,
                             "matches": "" if kind != COMPARATOR_KIND else str(comp),
                             "range_text": "" if _absent(lo_v) else f"{100 * lo_v:.2f} – {100 * hi_v:.2f}%"})
    return _clean(pd.DataFrame(rows))


def sequence_chart(curve: pd.DataFrame, target: float | None = None, scenario: str = "",
                   title: str = "") -> alt.Chart:
    """The cumulative-cost curve of each policy of a sequence: the accuracy of the model the policy would
    ship after each step (mean over repeats, band: min to max over repeats) against the cumulative cost
    (mean over repeats). Menus: FLOPs or wall-clock; the shipped model's validation accuracy (default: the
    split the target and the speed-ups read) or its test accuracy (reported only). ``target``: the mean over
    repeats of the target (the anchor's final shipped validation accuracy), a dotted rule on the validation
    view. The anchor dashed; an equal-cost comparator (one run from scratch per step, not a chain) as
    diamonds with a min–max bar."""
    d = sequence_chart_data(curve)
    if d.empty:
        return _empty("no steps of this sequence yet")
    word = step_word(scenario)
    pick = alt.param(name="sequence_cost", value="flops",
                     bind=alt.binding_select(options=list(SEQ_MEASURES),
                                             labels=[f"cumulative {v[3]}" for v in SEQ_MEASURES.values()],
                                             name="cost: "))
    split = alt.param(name="sequence_split", value="val",
                      bind=alt.binding_select(options=list(SEQ_SPLITS), labels=[v[4] for v in SEQ_SPLITS.values()],
                                              name="accuracy: "))
    sel = alt.selection_point(fields=["policy"], bind="legend")
    base = alt.Chart(d).transform_filter((alt.datum.measure == pick) & (alt.datum.split == split))
    chain = base.transform_filter(alt.datum.kind != COMPARATOR_KIND)
    one_off = base.transform_filter(alt.datum.kind == COMPARATOR_KIND)
    x = alt.X("cost:Q", title=f"cumulative cost of the {word} so far (mean over repeats; menu below)",
              scale=alt.Scale(zero=True))
    y = alt.Y("acc:Q", title="shipped model's accuracy (menu; mean, band: min–max)",
              scale=alt.Scale(zero=False), axis=alt.Axis(format=".1%"))
    color = alt.Color("policy:N", title="policy (click to highlight)", scale=alt.Scale(scheme="tableau10"),
                      legend=alt.Legend(symbolOpacity=1))
    opacity = alt.condition(sel, alt.value(1.0), alt.value(0.12))
    tooltip = [alt.Tooltip("policy:N"), alt.Tooltip("kind:N", title="policy kind"),
               alt.Tooltip("step:Q", title=word.removesuffix("s")),
               alt.Tooltip("cost:Q", title="cumulative cost (mean)", format=".3s"),
               alt.Tooltip("measure_label:N", title="measure"), alt.Tooltip("split_label:N", title="accuracy"),
               alt.Tooltip("acc:Q", title="shipped model's accuracy (mean)", format=".2%"),
               alt.Tooltip("range_text:N", title="min – max over repeats"),
               alt.Tooltip("at_target:Q", title="repeats at the target (val.) by then"),
               alt.Tooltip("n:Q", title="repeats shipping a model"), alt.Tooltip("repeats:Q")]
    # the band is drawn in x order (an `order` channel would stack areas, not sort them)
    band = chain.mark_area().encode(x=x, y=alt.Y("lo:Q"), y2="hi:Q", color=color,
                                    opacity=alt.condition(sel, alt.value(0.15), alt.value(0.02)))
    line = chain.mark_line(point=True, strokeWidth=1.8).encode(
        x=x, y=y, color=color, order="step:Q",
        strokeDash=alt.StrokeDash("kind:N", scale=alt.Scale(domain=[REUSE_KIND, ANCHOR_KIND], range=[[1, 0], [5, 3]]),
                                  title=None),
        opacity=opacity, tooltip=tooltip).add_params(sel)
    bar = one_off.mark_rule(strokeWidth=1.5).encode(x=x, y=alt.Y("lo:Q"), y2="hi:Q", color=color, opacity=opacity)
    dot = one_off.mark_point(shape="diamond", size=110, filled=True).encode(
        x=x, y=y, color=color, opacity=opacity,
        tooltip=tooltip + [alt.Tooltip("matches:N", title="equal cost to (its cumulative training)")])
    layers = [band, line, bar, dot]
    if target is not None and not _absent(target):
        rule = alt.Chart(pd.DataFrame({"y": [target], "split": ["val"],
                                       "what": ["target: the anchor's final shipped validation accuracy, mean over "
                                                "repeats"]})).transform_filter(alt.datum.split == split)
        layers.insert(0, rule.mark_rule(color="#333", strokeDash=[2, 4]).encode(
            y="y:Q", tooltip=[alt.Tooltip("what:N", title=""), alt.Tooltip("y:Q", title="target", format=".2%")]))
    return alt.layer(*layers).add_params(pick, split).properties(width=WIDTH, height=340, title=title)


# ----------------------------------------------------------------------------- per-method charts
def accuracy_chart(aggs: pd.DataFrame, title: str = "", field: str = "test_acc") -> alt.Chart:
    """Mean test accuracy (or another accuracy column of the aggregates, ``field``) of each variant
    and of its baselines, with 95% intervals, coloured by its verdict at equal cost (validation
    split, Holm-adjusted; the headline cost axis); the tooltip has the same-recipe test difference."""
    d = aggs[aggs["n"] > 0].copy()
    if field != "test_acc":
        d = d[d[field].notna()]
        d[["test_acc", "test_acc_lo", "test_acc_hi"]] = d[[field, f"{field}_lo", f"{field}_hi"]].to_numpy()
    if d.empty:
        return _empty("no finished runs")
    d["acc_text"] = d["test_acc"].map(_pct)
    d["ci_text"] = [_ci_text(a, b, n) for a, b, n in zip(d["test_acc_lo"], d["test_acc_hi"], d["n"])]
    d["diff_text"] = [("" if m == BASELINE or n == 0 else
                       f"{100 * dm:+.2f} points, CI {_ci_text(a, b, n)}".replace("%", ""))
                      for m, dm, a, b, n in zip(d["method"], d["diff_mean"], d["diff_lo"], d["diff_hi"], d["n_pairs"])]
    d = _clean(d[["label", "model", "method", "test_acc", "test_acc_lo", "test_acc_hi", "verdict", "n_of", "acc_text",
                  "ci_text", "diff_text"]])
    order = list(d.sort_values(["model", "method", "test_acc"], ascending=[True, True, False])["label"])
    base = alt.Chart(d)
    y = alt.Y("label:N", sort=order, title=None)
    color = alt.Color("verdict:N", title="verdict at equal cost (val., Holm)",
                      scale=alt.Scale(domain=list(VERDICT_COLORS), range=list(VERDICT_COLORS.values())))
    bars = base.mark_rule(strokeWidth=2).encode(x=alt.X("test_acc_lo:Q"), x2="test_acc_hi:Q", y=y, color=color)
    pts = base.mark_point(filled=True, size=80).encode(
        x=alt.X("test_acc:Q", scale=alt.Scale(zero=False),
                title="test accuracy (mean, 95% CI)" if field == "test_acc" else f"{field.replace('_', ' ')} (mean, 95% CI)",
                axis=alt.Axis(format=".1%")), y=y, color=color,
        tooltip=[alt.Tooltip("label:N", title="run"), alt.Tooltip("n_of:N", title="seeds"),
                 alt.Tooltip("acc_text:N", title="accuracy"), alt.Tooltip("ci_text:N", title="95% CI"),
                 alt.Tooltip("verdict:N", title="verdict at equal cost"),
                 alt.Tooltip("diff_text:N", title="vs the same recipe's baseline (test)")])
    n_text = base.mark_text(align="left", dx=8, fontSize=10, color="#555").encode(
        x=alt.X("test_acc_hi:Q"), y=y, text="n_of:N")
    return alt.layer(bars, pts, n_text).properties(width=WIDTH - 120, height=max(60, 22 * len(d)), title=title)


def curve_stats(curves: pd.DataFrame, aggs: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Mean test accuracy per step of each aggregate over its seeds, with a t-interval band."""
    rows = []
    if curves.empty:
        return pd.DataFrame()
    labels = dict(zip(zip(aggs["dataset"], aggs["model"], aggs["method"], aggs["variant"]), aggs["label"]))
    for key, g in curves.groupby(["dataset", "model", "method", "variant"]):
        wide = g.pivot_table(index="seed", columns="step", values="test_acc")
        x = wide.to_numpy(dtype=np.float64)
        lo, hi = S.mean_ci(x, confidence) if x.shape[0] > 1 else (np.full(x.shape[1], np.nan),) * 2
        with np.errstate(all="ignore"):
            mean = np.nanmean(x, axis=0)
        epochs = g.groupby("step")["epoch"].first()
        for j, step in enumerate(wide.columns):
            rows.append({"dataset": key[0], "model": key[1], "method": key[2], "variant": key[3],
                         "label": labels.get(key, f"{key[2]}/{key[3]} ({key[1]})"), "step": int(step),
                         "epoch": int(epochs.get(step, 0)), "acc": mean[j], "lo": lo[j], "hi": hi[j],
                         "n": int((~np.isnan(x[:, j])).sum())})
    return _clean(pd.DataFrame(rows))


def curves_chart(stats: pd.DataFrame, title: str = "") -> alt.Chart:
    """Test accuracy against optimisation steps (mean line, 95% band over seeds); baselines dashed;
    one panel per model."""
    if stats.empty:
        return _empty("no per-epoch metrics")
    d = stats.copy()
    d["kind"] = np.where(d["method"] == BASELINE, "baseline", "method")
    sel = alt.selection_point(fields=["label"], bind="legend")
    base = alt.Chart().encode(x=alt.X("step:Q", title="optimisation steps"),
                              color=alt.Color("label:N", title="run (click to highlight)",
                                              scale=alt.Scale(scheme="tableau20")))
    # the band fills by the same labels (same sorted domain, same colours); its legend merges with the lines'
    band = alt.Chart().mark_area().encode(x=alt.X("step:Q"), y=alt.Y("lo:Q"), y2="hi:Q",
                                          fill=alt.Fill("label:N", title="run (click to highlight)",
                                                        scale=alt.Scale(scheme="tableau20"),
                                                        legend=alt.Legend(symbolOpacity=1)),
                                          opacity=alt.condition(sel, alt.value(0.18), alt.value(0.03)))
    line = base.mark_line(strokeWidth=1.8).encode(
        y=alt.Y("acc:Q", title="test accuracy (mean, 95% band)", scale=alt.Scale(zero=False),
                axis=alt.Axis(format=".1%")),
        strokeDash=alt.StrokeDash("kind:N", scale=alt.Scale(domain=["method", "baseline"], range=[[1, 0], [5, 3]]),
                                  title=None),
        opacity=alt.condition(sel, alt.value(1.0), alt.value(0.12)),
        tooltip=[alt.Tooltip("label:N", title="run"), alt.Tooltip("epoch:Q"), alt.Tooltip("step:Q"),
                 alt.Tooltip("acc:Q", title="accuracy", format=".2%"), alt.Tooltip("lo:Q", title="CI low", format=".2%"),
                 alt.Tooltip("hi:Q", title="CI high", format=".2%"), alt.Tooltip("n:Q", title="seeds")]
    ).add_params(sel)
    return alt.layer(band, line, data=d).properties(width=WIDTH // max(1, min(2, d["model"].nunique())) - 40,
                                                    height=300).facet(column=alt.Column("model:N", title=None)) \
        .properties(title=title)


def tta_data(aggs: pd.DataFrame, target: str) -> pd.DataFrame:
    rows = []
    for r in aggs[(aggs["n"] > 0) & (aggs["method"] != BASELINE)].to_dict("records"):
        for what in TTA_WHATS:
            c = f"speedup_{target}_{what}"
            if c not in r:
                continue
            rows.append({"label": r["label"], "what": what, "what_label": TTA_WHATS[what], "speedup": r[c],
                         "lo": r.get(f"{c}_lo"), "hi": r.get(f"{c}_hi"), "pairs": r.get(f"{c}_n"),
                         "bound": r.get(f"{c}_bound"),
                         "reached": f"{r.get(f'tta_{target}_reached', 0)} of {r['n']}",
                         "target": r.get(f"tta_{target}_target"),
                         "cost": r.get(f"tta_{target}_{what}"), "model": r["model"]})
    d = _clean(pd.DataFrame(rows))
    if not d.empty:
        d["status"] = [TTA_STATUS.get(b, "reached") if not _absent(v) else "target not reached"
                       for v, b in zip(d["speedup"], d["bound"])]
    return d


def tta_chart(aggs: pd.DataFrame, target: str = "baseline", title: str = "") -> alt.Chart:
    """Speed-up to the target accuracy: per seed, the baseline's cost to reach it over the method's
    (geometric mean, t-interval); a seed where one side never reaches it is censored, making the
    speed-up a bound (colour); the measure (steps, FLOPs, wall-clock, marginal or full) is picked from a
    menu. Methods with no value at all are listed at 0."""
    d = tta_data(aggs, target)
    if d.empty:
        return _empty("no method runs to compare with a baseline")
    d["x"] = d["speedup"].fillna(0.0)
    pick = alt.param(name=f"tta_measure_{target.replace('.', '_')}", value="steps",
                     bind=alt.binding_select(options=list(TTA_WHATS), labels=list(TTA_WHATS.values()),
                                             name="measure: "))
    base = alt.Chart(d).add_params(pick).transform_filter(alt.datum.what == pick)
    y = alt.Y("label:N", title=None, sort="-x")
    err = base.mark_rule(strokeWidth=2).encode(x=alt.X("lo:Q"), x2="hi:Q", y=y)
    pts = base.mark_point(filled=True, size=80).encode(
        x=alt.X("x:Q", title="speed-up to the target (baseline cost / method cost; 1 = same)"), y=y,
        color=alt.Color("status:N", scale=alt.Scale(domain=["reached", *TTA_STATUS.values(), "target not reached"],
                                                    range=["#2166ac", "#f4a582", "#92c5de", "#999999", "#bbbbbb"])),
        tooltip=[alt.Tooltip("label:N", title="run"), alt.Tooltip("what_label:N", title="measure"),
                 alt.Tooltip("speedup:Q", format=".2f"), alt.Tooltip("lo:Q", title="CI low", format=".2f"),
                 alt.Tooltip("hi:Q", title="CI high", format=".2f"), alt.Tooltip("pairs:Q", title="paired seeds"),
                 alt.Tooltip("reached:N", title="runs reaching it"), alt.Tooltip("target:Q", format=".2%"),
                 alt.Tooltip("cost:Q", title="mean cost to reach it", format=".3s")])
    one = alt.Chart(pd.DataFrame({"x": [1.0]})).mark_rule(color="#333", strokeDash=[4, 3]).encode(x="x:Q")
    n = d["label"].nunique()
    return alt.layer(one, err, pts).properties(width=WIDTH - 120, height=max(60, 22 * n), title=title)


def sweep_chart(aggs: pd.DataFrame, key: str, group: list[str], title: str = "") -> alt.Chart:
    """Accuracy against one numeric setting of the variants (e.g. keep fraction, temperature), one
    line per combination of the other settings that vary, with 95% intervals and the baseline."""
    d = aggs[(aggs["n"] > 0)].copy()
    d["x"] = pd.to_numeric(d[key], errors="coerce")
    d = d[d["x"].notna()]
    d["group"] = [" ".join(f"{g.removeprefix('cfg_')}={v}" for g, v in zip(group, vals) if not _absent(v)) or "all"
                  for vals in d[group].itertuples(index=False)] if group else "all"
    d["ci_text"] = [_ci_text(a, b, n) for a, b, n in zip(d["test_acc_lo"], d["test_acc_hi"], d["n"])]
    d = _clean(d[["x", "group", "label", "model", "test_acc", "test_acc_lo", "test_acc_hi", "n_of", "ci_text",
                  "verdict"]])
    base = alt.Chart(d)
    x = alt.X("x:Q", title=key.removeprefix("cfg_"), scale=alt.Scale(zero=False))
    color = alt.Color("group:N", title="other settings", legend=alt.Legend(labelLimit=420))
    line = base.mark_line(point=True).encode(
        x=x, y=alt.Y("test_acc:Q", title="test accuracy (mean, 95% CI)", scale=alt.Scale(zero=False),
                     axis=alt.Axis(format=".1%")), color=color,
        tooltip=[alt.Tooltip("label:N", title="run"), alt.Tooltip("n_of:N", title="seeds"),
                 alt.Tooltip("test_acc:Q", title="accuracy", format=".2%"), alt.Tooltip("ci_text:N", title="95% CI"),
                 alt.Tooltip("verdict:N", title="verdict at equal cost")])
    err = base.mark_rule().encode(x=x, y="test_acc_lo:Q", y2="test_acc_hi:Q", color=color)
    return alt.layer(err, line).properties(width=WIDTH - 100, height=280, title=title)


def baseline_rules(aggs: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    return aggs[(aggs["method"] == BASELINE) & aggs["model"].isin(models) & (aggs["n"] > 0)]


def per_class_stats(per_class: pd.DataFrame, aggs: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Mean per-class test accuracy of each aggregate over seeds (t-interval), and its difference from
    the same model's budget-1 baseline."""
    if per_class.empty:
        return pd.DataFrame()
    labels = dict(zip(zip(aggs["dataset"], aggs["model"], aggs["method"], aggs["variant"]), aggs["label"]))
    rows = []
    base_mean = {}
    for key, g in per_class.groupby(["dataset", "model", "method", "variant"]):
        wide = g.pivot_table(index="seed", columns="cls", values="acc")
        x = wide.to_numpy(dtype=np.float64)
        lo, hi = S.mean_ci(x, confidence) if x.shape[0] > 1 else (np.full(x.shape[1], np.nan),) * 2
        mean = np.nanmean(x, axis=0)
        for j, c in enumerate(wide.columns):
            rows.append({"dataset": key[0], "model": key[1], "method": key[2], "variant": key[3],
                         "label": labels.get(key, str(key)), "cls": int(c), "acc": mean[j], "lo": lo[j], "hi": hi[j],
                         "n": x.shape[0]})
            if key[2] == BASELINE and (key[3] is None or key[3] == "" or key[3] != key[3]):
                base_mean[(key[0], key[1], int(c))] = mean[j]
    d = pd.DataFrame(rows)
    d["diff"] = [a - base_mean.get((ds, m, c), np.nan) for ds, m, c, a in zip(d["dataset"], d["model"], d["cls"],
                                                                                d["acc"])]
    return _clean(d)


def per_class_chart(stats: pd.DataFrame, title: str = "") -> alt.Chart:
    """Per-class test accuracy (heat map of the difference from the baseline; the baselines' rows show
    their accuracy difference 0), values and intervals on hover."""
    if stats.empty:
        return _empty("no test predictions")
    d = stats.copy()
    d["ci_text"] = [_ci_text(a, b, n) for a, b, n in zip(d["lo"], d["hi"], d["n"])]
    lim = float(np.nanmax(np.abs(d["diff"]))) if d["diff"].notna().any() else 0.1
    lim = max(lim, 0.01)
    return alt.Chart(d).mark_rect().encode(
        x=alt.X("cls:O", title="class"), y=alt.Y("label:N", title=None),
        color=alt.Color("diff:Q", title="accuracy − baseline", scale=alt.Scale(scheme="redblue", domain=[-lim, lim])),
        tooltip=[alt.Tooltip("label:N", title="run"), alt.Tooltip("cls:O", title="class"),
                 alt.Tooltip("acc:Q", title="accuracy", format=".2%"), alt.Tooltip("ci_text:N", title="95% CI"),
                 alt.Tooltip("diff:Q", title="vs baseline", format="+.2%"), alt.Tooltip("n:Q", title="seeds")]
    ).properties(width=WIDTH - 150, height=max(60, 20 * d["label"].nunique()), title=title)


# ----------------------------------------------------------------------------- scores
def score_hist_data(df: pd.DataFrame, bins: int = 30) -> pd.DataFrame:
    rows = []
    for (score, epoch), g in df.groupby(["score", "epoch"], observed=True):
        v = g["value"].to_numpy(dtype=np.float64)
        v = v[np.isfinite(v)]
        if not len(v):
            continue
        counts, edges = np.histogram(v, bins=bins)
        for c, a, b in zip(counts, edges[:-1], edges[1:]):
            rows.append({"score": str(score), "epoch": int(epoch), "start": a, "end": b, "count": int(c)})
    return pd.DataFrame(rows)


def score_hist_chart(df: pd.DataFrame, title: str = "") -> alt.Chart:
    """Distribution of each score (mean over the past runs) at each scored epoch."""
    d = score_hist_data(df)
    if d.empty:
        return _empty("empty score table")
    return alt.Chart(d).mark_bar().encode(
        x=alt.X("start:Q", title="score (mean over past runs)", bin="binned"), x2="end:Q",
        y=alt.Y("count:Q", title="examples"), color=alt.Color("epoch:O", title="epoch"),
        tooltip=["score:N", "epoch:O", alt.Tooltip("start:Q", format=".3g"), alt.Tooltip("end:Q", format=".3g"),
                 "count:Q"]
    ).properties(width=160, height=110).facet(row=alt.Row("score:N", title=None),
                                              column=alt.Column("epoch:O", title="epoch")) \
        .resolve_scale(x="independent", y="independent").properties(title=title)


def agreement_chart(agree: pd.DataFrame, title: str = "") -> alt.Chart:
    """Spearman rank correlation of each score: with more past runs averaged (k runs against the
    others), per scored epoch."""
    d = agree[agree["kind"] == "n_runs"].copy() if "kind" in agree else pd.DataFrame()
    if d.empty:
        return _empty("no rank-agreement study")
    d = _clean(d)
    return alt.Chart(d).mark_line(point=True).encode(
        x=alt.X("k:Q", title="past runs averaged (k)"),
        y=alt.Y("spearman:Q", title="Spearman ρ, k runs vs the others", scale=alt.Scale(zero=False)),
        color=alt.Color("score:N"), strokeDash=alt.StrokeDash("epoch:O", title="epoch"),
        tooltip=["score:N", "epoch:O", "k:Q", alt.Tooltip("spearman:Q", format=".3f"),
                 alt.Tooltip("spearman_std:Q", title="std over subsets", format=".3f"), alt.Tooltip("n:Q", title="subsets")]
    ).properties(width=WIDTH - 100, height=260, title=title)


def agreement_runs_chart(agree: pd.DataFrame, title: str = "") -> alt.Chart:
    """Mean Spearman correlation between pairs of past runs, per score and epoch."""
    d = agree[agree["kind"] == "runs"].copy() if "kind" in agree else pd.DataFrame()
    if d.empty:
        return _empty("no rank-agreement study")
    d = _clean(d)
    return alt.Chart(d).mark_rect().encode(
        x=alt.X("epoch:O"), y=alt.Y("score:N", title=None),
        color=alt.Color("spearman:Q", title="Spearman ρ", scale=alt.Scale(scheme="viridis")),
        tooltip=["score:N", "epoch:O", alt.Tooltip("spearman:Q", format=".3f"),
                 alt.Tooltip("spearman_std:Q", title="std over pairs", format=".3f"), alt.Tooltip("n:Q", title="pairs")]
    ).properties(width=240, height=24 * max(1, d["score"].nunique()), title=title)


def _empty(message: str) -> alt.Chart:
    return alt.Chart(pd.DataFrame({"text": [message]})).mark_text(fontSize=14, color="#777").encode(
        text="text:N").properties(width=WIDTH // 2, height=60)
