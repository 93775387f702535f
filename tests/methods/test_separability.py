"""The separability study (reuse/methods/kd/separability.py): the best temperature and its interval
over seeds, the tables built from run tables, the best T chosen on the students' validation accuracy
(never on test: replacing the test accuracies moves no choice), the charts, the study only on configs
with clusters data sets, and a tiny sweep run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from reuse.config import validate_config
from reuse.methods import registry
from reuse.methods.kd.separability import NO_VAL, STUDIES, best_temperature, build, charts
from tests.helpers import ROOT, jobs, smk
from tests.methods.choices import assert_choice_ignores_test, with_columns

OPTS = {"confidence": 0.95, "resamples": 2000, "seed": 0}


def test_a_clear_winner_has_a_point_interval():
    acc = [[0.80, 0.90, 0.85], [0.81, 0.91, 0.84], [0.79, 0.92, 0.86], [0.80, 0.90, 0.85]]
    b = best_temperature(acc, [1, 4, 20], **OPTS)
    assert b["best"] == 4 and b["lo"] == b["hi"] == 4 and b["share"] == [0.0, 1.0, 0.0]


def test_close_temperatures_give_an_interval_spanning_them():
    """Seeds disagree on T=2 against T=8: the resamples pick either, the interval holds both."""
    acc = [[0.70, 0.90, 0.80, 0.89], [0.70, 0.88, 0.80, 0.91], [0.70, 0.91, 0.80, 0.88],
           [0.70, 0.89, 0.80, 0.90], [0.70, 0.90, 0.80, 0.895]]
    b = best_temperature(acc, [1, 2, 4, 8], **OPTS)
    assert b["best"] == 2  # mean 0.896 against 0.893
    assert b["lo"] == 2 and b["hi"] == 8 and b["share"][0] == b["share"][2] == 0.0
    assert 0.2 < b["share"][1] < 0.8 and abs(sum(b["share"]) - 1) < 1e-9


def test_temperatures_are_sorted_with_their_columns_and_ties_go_low():
    acc = [[0.9, 0.8], [0.9, 0.8]]
    assert best_temperature(acc, [20, 1], **OPTS)["best"] == 20
    assert best_temperature([[0.9, 0.9], [0.8, 0.8]], [4, 2], **OPTS)["best"] == 2
    one = best_temperature([[0.7, 0.9]], [1, 2], **OPTS)
    assert one["best"] == 2 and np.isnan(one["lo"])  # one seed: no interval


def write_tables(root, separations=(1.0, 3.0), val_best=None) -> dict[str, list[str]]:
    """kd and baseline tables and dataset.json of clusters data sets, with known accuracies: on the
    hard one T=4 is best (by 2 points), on the easy one T=1, on test and on validation alike (or, with
    ``val_best``, T=``val_best`` best on validation on both)."""
    extra = {"tables": [], "baseline_tables": [], "meta": []}
    for sep in separations:
        ds = f"s{sep:g}"
        (root / ds / "data").mkdir(parents=True)
        (root / ds / "data" / "dataset.json").write_text(json.dumps(
            {"name": ds, "clusters": {"separation": sep, "centre_rule_test_acc": 0.5 + sep / 10}}))
        rows, base = [], []
        for seed in range(4):
            noise = 0.001 * seed
            for t in (1, 4, 20):
                good = (t == 4) if sep < 2 else (t == 1)
                val_good = good if val_best is None else t == val_best
                rows.append({"dataset": ds, "model": "student", "method": "kd", "variant": f"T{t}", "seed": seed,
                             "test_acc": 0.7 + (0.02 if good else 0.0) + noise,
                             "val_acc": 0.6 + (0.03 if val_good else 0.0) + noise, "run": "x", "cfg_temperature": t,
                             "cfg_alpha": 0.9, "cfg_teacher_model": "teacher"})
            base += [{"dataset": ds, "model": "student", "method": "baseline", "seed": seed, "test_acc": 0.69 + noise},
                     {"dataset": ds, "model": "teacher", "method": "baseline", "seed": seed, "test_acc": 0.75}]
        pd.DataFrame(rows).to_csv(root / ds / "kd.csv", index=False)
        pd.DataFrame(base).to_csv(root / ds / "baselines.csv", index=False)
        extra["tables"].append(str(root / ds / "kd.csv"))
        extra["baseline_tables"].append(str(root / ds / "baselines.csv"))
        extra["meta"].append(str(root / ds / "data" / "dataset.json"))
    return extra


def test_build_reports_best_t_per_separation_and_the_gain_over_hard_labels(tmp_path):
    extra = write_tables(tmp_path)
    out = tmp_path / "separability.csv"
    build(runs_csvs=extra["tables"][:1], baseline_csv=extra["baseline_tables"][0], extra=extra,
          params={"confidence": 0.95},
          out_csv=str(out))
    df = pd.read_csv(out)
    assert len(df) == 6 and set(df["method"]) == {"kd"}
    best = df.drop_duplicates("dataset").set_index("separation")
    assert best.loc[1.0, "best_T"] == 4 and best.loc[3.0, "best_T"] == 1
    assert (df["best_T_lo"] == df["best_T"]).all() and (df["best_T_hi"] == df["best_T"]).all()
    assert best.loc[3.0, "centre_rule_acc"] == pytest.approx(0.8)
    row = df[(df["separation"] == 1.0) & (df["temperature"] == 4)].iloc[0]
    assert row["n"] == 4 and row["diff_vs_hard"] == pytest.approx(0.03) and row["verdict"] == "better"
    assert row["teacher_acc_mean"] == pytest.approx(0.75) and row["best_share"] == 1.0
    assert row["acc_lo"] <= row["acc_mean"] <= row["acc_hi"] and row["val_acc_mean"] == pytest.approx(0.6315)
    assert (df["best_T_by"] == "val").all()
    made = charts(df)
    assert [t for t, _, _ in made] == ["Best distillation temperature against separation",
                                       "Gain of distillation over hard labels, per temperature"]
    for _, chart, _ in made:
        chart.to_dict()  # a valid Vega-Lite spec
    assert charts(df[df["method"] == "bias"]) == []


PARAMS = {"confidence": 0.95}
CHOICE = ["dataset", "model", "sweep", "temperature", "best_T", "best_T_lo", "best_T_hi", "best_share", "best_T_by"]


def separability_choice(tables: dict[str, pd.DataFrame], root) -> pd.DataFrame:
    """The table's choice columns (the best T, its interval and shares) built from the given kd run tables."""
    extra = write_tables(root)
    for f, t in tables.items():
        t.to_csv(f, index=False)
    out = root / "separability.csv"
    build(runs_csvs=extra["tables"][:1], baseline_csv=extra["baseline_tables"][0], extra=extra, params=PARAMS,
          out_csv=str(out))
    return pd.read_csv(out, dtype={"sweep": str})[CHOICE]


