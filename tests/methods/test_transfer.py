"""Class influence on transfer (reuse.methods.transfer): the estimator against a brute-force count on
a hand-made table, its bootstrap, the subsets and the counterfactual plan, per-example values, every
run of a tiny config in process (source runs, both transfers, the influence table, the
counterfactuals, the studies and their charts), the influences and the counterfactuals' picks read
from the target's validation split only (the test split's labels and predictions permuted change
neither), resume after SIGKILL without redoing finished work, the fingerprint refusal, and a tiny
end-to-end Snakemake run."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from reuse.config import validate_config
from reuse.errors import ConfigError, FingerprintMismatch
from reuse.io import read_json
from reuse.methods.registry import get
from reuse.methods.transfer import influence as inf
from reuse.methods.transfer.stage import (counterfactual_study, influence_study, influence_table, run_classes,
                                          subpopulation_study, train)
from reuse.train import load_checkpoint
from reuse.workflow import Job
from tests.helpers import ROOT, method_job
from tests.methods.choices import assert_choice_ignores_test, fresh_dir, with_json_value, with_npz_arrays, \
    with_split_labels

SOURCE = {"kind": "mnist1d", "mnist1d": {"num_samples": 300, "seed": 3}}     # 10 classes, 240 train / 60 test
TARGET = {"kind": "mnist1d", "mnist1d": {"num_samples": 260, "seed": 5, "train_split": 0.54},  # 140 train / 120 test
          "holdout": 60}                                                                   # 80 train / 60 val left
CONFIG = {
    "datasets": {"src": SOURCE, "tgt": TARGET},
    "models": {"c": {"arch": "cnn1d", "args": {"channels": 8}, "datasets": []}},
    "train": {"epochs": 2, "batch_size": 32, "checkpoint_every": 1, "optimizer": {"lr": 0.05}},
    "baseline": {"seeds": [0, 1]},
    "report": {"figures": []},
    "transfer": {"source": "src", "target": "tgt", "model": "c", "subsets": 6,
                 "transfer": {"probe": {"epochs": 3, "batch_size": 16}, "finetune": {"epochs": 3, "batch_size": 16}},
                 "counterfactual": {"k": [2, 3], "kinds": ["harmful", "helpful", "random"]}},
}


# ----------------------------------------------------------------------------- the estimator
MASKS = np.array([[1, 0, 1],
                  [0, 1, 1],
                  [1, 1, 0],
                  [0, 0, 1],
                  [1, 0, 0]], dtype=bool)                  # 5 runs x 3 source classes
VALUES = np.array([[0.9, 0.2, 0.5, 0.1],
                   [0.4, 0.8, 0.3, 0.6],
                   [0.7, 0.1, 0.9, 0.2],
                   [0.3, 0.5, 0.2, 0.4],
                   [0.8, 0.3, 0.6, 0.7]])                  # 5 runs x 4 target examples


def brute_force(masks: np.ndarray, values: np.ndarray) -> np.ndarray:
    """influence[c, t] by counting, run by run."""
    out = np.zeros((masks.shape[1], values.shape[1]))
    for c in range(masks.shape[1]):
        for t in range(values.shape[1]):
            with_c = [values[i, t] for i in range(len(masks)) if masks[i, c]]
            without = [values[i, t] for i in range(len(masks)) if not masks[i, c]]
            out[c, t] = sum(with_c) / len(with_c) - sum(without) / len(without)
    return out


def test_influence_matches_brute_force():
    got = inf.influences(MASKS, VALUES)
    assert got.shape == (3, 4)
    np.testing.assert_allclose(got, brute_force(MASKS, VALUES), atol=1e-12)
    # a value worked by hand: class 0 is in runs 0, 2, 4, out of runs 1, 3; target example 0
    assert got[0, 0] == pytest.approx((0.9 + 0.7 + 0.8) / 3 - (0.4 + 0.3) / 2)
    # class influence = the sum over target examples = the influence of the per-run sums
    np.testing.assert_allclose(inf.influences(MASKS, VALUES.sum(1)), got.sum(1), atol=1e-12)
    # per target class: the sum over that class's examples
    labels = np.array([1, 0, 1, 2])
    by = inf.influences(MASKS, inf.group_sums(VALUES, labels, 3))
    np.testing.assert_allclose(by, np.stack([got[:, labels == j].sum(1) for j in range(3)], 1), atol=1e-12)


def test_a_class_in_every_run_or_none_has_no_influence():
    with pytest.raises(ValueError, match=r"classes \[\] are in no run and \[1\] in every run"):
        inf.influences(np.array([[1, 1], [0, 1]], dtype=bool), np.ones((2, 3)))
    assert inf.coverage_gaps(np.array([[1, 0, 0], [1, 1, 0]], dtype=bool)) == ([2], [0])


def test_bootstrap_interval_over_runs():
    totals = VALUES.sum(1)
    lo, hi = inf.bootstrap_influence(MASKS, totals, resamples=500, seed=1)
    point = inf.influences(MASKS, totals)
    assert lo.shape == hi.shape == (3,) and (lo <= point + 1e-12).all() and (point <= hi + 1e-12).all()
    again = inf.bootstrap_influence(MASKS, totals, resamples=500, seed=1)
    np.testing.assert_array_equal(lo, again[0])
    # runs that all agree give a zero-width interval at the point estimate
    flat = np.where(MASKS[:, 0], 2.0, 1.0)
    lo, hi = inf.bootstrap_influence(MASKS, flat[:, None], resamples=300)
    assert lo[0, 0] == pytest.approx(1.0) and hi[0, 0] == pytest.approx(1.0)
    # a brute-force bootstrap: the same resamples, counted run by run
    rng = np.random.default_rng(7)
    draws = []
    for _ in range(300):
        pick = rng.integers(0, 5, 5)
        m, v = MASKS[pick], totals[pick]
        draws.append([v[m[:, c]].mean() - v[~m[:, c]].mean() if 0 < m[:, c].sum() < 5 else np.nan for c in range(3)])
    lo, hi = inf.bootstrap_influence(MASKS, totals, resamples=300, seed=7)
    np.testing.assert_allclose(lo, np.nanquantile(np.array(draws), 0.025, axis=0), atol=1e-12)
    np.testing.assert_allclose(hi, np.nanquantile(np.array(draws), 0.975, axis=0), atol=1e-12)


def test_per_example_values():
    logits = np.array([[2.0, 0.0, 1.0], [0.0, 3.0, 1.0]])
    per = inf.per_example(logits, np.array([2, 1]))
    assert per["margin"].tolist() == [-1.0, 2.0] and per["correct"].tolist() == [0.0, 1.0]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(per["prob"], [p[0, 2], p[1, 1]])


# ----------------------------------------------------------------------------- subsets and the plan
def test_subset_assignment_is_deterministic():
    a = inf.subset_masks(24, 0.5, 3, 10)
    assert (a == inf.subset_masks(24, 0.5, 3, 10)).all() and (a.sum(1) == 12).all()
    # subset i depends on the seed and i only: more subsets keep the earlier ones
    assert (inf.subset_masks(24, 0.5, 3, 14)[:10] == a).all()
    assert not (inf.subset_masks(24, 0.5, 4, 10) == a).all()
    assert len({tuple(r) for r in a}) == 10
    assert inf.subset_size(10, 0.3) == 3 and inf.subset_size(3, 0.1) == 1
    # over many subsets every class is in about half of them
    assert np.abs(inf.subset_masks(24, 0.5, 0, 400).mean(0) - 0.5).max() < 0.1


def test_counterfactual_plan():
    scores = np.array([0.5, -2.0, 3.0, -2.0, 0.0, 1.0])
    assert inf.removed_classes(scores, "harmful", 2, seed=0, run_seed=0).tolist() == [1, 3]
    assert inf.removed_classes(scores, "harmful", 3, seed=0, run_seed=0).tolist() == [1, 3, 4]
    assert inf.removed_classes(scores, "helpful", 2, seed=0, run_seed=0).tolist() == [2, 5]
    # ties go to the lower class id
    assert inf.removed_classes(np.zeros(4), "harmful", 1, seed=0, run_seed=0).tolist() == [0]
    # random: nested in k for a run, different across runs, fixed by (seed, run seed)
    r2, r4 = (set(inf.removed_classes(scores, "random", k, seed=0, run_seed=5)) for k in (2, 4))
    assert r2 <= r4 and len(r4) == 4
    draws = {tuple(inf.removed_classes(scores, "random", 3, seed=0, run_seed=s)) for s in range(8)}
    assert len(draws) > 1
    assert (inf.removed_classes(scores, "random", 3, seed=0, run_seed=1) ==
            inf.removed_classes(scores, "random", 3, seed=0, run_seed=1)).all()
    for k in (0, 6):
        with pytest.raises(ValueError, match="must leave at least one"):
            inf.removed_classes(scores, "harmful", k, seed=0, run_seed=0)
    # a run's classes: the subset, every class, or all but the removed ones
    params = {"classes": 6, "fraction": 0.5, "subset_seed": 0, "k": 2}
    kept, out = run_classes({"kind": "subsets"}, params, 4)
    assert kept.tolist() == inf.subset_classes(6, 0.5, 0, 4).tolist() and len(out) == 3
    assert run_classes({"kind": "full"}, params, 0)[1].tolist() == []
    kept, out = run_classes({"kind": "harmful"}, params, 0, scores)
    assert out.tolist() == [1, 3] and kept.tolist() == [0, 2, 4, 5]


def test_the_issues_bad_inputs_are_refused_before_any_job():
    """One clear problem naming the key: a target the source model cannot take, a fraction outside
    (0, 1), too few subsets for every class to be in and out of one, k at or above C, a target with
    no validation split to estimate the influences on."""
    bad = {
        "transfer.target: dataset 'tgt' has inputs of shape [1, 50]":
            {"datasets": {"src": SOURCE, "tgt": {**TARGET, "mnist1d": {**TARGET["mnist1d"], "final_seq_length": 50}}}},
        "transfer.fraction: 1.5 lies outside (0, 1)": {"transfer": {**CONFIG["transfer"], "fraction": 1.5}},
        "transfer.subsets: 2 subsets of 5 of the 10 source classes": {"transfer": {**CONFIG["transfer"], "subsets": 2}},
        "transfer.counterfactual.k: 11 removes more than all of the 10 source classes":
            {"transfer": {**CONFIG["transfer"], "counterfactual": {"k": [11]}}},
        "transfer.target: dataset 'tgt' has no validation split; the influences, and the classes the harmful and "
        "helpful counterfactuals remove, are estimated on it (never on the test split, which only scores the "
        "transfers); set datasets.tgt.holdout":
            {"datasets": {"src": SOURCE, "tgt": {k: v for k, v in TARGET.items() if k != "holdout"}}},
    }
    for expected, change in bad.items():
        with pytest.raises(ConfigError) as e:
            validate_config({**copy.deepcopy(CONFIG), **copy.deepcopy(change)})
        assert "has 1 problem:" in str(e.value) and f"\n  - {expected}" in str(e.value), str(e.value)


# ----------------------------------------------------------------------------- runs, in process
@pytest.fixture(scope="module")
def cfg() -> dict:
    return validate_config(copy.deepcopy(CONFIG))


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory) -> Path:
    """``<results>/<dataset>/data`` of both datasets, as the workflow prepares them."""
    from reuse.data import prepare

    root = tmp_path_factory.mktemp("transfer_results")
    for name, spec in CONFIG["datasets"].items():
        d = root / name / "data"
        prepare(name, spec, d / "data.npz", d / "dataset.json")
    return root


def job_of(cfg: dict, variant: str, seed: int, results: Path) -> Job:
    return Job(**method_job(cfg, "transfer", "src", variant, seed, results, results / "src" / "data"))


def build_influence(cfg: dict, results: Path) -> dict[str, str]:
    m = get("transfer", cfg)
    ins = {k: [str(results / f) for f in v] for k, v in m.influence_inputs(cfg).items()}
    files = {k: str(results / f) for k, f in m.influence_files(cfg).items()}
    influence_table(run_jsons=ins["runs"], value_files=ins["values"], source_meta=ins["source"][0],
                    out_table=files["table"], out_by_class=files["by_class"], out_meta=files["meta"],
                    using=cfg["transfer"]["influence"]["using"], metric=cfg["transfer"]["influence"]["metric"],
                    resamples=200)
    return files


@pytest.fixture(scope="module")
def finished(cfg, data_dirs) -> Path:
    """Every run of the tiny config, in the workflow's order, and the influence table."""
    m = get("transfer", cfg)
    for s in m.seeds(cfg, "subsets"):
        train(job_of(cfg, "subsets", s, data_dirs))
    build_influence(cfg, data_dirs)
    for _, v in m.variants(cfg):
        if v != "subsets":
            for s in m.seeds(cfg, v):
                train(job_of(cfg, v, s, data_dirs))
    return data_dirs


