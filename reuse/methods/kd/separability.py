"""The separability study: distillation temperature and bias shift against how separable the classes
are (Hinton et al.'s tutorial plan: "a synthetic data set with varying degrees of separability ...
the optimal training temperature and model bias").

It spans the config's data sets of kind ``clusters`` (reuse/data/clusters.py), which differ in their
``separation``. Two tables, each built once, on the first such data set that its method has runs on
(``Study.datasets``), reading every such data set's run tables through ``Study.extra``:

- ``separability`` (kd): one row per data set, student sweep and temperature T: test accuracy over
  the seeds (mean, t-interval), its paired difference from the same student trained on hard
  labels (the student's baseline), the mean validation accuracy, and the sweep's best T with its
  interval over seeds. A sweep is the kd variants of one student model whose settings differ in the
  temperature only. The best T is the T of the highest mean **validation** accuracy of the students
  (run.json ``final.val_acc``, the run tables' ``val_acc``: the data set's ``holdout`` examples), never
  the test accuracy, which is only reported (``best_T_by``: ``val``). Where a sweep's runs have no
  validation accuracy (a data set without ``holdout``, runs from before run.json recorded it) no best
  T is chosen: the columns are empty, ``best_T_by`` says why and the job logs it. Its interval:
  resample the seeds with replacement (every T keeps the same resampled seeds: the runs of one seed
  share the teacher and the data), take each resample's best T, and report the central
  ``confidence`` range of those best Ts (on the sweep's grid of temperatures) and each T's share of
  the resamples (``best_share``).
- ``separability_bias`` (bias): one row per data set and bias variant: the shift chosen on the
  validation split (per seed; its largest magnitude), validation accuracy before and after, test
  accuracy before and after, and the paired test difference with its interval.

The spec-side helpers (the data sets, the extra files, the params) import neither torch nor pandas.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from reuse.methods.registry import Study

log = logging.getLogger(__name__)

KIND = "clusters"


def clusters_datasets(config: dict, method: str) -> list[str]:
    """The config's clusters data sets that ``method`` has runs on, in config order."""
    from reuse.methods import registry

    has = {ds for ds, _ in registry.get(method, config).variants(config)}
    return [ds for ds, spec in config["datasets"].items() if spec["kind"] == KIND and ds in has]


def anchor(method: str):
    """``Study.datasets`` of a study of ``method``: the first clusters data set it has runs on."""
    return lambda config: clusters_datasets(config, method)[:1]


def extra_files(method: str):
    """``Study.extra``: the run tables of ``method`` and the baselines and data description of every
    clusters data set it has runs on (paths relative to the results folder)."""
    def extra(config: dict, dataset: str) -> dict[str, list[str]]:
        sets = clusters_datasets(config, method)
        return {"tables": [f"{d}/{method}.csv" for d in sets], "baseline_tables": [f"{d}/baselines.csv" for d in sets],
                "meta": [f"{d}/data/dataset.json" for d in sets]}
    return extra


def params(config: dict) -> dict:
    """The report's confidence (the intervals here match the report's)."""
    return {"confidence": float(config["report"]["confidence"])}


#: the two studies (declared by kd's spec): built only where the config has clusters data sets
STUDIES = (
    Study("separability", ("kd",), "reuse.methods.kd.separability:build", extra=extra_files("kd"), params=params,
          charts="reuse.methods.kd.separability:charts", datasets=anchor("kd")),
    Study("separability_bias", ("bias",), "reuse.methods.kd.separability:build_bias", extra=extra_files("bias"),
          params=params, charts="reuse.methods.kd.separability:bias_charts", datasets=anchor("bias")),
)


# ----------------------------------------------------------------------------- the tables (in the job)
def _confidence(params: dict) -> float:
    return float(params.get("confidence", 0.95))


#: resamples of the seeds behind the best T's range (how stable the choice is), with a fixed seed
BEST_T_RESAMPLES, BEST_T_SEED = 10000, 0


