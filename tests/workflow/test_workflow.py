"""The Snakemake workflow end to end, on a tiny config: artifacts, no-op reruns, minimal rebuilds,
resume after an interruption, and one clear error for each kind of bad input."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from reuse.cache import LogitCache
from reuse.config import validate_config
from reuse.io import read_json, read_jsonl
from reuse.methods.registry import get, methods, resolve
from reuse.scores import ScoreTable
from reuse.train import load_checkpoint, trainer
from reuse.workflow import Job
from tests.helpers import ROOT, Kill, jobs, method_job, smk, snapshot

pytestmark = pytest.mark.workflow
CONFIG = ROOT / "tests" / "workflow" / "config.yaml"  # tests.helpers.smk's default
RUNS = [(m, s) for m in ("mlp", "cnn") for s in (0, 1)]


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Path:
    wd = tmp_path_factory.mktemp("wf")
    r = smk(wd)
    assert r.returncode == 0, r.stderr[-3000:]
    return wd


def test_every_artifact_is_produced(done):
    res = done / "results"
    data = read_json(res / "tiny" / "data" / "dataset.json")
    fp = data["fingerprint"]["train"]
    for model, seed in RUNS:
        run = res / "tiny" / model / "baseline" / f"s{seed}"
        assert not (run / "state").exists()
        metrics = read_jsonl(run / "metrics.jsonl")
        assert [m["epoch"] for m in metrics] == [1, 2, 3] and all(m["train_flops"] > 0 for m in metrics)
        info = read_json(run / "run.json")
        assert info["fingerprint"]["digest"] == fp["digest"] and set(info["checkpoints"]) == {"1", "3"}
        preds = np.load(run / "predictions.npz")
        assert preds["logits"].shape == (60, 10)
        assert np.isclose((preds["logits"].argmax(1) == preds["target"]).mean(), info["final"]["test_acc"])
        for epoch in (1, 3):
            assert (run / "ckpt" / f"e{epoch}.pt").exists()
            cache = LogitCache.open(run / "logits" / f"e{epoch}", fingerprint=fp)
            n_views = 3 if model == "cnn" else 1  # clean + 2 augmented views, only for the augmented run
            assert cache.arrays["logits"].shape == (240, n_views, 10) and cache.arrays["topk_values"].shape[-1] == 2
            assert cache.meta["source"]["epoch"] == epoch
    table = pd.read_csv(res / "tiny" / "baselines.csv")
    assert len(table) == 4 and set(table["model"]) == {"mlp", "cnn"} and table["test_acc"].between(0, 1).all()
    assert (table["variant"].isna() | (table["variant"] == "")).all()  # the budget-1 runs only


def test_budget_curve_runs_and_validation_accuracy(done):
    """baseline.budgets [0.5, 1, 2]: each network baseline also at 2 and 6 of its 3 epochs, in
    baseline/b<budget>/, with its final checkpoint only; every run records its budget and, the tiny
    dataset holding 40 examples out, its validation accuracy."""
    res = done / "results" / "tiny"
    for model, seed in RUNS:
        assert read_json(res / model / "baseline" / f"s{seed}" / "run.json")["budget"] == 1.0
        for budget, epochs in (("b0.5", 2), ("b2", 6)):
            run = res / model / "baseline" / budget / f"s{seed}"
            info = read_json(run / "run.json")
            assert info["method"] == "baseline" and info["variant"] == budget and info["budget"] == float(budget[1:])
            assert info["recipe"]["epochs"] == epochs and len(read_jsonl(run / "metrics.jsonl")) == epochs
            assert sorted(p.name for p in (run / "ckpt").iterdir()) == ["last.pt"] and set(info["checkpoints"]) == {"last"}
            assert not (run / "logits").exists() and not (run / "example_stats.npz").exists()
            assert not (run / "state").exists() and 0 <= info["final"]["val_acc"] <= 1
    assert read_json(res / "cnn" / "curriculum" / "easy" / "s0" / "run.json")["budget"] == 0.5
    assert read_json(res / "mlp" / "warm" / "tune" / "s0" / "run.json")["budget"] == pytest.approx(2 / 3)
    summary = pd.read_csv(done / "results" / "summary.csv")
    runs = summary[summary["row"] == "run"] if "row" in summary else summary
    curve = runs[(runs["method"] == "baseline") & runs["variant"].isin(["b0.5", "b2"])]
    assert len(curve) == 8 and set(curve["budget"]) == {0.5, 2.0} and curve["val_acc"].between(0, 1).all()


def test_distilled_runs_record_what_they_reused(done):
    res = done / "results"
    for variant, caches in (("ens", 2), ("mix", 2)):
        for seed in (0, 1):
            run = res / "tiny" / "mlp" / "kd" / variant / f"s{seed}"
            info = read_json(run / "run.json")
            assert info["method"] == "kd" and info["variant"] == variant
            assert info["recipe"]["augment"] == {"translate": 1, "flip": False}  # the teacher cache's views
            kinds = [r["kind"] for r in info["reused"]]
            assert kinds.count("logit_cache") == caches and kinds.count("past_run") == (2 if variant == "ens" else 1)
            assert all(r["flops"] > 0 and r["time_s"] > 0 for r in info["reused"])
            assert (run / "ckpt" / "e3.pt").exists() and len(read_jsonl(run / "metrics.jsonl")) == 3
    # the ensemble's teachers for student seed 0 are the baseline runs after it: seeds 1, then 0
    info = read_json(res / "tiny" / "mlp" / "kd" / "ens" / "s0" / "run.json")
    assert [Path(r["path"]).name for r in info["reused"] if r["kind"] == "past_run"] == ["s1", "s0"]
    table = pd.read_csv(res / "tiny" / "kd.csv")
    assert len(table) == 4 and set(table["variant"]) == {"ens", "mix"} and (table["reused_flops"] > 0).all()


def test_scores_and_data_methods(done):
    res = done / "results" / "tiny"
    fp = read_json(res / "data" / "dataset.json")["fingerprint"]["train"]
    table = ScoreTable.open(res / "scores.parquet", fingerprint=fp)
    assert table.meta["scores"] == ["el2n", "loss", "margin", "forgetting"] and table.meta["epochs"] == [1, 3]
    assert len(table.meta["runs"]) == 2 and (table.df["n_runs"] == 2).all() and len(table.df) == 4 * 2 * 240
    base_steps = read_json(res / "cnn" / "baseline" / "s0" / "run.json")["cost"]["step"]
    for variant in ("el2n_half", "rand_half"):
        for seed in (0, 1):
            info = read_json(res / "cnn" / "prune" / variant / f"s{seed}" / "run.json")
            assert info["cost"]["step"] >= base_steps and info["cost"]["examples_seen"] < 2 * 120 * info["recipe"]["epochs"]
            stats = np.load(res / "cnn" / "prune" / variant / f"s{seed}" / "example_stats.npz")["correct"]
            assert ((stats >= 0).any(0)).sum() == 120  # trained on half of the 240 examples
            kinds = [r["kind"] for r in info["reused"]]
            assert kinds == (["past_run", "past_run", "score_table"] if variant == "el2n_half" else [])
    info = read_json(res / "cnn" / "curriculum" / "easy" / "s0" / "run.json")
    assert info["recipe"]["epochs"] == 2 and info["config"]["budget"] == 0.5  # half of 3 epochs, rounded up
    studies = {m: pd.read_csv(res / "studies" / f"{m}.csv") for m in ("prune", "curriculum", "reweight")}
    assert set(studies["prune"]["variant"]) == {"el2n_half", "rand_half"} and (studies["prune"]["n"] == 2).all()
    assert studies["prune"]["baseline_acc_mean"].notna().all() and studies["reweight"]["model"].tolist() == ["mlp"]
    agree = pd.read_csv(res / "studies" / "score_agreement.csv")
    assert set(agree["kind"]) == {"runs", "epochs", "n_runs"} and agree["spearman"].between(-1, 1).all()


def test_adversarial_cache_runs_robust_accuracy_and_study(done):
    """The adversarial cache (float16 perturbations, fingerprint, attack, cost), the runs trained with
    it or online, robust.json for them and the CNN baselines, and the study against the baseline and
    the online run."""
    from reuse.methods.adversarial import AdvCache

    res = done / "results" / "tiny"
    fp = read_json(res / "data" / "dataset.json")["fingerprint"]["train"]
    cache = AdvCache.open(res / "adv" / "pgd", fingerprint=fp)
    assert cache.delta.shape == (240, 1, 40) and cache.delta.dtype == np.float16
    assert cache.meta["attack"]["kind"] == "pgd" and len(cache.meta["source"]) == 2 and cache.meta["cost"]["flops"] > 0
    for variant, seed in [(v, s) for v in ("mix", "online") for s in (0, 1)]:
        run = res / "cnn" / "adv" / variant / f"s{seed}"
        kinds = [x["kind"] for x in read_json(run / "run.json")["reused"]]
        assert kinds == (["past_run", "past_run", "adv_cache"] if variant == "mix" else [])
        robust = read_json(run / "robust.json")
        assert 0 <= robust["robust_acc"] <= robust["clean_acc"] <= 1 and robust["n"] == 60
    for seed in (0, 1):
        assert read_json(res / "cnn" / "baseline" / f"s{seed}" / "robust.json")["attack"]["steps"] == 3
    study = pd.read_csv(res / "studies" / "adv.csv").set_index("variant")
    assert set(study.index) == {"mix", "online"} and (study["n"] == 2).all() and (study["robust_n"] == 2).all()
    assert (study["vs_online"] == "online").all() and study.loc["online", "cost_fraction"] == 1
    assert {"acc_mean", "robust_mean", "baseline_robust_mean", "robustness_retained", "cost_fraction",
            "cost_fraction_time", "cost_flops", "cost_with_past_flops"} <= set(study.columns)
    assert study.loc["mix", "gen_flops"] == cache.meta["cost"]["flops"]


def test_warm_starts_soups_and_weight_averaging(done):
    """Warm starts from one past run, a greedy soup of two of them chosen on the held-out split, SWA
    within a run: the standard run files, what each reused, and the study beside the baseline."""
    res = done / "results" / "tiny"
    data = read_json(res / "data" / "dataset.json")
    assert data["n_train"] == 240 and data["n_val"] == 40 and data["fingerprint"]["val"]["n"] == 40
    past = read_json(res / "mlp" / "baseline" / "s0" / "run.json")
    for seed in (0, 1):
        warm = read_json(res / "mlp" / "warm" / "tune" / f"s{seed}" / "run.json")
        assert warm["recipe"]["epochs"] == 2 and warm["recipe"]["optimizer"]["lr"] == 0.01
        assert [(x["kind"], Path(x["path"]).name) for x in warm["reused"]] == [("past_run", "s0")]
        assert warm["reused"][0]["time_s"] == past["cost"]["train_time_s"]
        soup_dir = res / "mlp" / "soup" / "greedy" / f"s{seed}"
        soup = read_json(soup_dir / "run.json")
        ingredients = [x for x in soup["reused"] if x["kind"] == "soup_ingredient"]
        assert [Path(x["path"]).name for x in ingredients] == [f"s{seed}", f"s{1 - seed}"]  # cyclic from the seed
        assert any(x["chosen"] for x in ingredients) and all(0 <= x["heldout_acc"] <= 1 for x in ingredients)
        assert [x["path"] for x in soup["reused"] if x["kind"] == "past_run"] == [warm["reused"][0]["path"]]
        # finetune_epochs: 2 (the model's 3-epoch recipe rescaled)
        assert soup["recipe"]["epochs"] == 2 and soup["cost"]["step"] > 0 and soup["cost"]["train_time_s"] > 0
        assert [m["epoch"] for m in read_jsonl(soup_dir / "metrics.jsonl")] == [1, 2]
        assert (soup_dir / "ckpt" / "last.pt").exists()
        assert np.load(soup_dir / "predictions.npz")["logits"].shape == (60, 10)
        swa = res / "cnn" / "averaging" / "swa" / f"s{seed}"
        last = read_jsonl(swa / "metrics.jsonl")[-1]
        assert last["test_acc"] == read_json(swa / "run.json")["final"]["test_acc"] and "test_acc_before" in last
    study = pd.read_csv(res / "studies" / "warm.csv")
    assert set(zip(study["method"], study["variant"].fillna(""))) == {
        ("baseline", ""), ("warm", "tune"), ("soup", "greedy"), ("averaging", "swa")}
    assert (study["n"] == 2).all() and study.loc[study["method"] == "soup", "best_ingredient_acc"].notna().all()
    for method in ("warm", "soup", "averaging"):
        assert len(pd.read_csv(res / f"{method}.csv")) == 2


def test_sequences_every_policy_end_to_end(done):
    """The tiny search (3 trials x 5 policies x 2 repeats) and retraining (2 parts x 4 policies x 2
    repeats): every run, journals that agree with the run folders, the study tables per step and
    per policy."""
    import optuna

    res = done / "results" / "tiny"
    cfg = _tiny_config()
    for name, steps in (("search", 3), ("retrain", 2)):
        policies = cfg[name]["policies"]
        per_step = pd.read_csv(res / "studies" / f"{name}_steps.csv")
        assert len(per_step) == len(policies) * steps * 2
        assert set(per_step["policy"]) == set(policies) and set(per_step["seed"]) == {0, 1}
        per_policy = pd.read_csv(res / "studies" / f"{name}.csv").set_index("policy")
        assert set(per_policy.index) == set(policies) and (per_policy["anchor"] == "scratch").all()
        assert per_policy.loc["scratch", "speedup_flops"] > 0 and (per_policy["repeats"] == 2).all()
        assert (per_step.groupby(["policy", "seed"])["cum_flops"].apply(lambda c: c.is_monotonic_increasing)).all()
    search = res / "mlp" / "search"
    for policy in cfg["search"]["policies"]:
        for seed in (0, 1):
            journal = search / "journal" / f"{policy}_s{seed}.log"
            study = optuna.load_study(study_name=f"search/tiny/mlp/{policy}/s{seed}", storage=optuna.storages.JournalStorage(
                optuna.storages.journal.JournalFileBackend(str(journal))))
            recorded = [read_json(search / f"{policy}_t{k:02d}" / f"s{seed}" / "run.json")["trial"] for k in range(3)]
            assert [t.state.name for t in study.trials] == [r["state"] for r in recorded]
            assert [t.params for t in study.trials] == [r["params"] for r in recorded]
    # distilling trials read earlier trials' caches; warm starts read their checkpoints
    kd = read_json(search / "kd_best_t02" / "s0" / "run.json")
    assert kd["sequence"]["teachers"] and all(x["kind"] == "logit_cache" for x in kd["reused"])
    for policy in cfg["retrain"]["policies"]:
        assert (res / "mlp" / "retrain" / f"{policy}_p02" / "s1" / "run.json").exists()


def test_report_summary_and_pages(done):
    """The report rule: one summary row per run and per aggregate, NLL and ECE in run.json, the pages
    and figures, recommendations that agree with the table, and Snakemake's own HTML report."""
    from reuse.report import AXES
    from tests.report.checks import check_recommendations

    res = done / "results"
    summary = pd.read_parquet(res / "summary.parquet")
    runs, aggs = summary[summary["row"] == "run"], summary[summary["row"] == "aggregate"]
    # 26 of the baseline and the built-in methods, 8 of the baseline's budget curve, 2 of the plugin's, 30
    # search trials and 16 retraining steps
    assert len(runs) == 82 and (runs["status"] == "ok").all()
    # one aggregate per variant: 14 and 4 budgets, and one per sequence step (15 trials, 8 retraining steps)
    assert len(aggs) == 41 and (aggs["n_of"] == "n=2").all() and set(aggs["method"]) == {
        "baseline", "kd", "prune", "curriculum", "reweight", "adv", "warm", "soup", "averaging", "toy", "search",
        "retrain"}
    info = read_json(res / "tiny" / "mlp" / "kd" / "ens" / "s0" / "run.json")
    assert 0 <= info["final"]["test_ece"] <= 1 and info["final"]["ece_bins"] == 15
    assert np.isclose(info["final"]["test_nll"], info["final"]["test_loss"], rtol=1e-4)
    check_recommendations(res)
    pages = {p.name for p in (res / "report").glob("*.html")}
    assert pages == {"index.html", "frontier.html", "recommendations.html", "runs.html", "scores-tiny.html",
                     *(f"method-{m}.html" for m in ("baseline", "kd", "prune", "curriculum", "reweight", "adv", "warm",
                                                    "soup", "averaging", "toy", "search", "retrain"))}
    for axis in AXES:
        for ext in ("png", "svg"):
            assert (res / "report" / "figures" / f"frontier_tiny_{axis}.{ext}").stat().st_size > 1000
    r = smk(done, "--report", str(done / "report.html"))
    assert r.returncode == 0, r.stderr[-3000:]
    text = (done / "report.html").read_text()
    assert "Training efficiency frontier" in text and "frontier_tiny_time_full.svg" in text