def run_dir(cfg: dict, results: Path, variant: str, seed: int) -> Path:
    return results / get("transfer", cfg).run_dir(cfg, "src", variant, seed)


def test_a_subset_run_trains_on_its_classes_and_records_both_transfers(cfg, finished):
    from reuse.data import load

    src, tgt = load(finished / "src" / "data"), load(finished / "tgt" / "data")
    for s in range(6):
        d = run_dir(cfg, finished, "subsets", s)
        rec, run = read_json(d / "transfer.json"), read_json(d / "run.json")
        assert rec["classes"] == inf.subset_classes(10, 0.5, 0, s).tolist() and rec["seed"] == s == run["seed"]
        assert run["transfer"]["classes"] == rec["classes"] and not (d / "state").exists()
        with np.load(d / "transfer.npz") as z:
            # the test split's predictions under the plain names, the validation split's as val_*
            assert (z["y"] == tgt.test.y.numpy()).all() and (z["val_y"] == tgt.val.y.numpy()).all()
            assert len(z["y"]) == 120 and len(z["val_y"]) == 60
            for t in ("probe", "finetune"):
                for pre, acc in (("", "acc"), ("val_", "val_acc")):
                    assert rec[t][acc] == pytest.approx(z[f"{pre}{t}_correct"].mean())
                    assert ((z[f"{pre}{t}_prob"] >= 0) & (z[f"{pre}{t}_prob"] <= 1)).all()
                    assert ((z[f"{pre}{t}_margin"] > 0) == (z[f"{pre}{t}_correct"] == 1)).all()
                assert rec[t]["cost"]["train_flops"] > 0 and rec[t]["cost"]["epochs"] == 3
                assert rec[t]["cost"]["val_flops"] > 0 and rec[t]["cost"]["test_flops"] > 0
        assert set(rec["target_fingerprint"]) == {"train", "val", "test"}
        # the source model never saw a class outside its subset: it trained on exactly those examples' ids
        seen = np.isin(src.train.y.numpy(), rec["classes"]).sum()
        assert read_json(d / "run.json")["cost"]["examples_seen"] == 2 * seen


