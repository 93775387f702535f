"""Read every run under a results folder (and the runs a config expects) into tidy tables.

A run is identified by its run.json's ``(dataset, model, method, variant, seed)``; nothing here
knows any method's name. A run the config expects that has no run.json is kept as a row with status
``missing`` (no folder), ``failed`` (a folder and a log but no run.json) or ``incomplete`` (resume
state left by an interrupted job), so that it is shown, never averaged over.
"""

from __future__ import annotations

import json
import logging
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reuse import metrics as M
from reuse.errors import ReuseError
from reuse.io import read_json, read_jsonl
from reuse.report.layout import AXES  # noqa: F401  (the cost axes; read from here too)

log = logging.getLogger("reuse.report")

KEY = ["dataset", "model", "method", "variant", "seed"]
GROUP = ["dataset", "model", "method", "variant"]
# Where a run sits in a sequence of runs (a hyperparameter tuning sequence, retraining as data arrives): run.json's
# `sequence` block (or the variant's `config`); empty for every other run.
SEQUENCE = ["scenario", "policy", "step"]

# Per-run numbers every table has, even when no run finished.
NUMERIC = ["budget", "params", "epochs", "steps", "examples_seen", "test_acc", "best_test_acc", "test_nll", "test_ece",
           "val_acc", "val_loss", "robust_acc",
           "train_time_s", "eval_time_s", "train_flops", "eval_flops", "reused_n", "reused_time_s", "reused_flops",
           "reused_bytes", "cost_time_marginal_s", "cost_flops_marginal", "cost_time_full_s", "cost_flops_full"]


@dataclass
class Collected:
    """Per-run rows (``runs``), per-epoch curves (``curves``), per-class test accuracy
    (``per_class``), and per dataset: the study tables and the score table's path, if any."""

    runs: pd.DataFrame
    curves: pd.DataFrame
    per_class: pd.DataFrame
    studies: dict[str, dict[str, pd.DataFrame]] = field(default_factory=dict)
    scores: dict[str, Path] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def flat(d: dict | None, prefix: str = "") -> dict[str, Any]:
    """``{"teacher": {"runs": 4}}`` -> ``{"teacher_runs": 4}``; lists joined with commas."""
    out: dict[str, Any] = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}_"))
        elif isinstance(v, list):
            out[f"{prefix}{k}"] = ",".join(map(str, v))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _status_of(folder: Path) -> tuple[str, str]:
    if not folder.exists():
        return "missing", ""
    if (folder / "state").exists():
        return "incomplete", f"resume state in {folder / 'state'}: the job was interrupted"
    logs = sorted(folder.glob("*.log"))
    if logs:
        lines = [ln for ln in logs[0].read_text(errors="replace").splitlines() if ln.strip()]
        err = [ln for ln in lines if "ERROR" in ln or "error" in ln.lower()]
        return "failed", (err[-1] if err else (lines[-1] if lines else "empty log"))[-300:]
    return "missing", f"{folder} exists but holds no run.json"


