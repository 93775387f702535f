"""Markdown tables from a results folder: every number a doc or a method card quotes has a producer.

``python -m reuse tables`` writes one table from a finished results folder's ``summary.parquet`` and
study tables. In a markdown file, a table it wrote sits between two markers that name the command
and the SHA-256 of what it wrote::

    <!-- reuse tables verdicts --results results --dataset mnist1d --axis flops_amortised | sha256:1f0c... -->
    | run | ... |
    <!-- /reuse tables -->

``python -m reuse tables --update FILE`` runs every block's own command again and rewrites its body
(and hash) in place; ``--check FILE`` fails where a body is no longer what its command wrote (edited
by hand) or a block names no known table. The tables:

- ``verdicts``: per method variant, the verdict at equal cost on one cost axis: comparator, seeds,
  validation and test accuracy, the test gain at equal cost and the speed-up at equal accuracy with
  their intervals, the Holm-adjusted p-value and the verdict;
- ``curves``: each model's baseline budget curve: budget, epochs, cost, validation and test accuracy;
- ``recommendations``: what to use at each budget on one cost axis (chosen on validation);
- ``sequences``: each sequence policy against its anchor (speed-ups, censored repeats, gains);
- ``study``: one study table (``--name``), optionally some of its columns and rows.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import re
import shlex
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from reuse.errors import ReuseError
from reuse.report.layout import AXES

BEGIN = re.compile(r"^<!-- reuse tables (?P<args>.*?) \| sha256:(?P<sha>[0-9a-f]{64}) -->$")
END = "<!-- /reuse tables -->"


# ----------------------------------------------------------------------------- formatting
def _nan(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def pct(v: Any) -> str:
    return "" if _nan(v) else f"{100 * float(v):.2f}"


def points(mean: Any, lo: Any = None, hi: Any = None, bound: Any = None) -> str:
    """``+1.23 [+0.40, +2.06]`` in percentage points; ``≤``/``≥`` for a bound."""
    if _nan(mean):
        return ""
    b = {"upper": "≤ ", "lower": "≥ "}.get(bound if isinstance(bound, str) else None, "")
    ci = "" if _nan(lo) or _nan(hi) else f" [{_signed(lo)}, {_signed(hi)}]"
    return f"{b}{_signed(mean)}{ci}"


def _signed(v: float) -> str:
    return ("+∞" if v > 0 else "−∞") if math.isinf(v) else f"{100 * v:+.2f}"


def ratio(mean: Any, lo: Any = None, hi: Any = None, bound: Any = None) -> str:
    if _nan(mean):
        return ""
    b = {"upper": "≤ ", "lower": "≥ "}.get(bound if isinstance(bound, str) else None, "")
    f = (lambda v: "∞" if math.isinf(v) else f"{v:.2f}")
    ci = "" if _nan(lo) or _nan(hi) else f" [{f(lo)}, {f(hi)}]"
    return f"{b}{f(mean)}×{ci}"


def acc_ci(mean: Any, lo: Any, hi: Any) -> str:
    if _nan(mean):
        return ""
    return pct(mean) + ("" if _nan(lo) or _nan(hi) else f" [{pct(lo)}, {pct(hi)}]")


def cost(v: Any, axis: str) -> str:
    if _nan(v):
        return ""
    return f"{v:.3g} s" if axis.startswith("time") else f"{v:.3g}"


def pvalue(v: Any) -> str:
    return "" if _nan(v) else (f"{v:.3f}" if v >= 0.001 else f"{v:.1e}")


def markdown(rows: list[dict], columns: dict[str, str]) -> str:
    """A GitHub markdown table of ``rows`` (dicts of text) with ``columns`` {key: header}."""
    out = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        out.append("| " + " | ".join(str(r.get(k, "")).replace("|", "\\|") for k in columns) + " |")
    return "\n".join(out)


# ----------------------------------------------------------------------------- tables
def _summary(results: Path) -> pd.DataFrame:
    path = results / "summary.parquet"
    if not path.exists():
        raise ReuseError(f"{path} does not exist: run the workflow (or `python -m reuse report --results {results}`) "
                         "first")
    return pd.read_parquet(path)


def _aggs(results: Path, dataset: str | None, methods: list[str] | None) -> pd.DataFrame:
    s = _summary(results)
    a = s[(s["row"] == "aggregate") & (s["n"] > 0)]
    if dataset:
        a = a[a["dataset"] == dataset]
    if methods:
        a = a[a["method"].isin(methods)]
    return a


def verdicts(results: Path, dataset: str | None = None, axis: str = "time_full", methods: list[str] | None = None,
             **_: Any) -> str:
    a = _aggs(results, dataset, methods)
    a = a[(a["method"] != "baseline") & ~a[f"verdict_{axis}"].isin(["sequence step", "another question"])]
    rows = [{"run": r["label"], "comparator": r.get("comparator", ""), "n": r["n_of"], "val": pct(r.get("val_acc")),
             "test": acc_ci(r["test_acc"], r["test_acc_lo"], r["test_acc_hi"]),
             "cost": cost(r[AXES[axis][0]], axis),
             "gain": points(r[f"gain_at_cost_{axis}"], r[f"gain_at_cost_{axis}_lo"], r[f"gain_at_cost_{axis}_hi"],
                            r[f"gain_at_cost_{axis}_bound"]),
             "speedup": ratio(r[f"speedup_at_acc_{axis}"], r[f"speedup_at_acc_{axis}_lo"],
                              r[f"speedup_at_acc_{axis}_hi"], r[f"speedup_at_acc_{axis}_bound"]),
             "p": pvalue(r[f"val_gain_at_cost_{axis}_p_holm"]), "verdict": r[f"verdict_{axis}"],
             "same": points(r["diff_mean"], r["diff_lo"], r["diff_hi"])}
            for r in a.sort_values(["dataset", "method", "model", "variant"]).to_dict("records")]
    return markdown(rows, {"run": "run", "comparator": "comparator", "n": "seeds", "val": "val. acc. %",
                           "test": "test acc. % [95% CI]", "cost": f"cost ({axis})",
                           "gain": "test gain at equal cost, points", "speedup": "speed-up at equal acc.",
                           "p": "Holm p (val.)", "verdict": "verdict (val.)", "same": "vs same recipe, points"})


def curves(results: Path, dataset: str | None = None, axis: str = "time_full", **_: Any) -> str:
    a = _aggs(results, dataset, ["baseline"])
    a = a.assign(_b=pd.to_numeric(a["budget"], errors="coerce")).sort_values(["dataset", "model", "_b"])
    rows = [{"model": r["model"], "budget": f"{r['_b']:g}", "epochs": "" if _nan(r.get("epochs")) else f"{r['epochs']:g}",
             "n": r["n_of"], "cost": cost(r[AXES[axis][0]], axis), "val": pct(r.get("val_acc")),
             "test": acc_ci(r["test_acc"], r["test_acc_lo"], r["test_acc_hi"])} for r in a.to_dict("records")]
    return markdown(rows, {"model": "model", "budget": "budget", "epochs": "epochs", "n": "seeds",
                           "cost": f"cost ({axis})", "val": "val. acc. %", "test": "test acc. % [95% CI]"})


def recommendations(results: Path, dataset: str | None = None, axis: str = "time_full", **_: Any) -> str:
    path = results / "report" / "recommendations.csv"
    if not path.exists():
        raise ReuseError(f"{path} does not exist: build the report first")
    r = pd.read_csv(path)
    r = r[(r["axis"] == axis) & ((r["dataset"] == dataset) if dataset else True)]
    rows = [{"budget": f"{cost(x['budget_lo'], axis)} – " + ("∞" if _nan(x["budget_hi"]) or math.isinf(x["budget_hi"])
                                                             else cost(x["budget_hi"], axis)),
             "use": x.get("recommended") if not _nan(x.get("recommended")) else "(nothing affordable)",
             "val": pct(x.get("recommended_val_acc")), "test": pct(x.get("recommended_acc")),
             "gain": "" if x["no_method_beats_baseline"] else points(x.get("gain"), x.get("gain_lo"), x.get("gain_hi"),
                                                                     x.get("gain_bound")),
             "p": "" if x["no_method_beats_baseline"] else pvalue(x.get("p_holm"))} for x in r.to_dict("records")]
    return markdown(rows, {"budget": f"budget ({axis})", "use": "use (chosen on validation)", "val": "val. acc. %",
                           "test": "test acc. %", "gain": "test gain at equal cost, points", "p": "Holm p"})


def sequences(results: Path, dataset: str | None = None, **_: Any) -> str:
    from reuse.report.tables import sequence_tables

    rows = []
    for ds_dir in sorted(p for p in results.iterdir() if (p / "studies").is_dir()):
        if dataset and ds_dir.name != dataset:
            continue
        studies = {p.stem: pd.read_csv(p) for p in sorted((ds_dir / "studies").glob("*.csv"))}
        _, pol = sequence_tables(studies)
        for r in pol.to_dict("records"):
            rows.append({"scenario": r["scenario"], "policy": r["policy"] + (" (anchor)" if r.get("is_anchor") is True
                                                                             else ""),
                         "reached": f"{r.get('reached', '')} of {r.get('repeats', '')}",
                         "flops": ratio(r.get("speedup_flops"), r.get("speedup_flops_lo"), r.get("speedup_flops_hi"),
                                        r.get("speedup_flops_bound")),
                         "time": ratio(r.get("speedup_time"), r.get("speedup_time_lo"), r.get("speedup_time_hi"),
                                       r.get("speedup_time_bound")),
                         "val": pct(r.get("val_acc")),
                         "test": acc_ci(r.get("test_acc"), r.get("test_acc_lo"), r.get("test_acc_hi"))})
    return markdown(rows, {"scenario": "sequence", "policy": "policy", "reached": "reached the target (repeats)",
                           "flops": "speed-up, FLOPs", "time": "speed-up, wall-clock", "val": "final val. acc. %",
                           "test": "final test acc. % [95% CI]"})


def study(results: Path, dataset: str | None = None, name: str | None = None, columns: list[str] | None = None,
          where: list[str] | None = None, **_: Any) -> str:
    if not dataset or not name:
        raise ReuseError("the study table needs --dataset and --name (results/<dataset>/studies/<name>.csv)")
    path = results / dataset / "studies" / f"{name}.csv"
    if not path.exists():
        raise ReuseError(f"{path} does not exist")
    d = pd.read_csv(path)
    for w in where or []:
        col, _, val = w.partition("=")
        d = d[d[col].astype(str) == val]
    cols = columns or list(d.columns)
    missing = [c for c in cols if c not in d]
    if missing:
        raise ReuseError(f"{path} has no column {missing}; it has {list(d.columns)}")

    def fmt(v: Any) -> str:
        if _nan(v):
            return ""
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    return markdown([{c: fmt(v) for c, v in r.items()} for r in d[cols].to_dict("records")], {c: c for c in cols})


TABLES: dict[str, Callable[..., str]] = {"verdicts": verdicts, "curves": curves, "recommendations": recommendations,
                                         "sequences": sequences, "study": study}


# ----------------------------------------------------------------------------- blocks in markdown files
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m reuse tables", add_help=False)
    p.add_argument("table", choices=sorted(TABLES))
    p.add_argument("--results", default="results")
    p.add_argument("--dataset")
    p.add_argument("--axis", default="time_full", choices=list(AXES))
    p.add_argument("--methods", type=lambda s: s.split(","))
    p.add_argument("--name")
    p.add_argument("--columns", type=lambda s: s.split(","))
    p.add_argument("--where", action="append")
    return p


def render(args: list[str], root: Path | None = None) -> str:
    """The table a block's arguments name (``--results`` relative to ``root``, default the cwd)."""
    a = parser().parse_args(args)
    results = Path(a.results) if root is None or Path(a.results).is_absolute() else root / a.results
    kw = {k: v for k, v in vars(a).items() if k not in ("table", "results")}
    return TABLES[a.table](results, **kw)


