"""Build the summary table and the report pages from a results folder.

Pages (under ``<results>/report/``): ``index.html``, ``frontier.html``, ``recommendations.html``,
``runs.html``, one ``method-<method>.html`` per method found or expected, one
``scores-<dataset>.html`` per dataset with a score table; key charts as PNG and SVG under
``figures/``. Sequences of runs (hyperparameter tuning, retraining as data arrives: runs with a ``scenario``)
are shown from their study tables, whole: cumulative-cost curves, policy and step tables on the
method's page, one point per policy on the frontier, a sentence per scenario in the recommendations. Everything is driven by the run table: a method nobody told this module about gets its
page, its frontier points and its recommendations like any other.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reuse import metrics as M
from reuse.io import atomic_path
from reuse.methods import registry
from reuse.methods.registry import expected_runs
from reuse.plan import score_datasets
from reuse.report import charts as C
from reuse.report.collect import Collected, collect
from reuse.report.html import Page, links, table_html
from reuse.report.layout import (AXES, FIGURE_KINDS, expected_outputs, figure_formats, figure_name,  # noqa: F401
                                 method_page, scores_page)
from reuse.report.tables import (BASELINE, SEQ_MEASURES, add_roles, add_run_columns, aggregate, fmt_ci, fmt_cost,
                                 fmt_gain, fmt_speedup, is_sequence_step, off_frontier, recommend, sequence_curve, sequence_points, sequence_recommendation,
                                 sequence_tables, step_word, summary_table, target_name)

log = logging.getLogger("reuse.report")


@dataclass
class Options:
    """The config's ``report`` block."""

    cost_axis: str = "time_full"
    targets: list[float] = field(default_factory=list)
    confidence: float = 0.95
    amortise_over: int | None = None
    ece_bins: int = M.ECE_BINS
    figures: list[str] = field(default_factory=lambda: figure_formats(None))

    @classmethod
    def from_config(cls, config: dict | None) -> "Options":
        r = (config or {}).get("report") or {}
        return cls(cost_axis=r.get("cost_axis", "time_full"), targets=list(r.get("targets", [])),
                   confidence=r.get("confidence", 0.95), amortise_over=r.get("amortise_over"),
                   ece_bins=r.get("ece_bins", M.ECE_BINS), figures=figure_formats(config))


def method_card(method: str, config: dict | None) -> Path | None:
    """The method card (README.md) of a registered method; None for a name the registry does not know
    (the baseline, runs of a method since removed, or of a plugin the config no longer names)."""
    known = {m.name for m in registry.methods(config)}
    return registry.get(method, config).card if method in known else None


# ----------------------------------------------------------------------------- build
def build(results: str | Path, config: dict | None = None, options: Options | None = None,
          out_dir: str | Path | None = None) -> dict[str, Any]:
    """Collect every run under ``results`` (and, with ``config``, every run it expects), write
    ``<results>/summary.parquet`` and ``.csv``, and the pages under ``out_dir`` (default
    ``<results>/report``). Returns the tables and the written paths."""
    results = Path(results)
    opts = options or Options.from_config(config)
    if opts.cost_axis not in AXES:
        raise ValueError(f"report.cost_axis {opts.cost_axis!r} is not one of {list(AXES)}")
    out = Path(out_dir) if out_dir else results / "report"
    expected = list(expected_runs(config)) if config else None
    col = collect(results, expected, bins=opts.ece_bins)
    runs = add_run_columns(col, opts.targets, opts.amortise_over)
    aggs = aggregate(runs, opts.confidence, opts.targets, headline_axis=opts.cost_axis)
    recs = {axis: recommend(aggs, axis) for axis in AXES}
    aggs = add_roles(aggs, recs)
    summary = summary_table(runs, aggs)
    written = []
    for path, writer in ((results / "summary.parquet", lambda p: summary.to_parquet(p, index=False)),
                         (results / "summary.csv", lambda p: summary.to_csv(p, index=False))):
        with atomic_path(path, suffix=path.suffix) as tmp:
            writer(tmp)
        written.append(path)
    rec_all = pd.concat([r for r in recs.values() if not r.empty], ignore_index=True) if any(
        not r.empty for r in recs.values()) else pd.DataFrame()
    with atomic_path(out / "recommendations.csv", suffix=".csv") as tmp:
        rec_all.to_csv(tmp, index=False)
    written.append(out / "recommendations.csv")
    ctx = _Context(col=col, runs=runs, aggs=aggs, recs=recs, opts=opts, out=out, config=config)
    written += ctx.write_all()
    n_ok = int((runs["status"] == "ok").sum())
    log.info("report: %d runs (%d finished, %d not), %d aggregates, %d files under %s", len(runs), n_ok,
             len(runs) - n_ok, len(aggs), len(written), out)
    return {"runs": runs, "aggregates": aggs, "recommendations": recs, "summary": summary, "written": written,
            "problems": col.problems, "sequences": ctx.seq_recs}