def test_the_influence_table_is_the_estimator_on_the_runs_validation_predictions(cfg, finished):
    """The table is the estimator on the subset runs' predictions of the target's validation examples
    (their test predictions are another table, which the influences do not match)."""
    m = get("transfer", cfg)
    files = {k: finished / f for k, f in m.influence_files(cfg).items()}
    table = pd.read_csv(files["table"]).sort_values("class")
    runs = [run_dir(cfg, finished, "subsets", s) for s in range(6)]
    masks = np.array([np.isin(np.arange(10), read_json(d / "transfer.json")["classes"]) for d in runs])
    values = np.stack([np.load(d / "transfer.npz")["val_probe_prob"].astype(np.float64) for d in runs])
    on_test = np.stack([np.load(d / "transfer.npz")["probe_prob"].astype(np.float64) for d in runs])
    assert not np.allclose(table["influence"], brute_force(masks, on_test).sum(1))
    assert (table["split"] == "val").all()
    np.testing.assert_allclose(table["influence"], brute_force(masks, values).sum(1), rtol=1e-9, atol=1e-9)
    assert (table["n_in"] == masks.sum(0)).all() and (table["n_in"] + table["n_out"] == 6).all()
    assert (table["influence_lo"] <= table["influence"] + 1e-9).all()
    assert (table["influence"] <= table["influence_hi"] + 1e-9).all()
    assert sorted(table["rank"]) == list(range(1, 11)) and (table["using"] == "probe").all()
    by = pd.read_csv(files["by_class"])
    assert len(by) == 10 * 10 and (by["split"] == "val").all()
    y = np.load(runs[0] / "transfer.npz")["val_y"]
    assert (by.groupby("target_class")["n_target"].first() == np.bincount(y, minlength=10)).all()
    for j in (0, 7):
        got = by[by["target_class"] == j].sort_values("source_class")["influence"]
        np.testing.assert_allclose(got, brute_force(masks, values)[:, y == j].sum(1), rtol=1e-9, atol=1e-9)
    meta = read_json(files["meta"])
    assert meta["runs"] == 6 and meta["cost"]["flops"] == sum(read_json(d / "transfer.json")["cost"]["flops"]
                                                             for d in runs)
    assert meta["split"] == "val" and meta["target_examples"] == 60
    assert meta["target_fingerprint"] == read_json(runs[0] / "transfer.json")["target_fingerprint"]["val"]