def test_permuted_test_labels_change_no_choice(done, tmp_path):
    """The finished tiny run with the test labels of every run permuted (its predictions' targets, its
    test accuracy, its test curve): the workflow rebuilds every table, study and page from them, and
    every choice (verdicts at equal cost, roles, Pareto flags, recommendations, a sequence's targets,
    reaches and speed-ups, the studies' picks) is the same; only the reported test numbers move."""
    import shutil

    work = tmp_path / "wf"
    shutil.copytree(done, work, symlinks=True, ignore=shutil.ignore_patterns(".snakemake"))
    res = work / "results"
    rng = np.random.default_rng(0)
    for run_json in sorted(res.rglob("run.json")):
        d = run_json.parent
        if not (d / "predictions.npz").exists() or "state" in d.parts:
            continue
        times = {f: (f.stat().st_atime, f.stat().st_mtime) for f in (run_json, d / "predictions.npz",
                                                                     d / "metrics.jsonl") if f.exists()}
        with np.load(d / "predictions.npz") as p:
            arrays = dict(p)
        arrays["target"] = rng.permutation(arrays["target"])
        np.savez(d / "predictions.npz", **arrays)
        info = json.loads(run_json.read_text())
        info["final"]["test_acc"] = float((arrays["logits"].argmax(1) == arrays["target"]).mean())
        run_json.write_text(json.dumps(info))
        if (d / "metrics.jsonl").exists():
            rows = read_jsonl(d / "metrics.jsonl")
            for m in rows:
                if m.get("test_acc") is not None:
                    m["test_acc"] = float(rng.uniform(0, 1))
            (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in rows))
        for f, (a, m) in times.items():
            os.utime(f, (a, m))  # the runs stay finished: nothing retrains
    # every table the runs feed is rebuilt by the workflow itself
    for f in [res / "summary.parquet", res / "summary.csv", *res.glob("*/*.csv"), *res.glob("*/studies/*.csv")]:
        if f.name != "score_agreement.csv":
            f.unlink()
    shutil.rmtree(res / "report")
    dry = smk(work, "-n")
    assert dry.returncode == 0 and not any(k.startswith("train") for k in jobs(dry.stdout)), dry.stdout[-2000:]
    r = smk(work)
    assert r.returncode == 0, r.stderr[-3000:]
    before, after = pd.read_parquet(done / "results" / "summary.parquet"), pd.read_parquet(res / "summary.parquet")
    assert not np.allclose(before["test_acc"].fillna(0), after["test_acc"].fillna(0))
    from reuse.report import AXES

    cols = ["row", "label", "seed", "verdict"] + [f"{k}_{a}" for a in AXES for k in ("verdict", "role", "frontier")]
    cols += [c for c in before if c.startswith("val_gain_at_cost_") or c == "val_acc"]
    pd.testing.assert_frame_equal(before[cols], after[cols])
    recs = ["dataset", "axis", "budget_lo", "recommended", "no_method_beats_baseline"]
    pd.testing.assert_frame_equal(pd.read_csv(done / "results" / "report" / "recommendations.csv")[recs],
                                  pd.read_csv(res / "report" / "recommendations.csv")[recs])
    # the studies: every column that is not a test measurement (an accuracy, a loss, a difference or gain
    # of them, their intervals) or is one on validation is unchanged: the picks, targets, reaches,
    # speed-ups of the sequences, settings and costs
    test_measure = re.compile(r"acc|diff|gain|verdict|loss|nll|ece|robust|_lo$|_hi$|_std$|_p$|p_holm|share")
    for old in sorted((done / "results").glob("*/studies/*.csv")):
        new = res / old.relative_to(done / "results")
        a, b = pd.read_csv(old), pd.read_csv(new)
        keep = [c for c in a if "val" in c or not test_measure.search(c)]
        assert len(keep) >= len(a.columns) // 2, (old, keep)
        pd.testing.assert_frame_equal(a[keep], b[keep], obj=str(old.relative_to(done)))
    for name in ("search", "retrain"):  # the sequences' choices are among the columns compared
        assert {"reached", "speedup_flops", "target_val_acc"} <= set(pd.read_csv(res / "tiny" / "studies"
                                                                                 / f"{name}.csv"))