def test_the_best_t_is_chosen_on_validation_accuracy_never_on_test(tmp_path):
    """T=20 is best on validation on both data sets while T=4 / T=1 are best on test: the table's best T
    is 20. Replacing the test accuracies of every run moves no choice column (the accuracies it reports
    move); replacing the validation accuracies does."""
    extra = write_tables(tmp_path / "a", val_best=20)
    out = tmp_path / "a" / "separability.csv"
    build(runs_csvs=extra["tables"][:1], baseline_csv=extra["baseline_tables"][0], extra=extra, params=PARAMS,
          out_csv=str(out))
    df = pd.read_csv(out)
    assert (df["best_T"] == 20).all() and (df["best_T_by"] == "val").all()
    test_best = df.loc[df.groupby("dataset")["acc_mean"].idxmax()].set_index("separation")["temperature"]
    assert test_best.to_dict() == {1.0: 4, 3.0: 1}  # the reported test accuracies still say otherwise

    tables = {f: pd.read_csv(f) for f in extra["tables"]}
    roots = iter(range(100))

    def choose(ts: dict[str, pd.DataFrame]) -> pd.DataFrame:
        root = tmp_path / f"b{next(roots)}"
        return separability_choice({str(root / Path(f).relative_to(tmp_path / "a")): t for f, t in ts.items()}, root)

    def replaced(column):
        return lambda ts, rng: {f: with_columns(t, [column], rng) for f, t in ts.items()}

    assert_choice_ignores_test(choose, tables, replaced("test_acc"), perturb_val=replaced("val_acc"), trials=3)