def test_counterfactual_runs_remove_the_planned_classes(cfg, finished):
    table = pd.read_csv(finished / "src" / "transfer" / "influence.csv").sort_values("class")
    scores = table["influence"].to_numpy()
    for kind in ("harmful", "helpful"):
        rec = read_json(run_dir(cfg, finished, f"{kind}_k3", 0) / "transfer.json")
        assert rec["removed"] == inf.removed_classes(scores, kind, 3, seed=0, run_seed=0).tolist()
        assert run_dir(cfg, finished, f"{kind}_k3", 0).joinpath("run.json").exists()
        assert read_json(run_dir(cfg, finished, f"{kind}_k3", 0) / "run.json")["reused"][0]["kind"] == "influence_table"
    for s in (0, 1):
        r2 = read_json(run_dir(cfg, finished, "random_k2", s) / "transfer.json")["removed"]
        r3 = read_json(run_dir(cfg, finished, "random_k3", s) / "transfer.json")["removed"]
        assert set(r2) <= set(r3) and r3 == inf.removed_classes(scores, "random", 3, seed=0, run_seed=s).tolist()
    assert read_json(run_dir(cfg, finished, "full", 1) / "transfer.json")["removed"] == []


# ----------------------------------------------------------------------------- validation only
PICKS = [(kind, k) for kind in ("harmful", "helpful") for k in (2, 3)]