@dataclass
class _Context:
    col: Collected
    runs: pd.DataFrame
    aggs: pd.DataFrame
    recs: dict[str, pd.DataFrame]
    opts: Options
    out: Path
    config: dict | None

    def __post_init__(self):
        self.datasets = sorted(set(self.runs["dataset"]))
        self.methods = [BASELINE] * (BASELINE in set(self.runs["method"])) + sorted(
            set(self.runs["method"]) - {BASELINE})
        self.curve_stats = C.curve_stats(self.col.curves, self.aggs, self.opts.confidence)
        self.class_stats = C.per_class_stats(self.col.per_class, self.aggs, self.opts.confidence)
        self.nav = [("index.html", "overview"), ("frontier.html", "frontier"),
                    ("recommendations.html", "recommendations"), ("runs.html", "runs")]
        self.nav += [(method_page(m), m) for m in self.methods]
        # datasets with a score table, and those the config scores (a page says when the table is missing)
        # the studies the config's methods declare (their own charts, drawn under their tables)
        self.study_specs = registry.studies(self.config) if self.config else {}
        self.score_sets = sorted(set(self.col.scores) | set(score_datasets(self.config) if self.config else []))
        self.nav += [(scores_page(ds), f"scores ({ds})") for ds in self.score_sets]
        # sequences (tuning, retraining), whole: from the study tables that have their columns
        self.seq = {ds: sequence_tables(self.col.studies.get(ds, {})) for ds in self.datasets}
        self.seq_points = {ds: sequence_points(pol) for ds, (_, pol) in self.seq.items()}
        pols = [pol for _, pol in self.seq.values() if not pol.empty]
        self.seq_recs = sequence_recommendation(pd.concat(pols, ignore_index=True) if pols else pd.DataFrame(),
                                                self.opts.confidence)

    # ------------------------------------------------------------------ shared pieces
    def method_aggs(self, ds: str, method: str, with_baselines: bool = True) -> pd.DataFrame:
        a = self.aggs[self.aggs["dataset"] == ds]
        mine = a[a["method"] == method]
        if with_baselines and method != BASELINE:
            mine = pd.concat([a[(a["method"] == BASELINE) & a["model"].isin(set(mine["model"]))], mine])
        return mine

    def agg_table(self, df: pd.DataFrame, axis: str | None = None) -> str:
        axis = axis or self.opts.cost_axis
        d = df.copy()
        d["acc_ci"] = [fmt_ci(a, b) if n > 1 else ("n=1, no interval" if n == 1 else "")
                       for a, b, n in zip(d["test_acc_lo"], d["test_acc_hi"], d["n"])]
        d["diff"] = [("" if m == BASELINE or np_ == 0 else f"{100 * dm:+.2f} {fmt_ci(lo, hi, signed=True)}"
                      if np_ > 1 else ("" if m == BASELINE or np_ == 0 else f"{100 * dm:+.2f}"))
                     for m, dm, lo, hi, np_ in zip(d["method"], d["diff_mean"], d["diff_lo"], d["diff_hi"],
                                                   d["n_pairs"])]
        d["gain"] = ["" if m == BASELINE else fmt_gain(*v, confidence=self.opts.confidence) for m, *v in zip(
            d["method"], _col(d, f"gain_at_cost_{axis}"), _col(d, f"gain_at_cost_{axis}_lo"),
            _col(d, f"gain_at_cost_{axis}_hi"), _col(d, f"gain_at_cost_{axis}_bound"))]
        d["speedup_eq"] = ["" if m == BASELINE else fmt_speedup(*v) for m, *v in zip(
            d["method"], _col(d, f"speedup_at_acc_{axis}"), _col(d, f"speedup_at_acc_{axis}_lo"),
            _col(d, f"speedup_at_acc_{axis}_hi"), _col(d, f"speedup_at_acc_{axis}_bound"))]
        d["p_holm"] = _col(d, f"val_gain_at_cost_{axis}_p_holm")
        d["verdict_axis"] = _col(d, f"verdict_{axis}")
        d["cost_m"] = [fmt_cost(v, "time") for v in d.get("cost_time_marginal_s", [np.nan] * len(d))]
        d["cost_f"] = [fmt_cost(v, "time") for v in d.get("cost_time_full_s", [np.nan] * len(d))]
        d["fl_m"] = [fmt_cost(v, "flops") for v in d.get("cost_flops_marginal", [np.nan] * len(d))]
        d["fl_f"] = [fmt_cost(v, "flops") for v in d.get("cost_flops_full", [np.nan] * len(d))]
        d["role"] = d.get(f"role_{axis}", "")
        robust = "robust_acc" in d and d["robust_acc"].notna().any()
        if robust:
            d["robust"] = [("" if v is None or math.isnan(v) else f"{100 * v:.2f}% " +
                            (fmt_ci(lo, hi) if n > 1 else "(n=1)"))
                           for v, lo, hi, n in zip(d["robust_acc"], d["robust_acc_lo"], d["robust_acc_hi"], d["n"])]
        cols = {"label": "run", "n_of": "seeds", "val_acc": "val. accuracy", "test_acc": "test accuracy",
                "acc_ci": "95% CI", "gain": f"test gain at equal cost ({AXES[axis][1]})",
                "speedup_eq": "speed-up at equal accuracy", "p_holm": "Holm-adjusted p (val.)",
                "verdict_axis": "verdict at equal cost (val.)", "diff": "vs the same recipe's baseline (test points)",
                **({"robust": "robust accuracy (95% CI)"} if robust else {}), "test_nll": "NLL",
                "test_ece": "ECE (15 bins)", "cost_m": "own time", "cost_f": "full time", "fl_m": "own FLOPs",
                "fl_f": "full FLOPs", "role": "role", "missing_seeds": "missing seeds"}
        return table_html(d, cols, row_class="status", formats={"test_acc": "pct", "val_acc": "pct", "test_nll": "g",
                                                                "test_ece": "g", "p_holm": "g"})

    def missing_table(self, df: pd.DataFrame) -> str:
        miss = df[df["status"] != "ok"]
        return table_html(miss, {"dataset": "dataset", "model": "model", "method": "method", "variant": "variant",
                                 "seed": "seed", "status": "status", "run": "folder", "error": "last error"},
                          row_class="status")

    def stats_note(self) -> str:
        c = f"{100 * self.opts.confidence:g}%"
        return (f"Intervals: {c} Student-t intervals of the mean over seeds (exact under normality at any number of "
                "seeds); n=1 has no interval. The verdict of a method is decided at equal cost against its "
                "comparator's baseline budget curve (the same model, data and augmentation, trained at several "
                "multiples of its epochs; per seed, monotone and linear in log cost): per seed, its VALIDATION "
                "accuracy minus the curve's at its cost; better / worse only when the t-test over seeds, "
                "Holm-adjusted over the dataset's variants on that cost axis, gives p < 0.05. Test accuracy is only "
                "reported: the test gain at equal cost, and the speed-up at equal accuracy (the curve's cost to "
                "reach the method's test accuracy over the method's cost; ≥ where the accuracy is beyond the "
                "curve's largest budget, ≤ where below its smallest). 'vs the same recipe's baseline': per-seed "
                "test differences from the budget-1 baseline run of the same model and seed. "
                f"ECE over {self.opts.ece_bins} equal-width confidence bins; NLL is the test cross-entropy. "
                "Own cost: the run's training (test evaluation excluded); full cost: own cost plus every past run, "
                "cache and score table it reused, each charged in full to every run that reused it; amortised: "
                "each of those shared among the runs that reuse it" + (
                    f" (over {self.opts.amortise_over} declared runs)" if self.opts.amortise_over else "") + ".")

    # ------------------------------------------------------------------ sequences
    def seq_caption(self, ds: str) -> str:
        pts = self.seq_points[ds]
        if pts.empty:
            return ""
        return (f"; crosses: {C.SEQUENCE_ROLE}, one per scenario and policy, at the mean total cost of every step "
                "of the sequence (the same on the full and the marginal axes: a sequence reuses only its own "
                "steps) and the mean test accuracy of the model it ships at the end, with its interval over "
                "repeats; sequences are on no frontier")

    def sequence_points_table(self, p: Page, ds: str) -> None:
        pts = self.seq_points[ds]
        if pts.empty:
            return
        p.h("Sequences (whole tuning / retraining, full cost)", 3)
        p.p("One row per scenario and policy, from results/<dataset>/studies/<scenario>.csv: mean over repeats of "
            "the whole sequence's cost (every step's own training, validation and cache writes) and of the final "
            "shipped model's test accuracy; the crosses on the chart above. The speed-up: per repeat, the anchor's "
            "cost to reach its target (its final shipped model's validation accuracy) over the policy's; the "
            "geometric mean over repeats with a Student-t interval on the logs; ≤ where some repeats never reach "
            "the target (censored, an upper bound). Details on the method pages.",
            cls="note")
        d = pts.sort_values(["scenario", "test_acc"], ascending=[True, False]).copy()
        d["policy_text"] = [f"{q} (anchor)" if _true(a) else str(q) for q, a in zip(d["policy"], d["is_anchor"])]
        d["size"] = [f"{_int(n)} × {_int(r)}" for n, r in zip(d["steps"], d["repeats"])]
        d["acc_ci"] = [fmt_ci(lo, hi) for lo, hi in zip(d["test_acc_lo"], d["test_acc_hi"])]
        d["flops"] = [fmt_cost(v, "flops") for v in d["total_flops"]]
        d["time"] = [fmt_cost(v, "time") for v in d["total_time_s"]]
        d["speedup"] = [_speedup(r, "flops") for r in d.to_dict("records")]
        p.table(d, {"scenario": "scenario", "model": "model", "policy_text": "policy", "size": "steps × repeats",
                    "test_acc": "final accuracy", "acc_ci": "CI", "flops": "total FLOPs", "time": "total time",
                    "speedup": "speed-up to the target over the anchor (FLOPs; ≤: an upper bound)"},
                formats={"test_acc": "pct"})

    def sequences(self, p: Page, ds: str, method: str) -> set[str] | None:
        """The sequence sections of a method's page on ``ds``, when its runs carry a ``scenario`` or a
        sequence study table is named after it; returns the names of the study tables shown (None
        when the method has no sequence)."""
        studies = self.col.studies.get(ds, {})
        r = self.runs[(self.runs["dataset"] == ds) & (self.runs["method"] == method)]
        scen = set(r["scenario"].dropna()) if "scenario" in r else set()
        for name in (method, f"{method}_steps"):
            if name in studies and "scenario" in studies[name]:
                scen |= set(studies[name]["scenario"].dropna())
        if not scen:
            return None
        steps, pols = sequence_tables(studies, scen)
        shown = set(steps["study"]) if not steps.empty else set()
        shown |= set(pols["study"]) if not pols.empty else set()
        conf = f"{100 * self.opts.confidence:g}%"
        for sc in sorted(scen):
            st = steps[steps["scenario"] == sc] if not steps.empty else steps
            po = pols[pols["scenario"] == sc] if not pols.empty else pols
            word = step_word(sc)
            p.h(f"Sequence: {sc}", 3, id=f"sequence-{ds}-{sc}")
            if st.empty and po.empty:
                p.p(f"The study tables of this sequence (results/{ds}/studies/{sc}_steps.csv, {sc}.csv) are not built "
                    "yet: they are written when every step of every policy and repeat has finished.", cls="note")
                continue
            anchor = po[po["is_anchor"].map(_true)] if "is_anchor" in po else pd.DataFrame(columns=["policy", "test_acc"])
            if not st.empty:
                curve = sequence_curve(st)
                curve["is_anchor"] = curve["policy"].isin(set(anchor["policy"]))
                p.h(f"Cumulative cost: the accuracy each policy would ship after each of its {word}", 4)
                target = (pd.to_numeric(_col(anchor, "target_val_acc"), errors="coerce").mean() if len(anchor)
                          else None)
                p.chart(C.sequence_chart(curve, target, sc),
                        f"sequence-{ds}-{method}-{sc}",
                        f"One line per policy: after each of its {word}, the accuracy of the model the policy "
                        "would ship then (tuning: its finished trial with the best validation accuracy so far, "
                        "chosen on validation only; retraining: the latest step's model), mean over repeats, band: "
                        "min to max over repeats; y: its validation accuracy (the split the target and the "
                        "speed-ups read), or its test accuracy (reported only) from the menu. x: the "
                        f"cumulative cost of the {word} so far (every step's own training, validation and cache "
                        "writes), mean over repeats; the menu switches between FLOPs and wall-clock. Dashed: the "
                        "anchor policy (reuses nothing); dotted rule (validation only): the target, the validation "
                        "accuracy of the anchor's final shipped model, mean over repeats (each repeat has its own, "
                        "and reaching is decided per repeat). A diamond with a min–max bar: an equal-cost "
                        "comparator, one run from scratch at its own cost (the cumulative training of the policy "
                        "it matches), not a chain. From "
                        f"results/{ds}/studies/{', '.join(sorted(set(st['study'])))}.csv.")
            if not po.empty:
                p.h("Policies against the anchor", 4)
                d = po.copy()
                d["_a"] = d["is_anchor"].map(_true) if "is_anchor" in d else False
                d["_s"] = pd.to_numeric(_col(d, "speedup_flops"), errors="coerce")
                d = d.sort_values(["_a", "_s", "policy"], ascending=[False, False, True])
                d["policy_text"] = [f"{q} (anchor)" if a else (
                    f"{q} (equal-cost comparator of {e})" if not _nan(e) and str(e).strip() else str(q))
                    for q, a, e in zip(d["policy"], d["_a"], _col(d, "equal_cost_of"))]
                d["acc_ci"] = [fmt_ci(lo, hi) for lo, hi in zip(_col(d, "test_acc_lo"), _col(d, "test_acc_hi"))]
                for m in SEQ_MEASURES:
                    d[f"sp_{m}"] = [_speedup(r, m) for r in d.to_dict("records")]
                d["reached_text"] = [f"{_int(a)} of {_int(b)}" for a, b in zip(_col(d, "reached"), _col(d, "repeats"))]
                d["censored_text"] = ["" if _nan(k) else f"{_int(k)} of {_int(n)}" for k, n in
                                      zip(_col(d, "n_censored"), _col(d, "pairs").fillna(_col(d, "repeats")))]
                d["gain_text"] = [_gain(r, self.opts.confidence) for r in d.to_dict("records")]
                d["flops"] = [fmt_cost(v, "flops") for v in d["total_flops"]]
                d["time"] = [fmt_cost(v, "time") for v in d["total_time_s"]]
                d["pruned_text"] = [f"{_int(a)} of {_int(b)}" for a, b in zip(_col(d, "pruned"), _col(d, "runs"))]
                cols = {"policy_text": "policy", "sp_flops": f"speed-up, FLOPs ({conf} CI)",
                        "sp_time": f"speed-up, wall-clock ({conf} CI)",
                        "reached_text": "reached the target (val.; repeats)",
                        "censored_text": "censored (never reached; repeats)",
                        "test_acc": "final test accuracy", "acc_ci": f"{conf} CI", "val_acc": "final val. accuracy",
                        "target_val_acc": "target (val., mean)",
                        "gain_text": f"test gain over its equal-cost comparator ({conf} CI; verdict)",
                        "flops": "total FLOPs", "time": "total time",
                        **({"pruned_text": "stopped early"} if "pruned" in d and d["pruned"].fillna(0).any() else {})}
                cols = {k: v for k, v in cols.items()
                        if k in d and d[k].notna().any() and (d[k].astype(str) != "").any()}
                p.table(d, cols, formats={"test_acc": "pct", "val_acc": "pct", "target_val_acc": "pct"})
                anchor_name = anchor["policy"].iloc[0] if len(anchor) else None
                gains = "gain_test_acc" in d and pd.to_numeric(d["gain_test_acc"], errors="coerce").notna().any()
                p.p(("Target, per repeat: the validation accuracy of the model the anchor ships after its last step "
                     f"(anchor: {anchor_name}, the policy that reuses nothing); a policy reaches it at the first "
                     "step whose shipped model has at least that validation accuracy. Speed-up, per repeat: the "
                     "anchor's cost to reach its own target over the policy's cost to reach it, so the anchor's is 1 "
                     "exactly. A repeat that never reaches the target is censored, not dropped: its speed-up is at "
                     "most the anchor's cost to reach it over the policy's whole cost, an upper bound, and so is the "
                     "summary (≤; its interval runs from 0). Over the repeats: the geometric mean with a "
                     f"{conf} Student-t interval on the logs. The target and the reaching read the validation split "
                     "only; test accuracy is only reported. " +
                     ("Test gain over the equal-cost comparator (one run from scratch on the data seen so far, "
                      "trained on as many examples as the policy's chain): per repeat at the comparator's last step, "
                      f"the policy's shipped test accuracy minus the comparator's, mean with its {conf} Student-t "
                      "interval, and the verdict of its t-test (Holm-adjusted over the table's gains); reported, "
                      "not used to choose. " if gains else "") +
                     "Final accuracy: the model shipped after the last step, mean over repeats. Total cost: "
                     "every step of the sequence, mean over repeats." if anchor_name else
                     "No anchor policy (one that reuses nothing): no speed-ups."), cls="note")
            if not st.empty:
                self.steps_tables(p, st, sc)
        return shown

    def steps_tables(self, p: Page, st: pd.DataFrame, scenario: str) -> None:
        """Every step of each policy (a tuning sequence's trials: hyperparameters, state, accuracies, cost, what it
        reused), one collapsible table per policy."""
        word = step_word(scenario)
        one = word.removesuffix("s")
        d = st.sort_values(["policy", "seed", "step"]).copy()
        last = d.groupby(["policy", "seed"])["shipped_step"].transform("last") if "shipped_step" in d else None
        d["shipped"] = ["✓" if lv is not None and not pd.isna(lv) and s == lv else "" for s, lv in
                        zip(d["step"], last if last is not None else [None] * len(d))]
        if "state" in d:
            d["state_text"] = d["state"].map({"PRUNED": "stopped early", "COMPLETE": "complete"}).fillna(d["state"])
        if "at_target" in d:
            d["at_target_text"] = ["yes" if _true(v) else "" for v in d["at_target"]]
        if "equal_cost" in d:
            d["equal_cost_text"] = ["" if _nan(v) or not str(v).strip() else f"equal cost to {v}"
                                    for v in d["equal_cost"]]
        hp = [c for c in d.columns if c.startswith("hp_")]
        cols = {"seed": "repeat", "step": one, **{c: c.removeprefix("hp_") for c in hp}, "state_text": "state",
                "equal_cost_text": "equal-cost comparator",
                "epochs_trained": "epochs trained", "trained_on": "examples trained on",
                "train_examples": "training examples seen", "val_acc": "val. accuracy",
                "test_acc": "test accuracy", "shipped_val_acc": "shipped model's val. accuracy",
                "target_val_acc": "target (val.)", "at_target_text": "shipped model at the target",
                "train_flops": "training FLOPs", "own_flops": "own FLOPs", "own_time_s": "own time (s)",
                "cum_flops": "cumulative FLOPs", "teachers": f"teachers ({word})", "init_from": f"initialised from ({one})",
                "shipped": "shipped at the end"}
        cols = {k: v for k, v in cols.items() if k in d and d[k].notna().any() and (d[k] != "").any()}
        formats = {"val_acc": "pct", "test_acc": "pct", "shipped_val_acc": "pct", "target_val_acc": "pct",
                   "train_examples": _as_int, "train_flops": "g", "own_flops": "g", "own_time_s": "g", "cum_flops": "g",
                   "init_from": _as_int, "teachers": _as_int, **{c: "g" for c in hp if d[c].dtype.kind == "f"}}
        p.h(f"Every {one} of each policy", 4)
        pruned = "state" in d and (d["state"] == "PRUNED").any()
        p.p(f"From the study table of the {word}: one row per repeat and {one}; 'shipped at the end' marks the model "
            "the policy ships after its last step (tuning: the finished trial with the best validation accuracy, "
            "never chosen on test; retraining: the last step's model); 'at the target': the model the policy would "
            "ship after that step has at least the repeat's target validation accuracy (the anchor's final shipped "
            "model's); the first such step is where the policy reaches it" +
            ("; stopped early: pruned on its validation curve by the policy's pruner." if pruned else "."),
            cls="note")
        parts = []
        for pol, g in d.groupby("policy", sort=True):
            n_rep, n_steps = g["seed"].nunique(), g["step"].nunique()
            early = int((g["state"] == "PRUNED").sum()) if "state" in g else 0
            ship = ", ".join(f"repeat {s}: " + ("nothing yet" if _nan(x) else f"{one} {_int(x)}") for s, x in
                             g.groupby("seed")["shipped_step"].last().items()) if "shipped_step" in g else ""
            summ = (f"{pol}: {n_rep} repeats × {n_steps} {word}" + (f", {early} stopped early" if early else "")
                    + (f"; shipped: {ship}" if ship else ""))
            parts.append(f'<details data-policy="{_esc(pol)}"><summary>{_esc(summ)}</summary>'
                         f"{table_html(g, cols, formats=formats)}</details>")
        p.raw("".join(parts))

    # ------------------------------------------------------------------ pages
    def write_all(self) -> list[Path]:
        written = []
        for page in [self.index(), self.frontier(), self.recommendations(), self.runs_page()] + \
                [self.method(m) for m in self.methods] + \
                [self.scores(ds) for ds in self.score_sets]:
            written.append(page.write(self.out, self.nav))
        written += self.figures()
        return written

    def index(self) -> Page:
        p = Page("index.html", "Reusing past training runs: results")
        r = self.runs
        counts = r["status"].value_counts().to_dict()
        others = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()) if k != "ok")
        p.p(f"{len(r)} runs known ({'from the config and ' if self.config else ''}from the run.json files under the "
            f"results folder): {counts.get('ok', 0)} finished, " + (others or "none missing") + ".")
        if len(counts) > 1 or (r["status"] != "ok").any():
            p.p("Runs that did not finish are listed below and on the runs page; aggregates say n=k of K and are "
                "over the finished seeds only.", cls="note")
        p.p(self.stats_note(), cls="note")
        for ds in self.datasets:
            p.h(f"{ds}: the training efficiency frontier")
            a = self.aggs[self.aggs["dataset"] == ds]
            p.chart(C.frontier_chart(a, None, self.opts.cost_axis, sequences=self.seq_points[ds]), f"frontier-{ds}",
                    "Each point: one method variant (or baseline budget) on one model, mean over seeds with 95% "
                    "intervals of test accuracy and cost; grey line and band: each model's baseline budget curve; the "
                    "dashed step line joins the points Pareto-optimal on validation accuracy. Shapes: baseline, "
                    "selected (recommended at some budget, on validation), better at equal cost, not better at equal "
                    "cost (the verdict on validation, Holm-adjusted)" + self.seq_caption(ds) + ". Hover for details.")
            rec = self.recs[self.opts.cost_axis]
            rec = rec[rec["dataset"] == ds] if not rec.empty else rec
            if not rec.empty:
                p.h(f"What to use at each budget ({AXES[self.opts.cost_axis][1]})", 3)
                p.raw("<ul>" + "".join(f"<li>{_esc(s)}</li>" for s in rec["statement"]) + "</ul>")
                p.p(links([("recommendations.html", "all cost axes")]), raw=True, cls="note")
            p.h(f"{ds}: every method", 3)
            steps = is_sequence_step(a)
            p.raw(self.agg_table(a[(a["n"] > 0) & ~steps].sort_values(["model", "method", "variant"])))
            if (steps & (a["n"] > 0)).any():
                seq = sorted(set(a.loc[steps, "method"]))
                p.p(f"{int((steps & (a['n'] > 0)).sum())} steps of sequences (tuning trials, retraining steps) are "
                    "not listed here: a step is not used on its own; each sequence is shown whole on its page: " +
                    links([(method_page(m), m) for m in seq]) + ".", raw=True, cls="note")
            none = a[a["n"] == 0]
            if len(none):
                p.p(f"No finished run yet ({len(none)}): " + ", ".join(f"{lbl} ({n})" for lbl, n in zip(
                    none["label"], none["n_of"])) + ".", cls="note")
        miss = r[r["status"] != "ok"]
        p.h("Runs that did not finish")
        if len(miss):
            counts = ", ".join(f"{v} {k}" for k, v in sorted(miss["status"].value_counts().items()))
            p.raw(f"<details{' open' if len(miss) <= 20 else ''}><summary>{len(miss)} runs ({_esc(counts)})"
                  f"</summary>{self.missing_table(r)}</details>")
        else:
            p.p("none", cls="note")
        p.h("Pages")
        p.raw("<ul>" + "".join(f'<li><a href="{h}">{_esc(t)}</a></li>' for h, t in self.nav[1:]) + "</ul>")
        p.p("Tables: results/summary.parquet and summary.csv (one row per run, one per aggregate); "
            "report/recommendations.csv; key charts as PNG and SVG in report/figures/.", cls="note")
        return p

    def frontier(self) -> Page:
        p = Page("frontier.html", "Training efficiency frontier")
        p.p("Accuracy against total cost. Pick the cost axis from the menu under each chart: wall-clock or FLOPs, "
            "own (marginal: reuse treated as free, the sequence-of-runs view), amortised (each reused past run, cache "
            "and score table shared among the runs that reuse it) or full (own plus every reused artifact in full). "
            + self.stats_note(), cls="note")
        for ds in self.datasets:
            a = self.aggs[self.aggs["dataset"] == ds]
            p.h(ds)
            p.chart(C.frontier_chart(a, None, self.opts.cost_axis, sequences=self.seq_points[ds]), f"frontier-{ds}",
                    "Mean over seeds; error bars: 95% t-intervals of test accuracy (vertical) and cost "
                    "(horizontal); grey line and band: each model's baseline budget curve (its budgets' means and "
                    "intervals). Click a legend entry to highlight a method" + self.seq_caption(ds) + ".")
            self.sequence_points_table(p, ds)
            for axis, (c, label) in AXES.items():
                f = a[a[f"frontier_{axis}"] & (a["n"] > 0)].sort_values(c)
                p.h(f"Pareto-optimal on {label} (validation accuracy)", 3)
                d = f.copy()
                d["cost"] = [fmt_cost(v, axis) for v in d[c]]
                d["cost_ci"] = [fmt_ci(lo, hi, pct=False) for lo, hi in zip(d[f"{c}_lo"], d[f"{c}_hi"])]
                d["acc_ci"] = [fmt_ci(lo, hi) for lo, hi in zip(d["test_acc_lo"], d["test_acc_hi"])]
                p.table(d, {"label": "run", "n_of": "seeds", "cost": "mean cost", "cost_ci": "cost 95% CI",
                            "val_acc": "val. accuracy", "test_acc": "test accuracy", "acc_ci": "95% CI",
                            f"verdict_{axis}": "verdict at equal cost", f"role_{axis}": "role"},
                        formats={"test_acc": "pct", "val_acc": "pct"})
            miss = a[a["n"] == 0]
            if len(miss):
                p.h("Not on the chart: no finished run", 3)
                p.table(miss, {"label": "run", "n_of": "seeds", "missing_seeds": "missing seeds"})
            other = a[(a["n"] > 0) & off_frontier(a) & ~is_sequence_step(a)]
            if len(other):
                p.h("Not on the chart: accuracy of another question", 3)
                p.p("These methods' test accuracy is not of this dataset's whole task (task-aware accuracies of "
                    "class groups, or a target task's), so it cannot be compared with the baselines here; "
                    "each method's page has its own comparison.")
                d = other.copy()
                d["acc_ci"] = [fmt_ci(lo, hi) for lo, hi in zip(d["test_acc_lo"], d["test_acc_hi"])]
                p.table(d, {"label": "run", "n_of": "seeds", "test_acc": "accuracy (its own task)", "acc_ci": "95% CI"},
                        formats={"test_acc": "pct"})
        return p

    def recommendations(self) -> Page:
        p = Page("recommendations.html", "Recommendations: which method at which budget")
        p.p("Generated from the measured table only (summary.parquet), and chosen on the validation split only. For "
            "a budget c on a cost axis, the affordable runs are the aggregates whose mean cost is at most c; a method "
            "is eligible only if its verdict at equal cost on that axis is better (its validation gain over its "
            "comparator's baseline budget curve, Holm-adjusted over the dataset's variants, p < 0.05); every budget "
            "of every baseline is eligible. The recommendation is the eligible aggregate with the highest mean "
            "validation accuracy; its test accuracy and test gain at equal cost are reported, never used to choose. "
            "Where it is a baseline, no method beats the baseline at that budget. Ranges start at each aggregate's "
            "mean cost.", cls="note")
        p.p(self.stats_note(), cls="note")
        rows = []
        order = [self.opts.cost_axis] + [a for a in AXES if a != self.opts.cost_axis]
        for ds in self.datasets:
            p.h(ds)
            for i, axis in enumerate(order):
                rec = self.recs[axis]
                rec = rec[rec["dataset"] == ds] if not rec.empty else rec
                body = Page("", "")
                if rec.empty:
                    body.p("No finished runs.")
                else:
                    nob = rec[rec["no_method_beats_baseline"]]
                    body.p("No method beats the baseline " + (
                        "at any budget." if len(nob) == len(rec) else (
                            "nowhere: every range has a method shown better." if nob.empty else
                            "in these ranges: " + "; ".join(
                                f"{fmt_cost(lo, axis)} to {fmt_cost(hi, axis)}" for lo, hi in
                                zip(nob["budget_lo"], nob["budget_hi"])) + ".")))
                    body.raw('<ul class="statements">' + "".join(
                        f'<li data-dataset="{_esc(ds)}" data-axis="{axis}">{_esc(s)}</li>' for s in rec["statement"])
                             + "</ul>")
                    d = rec.copy()
                    d["budget"] = [f"{fmt_cost(lo, axis)} – {fmt_cost(hi, axis)}" for lo, hi in
                                   zip(d["budget_lo"], d["budget_hi"])]
                    d["acc_ci"] = [fmt_ci(lo, hi) for lo, hi in zip(_col(d, "recommended_acc_lo"),
                                                                    _col(d, "recommended_acc_hi"))]
                    d["gain_text"] = ["" if b else fmt_gain(m, lo, hi, bd, self.opts.confidence) for b, m, lo, hi, bd in
                                      zip(d["no_method_beats_baseline"], _col(d, "gain"), _col(d, "gain_lo"),
                                          _col(d, "gain_hi"), _col(d, "gain_bound"))]
                    d["speedup_text"] = ["" if b else fmt_speedup(m, lo, hi, bd) for b, m, lo, hi, bd in
                                         zip(d["no_method_beats_baseline"], _col(d, "speedup"), _col(d, "speedup_lo"),
                                             _col(d, "speedup_hi"), _col(d, "speedup_bound"))]
                    body.table(d, {"budget": "budget", "recommended": "use (chosen on validation)",
                                   "recommended_n_of": "seeds", "recommended_val_acc": "val. accuracy",
                                   "recommended_acc": "test accuracy", "acc_ci": "95% CI",
                                   "gain_text": "test gain at equal cost", "speedup_text": "speed-up at equal accuracy",
                                   "p_holm": "Holm-adjusted p (val.)",
                                   "no_method_beats_baseline": "no method beats the baseline",
                                   "highest_val": "highest val. accuracy within budget"},
                               formats={"recommended_acc": "pct", "recommended_val_acc": "pct", "p_holm": "g"})
                    rows += rec.to_dict("records")
                inner = "\n".join(body.parts)
                p.raw(f"<h3>{_esc(AXES[axis][1])}</h3>{inner}" if i == 0 else
                      f"<details><summary>{_esc(AXES[axis][1])}</summary>{inner}</details>")
            sr = self.seq_recs[self.seq_recs["dataset"] == ds] if not self.seq_recs.empty else self.seq_recs
            if not sr.empty:
                p.h("Sequences: which policy reaches the anchor's target cheapest", 3)
                p.p("From results/<dataset>/studies/<scenario>.csv. The target, per repeat: the validation accuracy "
                    "of the model the anchor (the policy that reuses nothing) ships after its last step; a policy "
                    "reaches it at the first step whose shipped model has at least that validation accuracy. "
                    "Speed-up, per repeat: the anchor's cost to reach its own target over the policy's cost to reach "
                    "it (the anchor's is 1 exactly); a repeat that never reaches it is censored, not dropped (its "
                    "speed-up is an upper bound, its cost to reach it at least its whole cost), so a summary with "
                    "censored repeats is an upper bound (≤). Over the repeats: the geometric mean with a Student-t "
                    "interval on the logs. Only policies that reached the target in every repeat are named; the "
                    "lowest mean cost to reach it wins. A policy with an equal-cost comparator has its test gain "
                    "over it reported. Sequence steps are not among the budget recommendations above.", cls="note")
                p.raw('<ul class="sequence-statements">' + "".join(
                    f'<li data-dataset="{_esc(ds)}" data-scenario="{_esc(r["scenario"])}">{_esc(r["statement"])}'
                    f'</li>' for r in sr.to_dict("records")) + "</ul>")
        p.json_block("recommendations", _records(rows))
        p.json_block("sequence_recommendations", _records(self.seq_recs.to_dict("records")))
        return p

    def runs_page(self) -> Page:
        p = Page("runs.html", "Every run")
        p.p("One row per run the config expects or the results folder holds. Status: ok (run.json written), "
            "missing (no folder), failed (a log but no run.json), incomplete (resume state of an interrupted job). "
            "Only ok runs enter the aggregates.", cls="note")
        r = self.runs.copy()
        r["full_time"] = r.get("cost_time_full_s")
        p.table(r, {"dataset": "dataset", "model": "model", "method": "method", "variant": "variant", "seed": "seed",
                    "status": "status", "test_acc": "accuracy", "best_test_acc": "best", "test_nll": "NLL",
                    "test_ece": "ECE", "robust_acc": "robust acc.", "steps": "steps", "examples_seen": "examples", "train_time_s": "own time (s)",
                    "reused_time_s": "reused time (s)", "train_flops": "own FLOPs", "reused_flops": "reused FLOPs",
                    "reused_n": "reused lines", "diff_vs_baseline": "vs baseline", "error": "error"},
                row_class="status", formats={"test_acc": "pct", "best_test_acc": "pct", "diff_vs_baseline": "pct",
                                             "robust_acc": "pct",
                                             "train_flops": "g", "reused_flops": "g", "train_time_s": "g",
                                             "reused_time_s": "g", "test_nll": "g", "test_ece": "g"})
        return p

    def method(self, method: str) -> Page:
        p = Page(method_page(method), f"Method: {method}")
        card = method_card(method, self.config)
        if card is not None and card.exists():
            first = [ln for ln in card.read_text().split("\n\n") if ln.strip() and not ln.startswith("#")]
            if first:
                p.p(first[0].replace("\n", " ").replace("**", "").replace("`", ""), cls="note")
        p.p(self.stats_note(), cls="note")
        for ds in self.datasets:
            mine = self.method_aggs(ds, method)
            if mine.empty or not (mine["method"] == method).any():
                continue
            own = mine[mine["method"] == method]
            p.h(ds)
            shown = self.sequences(p, ds, method)
            if shown is not None:
                p.h(f"Each step as a run ({method} on {ds})", 3)
                p.p("Every step of the sequences above aggregated over the repeats like any other run (test accuracy "
                    "of that step's own model, its own cost, paired with the baseline of the same seed). A step is "
                    "not used on its own: none is on the frontier or among the budget recommendations.", cls="note")
                p.raw(f"<details><summary>{int((own['n'] > 0).sum())} steps with finished runs</summary>"
                      f"{self.agg_table(mine)}</details>")
            else:
                p.raw(self.agg_table(mine))
            miss = self.runs[(self.runs["dataset"] == ds) & (self.runs["method"] == method)]
            if (miss["status"] != "ok").any():
                p.h("Runs that did not finish", 3)
                p.raw(self.missing_table(miss))
            p.h("Accuracy", 3)
            p.chart(C.accuracy_chart(mine), f"accuracy-{ds}-{method}",
                    "Mean test accuracy over seeds with 95% t-intervals; colour: the verdict at equal cost (validation "
                    "gain over the comparator's baseline budget curve, Holm-adjusted).")
            if method != BASELINE:
                self.equal_cost_table(p, own)
            if "robust_acc" in own and own["robust_acc"].notna().any():
                p.h("Robust accuracy", 3)
                p.chart(C.accuracy_chart(mine, field="robust_acc"), f"robust-{ds}-{method}",
                        "Test accuracy under the attack of each run's robust.json, run against the run's own final "
                        "model; mean over seeds with 95% t-intervals; colour: the clean accuracy's verdict at equal cost.")
            p.h("Learning curves", 3)
            p.chart(C.curves_chart(_rows_of(self.curve_stats, ds, mine)), f"curves-{ds}-{method}",
                    "Test accuracy after each epoch against optimisation steps; line: mean over seeds, band: 95% "
                    "t-interval; dashed: the baselines of the same model (every budget).")
            if method != BASELINE:
                for t in [BASELINE] + [target_name(x) for x in self.opts.targets]:
                    what = "the baseline's mean final accuracy" if t == BASELINE else f"accuracy {t}"
                    p.h(f"Time to {what}", 3)
                    p.chart(C.tta_chart(own, t), f"tta-{ds}-{method}-{t}",
                            "Speed-up = per seed, the budget-1 baseline's cost to first reach the target / the "
                            "method's (geometric mean, t-interval on the logs); first epoch at or above the target, no "
                            "interpolation. A seed where one side never reaches it is censored, not dropped: that "
                            "side's whole run bounds its cost, so the speed-up is a bound (colour). No value at all: "
                            "0 (grey).")
            # the steps of a sequence are no designed sweep (a tuning sequence's hyperparameters are drawn, its step
            # number is no setting): none is drawn
            sweeps = self.sweeps(own) if shown is None else []
            for key, group in sweeps:
                p.h(f"Sweep: accuracy against {key.removeprefix('cfg_')}", 3)
                p.chart(C.sweep_chart(own, key, group), f"sweep-{ds}-{method}-{key}",
                        "Each point: one variant (mean over seeds, 95% CI); lines join variants whose other settings "
                        "agree.")
            p.h("Per-class test accuracy", 3)
            p.chart(C.per_class_chart(_rows_of(self.class_stats, ds, mine)), f"per-class-{ds}-{method}",
                    "Colour: mean per-class accuracy minus the same model's baseline (red lower, blue higher); hover "
                    "for the accuracy and its interval.")
            for name, study in self.col.studies.get(ds, {}).items():
                # the method's own study, or a shared one with a `method` column naming it (its rows)
                if name != method and not ("method" in study and (study["method"] == method).any()):
                    continue
                if shown and name in shown:
                    continue  # a sequence table, shown above
                rows = study if name == method or "method" not in study else \
                    study[study["method"].isin([method, BASELINE])]
                p.h(f"Study table (results/{ds}/studies/{name}.csv)", 3)
                p.table(rows)
                spec = self.study_specs.get(name)
                charts = registry.resolve(spec.charts)(rows) if spec is not None and spec.charts else []
                for i, (title, chart, caption) in enumerate(charts):
                    p.h(title, 4)
                    p.chart(chart, f"study-{ds}-{name}-{i}", caption)
            if "cfg_score" in own and own["cfg_score"].notna().any() and ds in self.score_sets:
                p.p("Scores used by these variants: " + links([(scores_page(ds), f"score distributions and rank "
                                                                                 f"agreement on {ds}")]), raw=True)
        return p

    def equal_cost_table(self, p: Page, own: pd.DataFrame) -> None:
        """The verdict at equal cost of each variant on every cost axis (the method page's main table)."""
        d = own[(own["n"] > 0) & ~off_frontier(own)]
        if d.empty:
            return
        rows = []
        for r in d.to_dict("records"):
            for axis, (_, label) in AXES.items():
                rows.append({"label": r["label"], "axis": label, "comparator": r.get("comparator"),
                             "val": fmt_gain(r.get(f"val_gain_at_cost_{axis}"), r.get(f"val_gain_at_cost_{axis}_lo"),
                                             r.get(f"val_gain_at_cost_{axis}_hi"),
                                             r.get(f"val_gain_at_cost_{axis}_bound"), self.opts.confidence),
                             "p_holm": r.get(f"val_gain_at_cost_{axis}_p_holm"),
                             "verdict": r.get(f"verdict_{axis}"),
                             "gain": fmt_gain(r.get(f"gain_at_cost_{axis}"), r.get(f"gain_at_cost_{axis}_lo"),
                                              r.get(f"gain_at_cost_{axis}_hi"), r.get(f"gain_at_cost_{axis}_bound"),
                                              self.opts.confidence),
                             "own": ("" if r.get("comparator") in (None, r["model"]) else
                                     fmt_gain(r.get(f"gain_own_{axis}"), r.get(f"gain_own_{axis}_lo"),
                                              r.get(f"gain_own_{axis}_hi"), None, self.opts.confidence)),
                             "speedup": fmt_speedup(r.get(f"speedup_at_acc_{axis}"),
                                                    r.get(f"speedup_at_acc_{axis}_lo"),
                                                    r.get(f"speedup_at_acc_{axis}_hi"),
                                                    r.get(f"speedup_at_acc_{axis}_bound"))})
        t = pd.DataFrame(rows)
        p.h("At equal cost: against the baseline's budget curve", 3)
        p.p("Per variant and cost axis: the gain at equal cost (accuracy minus the comparator's baseline budget "
            "curve at the variant's cost, per seed, paired) on validation, which decides the verdict (t-test, "
            "Holm-adjusted over the dataset's variants on that axis), and on test, only reported; the speed-up at "
            "equal accuracy (the curve's cost to reach the variant's test accuracy over its cost). ≥ / ≤: a bound, "
            "where the variant's cost or accuracy lies beyond the curve's budgets. Comparator: the model whose "
            "baseline is like for like (the variant's `baseline` key, else its own model); where it differs, the "
            "gain against the own model's curve is shown too.", cls="note")
        cols = {"label": "run", "axis": "cost axis", "comparator": "comparator", "val": "validation gain (points)",
                "p_holm": "Holm-adjusted p", "verdict": "verdict", "gain": "test gain (points)",
                "own": "test gain vs own model's curve", "speedup": "speed-up at equal accuracy"}
        if not (t["own"] != "").any():
            cols.pop("own")
        p.table(t, cols, formats={"p_holm": "g"})

    def sweeps(self, own: pd.DataFrame) -> list[tuple[str, list[str]]]:
        """Numeric settings that vary across a method's variants, each with the other varying settings
        that split its lines; kept when some line has at least two values of the setting."""
        own = own[own["n"] > 0]
        cfg = [c for c in own.columns if c.startswith("cfg_") and own[c].notna().any()]
        varying = [c for c in cfg if own[c].astype(str).nunique() > 1]
        out = []
        for key in varying:
            if own[key].dropna().map(lambda v: isinstance(v, (bool, np.bool_))).all():
                continue  # an on/off switch, not a scale
            x = pd.to_numeric(own[key], errors="coerce")
            if x.isna().any() or x.nunique() < 2:
                continue
            group = [c for c in varying if c != key]
            lines = own.assign(_x=x).groupby([own[c].astype(str) for c in group] or (lambda _: 0))["_x"].nunique()
            if (lines >= 2).any():
                out.append((key, group))
        return out

    def scores(self, ds: str) -> Page:
        from reuse.scores import ScoreTable

        p = Page(scores_page(ds), f"Scores on {ds}: distributions and rank agreement")
        if ds not in self.col.scores:
            p.p(f"results/{ds}/scores.parquet does not exist yet: the config scores past runs on {ds}, but the "
                "score table has not been computed (see the runs page for what is missing).")
            return p
        table = ScoreTable.open(self.col.scores[ds])
        m = table.meta
        p.p(f"results/{ds}/scores.parquet: {m['n']} training examples, scores {', '.join(m['scores'])} at epochs "
            f"{m['epochs']}, each the mean over {len(m['runs'])} past runs ({', '.join(m['runs'])}); scoring cost "
            f"{m['cost']['time_s']:.3g} s, {m['cost']['flops']:.3g} FLOPs (charged to every run that uses the table, "
            "with the past runs).", cls="note")
        p.h("Score distributions")
        p.chart(C.score_hist_chart(table.df), f"score-hist-{ds}",
                "Histogram of each score over the training examples (30 bins), per scored checkpoint epoch.")
        agree = self.col.studies.get(ds, {}).get("score_agreement")
        if agree is not None:
            p.h("Rank agreement")
            p.chart(C.agreement_runs_chart(agree), f"agreement-runs-{ds}",
                    "Mean Spearman correlation of the per-example scores between pairs of past runs.")
            p.chart(C.agreement_chart(agree), f"agreement-k-{ds}",
                    "Spearman correlation of the mean over k past runs with the mean over the others: where it "
                    "flattens, more past runs stop changing the ranking.")
            p.table(agree)
        users = [m for m in self.methods if "cfg_score" in self.runs
                 and self.runs[(self.runs["method"] == m) & (self.runs["dataset"] == ds)]["cfg_score"].notna().any()]
        if users:
            p.p("Methods that use these scores: " + links([(method_page(u), u) for u in users]), raw=True)
        return p

    # ------------------------------------------------------------------ figures
    def figures(self) -> list[Path]:
        folder = self.out / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        charts = []
        for ds in self.datasets:
            a = self.aggs[self.aggs["dataset"] == ds]
            for axis in AXES:
                charts.append((figure_name("frontier", ds, axis),
                               C.frontier_chart(a, axis, title=f"{ds}: accuracy vs {AXES[axis][1]}",
                                                sequences=self.seq_points[ds])))
            for m in self.methods:
                mine = self.method_aggs(ds, m)
                if not (mine["method"] == m).any():
                    continue
                charts.append((figure_name("accuracy", ds, m), C.accuracy_chart(mine, title=f"{ds}: {m}")))
                cs = self.curve_stats
                cs = cs[(cs["dataset"] == ds) & cs["label"].isin(set(mine["label"]))] if not cs.empty else cs
                charts.append((figure_name("curves", ds, m), C.curves_chart(cs, title=f"{ds}: {m}, learning curves")))
        written = []
        for name, chart in charts:
            for ext in self.opts.figures:
                path = folder / f"{name}.{ext}"
                with atomic_path(path, suffix=f".{ext}") as tmp:
                    _export(chart, tmp, ext)
                written.append(path)
        return written