def _separations(meta_files: list[str]) -> dict[str, dict]:
    from reuse.io import read_json

    out = {}
    for f in meta_files:
        m = read_json(f)
        c = m.get("clusters") or {}
        out[m["name"]] = {"separation": float(c["separation"]), "centre_rule_acc": c.get("centre_rule_test_acc")}
    return out


def best_temperature(acc: Any, temps: list[float], confidence: float = 0.95, resamples: int = BEST_T_RESAMPLES,
                     seed: int = BEST_T_SEED) -> dict:
    """The best T of one sweep and its interval over seeds.

    ``acc``: ``(seeds, temps)`` validation accuracies (the seeds every T has; the choice reads no test
    accuracy). Returns ``best`` (the T of the
    highest mean; ties to the lower T), ``lo``/``hi`` (the central ``confidence`` range of the
    best T over ``resamples`` resamples of the seeds, on the grid ``temps``) and ``share`` (per T,
    the fraction of resamples it is best in)."""
    import numpy as np

    acc = np.asarray(acc, dtype=np.float64)
    temps = [float(t) for t in temps]
    order = np.argsort(temps, kind="stable")
    acc, temps = acc[:, order], [temps[i] for i in order]
    best = temps[int(np.argmax(acc.mean(0)))]  # argmax: the first (lowest T) of equal means
    n = acc.shape[0]
    if n < 2:
        return {"best": best, "lo": float("nan"), "hi": float("nan"), "share": [float("nan")] * len(temps),
                "temps": temps}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    means = acc[idx].mean(1)  # (resamples, temps)
    winner = means.argmax(1)
    share = np.bincount(winner, minlength=len(temps)) / resamples
    tail = (1 - confidence) / 2
    cdf = np.cumsum(share)
    lo = temps[int(np.searchsorted(cdf, tail - 1e-12, side="right"))]
    hi = temps[int(np.searchsorted(cdf, 1 - tail - 1e-12, side="left"))]
    return {"best": best, "lo": lo, "hi": hi, "share": share.tolist(), "temps": temps}


#: ``best_T_by`` where a sweep's runs have no validation accuracy to choose the best T on
NO_VAL = "none: no val_acc (the data set needs a holdout, its runs a run.json with final.val_acc)"


def val_accuracies(table: Any) -> Any:
    """Each run's validation accuracy (a Series aligned with ``table``): the run table's ``val_acc``
    column, else (a table written before the column existed) run.json's ``final.val_acc`` of the run
    in its ``run`` column; NaN where neither has one."""
    import numpy as np
    import pandas as pd

    from reuse.io import read_json

    if "val_acc" in table and table["val_acc"].notna().all():
        return table["val_acc"].astype(float)
    out = table["val_acc"].astype(float) if "val_acc" in table else pd.Series(np.nan, index=table.index)
    for i, run in table.get("run", pd.Series(dtype=object)).items():
        f = Path(str(run)) / "run.json"
        if np.isnan(out[i]) and f.is_file():
            v = (read_json(f).get("final") or {}).get("val_acc")
            out[i] = np.nan if v is None else float(v)
    return out


def _sweep_key(row: Any, cfg_cols: list[str]) -> str:
    """The settings of a kd variant that differ between the table's variants, but for its temperature
    and its student model: the variants of one sweep share them ("" when only T differs)."""
    return ", ".join(f"{c.removeprefix('cfg_')}={row[c]}" for c in cfg_cols if c not in ("cfg_temperature",
                                                                                       "cfg_model"))


