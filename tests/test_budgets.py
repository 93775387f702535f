"""The baseline's budget curve (``baseline.budgets``), every run's budget and validation accuracy, and a
variant's like-for-like comparator (``baseline: <model>``): naming, paths, config checks, the run
list, run.json and the report's columns."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from reuse.config import validate_config
from reuse.errors import ConfigError
from reuse.methods import registry
from reuse.plan import (budget_run_recipe, budget_runs, budget_variant, budget_variants, recipe_for, run_path,
                        variant_budget)
from tests.conftest import ROOT

BASE = {"datasets": {"d": {"kind": "mnist1d"}},
        "models": {"m": {"arch": "mlp"}, "m_aug": {"arch": "mlp", "train": {"augment": {"translate": 2}}},
                   "c": {"arch": "cnn1d"}},
        "train": {"epochs": 8, "schedule": {"name": "step", "milestones": [4, 6]}, "checkpoint_epochs": [2]},
        "baseline": {"seeds": [0, 1]}}


def cfg_with(**blocks) -> dict:
    return {**copy.deepcopy(BASE), **copy.deepcopy(blocks)}


def problems(cfg: dict) -> str:
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    return str(e.value)


# ----------------------------------------------------------------------------- names, paths, recipes
@pytest.mark.parametrize("budget, name", [(0.25, "b0.25"), (0.5, "b0.5"), (2, "b2"), (2.0, "b2"), (1.5, "b1.5"),
                                          (0.125, "b0.125")])
def test_budget_variant_names(budget, name):
    assert budget_variant(budget) == name


def test_run_path_of_a_budget_run():
    assert run_path("mnist1d", "cnn1d", "baseline", "b0.25", 0) == "mnist1d/cnn1d/baseline/b0.25/s0"
    assert run_path("mnist1d", "cnn1d", "baseline", "b2", 3) == "mnist1d/cnn1d/baseline/b2/s3"
    assert run_path("mnist1d", "cnn1d", seed=3) == "mnist1d/cnn1d/baseline/s3"  # budget 1: where it always was
    assert run_path("mnist1d", "cnn1d", "baseline", None, 3) == "mnist1d/cnn1d/baseline/s3"
    assert run_path("d", "m", "baseline", "b0.5") == "d/m/baseline/b0.5/s{seed}"


def test_run_key_of_a_budget_run():
    from reuse.workflow import run_key

    assert run_key("/x/results/d/m/baseline/b0.5/s1") == "m/baseline/b0.5/s1"
    assert run_key("/x/results/d/m/baseline/s1") == "m/baseline/s1"
    assert run_key("/x/results/d/m/kd/v/s1") == "m/kd/v/s1"


def test_budget_run_recipe_rescales_the_schedule_and_keeps_one_checkpoint():
    cfg = validate_config(cfg_with())
    r = budget_run_recipe(cfg, "m", 0.5)
    assert r["epochs"] == 4 and r["schedule"]["milestones"] == [2, 3] and r["checkpoint_epochs"] == []
    assert r["example_stats"] is False and r["optimizer"] == recipe_for(cfg, "m")["optimizer"]
    assert budget_run_recipe(cfg, "m", 0.3)["epochs"] == 3  # ceil(2.4)
    assert budget_run_recipe(cfg, "m", 2)["epochs"] == 16
    assert budget_run_recipe(cfg, "m_aug", 2)["augment"]["translate"] == 2


# ----------------------------------------------------------------------------- the config
def test_budgets_default_to_the_baseline_alone():
    cfg = validate_config(cfg_with())
    assert cfg["baseline"]["budgets"] == [1]
    assert budget_variants(cfg) == {}
    assert [r for r in registry.expected_runs(cfg) if r["variant"]] == []


def test_budgets_must_hold_1():
    cfg = cfg_with()
    cfg["baseline"]["budgets"] = [0.25, 0.5]
    msg = problems(cfg)
    assert "baseline.budgets: [0.25, 0.5] lacks 1, the baseline runs themselves" in msg
    assert "write budgets: [0.25, 0.5, 1]" in msg


@pytest.mark.parametrize("budgets, what", [([0, 1], "baseline.budgets.0"), ([1, -2], "baseline.budgets.1"),
                                           ([1, 1], "baseline.budgets"), ([], "baseline.budgets"),
                                           (["half", 1], "baseline.budgets.0")])
def test_bad_budgets_are_refused_with_their_key(budgets, what):
    cfg = cfg_with()
    cfg["baseline"]["budgets"] = budgets
    assert what in problems(cfg)


def test_budgets_that_share_a_folder_are_refused():
    cfg = cfg_with()
    cfg["baseline"]["budgets"] = [1, 0.5, 0.5000000001]
    assert "share a run folder (b0.5)" in problems(cfg)


def test_budget_runs_skip_tree_models():
    cfg = {"datasets": {"t": {}}, "models": {"trees": {"arch": "gbdt"}, "net": {"arch": "mlp"}}}
    assert list(budget_runs(cfg)) == [("t", "net")]


# ----------------------------------------------------------------------------- the run list
def test_expected_runs_include_the_budget_curve():
    cfg = cfg_with()
    cfg["baseline"]["budgets"] = [0.5, 1, 2]
    cfg = validate_config(cfg)
    base = [r for r in registry.expected_runs(cfg) if r["method"] == "baseline"]
    assert len(base) == 3 * 3 * 2  # models x budgets x seeds
    curve = [r for r in base if r["variant"]]
    assert {(r["model"], r["variant"], r["seed"]) for r in curve} == {
        (m, v, s) for m in ("m", "m_aug", "c") for v in ("b0.5", "b2") for s in (0, 1)}
    for r in curve:
        assert r["relpath"] == f"d/{r['model']}/baseline/{r['variant']}/s{r['seed']}" and r["config"] is None
        assert r["budget"] == {"b0.5": 0.5, "b2": 2.0}[r["variant"]]
    assert all(r["budget"] == 1.0 for r in base if not r["variant"])


def test_method_runs_carry_their_budget():
    cfg = validate_config(cfg_with(
        prune={"variants": {"half": {"model": "c", "mode": "random", "keep": 0.5, "budget": 0.5},
                            "full": {"model": "c", "mode": "random", "keep": 0.5}}},
        kd={"variants": {"short": {"model": "m", "teacher": {"model": "c"},
                                   "train": {"epochs": 4, "schedule": {"milestones": [2, 3]}}},
                         "plain": {"model": "m", "teacher": {"model": "c"}}}}))
    budgets = {(r["method"], r["variant"]): r["budget"] for r in registry.expected_runs(cfg)}
    assert budgets[("prune", "half")] == 0.5 and budgets[("prune", "full")] == 1.0
    assert budgets[("kd", "short")] == 0.5 and budgets[("kd", "plain")] == 1.0
    assert variant_budget(cfg, "m", None) == 1.0


# ----------------------------------------------------------------------------- the comparator
def test_every_method_with_variants_takes_a_comparator():
    from reuse.config import load_schema

    schema = load_schema()
    for m in registry.methods():
        block = schema["properties"].get(m.name, {})
        item = ((block.get("properties") or {}).get("variants") or {}).get("additionalProperties")
        if item is None:
            continue
        target = schema["$defs"][item["$ref"].removeprefix("#/$defs/")]
        assert target["properties"]["baseline"] == {"$ref": "#/$defs/variant_baseline"}, m.name


def test_a_comparator_is_recorded_in_the_variants_config():
    cfg = validate_config(cfg_with(kd={"variants": {"s": {"model": "m", "teacher": {"model": "c"},
                                                          "baseline": "m_aug"}}},
                                   prune={"variants": {"p": {"model": "c", "mode": "random", "keep": 0.5}}}))
    kd, prune = registry.get("kd", cfg), registry.get("prune", cfg)
    assert kd.variant(cfg, "s")["baseline"] == "m_aug" and kd.comparator(cfg, "s") == "m_aug"
    assert "baseline" not in prune.variant(cfg, "p") and prune.comparator(cfg, "p") == "c"  # no default written
    run = next(r for r in registry.expected_runs(cfg) if r["method"] == "kd")
    assert run["config"]["baseline"] == "m_aug"


@pytest.mark.parametrize("comparator, message", [
    ("m_agu", "kd.variants.s.baseline: no model named 'm_agu' (did you mean 'm_aug'?)"),
    ("c", "kd.variants.s.baseline: model 'c' is a cnn1d, but the variant trains 'm', a mlp; name a model of arch mlp"),
])
def test_a_wrong_comparator_is_one_clear_problem(comparator, message):
    msg = problems(cfg_with(kd={"variants": {"s": {"model": "m", "teacher": {"model": "c"},
                                                   "baseline": comparator}}}))
    assert message in msg and msg.count("\n  - ") == 1, msg


def test_a_comparator_must_train_where_the_variant_runs():
    cfg = cfg_with(prune={"variants": {"p": {"model": "m", "mode": "random", "keep": 0.5, "baseline": "m_aug"}}})
    cfg["datasets"]["e"] = {"kind": "mnist1d"}
    cfg["models"]["m_aug"]["datasets"] = ["d"]
    msg = problems(cfg)
    assert "prune.variants.p.baseline: model 'm_aug' trains no baseline on e, where the variant runs" in msg
    cfg["prune"]["variants"]["p"]["datasets"] = ["d"]
    validate_config(cfg)


def test_a_comparator_must_be_a_model_name():
    assert "kd.variants.s.baseline: expected" in problems(cfg_with(
        kd={"variants": {"s": {"model": "m", "teacher": {"model": "c"}, "baseline": 3}}}))


def test_the_default_benchmark_compares_augmented_students_with_mlp_aug():
    cfg = validate_config(yaml.safe_load((ROOT / "config.yaml").read_text()))
    assert cfg["baseline"]["budgets"] == [0.25, 0.5, 1, 2]
    kd = registry.get("kd", cfg)
    for name, v in cfg["kd"]["variants"].items():
        aug = v["model"] == "mlp" and v.get("views") != 0 and not v.get("online")
        assert kd.comparator(cfg, name) == ("mlp_aug" if aug else v["model"]), name
    budgets = {(r["method"], r["variant"]) for r in registry.expected_runs(cfg) if r["budget"] != 1}
    for method in ("kd", "prune", "curriculum", "warm"):
        assert any(m == method for m, _ in budgets), method


# ----------------------------------------------------------------------------- run.json
@pytest.fixture(scope="module")
def held_out_data(tmp_path_factory) -> Path:
    from reuse.data import prepare

    d = tmp_path_factory.mktemp("held_out")
    prepare("h", {"kind": "mnist1d", "holdout": 60, "mnist1d": {"num_samples": 400, "seed": 3}}, d / "data.npz",
            d / "dataset.json")
    return d


def _train(data_dir: Path, run: Path, **kw) -> dict:
    from reuse.io import read_json
    from reuse.workflow import train_run

    cfg = validate_config(cfg_with())
    train_run(data_dir=str(data_dir), model_name="m", model_cfg={"arch": "mlp", "args": {"hidden": [16]}},
              recipe=budget_run_recipe(cfg, "m", 0.25), seed=0, device="cpu", progress="off",
              outputs={"ckpts": {"last": str(run / "ckpt" / "last.pt")}, "metrics": str(run / "metrics.jsonl"),
                       "run": str(run / "run.json"), "predictions": str(run / "predictions.npz"),
                       "example_stats": None}, **kw)
    return read_json(run / "run.json")


def test_run_json_records_budget_and_validation_accuracy(held_out_data, tmp_path):
    import torch

    from reuse.data import load
    from reuse.io import read_jsonl
    from reuse.train import build_from_checkpoint, evaluate, load_checkpoint

    run = tmp_path / "h" / "m" / "baseline" / "b0.25" / "s0"
    info = _train(held_out_data, run, variant="b0.25", budget=0.25)
    assert info["method"] == "baseline" and info["variant"] == "b0.25" and info["budget"] == 0.25
    assert info["recipe"]["epochs"] == 2 and sorted(p.name for p in (run / "ckpt").iterdir()) == ["last.pt"]
    assert not (run / "state").exists() and not (run / "example_stats.npz").exists()
    data = load(held_out_data)
    assert len(data.val) == 60
    model = build_from_checkpoint(load_checkpoint(run / "ckpt" / "last.pt"))
    again = evaluate(model, data.val, 1024, torch.device("cpu"))
    assert info["final"]["val_acc"] == pytest.approx(again["acc"], abs=1e-12)
    assert info["final"]["val_loss"] == pytest.approx(again["loss"], rel=1e-6)
    # the validation pass is an evaluation: on the evaluation cost, not the training cost
    last = read_jsonl(run / "metrics.jsonl")[-1]
    assert info["cost"]["train_flops"] == last["train_flops"] and info["cost"]["train_time_s"] == last["train_time_s"]
    assert info["cost"]["eval_flops"] > last["eval_flops"] and info["cost"]["eval_time_s"] > last["eval_time_s"]


def test_a_run_without_validation_split_records_none(tiny_data_dir, tmp_path):
    info = _train(tiny_data_dir, tmp_path / "run")
    assert info["budget"] == 1.0 and info["variant"] is None
    assert "val_acc" not in info["final"] and "val_loss" not in info["final"]


# ----------------------------------------------------------------------------- the report's columns
def _write_run(folder: Path, **fields) -> None:
    folder.mkdir(parents=True)
    base = {"dataset": "d", "model": "m", "method": "baseline", "variant": None, "seed": 0, "config": None,
            "recipe": {"epochs": 4}, "final": {"test_acc": 0.5}, "cost": {"train_time_s": 1.0, "train_flops": 10}}
    (folder / "run.json").write_text(json.dumps({**base, **fields}))


def test_collect_reads_budget_and_validation_accuracy(tmp_path):
    from reuse.report.collect import NUMERIC, collect

    assert {"budget", "val_acc", "val_loss"} <= set(NUMERIC)
    _write_run(tmp_path / "d/m/baseline/s0", budget=1.0, final={"test_acc": 0.5, "val_acc": 0.55, "val_loss": 1.2})
    _write_run(tmp_path / "d/m/baseline/b0.5/s0", variant="b0.5", budget=0.5,
               final={"test_acc": 0.4, "val_acc": 0.45, "val_loss": 1.5})
    # a run from before budgets were recorded: its variant's budget setting
    _write_run(tmp_path / "d/m/prune/p/s0", method="prune", variant="p", config={"budget": 0.25, "keep": 0.5})
    _write_run(tmp_path / "d/m/kd/k/s0", method="kd", variant="k", config={"baseline": "m_aug"})
    expected = [{"dataset": "d", "model": "m", "method": "baseline", "variant": "b2", "seed": 0,
                 "relpath": "d/m/baseline/b2/s0", "config": None, "budget": 2.0}]
    runs = collect(tmp_path, expected).runs.set_index(["method", "variant"])
    assert runs.loc[("baseline", ""), "budget"] == 1.0 and runs.loc[("baseline", ""), "val_acc"] == 0.55
    assert runs.loc[("baseline", "b0.5"), "budget"] == 0.5 and runs.loc[("baseline", "b0.5"), "val_loss"] == 1.5
    assert runs.loc[("prune", "p"), "budget"] == 0.25 and math.isnan(runs.loc[("prune", "p"), "val_acc"])
    assert runs.loc[("kd", "k"), "budget"] == 1.0
    missing = runs.loc[("baseline", "b2")]
    assert missing["status"] == "missing" and missing["budget"] == 2.0
    # the comparator: the variant's `baseline`, else the run's own model; baselines have none
    assert runs.loc[("kd", "k"), "cfg_baseline"] == "m_aug" and runs.loc[("prune", "p"), "cfg_baseline"] == "m"
    assert pd.isna(runs.loc[("baseline", "b0.5"), "cfg_baseline"])
    assert runs["budget"].dtype == float and runs["val_acc"].dtype == float


# ----------------------------------------------------------------------------- the workflow's plan
@pytest.mark.workflow
def test_dry_run_of_the_tiny_config_plans_the_budget_curve(tmp_path):
    from tests.helpers import jobs, smk

    r = smk(tmp_path, "-n")
    assert r.returncode == 0, r.stderr[-3000:]
    counts = jobs(r.stdout)
    # 2 budgets besides 1 (b0.5, b2) x 2 seeds, per network model
    assert counts["train_baseline__tiny__mlp__budgets"] == 4 and counts["train_baseline__tiny__cnn__budgets"] == 4
    assert counts["train_baseline__tiny__mlp"] == 2 and counts["summarize_baselines"] == 1
    for budget in ("b0.5", "b2"):
        assert f"results/tiny/cnn/baseline/{budget}/s1/run.json" in r.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.skipif(not (__import__("torch").distributed.is_available()
                          and __import__("torch").distributed.is_gloo_available()),
                    reason="needs torch.distributed with gloo")
def test_a_data_parallel_budget_run_matches_one_process(held_out_data, tmp_path, monkeypatch):
    """A budget run trained by the workflow's launcher in 2 data-parallel processes (`python -m reuse
    train-run` under torchrun): the same variant, budget and validation accuracy as in one process."""
    from reuse.io import read_json
    from reuse.workflow import train_baseline, train_run

    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.chdir(ROOT)
    cfg = validate_config(cfg_with())
    kw = dict(data_dir=str(held_out_data), model_name="m", model_cfg={"arch": "mlp", "args": {"hidden": [16]}},
              recipe=budget_run_recipe(cfg, "m", 0.25), seed=0, device="cpu", progress="off", variant="b0.25",
              budget=0.25)

    def outputs(d: Path) -> dict:
        return {"ckpts": {"last": str(d / "ckpt" / "last.pt")}, "metrics": str(d / "metrics.jsonl"),
                "run": str(d / "run.json"), "predictions": str(d / "predictions.npz"), "example_stats": None}

    train_run(**kw, outputs=outputs(tmp_path / "one"))
    (tmp_path / "two").mkdir()
    train_baseline(nproc=2, log_path=str(tmp_path / "two" / "train.log"), threads=2, **kw,
                   outputs=outputs(tmp_path / "two"))
    r1, r2 = read_json(tmp_path / "one" / "run.json"), read_json(tmp_path / "two" / "run.json")
    assert r2["processes"] == 2 and (r2["variant"], r2["budget"]) == ("b0.25", 0.25)
    assert r2["final"]["val_acc"] == pytest.approx(r1["final"]["val_acc"])
    assert r2["final"]["val_loss"] == pytest.approx(r1["final"]["val_loss"], rel=1e-4)
    assert r2["cost"]["eval_flops"] == r1["cost"]["eval_flops"]


def test_a_tree_baseline_records_its_validation_accuracy(tmp_path):
    """A gbdt baseline (trees get no budget curve): budget 1, and its accuracy on the held-out rows."""
    import csv

    from reuse.data import load, prepare
    from reuse.io import read_json, read_jsonl
    from reuse.models import gbdt

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    (tmp_path / "raw").mkdir()
    with open(tmp_path / "raw" / "table.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "c", "label"])
        w.writerows([[*map(float, r), "hi" if r[0] + r[1] > 0 else "lo"] for r in x])
    d = tmp_path / "data"
    prepare("tab", {"kind": "tabular", "root": str(tmp_path / "raw"), "file": "table.csv", "target": "label",
                    "test_fraction": 0.2, "holdout": 40}, d / "data.npz", d / "dataset.json")
    run = tmp_path / "run"
    gbdt.train_run(data_dir=str(d), model_name="gb", model_cfg={"arch": "gbdt", "args": {"n_estimators": 20}},
                   recipe={"epochs": 1}, seed=0, threads=1,
                   outputs={"model": str(run / "ckpt" / "e20.txt"), "metrics": str(run / "metrics.jsonl"),
                            "run": str(run / "run.json"), "predictions": str(run / "predictions.npz")})
    info, data = read_json(run / "run.json"), load(d)
    booster = gbdt.load(run / "ckpt" / "e20.txt")
    val_logits = gbdt.logits(booster, data.val.x.numpy(), data.num_classes)
    assert info["budget"] == 1.0 and len(data.val) == 40
    assert info["final"]["val_acc"] == pytest.approx(float((val_logits.argmax(1) == data.val.y.numpy()).mean()))
    last = read_jsonl(run / "metrics.jsonl")[-1]  # the held-out rows are charged to evaluation, not training
    assert info["cost"]["eval_flops"] > last["eval_flops"] and info["cost"]["train_flops"] == last["train_flops"]