def read_run(run_json: Path, bins: int = M.ECE_BINS) -> tuple[dict, list[dict], np.ndarray | None]:
    """One finished run: its summary row, its per-epoch curve and its per-class test accuracy."""
    r = read_json(run_json)
    folder = run_json.parent
    cost = r.get("cost", {})
    final = r.get("final", {})
    row: dict[str, Any] = {k: r.get(k) for k in KEY}
    row["variant"] = row["variant"] or ""
    row.update(sequence_of(r.get("sequence"), r.get("config")))
    q = r.get("sequence") or {}
    if q.get("repeat") is not None:
        # a sequence run's folder seed is the repeat; run.json's seed may be the run's own training
        # seed (a tuning trial trains with repeat * 1000 + trial): key the run by its folder's seed
        row["train_seed"] = row["seed"]
        row["seed"] = q["repeat"]
    row.update(status="ok", error="", run=str(folder), arch=r.get("arch"), params=r.get("num_parameters"),
               epochs=r.get("recipe", {}).get("epochs"), steps=cost.get("step"),
               examples_seen=cost.get("examples_seen"), test_acc=final.get("test_acc"),
               best_test_acc=r.get("best_test_acc"), test_nll=final.get("test_nll"), test_ece=final.get("test_ece"),
               train_time_s=cost.get("train_time_s"), eval_time_s=cost.get("eval_time_s"),
               train_flops=cost.get("train_flops"), eval_flops=cost.get("eval_flops"))
    per_class = None
    pred = folder / "predictions.npz"
    if pred.exists():
        with np.load(pred, allow_pickle=False) as p:
            pm = M.prediction_metrics(p["logits"], p["target"], bins)
        # NLL and ECE from the stored test logits, so runs from before they were recorded need no retraining
        if row["test_nll"] is None or final.get("ece_bins", M.ECE_BINS) != bins:
            row["test_nll"] = pm["test_nll"]
        if row["test_ece"] is None or final.get("ece_bins", M.ECE_BINS) != bins:
            row["test_ece"] = pm["test_ece"]
        per_class = pm["per_class"]
    # Extra evaluations written beside run.json by later rules (e.g. robust.json: accuracy under an
    # attack against the run's own final model); an evaluation, so charged to no cost axis.
    robust = folder / "robust.json"
    row["robust_acc"] = read_json(robust).get("robust_acc") if robust.exists() else None
    reused = r.get("reused") or []
    row["reused_n"] = len(reused)
    row["reused_time_s"] = float(sum(x.get("time_s", 0.0) for x in reused))
    row["reused_flops"] = float(sum(x.get("flops", 0) for x in reused))
    row["reused_bytes"] = float(sum(x.get("bytes", 0) for x in reused))
    for x in reused:
        kind = str(x.get("kind", "other"))
        for what, key in (("n", None), ("time_s", "time_s"), ("flops", "flops")):
            col = f"reused_{kind}_{what}"
            row[col] = row.get(col, 0) + (1 if key is None else x.get(key, 0))
    row["reused_lines"] = json.dumps(reused, sort_keys=True)
    row["cost_time_marginal_s"] = row["train_time_s"]
    row["cost_flops_marginal"] = row["train_flops"]
    row["cost_time_full_s"] = _add(row["train_time_s"], row["reused_time_s"])
    row["cost_flops_full"] = _add(row["train_flops"], row["reused_flops"])
    for k, v in flat(r.get("config")).items():
        row[f"cfg_{k}"] = v
    row["budget"] = budget_of(r.get("budget"), row)
    row["val_acc"], row["val_loss"] = final.get("val_acc"), final.get("val_loss")
    with_comparator(row)
    curve = []
    mfile = folder / "metrics.jsonl"
    if mfile.exists():
        curve = read_jsonl(mfile)
    return row, curve, per_class


def budget_of(budget: Any, row: dict) -> float:
    """A run's budget in multiples of its model's recipe epochs: run.json's (or the expected run's)
    ``budget``, else its variant's ``budget`` setting (``cfg_budget``), else 1 (runs from before budgets
    were recorded)."""
    for v in (budget, row.get("cfg_budget")):
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            try:
                return float(v)
            except (TypeError, ValueError):
                continue
    return 1.0


def with_comparator(row: dict) -> dict:
    """A method run's comparator model, ``cfg_baseline`` (its variant's ``baseline`` setting), filled with
    its own model where the variant names none; baselines get none."""
    if row.get("method") != "baseline" and row.get("cfg_baseline") in (None, ""):
        row["cfg_baseline"] = row.get("model")
    return row


def sequence_of(sequence: dict | None, config: dict | None = None) -> dict[str, Any]:
    """``scenario``, ``policy`` and ``step`` of a run in a sequence (from run.json's ``sequence``, else
    its variant ``config``, which a declared run that did not finish has too); None for other runs."""
    q = sequence or {}
    c = config if isinstance(config, dict) else {}
    out = {k: q.get(k, c.get(k)) for k in SEQUENCE}
    if out["scenario"] is None:
        return dict.fromkeys(SEQUENCE)
    return out


def _add(a, b):
    return None if a is None else float(a) + float(b or 0)