def influence_choice(files: dict) -> dict:
    """What the influence table decides: the influences (per source class and per target class, with
    their intervals and ranks) and the classes each harmful or helpful counterfactual removes."""
    table = pd.read_csv(files["table"]).sort_values("class").reset_index(drop=True)
    by = pd.read_csv(files["by_class"]).sort_values(["target_class", "source_class"]).reset_index(drop=True)
    scores = table["influence"].to_numpy()
    return {"influence": table[["class", "influence", "influence_lo", "influence_hi", "rank", "influence_probe",
                                "influence_finetune"]],
            "by_class": by[["target_class", "source_class", "influence", "influence_lo", "influence_hi", "rank",
                            "n_target"]],
            "picks": {f"{kind}_k{k}": inf.removed_classes(scores, kind, k, seed=0, run_seed=0).tolist()
                      for kind, k in PICKS}}


def test_the_subset_runs_test_predictions_move_no_influence_and_no_pick(cfg, finished, tmp_path):
    """The influence table from the subset runs' files, then from copies whose test labels,
    predictions and accuracies are permuted or replaced: the same influences and the same picks.
    Permuting their validation predictions instead moves them (the table does read validation)."""
    m = get("transfer", cfg)
    ins = {k: [str(finished / f) for f in v] for k, v in m.influence_inputs(cfg).items()}
    test_keys = ["y", *(f"{t}_{metric}" for t in ("probe", "finetune") for metric in inf.METRICS)]
    test_json = [(t, k) for t in ("probe", "finetune") for k in ("acc", "mean_prob", "mean_margin")]

    def choose(inputs: dict) -> dict:
        out = fresh_dir(tmp_path, "table")
        files = {"table": str(out / "influence.csv"), "by_class": str(out / "by_class.csv"),
                 "meta": str(out / "influence.json")}
        influence_table(run_jsons=inputs["runs"], value_files=inputs["values"], source_meta=inputs["source"][0],
                        out_table=files["table"], out_by_class=files["by_class"], out_meta=files["meta"],
                        using=cfg["transfer"]["influence"]["using"], metric=cfg["transfer"]["influence"]["metric"],
                        resamples=200)
        return influence_choice(files)

    def perturbed(keys: list[str], json_keys: list[tuple[str, ...]]):
        def perturb(inputs: dict, rng: np.random.Generator) -> dict:
            d = fresh_dir(tmp_path, "runs")
            values = [str(with_npz_arrays(f, d / f"{i}.npz", keys, rng)) for i, f in enumerate(inputs["values"])]
            runs = [str(with_json_value(f, d / f"{i}.json", json_keys, lambda v, r: float(r.uniform()), rng))
                    for i, f in enumerate(inputs["runs"])]
            return {**inputs, "values": values, "runs": runs}
        return perturb

    reference = influence_choice({k: finished / f for k, f in m.influence_files(cfg).items()})
    assert choose(ins)["picks"] == reference["picks"]
    assert_choice_ignores_test(choose, ins, perturbed(test_keys, test_json), reference=reference, trials=2,
                               perturb_val=perturbed([f"val_{k}" for k in test_keys], []))