def sha(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


def block(args: list[str], body: str) -> str:
    return f"<!-- reuse tables {shlex.join(args)} | sha256:{sha(body)} -->\n{body}\n{END}"


def blocks(text: str) -> list[tuple[int, int, list[str], str, str]]:
    """Every block of ``text``: (start line, end line, its arguments, its recorded hash, its body)."""
    lines = text.split("\n")
    out, i = [], 0
    while i < len(lines):
        m = BEGIN.match(lines[i])
        if m:
            j = next((k for k in range(i + 1, len(lines)) if lines[k] == END), None)
            if j is None:
                raise ReuseError(f"line {i + 1}: a reuse tables block without its end marker {END!r}")
            out.append((i, j, shlex.split(m["args"]), m["sha"], "\n".join(lines[i + 1:j])))
            i = j
        i += 1
    return out


def update(path: Path, root: Path | None = None) -> int:
    """Rewrite every block of ``path`` from its own command; returns how many."""
    text = path.read_text()
    lines = text.split("\n")
    found = blocks(text)
    for start, end, args, _, _ in reversed(found):
        lines[start:end + 1] = block(args, render(args, root)).split("\n")
    from reuse.io import atomic_path

    with atomic_path(path, suffix=path.suffix) as tmp:
        Path(tmp).write_text("\n".join(lines))
    return len(found)


def check(path: Path) -> list[str]:
    """The problems of ``path``'s blocks: a body that is not what its command wrote (its hash), or a
    command that names no table."""
    problems = []
    for start, _, args, recorded, body in blocks(path.read_text()):
        try:
            parser().parse_args(args)
        except SystemExit:
            problems.append(f"{path}:{start + 1}: `reuse tables {shlex.join(args)}` is not a valid command")
            continue
        if sha(body) != recorded:
            problems.append(f"{path}:{start + 1}: the table differs from what `python -m reuse tables "
                            f"{shlex.join(args)}` wrote (edited by hand?); regenerate it with --update")
    return problems


__all__ = ["TABLES", "block", "blocks", "check", "render", "update"]
