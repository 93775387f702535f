"""Where the report puts things: its pages, figures and tables, named from the config alone.

Every Snakemake start declares the report's outputs (:func:`expected_outputs`, read by
``rules/common.smk``), so this module imports no torch, pandas, altair or scipy: only the run list of
the method registry and the plan. :mod:`reuse.report.build` writes what it names.
"""

from __future__ import annotations

from reuse.methods.registry import expected_runs
from reuse.plan import score_datasets

# The cost axes of the frontier: column, label. Marginal = the run's own training (test-set
# evaluation excluded: it is the benchmark's measurement, not the method's work; past runs free: the
# sequence-of-runs view); full = marginal + every line of run.json's `reused`, charged in full to every
# run that reuses it; amortised = marginal + each reused artifact's cost shared among the runs that
# reuse it (or over `report.amortise_over` declared future runs).
AXES = {
    "time_full": ("cost_time_full_s", "wall-clock incl. reused runs and caches (s)"),
    "time_amortised": ("cost_time_amortised_s", "wall-clock, reused runs and caches shared among their users (s)"),
    "time_marginal": ("cost_time_marginal_s", "wall-clock of the run's own training (s)"),
    "flops_full": ("cost_flops_full", "FLOPs incl. reused runs and caches"),
    "flops_amortised": ("cost_flops_amortised", "FLOPs, reused runs and caches shared among their users"),
    "flops_marginal": ("cost_flops_marginal", "FLOPs of the run's own training"),
}
FIGURE_KINDS = ("frontier", "accuracy", "curves")
DEFAULT_FIGURES = ("png", "svg")


def method_page(method: str) -> str:
    return f"method-{method}.html"


def scores_page(dataset: str) -> str:
    return f"scores-{dataset}.html"


def figure_name(kind: str, dataset: str, what: str) -> str:
    return f"{kind}_{dataset}_{what}"


def figure_formats(config: dict | None) -> list[str]:
    """The file formats of the key charts (the config's ``report.figures``)."""
    return list(((config or {}).get("report") or {}).get("figures", DEFAULT_FIGURES))


def expected_outputs(config: dict) -> dict[str, list[str]]:
    """The files :func:`reuse.report.build.build` writes for a validated config, relative to the
    results folder: ``summary`` (parquet, csv), ``pages``, ``figures`` by kind. The workflow declares them."""
    pairs = list(dict.fromkeys((e["dataset"], e["method"]) for e in expected_runs(config)))
    datasets = list(dict.fromkeys(ds for ds, _ in pairs))
    methods = list(dict.fromkeys(m for _, m in pairs))
    pages = ["report/index.html", "report/frontier.html", "report/recommendations.html", "report/runs.html"]
    pages += [f"report/{method_page(m)}" for m in methods]
    pages += [f"report/{scores_page(ds)}" for ds in dict.fromkeys(score_datasets(config))]
    figs: dict[str, list[str]] = {k: [] for k in FIGURE_KINDS}
    for ext in figure_formats(config):
        figs["frontier"] += [f"report/figures/{figure_name('frontier', ds, a)}.{ext}" for ds in datasets for a in AXES]
        for kind in ("accuracy", "curves"):
            figs[kind] += [f"report/figures/{figure_name(kind, ds, m)}.{ext}" for ds, m in pairs]
    return {"summary": ["summary.parquet", "summary.csv"], "pages": pages,
            "tables": ["report/recommendations.csv"], "figures": figs}


__all__ = ["AXES", "DEFAULT_FIGURES", "FIGURE_KINDS", "expected_outputs", "figure_formats", "figure_name",
           "method_page", "scores_page"]
