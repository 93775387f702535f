"""The charts of the interleaving studies, drawn by the report under their tables on the method's
page (``Study.charts``): each takes the study's rows and returns ``(title, chart, caption)`` s."""

from __future__ import annotations

import altair as alt
import pandas as pd

WIDTH = 560


def _label(df: pd.DataFrame) -> pd.Series:
    return [f"{v} (R={int(r)})" if s in ("blocked", "interleaved") else v
            for v, s, r in zip(df["variant"], df["schedule"], df["rounds"].fillna(0))]


def study_charts(table: pd.DataFrame) -> list[tuple[str, alt.TopLevelMixin, str]]:
    """Per variant and task, the final accuracy; the accuracy and the forgetting against R, with
    joint and independent training as reference lines; and the cost of each variant."""
    d = table.copy()
    if d.empty:
        return []
    d["label"] = _label(d)
    order = list(dict.fromkeys(d["label"]))
    y = lambda t: alt.Y("acc_mean:Q", title=t, scale=alt.Scale(zero=False), axis=alt.Axis(format=".1%"))  # noqa: E731
    tip = [alt.Tooltip("label:N", title="variant"), alt.Tooltip("task:N"), alt.Tooltip("n:Q", title="seeds"),
           alt.Tooltip("acc_mean:Q", title="accuracy", format=".2%"), alt.Tooltip("acc_lo:Q", format=".2%"),
           alt.Tooltip("acc_hi:Q", format=".2%"), alt.Tooltip("forgetting_mean:Q", title="forgetting", format=".2%")]
    color = alt.Color("label:N", title="variant", sort=order)
    base = alt.Chart(d)
    per_task = alt.layer(
        base.mark_rule().encode(x=alt.X("task:N", sort=list(dict.fromkeys(d["task"]))), xOffset=alt.XOffset(
            "label:N", sort=order), y="acc_lo:Q", y2="acc_hi:Q", color=color),
        base.mark_point(filled=True, size=50).encode(x=alt.X("task:N", sort=list(dict.fromkeys(d["task"]))),
                                                      xOffset=alt.XOffset("label:N", sort=order),
                                                      y=y("test accuracy (mean, 95% CI)"), color=color, tooltip=tip),
    ).properties(width=WIDTH, height=280)
    charts = [("Accuracy per task and variant", per_task,
               "Each point: the test accuracy of a task's head (among its task's classes) at the end of the run, "
               "mean over seeds with its 95% t-interval; 'mean': the mean over the tasks.")]
    m = d[d["task"] == "mean"]
    sweep, ref = m[m["schedule"].isin(["blocked", "interleaved"])], m[m["schedule"].isin(["joint", "independent"])]
    for what, title, fmt in (("acc", "mean test accuracy", "Accuracy"), ("forgetting", "mean forgetting",
                                                                         "Forgetting")):
        if sweep.empty:
            break
        yy = alt.Y(f"{what}_mean:Q", title=f"{title} (mean, 95% CI)", scale=alt.Scale(zero=what == "forgetting"),
                   axis=alt.Axis(format=".1%"))
        x = alt.X("rounds:Q", title="rounds R (1 = blocked)", scale=alt.Scale(type="log", base=2))
        line = alt.Chart(sweep).mark_line(point=True).encode(x=x, y=yy, tooltip=[
            "variant:N", alt.Tooltip("n:Q", title="seeds"), alt.Tooltip(f"{what}_mean:Q", format=".2%"),
            alt.Tooltip(f"{what}_lo:Q", format=".2%"), alt.Tooltip(f"{what}_hi:Q", format=".2%")])
        err = alt.Chart(sweep).mark_rule().encode(x=x, y=f"{what}_lo:Q", y2=f"{what}_hi:Q")
        layers = [err, line]
        if not ref.empty:
            layers.append(alt.Chart(ref).mark_rule(strokeDash=[5, 3]).encode(
                y=f"{what}_mean:Q", color=alt.Color("variant:N", title="at the same steps"),
                tooltip=["variant:N", alt.Tooltip(f"{what}_mean:Q", format=".2%")]))
        charts.append((f"{fmt} against the number of rounds", alt.layer(*layers).properties(width=WIDTH, height=260),
                       f"The {title} over the tasks for each R (95% t-interval over seeds); dashed: joint and "
                       "independent training at the same number of steps. Forgetting: a task's accuracy right after "
                       "its last turn minus at the end of the run."))
    cost = alt.Chart(m).mark_bar().encode(
        x=alt.X("train_time_s:Q", title="training wall-clock per run (s, mean over seeds)"),
        y=alt.Y("label:N", sort=order, title=None),
        tooltip=["label:N", alt.Tooltip("train_time_s:Q", format=".1f"), alt.Tooltip("train_flops:Q", format=".3s"),
                 alt.Tooltip("steps:Q"), alt.Tooltip("examples_seen:Q"), alt.Tooltip("turns:Q")])
    charts.append(("Cost of each variant", cost.properties(width=WIDTH, height=22 * len(m)),
                   "Every variant takes the same optimisation steps on batches of the same size (hover for FLOPs, "
                   "examples and turns); the differences in wall-clock are the turns' evaluations and switches."))
    return charts


def turn_charts(table: pd.DataFrame) -> list[tuple[str, alt.TopLevelMixin, str]]:
    """The interleaving curve: each task's test accuracy after every turn, one panel per variant."""
    d = table.copy()
    if d.empty:
        return []
    d["label"] = _label(d)
    order = list(dict.fromkeys(d["label"]))
    base = alt.Chart()
    x = alt.X("step:Q", title="optimisation step (end of turn)")
    color = alt.Color("task:N", sort=list(dict.fromkeys(d["task"])))
    band = base.mark_area(opacity=0.2).encode(x=x, y="acc_lo:Q", y2="acc_hi:Q", color=color)
    line = base.mark_line(point=True).encode(
        x=x, y=alt.Y("acc_mean:Q", title="test accuracy of the task's head", scale=alt.Scale(zero=False),
                     axis=alt.Axis(format=".0%")), color=color,
        shape=alt.Shape("trained:N", title="trained in the turn"),
        tooltip=["label:N", "turn:Q", "step:Q", "task:N", "trained:N", alt.Tooltip("n:Q", title="seeds"),
                 alt.Tooltip("acc_mean:Q", format=".2%"), alt.Tooltip("acc_lo:Q", format=".2%"),
                 alt.Tooltip("acc_hi:Q", format=".2%")])
    chart = alt.layer(band, line, data=d).properties(width=260, height=180).facet(
        facet=alt.Facet("label:N", sort=order, title=None), columns=3)
    return [("The interleaving curve", chart,
             "Each task's test accuracy after every turn (mean over seeds, band: 95% t-interval; step 0: "
             "before training). A task's accuracy rises in its own turns and falls in the others' as the shared "
             "encoder moves away from its head: the drop is its forgetting.")]