def test_subset_runs_without_validation_predictions_are_refused(cfg, finished, tmp_path):
    """A subset run from before the target had a validation split: the table names it and the fix."""
    from reuse.errors import ReuseError

    ins = {k: [str(finished / f) for f in v] for k, v in get("transfer", cfg).influence_inputs(cfg).items()}
    old = with_json_value(ins["runs"][2], tmp_path / "old" / "transfer.json", [("target_fingerprint",)],
                          lambda v, rng: {k: v[k] for k in ("train", "test")}, np.random.default_rng(0))
    runs = [*ins["runs"][:2], str(old), *ins["runs"][3:]]
    out = {k: str(tmp_path / f"{k}.out") for k in ("table", "by_class", "meta")}
    with pytest.raises(ReuseError, match=r"hold no predictions of the target's validation split .* delete their "
                                         r"folders and re-run snakemake"):
        influence_table(run_jsons=runs, value_files=ins["values"], source_meta=ins["source"][0],
                        out_table=out["table"], out_by_class=out["by_class"], out_meta=out["meta"], using="probe",
                        metric="prob", resamples=100)


def test_permuting_the_targets_test_labels_moves_no_influence_and_no_counterfactual(cfg, finished, data_dirs,
                                                                                     tmp_path):
    """The whole chain again on a copy of the target whose test labels are permuted: every subset
    run trained and transferred, the influence table, a harmful counterfactual run. The influences
    are the same bit for bit and the counterfactual removes the same classes: no choice read a test
    label (the reported test accuracies, which do read them, are not part of the choice)."""
    m = get("transfer", cfg)

    def choose(target_data: Path) -> dict:
        res = fresh_dir(tmp_path, "results")
        for ds, d in (("src", data_dirs / "src" / "data"), ("tgt", target_data)):
            (res / ds).mkdir()
            os.symlink(d, res / ds / "data")
        for s in m.seeds(cfg, "subsets"):
            train(job_of(cfg, "subsets", s, res))
        files = build_influence(cfg, res)
        train(job_of(cfg, "harmful_k2", 0, res))
        return {**influence_choice(files),
                "removed": read_json(run_dir(cfg, res, "harmful_k2", 0) / "transfer.json")["removed"]}

    reference = {**influence_choice({k: finished / f for k, f in m.influence_files(cfg).items()}),
                 "removed": read_json(run_dir(cfg, finished, "harmful_k2", 0) / "transfer.json")["removed"]}
    assert_choice_ignores_test(choose, data_dirs / "tgt" / "data",
                               lambda d, rng: with_split_labels(d, fresh_dir(tmp_path, "tgt"), rng, "test"),
                               reference=reference)