# ----------------------------------------------------------------------------- every registered method
# (before the tests below that damage and rebuild parts of the finished workflow)
def _tiny_config() -> dict:
    return validate_config(yaml.safe_load(CONFIG.read_text()))


def _method_runs() -> list:
    """(method, variant) of the first variant of every method the tiny config registers, plugins included."""
    cfg = _tiny_config()
    return [pytest.param(m.name, next(v for ds, v in m.variants(cfg) if ds == "tiny"), id=m.name)
            for m in methods(cfg) if any(ds == "tiny" for ds, _ in m.variants(cfg))]


_KILLED = """
import json, sys
import torch
torch.set_num_threads(1)
from reuse.train import trainer
from tests.helpers import Kill

init = trainer.Trainer.__init__
def with_kill(self, *args, algorithms=(), **kwargs):  # SIGKILL at the end of epoch 2, before its checkpoint
    init(self, *args, algorithms=[*algorithms, Kill(epoch=2, sigkill=True)], **kwargs)
trainer.Trainer.__init__ = with_kill
from reuse.methods.registry import resolve
from reuse.workflow import Job
spec = json.load(open(sys.argv[1]))
resolve(spec["stage"])(Job(**spec["job"]))
"""


@pytest.mark.parametrize("method, variant", _method_runs())
def test_every_method_resumes_exactly_after_sigkill(done, tmp_path, monkeypatch, caplog, method, variant):
    """One run of each registered method, through its own stage and the files the workflow gave it,
    killed (SIGKILL) at the end of its second epoch, then resumed: its final weights and per-epoch
    losses equal those of the uninterrupted run the workflow made."""
    cfg, res, seed = _tiny_config(), done / "results", 1
    m = get(method, cfg)
    key, ckpt_name = m.final_checkpoint(cfg, variant)
    job = method_job(cfg, method, "tiny", variant, seed, res, res / "tiny" / "data", out=tmp_path / "out")
    run = Path(job["outputs"]["run"]).parent
    (tmp_path / "job.json").write_text(json.dumps({"stage": m.stage, "job": job}))
    (tmp_path / "killed.py").write_text(_KILLED)
    proc = subprocess.run([sys.executable, str(tmp_path / "killed.py"), str(tmp_path / "job.json")], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert load_checkpoint(run / "state" / "last.pt")["epoch"] == 1 and not (run / "run.json").exists()

    init = trainer.Trainer.__init__
    monkeypatch.setattr(trainer.Trainer, "__init__", lambda self, *a, algorithms=(), **k: init(
        self, *a, algorithms=[*algorithms, Kill()], **k))  # an inert Kill: the run's identity is the same
    torch.set_num_threads(1)
    with caplog.at_level(logging.INFO, logger="reuse.train"):
        resolve(m.stage)(Job(**job))
    assert re.search(r"resumed from \S+last\.pt at epoch 1 ", caplog.text), caplog.text[-2000:]
    assert not (run / "state").exists()
    mine = load_checkpoint(run / "ckpt" / ckpt_name)["model"]
    straight_dir = res / m.run_dir(cfg, "tiny", variant, seed)
    straight = load_checkpoint(straight_dir / "ckpt" / ckpt_name)["model"]
    for k in straight:
        assert torch.equal(mine[k], straight[k]), f"{method}: {k} differs from the uninterrupted run"
    losses = [r.get("train_loss") for r in read_jsonl(run / "metrics.jsonl")]
    assert losses == [r.get("train_loss") for r in read_jsonl(straight_dir / "metrics.jsonl")]


def test_a_plugin_method_runs_end_to_end(done):
    """The toy method lives in tests/workflow/toy_method and reaches the workflow only through the
    tiny config's `plugins`: its runs, its run table, its report page and its card are all there."""
    res = done / "results"
    for seed in (0, 1):
        info = read_json(res / "tiny" / "mlp" / "toy" / "conf" / f"s{seed}" / "run.json")
        assert info["method"] == "toy" and info["config"]["past"] == "cnn"
        # the past run is the baseline of the next seed, read through the staged inputs
        assert [Path(r["path"]).name for r in info["reused"] if r["kind"] == "past_run"] == [f"s{1 - seed}"]
    assert len(pd.read_csv(res / "tiny" / "toy.csv")) == 2
    page = (res / "report" / "method-toy.html").read_text()
    assert "how unsure a past baseline run was of its label" in page  # from the card the registry names
    summary = pd.read_csv(res / "summary.csv")
    assert {"toy"} <= set(summary["method"])
    shared = ["reuse/config.py", "rules/common.smk", "rules/methods.smk", "Snakefile", "reuse/report",
              "reuse/data", "reuse/workflow.py", "reuse/methods/registry.py"]
    grep = subprocess.run(["git", "grep", "-n", "-w", "toy", "--", *shared], cwd=ROOT, capture_output=True, text=True)
    assert grep.stdout == "", grep.stdout


def test_rerun_is_a_no_op(done):
    r = smk(done, "-n")
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr


def test_dry_run_shows_the_dag(tmp_path):
    r = smk(tmp_path, "-n")
    assert r.returncode == 0, r.stderr
    assert jobs(r.stdout) == {"prepare_data": 1, "train_baseline__tiny__mlp": 2, "train_baseline__tiny__cnn": 2,
                              # the budget curve: b0.5 and b2 x 2 seeds
                              "train_baseline__tiny__mlp__budgets": 4, "train_baseline__tiny__cnn__budgets": 4,
                              "logit_cache__tiny__mlp": 2, "logit_cache__tiny__cnn": 2, "summarize_baselines": 1,
                              "kd__tiny__ens": 2, "kd__tiny__mix": 2, "score_run": 2,
                              "score_table": 1, "score_agreement": 1, "prune__tiny__el2n_half": 2,
                              "prune__tiny__rand_half": 2, "curriculum__tiny__easy": 2, "reweight__tiny__up": 2,
                              "adv_cache": 1, "adv__tiny__mix": 2, "adv__tiny__online": 2, "robust_eval": 6,
                              "warm__tiny__tune": 2, "soup__tiny__greedy": 2, "averaging__tiny__swa": 2,
                              "toy__tiny__conf": 2,  # the test plugin (tests/workflow/toy_method)
                              # the sequences: every step of every policy, one job per repeat
                              **{f"search__tiny__{p}_t{k:02d}": 2 for p in ("scratch", "kd_best", "kd_top",
                                                                           "warm_best", "halving") for k in range(3)},
                              **{f"retrain__tiny__{p}_p{k:02d}": 2 for p in ("scratch", "warm", "kd", "select")
                                 for k in (1, 2)},
                              # one run table per method (11), one study per data method, adv and weights
                              # (5), two per sequence scenario (4)
                              "summarize_method": 11, "study": 9, "report": 1, "all": 1}
    assert not (tmp_path / "results").exists()


def test_lint_passes():
    r = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--snakefile", str(ROOT / "Snakefile"),
                        "--configfile", str(CONFIG)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "Congratulations" in r.stdout + r.stderr, r.stdout + r.stderr


def test_config_typo_is_one_clear_error_before_any_job(done, tmp_path):
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["train"]["epochz"] = 3
    bad = tmp_path / "typo.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    before = snapshot(done / "results")
    r = smk(done, config=bad)
    assert r.returncode != 0
    assert "train.epochz: unknown key (did you mean 'epochs'?)" in r.stderr
    assert "Traceback" not in r.stderr
    assert snapshot(done / "results") == before


def test_missing_dataset_path_is_one_clear_error(tmp_path):
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["datasets"] = {"real": {"kind": "mnist", "root": str(tmp_path / "no_mnist_here")}}
    bad = tmp_path / "missing.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    r = smk(tmp_path, config=bad)
    assert r.returncode != 0
    assert f"{tmp_path / 'no_mnist_here'}/MNIST/raw does not exist" in r.stderr
    assert not (tmp_path / "results").exists()


def test_deleting_a_checkpoint_rebuilds_only_its_run(done):
    res = done / "results"
    victim = res / "tiny" / "mlp" / "baseline" / "s1" / "ckpt" / "e1.pt"
    old = torch.load(victim, weights_only=False)["model"]
    before = snapshot(res)
    victim.unlink()
    plan = smk(done, "-n")
    # the study tables compare against the baselines' table, so they are refreshed too
    assert jobs(plan.stdout) == {"train_baseline__tiny__mlp": 1, "logit_cache__tiny__mlp": 1,
                                 "summarize_baselines": 1, "study": 9, "report": 1, "all": 1}
    assert smk(done).returncode == 0
    new = torch.load(victim, weights_only=False)["model"]
    assert all(torch.equal(old[k], new[k]) for k in old)  # retraining is deterministic
    after = snapshot(res)
    changed = {k for k in before if before[k][0] != after[k][0]}
    assert changed and all(k.startswith(("tiny/mlp/baseline/s1/", "tiny/studies/", "report/"))
                           or k in ("tiny/baselines.csv", "summary.parquet", "summary.csv") for k in changed)


def test_corrupt_checkpoint_is_one_clear_error_and_spares_the_rest(done):
    res = done / "results"
    victim = res / "tiny" / "cnn" / "baseline" / "s0" / "ckpt" / "e3.pt"
    victim.write_bytes(victim.read_bytes()[:1000])  # truncated, and now newer than its caches
    # spared: all but the run and the adversarial cache, which attacks the checkpoint and fails with it
    others = {k: v for k, v in snapshot(res).items() if not k.startswith(("tiny/cnn/baseline/s0/", "tiny/adv/pgd/"))}
    r = smk(done)
    assert r.returncode != 0
    assert "is corrupt or truncated" in r.stderr and "Delete it and re-run snakemake" in r.stderr
    after = snapshot(res)
    assert {k: after[k] for k in others} == others
    assert not list(res.glob("tiny/cnn/baseline/s0/logits/e3/.*.tmp*"))  # nothing half-written
    victim.unlink()  # the fix the message gives; rebuilding the run and its cache shows it works (the
    # stages downstream of them would rerun too, as the deletion test above shows, at a minute's cost)
    cache = victim.parent.parent / "logits" / "e3"
    assert smk(done, str((cache / "meta.json").relative_to(done))).returncode == 0
    assert LogitCache.open(cache).meta["source"]["epoch"] == 3


def test_interrupted_training_resumes_from_its_last_checkpoint(tmp_path):
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["models"] = {"mlp": {"arch": "mlp", "args": {"hidden": [64, 64]}}}
    cfg["baseline"]["seeds"] = [0]
    for key in ["scores", "plugins", *(m.name for m in methods(cfg))]:  # baselines only
        cfg.pop(key, None)
    cfg["train"].update(epochs=60, batch_size=4, checkpoint_epochs=[1])
    cfg["report"] = {"figures": []}
    conf = tmp_path / "long.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(conf), "--cores", "1"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    state = tmp_path / "results" / "tiny" / "mlp" / "baseline" / "s0" / "state"
    deadline = time.time() + 120
    while time.time() < deadline and not (state / "last.pt").exists() and proc.poll() is None:
        time.sleep(0.05)
    assert (state / "last.pt").exists(), f"training never wrote its resume state: {proc.communicate()[1][-2000:]}"
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    assert (state / "last.pt").exists()
    assert not (state.parent / "run.json").exists()  # the run did not finish
    r = smk(tmp_path, config=conf)
    assert r.returncode == 0, r.stderr[-3000:]
    log = (state.parent / "train.log").read_text()
    assert re.search(r"resumed from .*last\.pt at epoch [1-9]", log), log[-2000:]
    assert [m["epoch"] for m in read_jsonl(state.parent / "metrics.jsonl")] == list(range(1, 61))
    assert not state.exists()
