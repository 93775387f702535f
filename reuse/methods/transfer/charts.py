"""The transfer studies' charts, drawn under their tables on the method's page (Study ``charts``):
target accuracy against the number of source classes removed, the class influences with their
intervals, and the source classes that most influence each target class."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

WIDTH = 280
KINDS = {"harmful": ("without the most harmful", "#1a9850"), "helpful": ("without the most helpful", "#d73027"),
         "random": ("without random classes", "#4575b4")}
TRANSFER_TITLES = {"probe": "linear probe", "finetune": "full fine-tune"}


def _clean(df: pd.DataFrame) -> pd.DataFrame:
    """Infinite values are not JSON; NaN becomes null in the chart data."""
    return df.replace([np.inf, -np.inf], np.nan)


def counterfactual_charts(table: pd.DataFrame) -> list[tuple[str, alt.Chart, str]]:
    """Target accuracy against k per kind (mean over seeds, 95% interval), one panel per transfer;
    every kind's line starts at the full source (k = 0), whose interval is the grey band."""
    if table.empty:
        return []
    full = table[table["kind"] == "full"]
    kinds = [k for k in KINDS if k in set(table["kind"])]
    d = pd.concat([full.assign(kind=k) for k in kinds] + [table[table["kind"] != "full"]], ignore_index=True)
    d["label"] = d["kind"].map(lambda k: KINDS[k][0])
    d["seeds"] = d["n"].astype(int).astype(str)
    d = _clean(d[["transfer", "label", "k", "acc", "acc_lo", "acc_hi", "seeds", "removed"]])
    color = alt.Color("label:N", title=None, scale=alt.Scale(domain=[KINDS[k][0] for k in kinds],
                                                           range=[KINDS[k][1] for k in kinds]))
    x = alt.X("k:Q", title="source classes removed (k)", axis=alt.Axis(tickMinStep=1))
    y = alt.Y("acc:Q", title="target test accuracy", scale=alt.Scale(zero=False), axis=alt.Axis(format=".1%"))
    panels = []
    for t in [t for t in TRANSFER_TITLES if t in set(d["transfer"])]:
        mine = alt.Chart(d[d["transfer"] == t])
        band = alt.Chart(_clean(full[full["transfer"] == t][["acc_lo", "acc_hi"]])).mark_rect(
            opacity=0.15, color="#555").encode(y="acc_lo:Q", y2="acc_hi:Q")
        bars = mine.mark_errorbar(ticks=True).encode(x=x, y=alt.Y("acc_lo:Q", title=None), y2="acc_hi:Q", color=color)
        lines = mine.mark_line(point=True).encode(
            x=x, y=y, color=color,
            tooltip=["label:N", "k:Q", alt.Tooltip("acc:Q", format=".2%"), alt.Tooltip("acc_lo:Q", format=".2%"),
                     alt.Tooltip("acc_hi:Q", format=".2%"), "seeds:N", "removed:N"])
        panels.append(alt.layer(band, bars, lines).properties(width=WIDTH, height=220, title=TRANSFER_TITLES[t]))
    return [("Target accuracy without k source classes", alt.hconcat(*panels).resolve_scale(y="independent"),
             "Mean target test accuracy over seeds with its 95% t-interval, against the number of source "
             "classes removed: the most harmful and the most helpful by the influence table, or random ones; k = 0 "
             "and the grey band: the full source. The published direction: without the most harmful classes above "
             "the full source, without the most helpful below it.")]


def influence_charts(table: pd.DataFrame) -> list[tuple[str, alt.Chart, str]]:
    """Each source class's influence on the target with its bootstrap interval over the subset runs,
    most helpful first."""
    if table.empty:
        return []
    d = _clean(table[["name", "influence", "influence_lo", "influence_hi", "rank", "n_in", "n_out"]]).copy()
    d["sign"] = np.where(d["influence"] >= 0, "helps", "hurts")
    order = list(d.sort_values("rank")["name"])
    yy = alt.Y("name:N", sort=order, title="source class")
    color = alt.Color("sign:N", title=None, scale=alt.Scale(domain=["helps", "hurts"], range=["#4575b4", "#d73027"]))
    base = alt.Chart(d)
    x = alt.X("influence_lo:Q", title="influence (sum over target validation examples)")
    rule = base.mark_rule(strokeWidth=2).encode(x=x, x2="influence_hi:Q", y=yy, color=color)
    pts = base.mark_point(filled=True, size=60).encode(
        x="influence:Q", y=yy, color=color,
        tooltip=["name:N", alt.Tooltip("influence:Q", format=".3f"), alt.Tooltip("influence_lo:Q", format=".3f"),
                 alt.Tooltip("influence_hi:Q", format=".3f"), "n_in:Q", "n_out:Q"])
    zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(color="#999", strokeDash=[4, 3]).encode(x="x:Q")
    using, metric = (table[c].iloc[0] if c in table else "" for c in ("using", "metric"))
    return [("Influence of each source class on the target", alt.layer(zero, rule, pts).properties(
        width=2 * WIDTH, height=max(120, 16 * len(d))),
        f"Per source class: the mean over the subset runs that trained on it, minus the mean over those that did "
        f"not, of the summed {metric} of the target's validation examples after the "
        f"{TRANSFER_TITLES.get(using, using)} (the counterfactuals pick their classes from it; no test example is "
        "read); "
        "line: 95% bootstrap interval over the subset runs.")]


def subpopulation_charts(table: pd.DataFrame) -> list[tuple[str, alt.Chart, str]]:
    """Per target class, the influence of the source classes that most raise (and the one that most
    lowers) its examples' predictions."""
    if table.empty:
        return []
    d = _clean(table[["target_name", "source_name", "influence", "influence_lo", "influence_hi", "role", "rank"]])
    sources = list(dict.fromkeys(d.sort_values("influence", ascending=False)["source_name"]))
    heat = alt.Chart(d).mark_rect().encode(
        x=alt.X("source_name:N", sort=sources, title="source class"),
        y=alt.Y("target_name:N", title="target class", sort=list(dict.fromkeys(d["target_name"]))),
        color=alt.Color("influence:Q", scale=alt.Scale(scheme="redblue", domainMid=0), title="influence"),
        tooltip=["target_name:N", "source_name:N", "role:N", alt.Tooltip("influence:Q", format=".3f"),
                 alt.Tooltip("influence_lo:Q", format=".3f"), alt.Tooltip("influence_hi:Q", format=".3f")])
    height = max(120, 18 * d["target_name"].nunique())
    return [("Source classes that most influence each target class", heat.properties(width=2 * WIDTH, height=height),
             "Each row: one target class; coloured cells: its most helpful source classes (blue) and its most "
             "harmful one (red), by the influence summed over that target class's validation examples; empty: not "
             "among them.")]