def test_studies_and_their_charts(cfg, finished, tmp_path):
    from reuse.methods.transfer import charts
    from reuse.methods.transfer.spec import _by_class_extra, _influence_extra, _runs_extra, _study_params

    params = _study_params(cfg)
    under = lambda extra: {k: [str(finished / f) for f in v] for k, v in extra.items()}
    counterfactual_study(runs_csvs=[], baseline_csv="", extra=under(_runs_extra(cfg, "src")), params=params,
                         out_csv=str(tmp_path / "cf.csv"))
    cf = pd.read_csv(tmp_path / "cf.csv")
    assert set(zip(cf["kind"], cf["k"])) == {("full", 0), *((kd, k) for kd in ("harmful", "helpful", "random")
                                                            for k in (2, 3))}
    assert (cf["n"] == 2).all() and (cf["method"] == "transfer").all() and set(cf["transfer"]) == {"probe", "finetune"}
    full = cf[(cf["kind"] == "full") & (cf["transfer"] == "probe")]
    accs = [read_json(run_dir(cfg, finished, "full", s) / "transfer.json")["probe"]["acc"] for s in (0, 1)]
    assert full["acc"].iloc[0] == pytest.approx(np.mean(accs)) and full["diff_vs_full"].iloc[0] == pytest.approx(0)
    influence_study(runs_csvs=[], baseline_csv="", extra=under(_influence_extra(cfg, "src")), params=params,
                    out_csv=str(tmp_path / "infl.csv"))
    subpopulation_study(runs_csvs=[], baseline_csv="", extra=under(_by_class_extra(cfg, "src")), params=params,
                        out_csv=str(tmp_path / "sub.csv"))
    sub = pd.read_csv(tmp_path / "sub.csv")
    assert (sub.groupby("target_class").size() == params["top"] + 1).all()
    for fn, f in ((charts.counterfactual_charts, "cf.csv"), (charts.influence_charts, "infl.csv"),
                  (charts.subpopulation_charts, "sub.csv")):
        out = fn(pd.read_csv(tmp_path / f))
        assert out and all(title and caption and chart.to_dict() for title, chart, caption in out)


# ----------------------------------------------------------------------------- resume and refusal
_KILLED = """
import json, sys
import torch
torch.set_num_threads(1)
from reuse.train import trainer
from tests.helpers import Kill
where, epoch = sys.argv[2], int(sys.argv[3])
init = trainer.Trainer.__init__
def with_kill(self, *args, algorithms=(), **kwargs):
    mine = kwargs["state_dir"].name == where
    init(self, *args, algorithms=[*algorithms, Kill(epoch=epoch if mine else None, sigkill=True)], **kwargs)
trainer.Trainer.__init__ = with_kill
from reuse.methods.transfer.stage import train
from reuse.workflow import Job
train(Job(**json.load(open(sys.argv[1]))))
"""