def build(*, runs_csvs: list[str], baseline_csv: str, extra: dict[str, list[str]], params: dict,
          out_csv: str) -> None:
    """The ``separability`` table (see the module docstring): one row per data set, sweep and T."""
    import numpy as np
    import pandas as pd

    from reuse.io import atomic_path, read_csv
    from reuse.stats import describe, paired_comparison

    confidence = _confidence(params)
    seps = _separations(extra["meta"])
    base = pd.concat([read_csv(f) for f in extra["baseline_tables"]], ignore_index=True)
    rows = []
    for f in extra["tables"]:
        kd = read_csv(f)
        if kd.empty:
            continue
        cfg_cols = sorted(c for c in kd.columns if c.startswith("cfg_") and kd[c].astype(str).nunique() > 1)
        kd = kd.assign(sweep=[_sweep_key(r, cfg_cols) for _, r in kd.iterrows()], val_acc=val_accuracies(kd))
        for (ds, model, sweep), g in kd.groupby(["dataset", "model", "sweep"], sort=True, dropna=False):
            temps = sorted({float(t) for t in g["cfg_temperature"]})
            at = {t: g[g["cfg_temperature"].astype(float) == t] for t in temps}
            by_t = {t: dict(zip(at[t]["seed"].astype(int), at[t]["test_acc"])) for t in temps}  # reported
            val_t = {t: dict(zip(at[t]["seed"].astype(int), at[t]["val_acc"])) for t in temps}   # chosen on
            common = sorted(set.intersection(*(set(v) for v in by_t.values())))
            val = [[val_t[t][s] for t in temps] for s in common]
            has_val = bool(common) and not np.isnan(np.asarray(val, dtype=float)).any()
            best = best_temperature(val, temps, confidence) if has_val else None
            if common and not has_val:
                log.warning("separability: no best T for %s on %s (%s): %s", model, ds, sweep or "one sweep", NO_VAL)
            b = base[(base["dataset"] == ds) & (base["model"] == model)]
            hard = dict(zip(b["seed"].astype(int), b["test_acc"]))
            teacher_model = g["cfg_teacher_model"].iloc[0] if "cfg_teacher_model" in g else None
            tb = base[(base["dataset"] == ds) & (base["model"] == teacher_model)]["test_acc"]
            for t in temps:
                d = describe(by_t[t].values(), confidence)
                cmp = paired_comparison(by_t[t], hard, confidence)
                i = best["temps"].index(t) if best else None
                rows.append({"method": "kd", "dataset": ds, **seps.get(ds, {"separation": np.nan,
                                                                             "centre_rule_acc": np.nan}),
                             "model": model, "teacher": teacher_model, "sweep": sweep, "temperature": t,
                             "variants": ",".join(sorted(set(g.loc[g["cfg_temperature"].astype(float) == t,
                                                                    "variant"]))),
                             "n": d["n"], "acc_mean": d["mean"], "acc_lo": d["lo"], "acc_hi": d["hi"],
                             "val_acc_mean": float(np.mean(list(val_t[t].values()))),
                             "hard_acc_mean": float(np.mean(list(hard.values()))) if hard else np.nan,
                             "teacher_acc_mean": float(tb.mean()) if len(tb) else np.nan,
                             "diff_vs_hard": cmp["diff_mean"], "diff_lo": cmp["diff_lo"], "diff_hi": cmp["diff_hi"],
                             "verdict": cmp["verdict"],
                             "best_T": best["best"] if best else np.nan, "best_T_lo": best["lo"] if best else np.nan,
                             "best_T_hi": best["hi"] if best else np.nan,
                             "best_share": best["share"][i] if best else np.nan,
                             "best_T_by": "val" if best else (NO_VAL if common else "none: no seed has every T"),
                             "seeds_paired": len(common)})
    cols = ["method", "dataset", "separation", "temperature", "acc_mean"]
    df = pd.DataFrame(rows).sort_values(["model", "sweep", "separation", "temperature"]) if rows else \
        pd.DataFrame(columns=cols)
    with atomic_path(out_csv, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)
    log.info("separability study:\n%s", df.drop(columns=["sweep"], errors="ignore").to_string(
        index=False, float_format=lambda v: f"{v:.4f}"))