def collect(results: str | Path, expected: list[dict] | None = None, bins: int = M.ECE_BINS) -> Collected:
    """Every run.json under ``results`` plus a row for each expected run without one.

    ``expected`` (from :func:`reuse.config.expected_runs`) gives each run's folder relative to
    ``results``; without it only what exists is known, and a run folder with a log but no run.json
    still shows as failed.
    """
    results = Path(results)
    rows, curves, classes, problems = [], [], [], []
    seen: set[tuple] = set()
    for run_json in sorted(results.rglob("run.json")):
        if "state" in run_json.parts or "report" in run_json.relative_to(results).parts[:1]:
            continue
        try:
            row, curve, per_class = read_run(run_json, bins)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, ReuseError) as e:
            # a damaged run.json, metrics.jsonl or predictions.npz: the run shows as failed, with why
            problems.append(f"{run_json}: unreadable ({e}); shown as failed")
            continue
        key = tuple(row[k] for k in KEY)
        if key in seen:
            problems.append(f"{run_json}: a second run of {key}; ignored")
            continue
        seen.add(key)
        rows.append(row)
        for m in curve:
            curves.append({**{k: row[k] for k in KEY}, **{c: m.get(c) for c in (
                "epoch", "step", "test_acc", "test_loss", "train_acc", "train_loss", "train_time_s", "train_flops",
                "examples_seen")}})
        if per_class is not None:
            for c, a in enumerate(per_class):
                classes.append({**{k: row[k] for k in KEY}, "cls": c, "acc": a})
    # expected runs that did not finish, and failed run folders nothing expects
    exp_keys = set()
    for e in expected or []:
        key = (e["dataset"], e["model"], e["method"], e["variant"] or "", e["seed"])
        exp_keys.add(key)
        if key in seen:
            continue
        status, err = _status_of(results / e["relpath"])
        row = dict(zip(KEY, key), status=status, error=err, run=str(results / e["relpath"]))
        row.update(sequence_of(None, e.get("config")))
        row.update({f"cfg_{k}": v for k, v in flat(e.get("config")).items()})
        row["budget"] = budget_of(e.get("budget"), row)
        with_comparator(row)
        rows.append(row)
        seen.add(key)
    for logf in sorted(results.rglob("train.log")):
        folder = logf.parent
        if (folder / "run.json").exists() or not folder.name.startswith("s") or not folder.name[1:].isdigit():
            continue
        parts = folder.relative_to(results).parts
        if len(parts) == 4:
            ds, model, method, variant = parts[0], parts[1], parts[2], ""
        elif len(parts) == 5:
            ds, model, method, variant = parts[:4]
        else:
            continue
        key = (ds, model, method, variant, int(folder.name[1:]))
        if key in seen:
            continue
        status, err = _status_of(folder)
        rows.append(dict(zip(KEY, key), status=status, error=err, run=str(folder)))
        seen.add(key)
    runs = pd.DataFrame(rows, columns=list(dict.fromkeys(
        KEY + SEQUENCE + ["status", "error", "run"] + NUMERIC + [c for r in rows for c in r])))
    runs["seed"] = runs["seed"].astype(int)
    runs[NUMERIC] = runs[NUMERIC].apply(pd.to_numeric, errors="coerce")
    for c in ("step", "train_seed"):
        if c in runs:
            runs[c] = pd.to_numeric(runs[c], errors="coerce").astype("Int64")
    runs[["scenario", "policy"]] = runs[["scenario", "policy"]].astype(object).where(
        runs[["scenario", "policy"]].notna(), None)
    runs["expected"] = [tuple(r) in exp_keys for r in runs[KEY].itertuples(index=False)] if expected else True
    runs = _tidy_types(runs).sort_values(KEY, kind="stable").reset_index(drop=True)
    curves_df = pd.DataFrame(curves, columns=KEY + ["epoch", "step", "test_acc", "test_loss", "train_acc",
                                                    "train_loss", "train_time_s", "train_flops", "examples_seen"])
    per_class_df = pd.DataFrame(classes, columns=KEY + ["cls", "acc"])
    out = Collected(runs=runs, curves=curves_df, per_class=per_class_df, problems=problems)
    for ds in sorted(set(runs["dataset"])):
        d = results / ds
        studies = {p.stem: _read_csv(p, problems) for p in sorted((d / "studies").glob("*.csv"))}
        out.studies[ds] = {k: v for k, v in studies.items() if v is not None}
        if (d / "scores.parquet").exists():
            out.scores[ds] = d / "scores.parquet"
    for p in problems:
        log.warning("%s", p)
    return out


def _read_csv(path: Path, problems: list[str]) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path)
    except (OSError, ValueError) as e:
        problems.append(f"{path}: unreadable ({e})")
        return None


def _tidy_types(df: pd.DataFrame) -> pd.DataFrame:
    """Config columns: numbers stay numbers; a column mixing numbers and text (e.g. epoch 10 and
    "last") becomes text, so the table can be written as Parquet."""
    for c in df.columns:
        if df[c].dtype != object:
            continue
        vals = [v for v in df[c] if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if all(isinstance(v, bool) for v in vals):
            continue
        if vals and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            df[c] = pd.to_numeric(df[c])
        elif any(not isinstance(v, str) for v in vals):
            df[c] = [None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in df[c]]
    return df