@pytest.mark.parametrize("where, epoch", [("state", 2), ("probe", 2), ("finetune", 2)])
def test_a_run_resumes_after_sigkill_without_redoing_work(cfg, finished, data_dirs, tmp_path, monkeypatch, where,
                                                          epoch):
    """A full-source run killed (SIGKILL) in its source training, its linear probe or its fine-tune,
    then run again: each finished part is found done, the killed one resumes from its last
    checkpoint, and the run ends bit for bit as the uninterrupted one."""
    from reuse.train import trainer

    res = tmp_path / "res"
    for ds in ("src", "tgt"):
        (res / ds).mkdir(parents=True)
        os.symlink(data_dirs / ds / "data", res / ds / "data")
    job = method_job(cfg, "transfer", "src", "full", 0, res, res / "src" / "data")
    (tmp_path / "job.json").write_text(json.dumps(job))
    (tmp_path / "killed.py").write_text(_KILLED)
    proc = subprocess.run([sys.executable, str(tmp_path / "killed.py"), str(tmp_path / "job.json"), where, str(epoch)],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    run = Path(job["outputs"]["run"]).parent
    assert not (run / "run.json").exists() and not (run / "transfer.json").exists()
    from tests.helpers import Kill

    resumed: dict[str, int | None] = {}
    init, fit = trainer.Trainer.__init__, trainer.Trainer.fit

    def spy_fit(self):
        out = fit(self)
        resumed[self.state_dir.name] = self.resumed_from
        return out

    monkeypatch.setattr(trainer.Trainer, "__init__", lambda self, *a, algorithms=(), **k: init(
        self, *a, algorithms=[*algorithms, Kill()], **k))  # inert: the trainers' identities are the killed ones'
    monkeypatch.setattr(trainer.Trainer, "fit", spy_fit)
    train(Job(**job))
    stages = ["state", "probe", "finetune"]
    done = {"state": 2, "probe": 3, "finetune": 3}
    for s in stages:
        if stages.index(s) < stages.index(where):
            assert resumed[s] == done[s], resumed  # finished before the kill: found done, not redone
        elif s == where:
            assert resumed[s] == epoch - 1, resumed  # killed before its checkpoint: resumes from the one before
        else:
            assert resumed[s] is None, resumed
    mine, theirs = run, run_dir(cfg, finished, "full", 0)
    with np.load(mine / "transfer.npz") as a, np.load(theirs / "transfer.npz") as b:
        assert a.files == b.files and all((a[k] == b[k]).all() for k in a.files)
    ra, rb = read_json(mine / "run.json"), read_json(theirs / "run.json")
    assert ra["final"] == rb["final"] and ra["transfer"]["probe"]["acc"] == rb["transfer"]["probe"]["acc"]
    wa, wb = load_checkpoint(mine / "ckpt" / "last.pt")["model"], load_checkpoint(theirs / "ckpt" / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_source_checkpoint_of_other_data_is_refused(cfg, data_dirs, tmp_path, monkeypatch):
    """A run folder holding the resume state of a source run on other data (same dataset name, other
    examples), stopped before its transfers: the run refuses it with the fingerprint error."""
    import shutil

    import reuse.workflow as wf
    from reuse.data import prepare
    from tests.helpers import Stop

    res = tmp_path / "res"
    (res / "tgt").mkdir(parents=True)
    os.symlink(data_dirs / "tgt" / "data", res / "tgt" / "data")
    shutil.copytree(data_dirs / "src" / "data", res / "src" / "data")
    prepare("src", {**SOURCE, "mnist1d": {**SOURCE["mnist1d"], "seed": 9}}, res / "other" / "data.npz",
            res / "other" / "dataset.json")
    job = method_job(cfg, "transfer", "src", "full", 0, res, res / "src" / "data")
    state = Path(job["outputs"]["run"]).parent / "state"

    class StopAfterSource(wf.Trainer):  # the source run's trainer (Job.fit's): stop once it has trained
        def fit(self):
            super().fit()
            raise Stop

    with monkeypatch.context() as mp:
        mp.setattr(wf, "Trainer", StopAfterSource)
        with pytest.raises(Stop):
            train(Job(**{**job, "data_dir": str(res / "other")}))  # the same run folder, other source data
    assert (state / "last.pt").exists()
    with pytest.raises(FingerprintMismatch, match="checkpoint"):
        train(Job(**job))


# ----------------------------------------------------------------------------- the workflow
@pytest.mark.workflow
def test_a_tiny_workflow_end_to_end(tmp_path):
    """The tiny config through Snakemake: the source has no baseline runs, the target none at all;
    every transfer run, the influence table, the studies and the report."""
    import yaml

    from tests.helpers import jobs, smk

    path = tmp_path / "config.yaml"
    cfg = {**copy.deepcopy(CONFIG), "results": "results", "device": "cpu", "threads_per_job": 1}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    dry = smk(tmp_path, "-n", config=path, timeout=300)
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-3000:]
    counts = jobs(dry.stdout)
    assert counts["transfer__src__subsets"] == 6 and counts["transfer__src__full"] == 2
    assert counts["transfer_influence"] == 1 and counts["study"] == 3 and "train_baseline" not in counts
    r = smk(tmp_path, config=path, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    res = tmp_path / "results"
    for name in ("transfer_counterfactual", "transfer_influence", "transfer_subpopulations"):
        assert not pd.read_csv(res / "src" / "studies" / f"{name}.csv").empty
    page = (res / "report" / "method-transfer.html").read_text()
    assert "transfer_counterfactual" in page and "Target accuracy without k source classes" in page


def test_subset_runs_start_from_common_weights(cfg, data_dirs, monkeypatch):
    """Every subset run starts from the weights drawn from subset_seed (named in its identity); the
    full-source and counterfactual runs start from their own seed's."""
    import reuse.workflow as wf

    seen = []

    class Stop(Exception):
        pass

    def spy(**kw):
        seen.append((kw["init"], kw["init_id"], kw["seed"]))
        raise Stop

    monkeypatch.setattr(wf, "fit_and_write", spy)
    for variant, seed in (("subsets", 1), ("subsets", 4), ("full", 1)):
        with pytest.raises(Stop):
            train(job_of(cfg, variant, seed, data_dirs))
    (a, ida, sa), (b, idb, sb), (c, idc, _) = seen
    assert sa == 1 and sb == 4 and ida == idb and "subset_seed 0" in ida and c is None and idc is None
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