def build_bias(*, runs_csvs: list[str], baseline_csv: str, extra: dict[str, list[str]], params: dict,
               out_csv: str) -> None:
    """The ``separability_bias`` table (see the module docstring): one row per data set and bias
    variant, over its seeds."""
    import numpy as np
    import pandas as pd

    from reuse.io import atomic_path, read_csv, read_json
    from reuse.stats import describe, paired_comparison

    confidence = _confidence(params)
    seps = _separations(extra["meta"])
    rows = []
    for f in extra["tables"]:
        table = read_csv(f)
        for (ds, model, variant), g in table.groupby(["dataset", "model", "variant"], sort=True):
            per = []
            for _, r in g.iterrows():
                run = read_json(f"{r['run']}/run.json")
                b = run["bias"]
                past = next(x for x in run["reused"] if x["kind"] == "past_run")
                per.append({"seed": int(r["seed"]), "values": b["values"], "size": float(np.max(np.abs(b["values"]))),
                            "val_before": b["acc_before"], "val_after": b["acc"], "test_before": past["test_acc"],
                            "test_after": float(r["test_acc"]), "past": past["path"]})
            p = pd.DataFrame(per)
            d_after = describe(p["test_after"], confidence)
            d_size = describe(p["size"], confidence)
            cmp = paired_comparison(dict(zip(p["seed"], p["test_after"])), dict(zip(p["seed"], p["test_before"])),
                                    confidence)
            src = (g["cfg_from_method"].iloc[0] if "cfg_from_method" in g else "") + \
                (f"/{g['cfg_from_variant'].iloc[0]}" if "cfg_from_variant" in g and
                 isinstance(g["cfg_from_variant"].iloc[0], str) else "")
            rows.append({"method": "bias", "dataset": ds, **seps.get(ds, {"separation": np.nan,
                                                                         "centre_rule_acc": np.nan}),
                         "model": model, "variant": variant, "from": src, "n": len(p),
                         "classes": ",".join(map(str, read_json(f"{g['run'].iloc[0]}/run.json")["bias"]["classes"])),
                         "shifts": "; ".join(",".join(f"{v:g}" for v in vals) for vals in p["values"]),
                         "shift_size_mean": d_size["mean"], "shift_size_lo": d_size["lo"],
                         "shift_size_hi": d_size["hi"], "shifted_seeds": int((p["size"] > 0).sum()),
                         "val_gain_mean": float((p["val_after"] - p["val_before"]).mean()),
                         "test_before_mean": float(p["test_before"].mean()), "test_after_mean": d_after["mean"],
                         "test_after_lo": d_after["lo"], "test_after_hi": d_after["hi"],
                         "test_diff": cmp["diff_mean"], "test_diff_lo": cmp["diff_lo"], "test_diff_hi": cmp["diff_hi"],
                         "verdict": cmp["verdict"]})
    df = pd.DataFrame(rows).sort_values(["model", "variant", "separation"]) if rows else \
        pd.DataFrame(columns=["method", "dataset", "separation", "variant"])
    with atomic_path(out_csv, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)
    log.info("separability bias study:\n%s", df.drop(columns=["shifts"], errors="ignore").to_string(
        index=False, float_format=lambda v: f"{v:.4f}"))