def test_without_validation_accuracies_no_best_t_is_chosen(tmp_path):
    """Run tables without val_acc: read from each run's run.json (final.val_acc) where it has one; where
    none has, the best-T columns stay empty and say why, rather than falling back on test."""
    extra = write_tables(tmp_path)
    t = pd.read_csv(extra["tables"][0]).drop(columns=["val_acc"])
    t.to_csv(extra["tables"][0], index=False)
    out = tmp_path / "separability.csv"
    build(runs_csvs=extra["tables"][:1], baseline_csv=extra["baseline_tables"][0], extra=extra, params=PARAMS,
          out_csv=str(out))
    df = pd.read_csv(out)
    first = df[df["dataset"] == "s1"]
    assert first["best_T"].isna().all() and (first["best_T_by"] == NO_VAL).all()
    assert (df[df["dataset"] == "s3"]["best_T"] == 1).all()  # the other table still has its val_acc
    # the same table, its runs' run.json holding final.val_acc (T=20 best): read from there
    runs = []
    for i, r in t.iterrows():
        d = tmp_path / "runs" / str(i)
        d.mkdir(parents=True)
        (d / "run.json").write_text(json.dumps({"final": {"val_acc": 0.9 if r["cfg_temperature"] == 20 else 0.5,
                                                          "test_acc": r["test_acc"]}}))
        runs.append(str(d))
    t.assign(run=runs).to_csv(extra["tables"][0], index=False)
    build(runs_csvs=extra["tables"][:1], baseline_csv=extra["baseline_tables"][0], extra=extra, params=PARAMS,
          out_csv=str(out))
    df = pd.read_csv(out)
    assert (df[df["dataset"] == "s1"]["best_T"] == 20).all() and (df["best_T_by"] == "val").all()


def test_the_study_is_built_once_and_only_where_there_are_clusters_data_sets():
    default = validate_config(yaml.safe_load((ROOT / "config.yaml").read_text()))
    sep = validate_config(yaml.safe_load((ROOT / "configs" / "separability.yaml").read_text()))
    by_name = {s.name: s for s in STUDIES}
    assert {s.name for s in registry.studies(sep).values()} >= set(by_name)
    for s in STUDIES:
        assert s.datasets(default) == []
    assert by_name["separability"].datasets(sep) == ["sep1"]
    extra = by_name["separability"].extra(sep, "sep1")
    assert extra["tables"] == [f"sep{s}/kd.csv" for s in (1, 2, 3, 4, 6)]
    assert extra["meta"][-1] == "sep6/data/dataset.json"


@pytest.mark.workflow
def test_default_benchmark_plans_no_separability_job(tmp_path):
    r = smk(tmp_path, "-n", config=ROOT / "config.yaml", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "separability" not in r.stdout + r.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.workflow
def test_tiny_sweep_end_to_end(tmp_path):
    """Two clusters data sets, a teacher and a student, kd at two temperatures and a bias shift, two
    seeds: the study tables are built once, on the first data set, and the kd page draws the chart."""
    block = {"classes": 3, "dims": 4, "n_train": 300, "n_test": 300}
    cfg = {"results": "results", "device": "cpu", "progress": "log",
           "datasets": {f"c{s}": {"kind": "clusters", "clusters": {**block, "separation": s}, "holdout": 60}
                        for s in (1, 4)},
           "models": {"teacher": {"arch": "mlp", "args": {"hidden": [32]}}, "student": {"arch": "mlp",
                                                                                    "args": {"hidden": [4]}}},
           "train": {"epochs": 3, "batch_size": 32, "optimizer": {"name": "adamw", "lr": 0.01},
                     "schedule": {"name": "constant"}, "augment": {"translate": 0, "flip": False},
                     "checkpoint_epochs": [], "checkpoint_every": 1},
           "baseline": {"seeds": [0, 1]}, "cache": {"views": 0, "topk": 0},
           "kd": {"variants": {f"T{t}": {"model": "student", "teacher": {"model": "teacher"}, "temperature": t,
                                         "views": 0} for t in (1, 4)}},
           "bias": {"variants": {"shift": {"model": "student", "from": {"model": "student", "method": "kd",
                                                                         "variant": "T4"},
                                           "classes": [1, 2], "mode": "per_class",
                                           "grid": {"low": -1, "high": 1, "step": 0.5}}}}}
    path = tmp_path / "sep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    dry = smk(tmp_path, "-n", config=path)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert jobs(dry.stdout)["study"] == 4  # bias's own study on each data set, and the two separability ones
    r = smk(tmp_path, config=path)
    assert r.returncode == 0, r.stderr[-4000:]
    res = tmp_path / "results"
    assert not (res / "c4" / "studies" / "separability.csv").exists()
    kd = pd.read_csv(res / "c1" / "studies" / "separability.csv")
    assert sorted(kd["separation"].unique()) == [1, 4] and sorted(kd["temperature"].unique()) == [1, 4]
    assert (kd["n"] == 2).all() and kd["best_T"].isin([1, 4]).all() and (kd["best_T_by"] == "val").all()
    bias = pd.read_csv(res / "c1" / "studies" / "separability_bias.csv")
    assert len(bias) == 2 and (bias["n"] == 2).all() and bias["shift_size_mean"].between(0, 1).all()
    page = next((res / "report").rglob("method-kd.html")).read_text()
    assert "Best distillation temperature against separation" in page