def _export(chart, path: Path, ext: str) -> None:
    """A chart as PNG (2x) or SVG, rendered by vl-convert (no browser, no network)."""
    import vl_convert as vlc
    from altair.utils._importers import vl_version_for_vl_convert

    spec = chart.to_dict(validate=False)
    v = vl_version_for_vl_convert()
    if ext == "png":
        path.write_bytes(vlc.vegalite_to_png(spec, vl_version=v, scale=2))
    elif ext == "svg":
        path.write_text(vlc.vegalite_to_svg(spec, vl_version=v))
    else:
        raise ValueError(f"report.figures: unknown format {ext!r} (png, svg)")


def _rows_of(stats: pd.DataFrame, ds: str, aggs: pd.DataFrame) -> pd.DataFrame:
    """The rows of a per-aggregate statistics table (curves, per-class) for ``aggs`` on ``ds``."""
    return stats[(stats["dataset"] == ds) & stats["label"].isin(set(aggs["label"]))] if not stats.empty else stats


def _col(d: pd.DataFrame, c: str) -> pd.Series:
    """Column ``c`` of ``d``, or NaN where a table lacks it."""
    return d[c] if c in d else pd.Series(np.nan, index=d.index)


def _true(v: Any) -> bool:
    """A boolean cell of a CSV (True, "True", 1); NaN and None are False."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return False
    return str(v).strip().lower() in ("true", "1", "1.0")


def _nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _int(v: Any) -> str:
    return "?" if _nan(v) else str(int(v))


def _speedup(r: dict, measure: str) -> str:
    """``1.81× [1.29, 2.33]`` from a per-policy sequence row (the anchor's: ``1.00× [1.00, 1.00]``); a
    summary with censored repeats is a bound: ``≤ 0.97× [0.00, 2.10]`` (upper: the interval runs from 0),
    ``≥ …`` with ``∞`` as its high end (lower), no interval when both kinds occur."""
    from reuse.stats import LOWER, UPPER, bound_word

    v = r.get(f"speedup_{measure}")
    if _nan(v):
        return ""
    b = r.get(f"speedup_{measure}_bound")
    b = None if _nan(b) else str(b).strip() or None
    lo, hi = r.get(f"speedup_{measure}_lo"), r.get(f"speedup_{measure}_hi")
    if b == UPPER:
        lo = 0.0
    elif b == LOWER:
        hi = math.inf
    ci = "" if b == "mixed" or _nan(lo) or _nan(hi) or (b == UPPER and math.isinf(hi)) else \
        f" [{lo:.2f}, {'∞' if math.isinf(hi) else f'{hi:.2f}'}]"
    return f"{bound_word(b) if b in (UPPER, LOWER) else ''}{v:.2f}×{ci}"


def _gain(r: dict, confidence: float) -> str:
    """``+2.50 points [+1.00, +4.00] vs scratch_long: no detectable difference`` from a per-policy sequence row
    with an equal-cost comparator (the test gain of its final shipped model at the comparator's last step)."""
    comp, g = r.get("equal_cost_policy"), r.get("gain_test_acc")
    if _nan(comp) or not str(comp).strip() or _nan(g):
        return ""
    ci = fmt_ci(r.get("gain_test_acc_lo", math.nan), r.get("gain_test_acc_hi", math.nan), signed=True).replace("%", "")
    v = r.get("gain_test_verdict")
    return f"{100 * g:+.2f} points {ci} vs {comp}" + ("" if _nan(v) else f": {v}")


def _as_int(v: Any) -> str:
    """A step number a CSV read back as a float (``1.0``) as ``1``; text (``"0,1"``) as it is."""
    return str(int(v)) if isinstance(v, (int, float, np.integer, np.floating)) else str(v)


def _esc(s: Any) -> str:
    import html

    return html.escape(str(s))


def _records(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        out.append({k: (None if isinstance(v, float) and (math.isnan(v) or math.isinf(v)) else v) for k, v in r.items()})
    return out