# ----------------------------------------------------------------------------- the charts (in the report)
def charts(table) -> list[tuple[str, Any, str]]:
    """Best T (chosen on validation accuracy) against separation (with its interval over seeds), and
    test accuracy per T against separation."""
    import altair as alt

    t = table[table["method"] == "kd"] if "method" in table else table
    if t.empty or "best_T" not in t:
        return []
    best = t.drop_duplicates(["model", "sweep", "dataset"]).copy()
    best["student"] = best["model"]
    enc_x = alt.X("separation:Q", title="separation (centre distance / within-cluster std)")
    pts = alt.Chart(best).mark_point(filled=True, size=80).encode(
        x=enc_x, y=alt.Y("best_T:Q", scale=alt.Scale(type="log"), title="best T (highest mean val. accuracy)"),
        color=alt.Color("student:N"),
        tooltip=["dataset", "separation", "student", "best_T", "best_T_lo", "best_T_hi",
                 alt.Tooltip("centre_rule_acc:Q", format=".3f")])
    bars = alt.Chart(best).mark_rule().encode(x=enc_x, y=alt.Y("best_T_lo:Q", scale=alt.Scale(type="log"),
                                                               title="best T (highest mean val. accuracy)"),
                                              y2="best_T_hi:Q", color="student:N")
    line = alt.Chart(best).mark_line(strokeDash=[4, 3]).encode(x=enc_x, y="best_T:Q", color="student:N")
    first = (bars + line + pts).properties(width=360, height=240)
    acc = t.assign(T=t["temperature"])
    y_title = "test accuracy minus hard-label student's"
    second = alt.Chart(acc).mark_line(point=True).encode(
        x=enc_x, y=alt.Y("diff_vs_hard:Q", title=y_title), color=alt.Color("T:O", title="T"),
        tooltip=["dataset", "separation", "T", alt.Tooltip("acc_mean:Q", format=".4f"),
                 alt.Tooltip("diff_vs_hard:Q", format=".4f"), alt.Tooltip("diff_lo:Q", format=".4f"),
                 alt.Tooltip("diff_hi:Q", format=".4f")]).properties(width=360, height=240)
    band = alt.Chart(acc).mark_errorbar().encode(x=enc_x, y=alt.Y("diff_lo:Q", title=y_title), y2="diff_hi:Q",
                                                 color=alt.Color("T:O", title="T"))
    return [("Best distillation temperature against separation", first,
             "Each point: the temperature whose students have the highest mean validation accuracy over the seeds "
             "(chosen on the held-out examples, never on test), on one clusters data set; bar: the central 95% of "
             "the best T over bootstrap resamples of the seeds (every T resampled with the same seeds); log scale."),
            ("Gain of distillation over hard labels, per temperature", second + band,
             "Mean over seeds of the student's test accuracy minus that of the same student trained on hard labels "
             "(paired by seed), with its 95% t-interval.")]


def bias_charts(table) -> list[tuple[str, Any, str]]:
    """The chosen shift's size and its test gain against separation."""
    import altair as alt

    t = table[table["method"] == "bias"] if "method" in table else table
    if t.empty:
        return []
    x = alt.X("separation:Q", title="separation (centre distance / within-cluster std)")
    size_title, gain_title = "largest |shift| (logits), mean over seeds", "test accuracy after minus before"
    size = alt.Chart(t).mark_line(point=True).encode(
        x=x, y=alt.Y("shift_size_mean:Q", title=size_title), color="variant:N",
        tooltip=["dataset", "variant", "shifts", alt.Tooltip("shift_size_mean:Q", format=".3f")])
    size_bars = alt.Chart(t).mark_errorbar().encode(x=x, y=alt.Y("shift_size_lo:Q", title=size_title),
                                                    y2="shift_size_hi:Q", color="variant:N")
    gain = alt.Chart(t).mark_line(point=True).encode(
        x=x, y=alt.Y("test_diff:Q", title=gain_title), color="variant:N",
        tooltip=["dataset", "variant", alt.Tooltip("test_diff:Q", format=".4f"),
                 alt.Tooltip("test_diff_lo:Q", format=".4f"), alt.Tooltip("test_diff_hi:Q", format=".4f")])
    gain_bars = alt.Chart(t).mark_errorbar().encode(x=x, y=alt.Y("test_diff_lo:Q", title=gain_title),
                                                    y2="test_diff_hi:Q", color="variant:N")
    return [("Best bias shift against separation", (size + size_bars).properties(width=320, height=220) |
             (gain + gain_bars).properties(width=320, height=220),
             "Left: the largest magnitude of the per-class shifts chosen on the validation split, mean over seeds "
             "with its 95% t-interval; right: the shift's effect on test accuracy (paired by seed).")]
