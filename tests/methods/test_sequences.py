"""Sequences of runs (reuse.methods.sequences): the search space, the Optuna journal kept in step with
the run folders, whole searches run in process (determinism, resume after SIGKILL in a trial and in
a journal write, selection on validation only), retraining's pieces and the study arithmetic."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import torch.nn.functional as F

from reuse import ops
from reuse.config import validate_config
from reuse.errors import ReuseError
from reuse.io import read_json
from reuse.methods.registry import get
from reuse.methods.sequences import search as S
from reuse.methods.sequences import space as sp
from reuse.methods.sequences.algorithms import PartialDistill
from reuse.methods.sequences.stage import (anchor_policy, arrival, cumulative, forgetting_scores, policy_study,
                                           sequence_rows, train_step, train_trial)
from reuse.train import load_checkpoint
from reuse.workflow import Job
from tests.helpers import ROOT, method_job

DATASET = {"kind": "mnist1d", "holdout": 40, "mnist1d": {"num_samples": 300, "seed": 3}}
CONFIG = {
    "datasets": {"d": DATASET},
    "models": {"m": {"arch": "mlp", "args": {"hidden": [16]}}},
    "train": {"epochs": 3, "batch_size": 64, "checkpoint_every": 1, "optimizer": {"lr": 0.05}},
    "baseline": {"seeds": [0]},
    "cache": {"views": 0, "topk": 0},
    "search": {"model": "m", "trials": 4, "seeds": [0],
               "space": {"lr": {"low": 0.01, "high": 0.2, "log": True}, "width": {"choices": [8, 16]},
                         "epochs": {"low": 2, "high": 4}},
               "kd": {"top": 2},
               "policies": {"scratch": {}, "kd_best": {"teacher": "best"}, "kd_top": {"teacher": "top"},
                            "warm_best": {"init": "best"},
                            "halving": {"pruner": {"kind": "halving", "min_resource": 1, "reduction_factor": 2}}}},
    "retrain": {"model": "m", "seeds": [0], "parts": [0.5, 1.0], "train": {"epochs": 2},
                "policies": {"scratch": {}, "kd": {"teacher": "previous"},
                             "forget": {"select": {"score": "forgetting", "keep": 0.5}},
                             "el2n": {"select": {"score": "el2n", "keep": 0.5}}, "warm": {"init": "previous"},
                             "long": {"equal_cost": "warm", "steps": "last"}}},
}


@pytest.fixture(scope="module")
def cfg() -> dict:
    return validate_config(copy.deepcopy(CONFIG))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from reuse.data import prepare

    d = tmp_path_factory.mktemp("seq_data")
    prepare("d", DATASET, d / "data.npz", d / "dataset.json")
    return d


def run_search(cfg: dict, results: Path, data_dir: Path, policy: str, seed: int = 0, trials: int | None = None) -> list[Path]:
    """Trials 0..trials-1 of one policy's search, in order, as the workflow would run them."""
    m = get("search", cfg)
    out = []
    for k in range(trials or cfg["search"]["trials"]):
        job = method_job(cfg, "search", "d", m.step_name(policy, k), seed, results, data_dir)
        train_trial(Job(**job))
        out.append(Path(job["outputs"]["run"]).parent)
    return out


# ----------------------------------------------------------------------------- the space
def test_space_values_set_the_model_and_recipe(cfg):
    space = {"lr": {"low": 0.01, "high": 0.1}, "width": {"choices": [8, 32]}, "augment": {"choices": [None, {"translate": 2}]},
             "train.optimizer.momentum": {"low": 0.5, "high": 0.9}, "args.dropout": {"choices": [0.0, 0.1]}}
    assert sp.problems(space, cfg, "m", "search.space") == []
    d = S.distributions(space)
    assert isinstance(d["width"], optuna.distributions.CategoricalDistribution)
    assert d["augment"].choices == (None, '{"translate": 2}')  # objects stored as their JSON text
    values = S.decode({"lr": 0.02, "width": 32, "augment": '{"translate": 2}', "train.optimizer.momentum": 0.6,
                       "args.dropout": 0.1}, space)
    assert values["augment"] == {"translate": 2}
    model, model_cfg, recipe = sp.apply(values, space, cfg, "m", {"epochs": 7})
    assert model == "m" and model_cfg["args"] == {"hidden": [32], "dropout": 0.1}
    assert recipe["optimizer"]["lr"] == 0.02 and recipe["optimizer"]["momentum"] == 0.6
    assert recipe["augment"] == {"translate": 2} and recipe["epochs"] == 7
    assert cfg["models"]["m"]["args"] == {"hidden": [16]}  # the config is not touched
    ints = S.distributions({"epochs": {"low": 2, "high": 4}})["epochs"]
    assert isinstance(ints, optuna.distributions.IntDistribution) and (ints.low, ints.high) == (2, 4)


# ----------------------------------------------------------------------------- the journal
def _study(path: Path, identity: str = "a") -> optuna.Study:
    return S.open_study(path, "s", identity, optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner())


DISTS = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}


def _records(tmp_path: Path, n: int = 3) -> list[dict]:
    """``n`` finished trials (the last pruned) as run.json records them."""
    st = _study(tmp_path / "src.log")
    out = []
    for k in range(n):
        t = st.ask(DISTS)
        t.report(0.1 * k, 1)
        st.tell(t, state=optuna.trial.TrialState.PRUNED) if k == n - 1 else st.tell(t, 0.5 + 0.1 * k)
        out.append(S.record(st.trials[k]))
    return out


def test_a_journal_of_another_config_or_seed_is_refused(tmp_path):
    _study(tmp_path / "j.log", "mine")
    with pytest.raises(ReuseError, match="written by another config or seed"):
        _study(tmp_path / "j.log", "theirs")


def test_reconcile_rebuilds_a_lost_journal_from_the_run_folders(tmp_path):
    recs = _records(tmp_path)
    st = _study(tmp_path / "new.log")
    S.reconcile(st, recs, tmp_path / "new.log")
    assert [S.record(t) for t in st.trials] == recs
    S.reconcile(st, recs, tmp_path / "new.log")  # idempotent
    assert len(st.trials) == 3


def test_reconcile_finishes_a_trial_a_killed_job_left_running(tmp_path):
    recs = _records(tmp_path, 2)
    st = _study(tmp_path / "j.log")
    S.reconcile(st, recs[:1], tmp_path / "j.log")
    t = st.ask(DISTS)  # the killed job's trial 1, left running; its run folder records its params
    recs[1]["params"] = t.params
    S.reconcile(st, recs, tmp_path / "j.log")
    assert st.trials[1].state == optuna.trial.TrialState.PRUNED
    assert st.trials[1].intermediate_values == {1: 0.1}


def test_reconcile_refuses_a_journal_that_disagrees(tmp_path):
    recs = _records(tmp_path, 2)
    st = _study(tmp_path / "j.log")
    S.reconcile(st, recs, tmp_path / "j.log")
    bad = copy.deepcopy(recs)
    bad[0]["value"] = 0.99
    with pytest.raises(ReuseError, match="trial 0 is COMPLETE .* records COMPLETE"):
        S.reconcile(st, bad, tmp_path / "j.log")


def test_a_partial_record_from_a_killed_write_is_dropped(tmp_path):
    path = tmp_path / "j.log"
    st = _study(path)
    st.tell(st.ask(DISTS), 0.5)
    with open(path, "ab") as f:
        f.write(b'{"op_code": 6, "worker_id": "x", "trial_id": 0, "sta')  # a kill mid-write
    st2 = _study(path)
    st2.tell(st2.ask(DISTS), 0.7)
    assert [t.value for t in _study(path).trials] == [0.5, 0.7]


def test_ranked_uses_validation_accuracy_only():
    recs = [{"number": 0, "state": "COMPLETE", "value": 0.60, "test_acc": 0.99},
            {"number": 1, "state": "COMPLETE", "value": 0.70, "test_acc": 0.10},
            {"number": 2, "state": "PRUNED", "value": 0.90, "test_acc": 0.99},
            {"number": 3, "state": "COMPLETE", "value": 0.70, "test_acc": 0.50}]
    assert S.ranked(recs) == [1, 3, 0]  # pruned trials are not candidates; ties go to the earlier trial


# ----------------------------------------------------------------------------- whole searches
def test_a_search_is_deterministic_and_reuses_only_earlier_trials(cfg, data_dir, tmp_path):
    """The same config and seed give the same trials, choices and numbers, bit for bit; a distilling
    trial's teachers are earlier trials ranked by validation accuracy."""
    a = run_search(cfg, tmp_path / "a", data_dir, "kd_top")
    b = run_search(cfg, tmp_path / "b", data_dir, "kd_top")
    for x, y in zip(a, b):
        rx, ry = read_json(x / "run.json"), read_json(y / "run.json")
        assert rx["trial"] == ry["trial"] and rx["final"] == ry["final"]
        wx, wy = load_checkpoint(x / "ckpt" / "last.pt")["model"], load_checkpoint(y / "ckpt" / "last.pt")["model"]
        assert all(torch.equal(wx[k], wy[k]) for k in wx)
    recs = [read_json(r / "run.json") for r in a]
    assert [r["trial"]["number"] for r in recs] == [0, 1, 2, 3]
    assert "teachers" not in recs[0]["sequence"]
    for k in (1, 2, 3):
        assert recs[k]["sequence"]["teachers"] == S.ranked([r["trial"] for r in recs[:k]])[:2]
    # the policies share their proposals (random sampler): trial k of another policy has the same params
    scratch = run_search(cfg, tmp_path / "c", data_dir, "scratch", trials=2)
    assert [read_json(r / "run.json")["trial"]["params"] for r in scratch] == [r["trial"]["params"] for r in recs[:2]]


def test_warm_start_and_halving(cfg, data_dir, tmp_path):
    warm = [read_json(r / "run.json") for r in run_search(cfg, tmp_path, data_dir, "warm_best")]
    for k, r in enumerate(warm[1:], 1):
        same = [j for j in S.ranked([w["trial"] for w in warm[:k]]) if warm[j]["args"] == r["args"]]
        assert r["sequence"].get("init_from") == (same[0] if same else None)
    halving = [read_json(r / "run.json") for r in run_search(cfg, tmp_path, data_dir, "halving")]
    for r in halving:
        t = r["trial"]
        if t["state"] == "PRUNED":
            assert r["stopped"] and r["sequence"]["epochs_trained"] < r["recipe"]["epochs"]
            assert len(t["intermediate_values"]) == r["sequence"]["epochs_trained"]
        else:
            assert not r["stopped"] and r["sequence"]["epochs_trained"] == r["recipe"]["epochs"]


_KILLED_TRIAL = """
import json, os, signal, sys
import torch
torch.set_num_threads(1)
from reuse.train import trainer
from tests.helpers import Kill
where = sys.argv[2]
if where == "trial":  # SIGKILL at the end of epoch 2, before its checkpoint
    init = trainer.Trainer.__init__
    def with_kill(self, *args, algorithms=(), **kwargs):
        init(self, *args, algorithms=[*algorithms, Kill(epoch=2, sigkill=True)], **kwargs)
    trainer.Trainer.__init__ = with_kill
else:  # SIGKILL half-way through writing the journal record that finishes the trial
    from optuna.storages.journal import JournalFileBackend
    append = JournalFileBackend.append_logs
    def half(self, logs):
        if any(l.get("op_code") == 6 and l.get("state") in (1, 2) for l in logs):  # SET_TRIAL_STATE_VALUES
            text = ("\\n".join(json.dumps(l, separators=(",", ":")) for l in logs) + "\\n").encode()
            with open(self._file_path, "ab") as f:
                f.write(text[: len(text) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        append(self, logs)
    JournalFileBackend.append_logs = half
from reuse.methods.sequences.stage import train_trial
from reuse.workflow import Job
train_trial(Job(**json.load(open(sys.argv[1]))))
"""


@pytest.mark.parametrize("where", ["trial", "journal"])
def test_a_search_resumes_after_sigkill(cfg, data_dir, tmp_path, monkeypatch, where):
    """Trial 2 of a halving search killed (SIGKILL) in training or half-way through its journal write,
    then run again: no earlier trial is retrained, the journal and the run folders agree, and the
    trial ends bit for bit as in an uninterrupted search."""
    straight = run_search(cfg, tmp_path / "straight", data_dir, "halving", trials=3)
    res = tmp_path / "killed"
    run_search(cfg, res, data_dir, "halving", trials=2)
    m = get("search", cfg)
    job = method_job(cfg, "search", "d", m.step_name("halving", 2), 0, res, data_dir)
    (tmp_path / "job.json").write_text(json.dumps(job))
    (tmp_path / "killed.py").write_text(_KILLED_TRIAL)
    epochs = read_json(straight[2] / "run.json")["sequence"]["epochs_trained"]
    if where == "trial" and epochs < 2:
        pytest.skip("trial 2 stops before epoch 2")
    proc = subprocess.run([sys.executable, str(tmp_path / "killed.py"), str(tmp_path / "job.json"), where], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    run = Path(job["outputs"]["run"]).parent
    assert not (run / "run.json").exists()
    journal = run.parent.parent / "journal" / "halving_s0.log"
    if where == "journal":
        assert not journal.read_bytes().endswith(b"\n")  # the partial record a kill leaves
    before = {p: p.stat().st_mtime_ns for p in (res / "d" / "m" / "search").glob("halving_t0[01]/s0/**/*") if p.is_file()}
    if where == "trial":
        from reuse.train import trainer
        from tests.helpers import Kill

        init = trainer.Trainer.__init__
        monkeypatch.setattr(trainer.Trainer, "__init__", lambda self, *a, algorithms=(), **k: init(
            self, *a, algorithms=[*algorithms, Kill()], **k))  # an inert Kill: the run's identity is the same
    train_trial(Job(**job))
    assert {p: p.stat().st_mtime_ns for p in before} == before  # earlier trials untouched
    mine, theirs = read_json(run / "run.json"), read_json(straight[2] / "run.json")
    assert mine["trial"] == theirs["trial"] and mine["final"] == theirs["final"]
    a, b = load_checkpoint(run / "ckpt" / "last.pt")["model"], load_checkpoint(straight[2] / "ckpt" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    st = optuna.load_study(study_name="search/d/m/halving/s0", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))))
    assert [S.record(t) for t in st.trials] == [read_json(res / "d" / "m" / "search" / f"halving_t{k:02d}" / "s0" /
                                                          "run.json")["trial"] for k in range(3)]


# ----------------------------------------------------------------------------- retraining
def test_arrival_is_fixed_and_nested():
    parts = arrival(100, [0.25, 0.5, 1.0], 3)
    assert [len(p) for p in parts] == [25, 50, 100]
    assert set(parts[0]) <= set(parts[1]) <= set(parts[2]) == set(range(100))
    assert all((a == b).all() for a, b in zip(parts, arrival(100, [0.25, 0.5, 1.0], 3)))
    assert not (arrival(100, [0.25, 1.0], 4)[0] == parts[0]).all()


def test_forgetting_scores_come_from_the_latest_step_that_trained_on_each_example(tmp_path):
    # 4 examples; step 1 saw 0..3, step 2 saw 0 and 1 only
    c1 = np.array([[1, 0, -1, 0], [0, 0, -1, 0], [1, 0, -1, 0]], dtype=np.int8)  # ex 2 never seen
    c2 = np.array([[1, 1, -1, -1], [1, 0, -1, -1]], dtype=np.int8)
    np.savez(tmp_path / "1.npz", correct=c1)
    np.savez(tmp_path / "2.npz", correct=c2)
    s = forgetting_scores(np.arange(4), [str(tmp_path / "1.npz"), str(tmp_path / "2.npz")])
    # ex 0: step 2, always right -> 0; ex 1: step 2, 1 -> 0 once -> 1; ex 2: no step saw it -> kept (inf);
    # ex 3: step 1, never learned -> the number of epochs it was seen (3)
    assert s.tolist() == [0, 1, np.inf, 3]


def test_partial_distill_is_kd_on_old_examples_and_labels_on_new():
    torch.manual_seed(0)
    n, c, b = 10, 5, 6
    teacher_logits = torch.randn(n, c)

    class T:
        def __call__(self, idx, x, epoch, step):
            return "logits", teacher_logits[idx]

    old = np.array([0, 2, 3, 7])
    algo = PartialDistill(T(), old, n, temperature=2.0, alpha=0.7)
    idx = torch.tensor([0, 1, 2, 5, 7, 9])
    y = torch.randint(0, c, (b,))
    s = torch.randn(b, c, dtype=torch.float32)
    from reuse.train.events import Event, State

    st = State(model=None, optimizer=None, recipe={}, seed=0, device=torch.device("cpu"), steps_per_epoch=1,
               total_steps=1, batch=(torch.zeros(b, 1), y, idx), outputs=s, loss=None)
    algo.on_event(Event.LOSS, st)
    want = 0.0
    for i in range(b):
        if int(idx[i]) in old:
            want += float(ops.kd_loss(s[i:i + 1], teacher_logits[idx[i:i + 1]], y[i:i + 1], 2.0, 0.7))
        else:
            want += float(F.cross_entropy(s[i:i + 1], y[i:i + 1]))
    assert float(st.loss) == pytest.approx(want / b, rel=1e-5)


def test_a_retraining_sequence_end_to_end(cfg, data_dir, tmp_path):
    m = get("retrain", cfg)
    runs = {}
    for policy in cfg["retrain"]["policies"]:
        for s in m.policy_steps(cfg, policy):
            job = method_job(cfg, "retrain", "d", m.step_name(policy, s), 0, tmp_path, data_dir)
            train_step(Job(**job))
            runs[policy, s] = read_json(job["outputs"]["run"])
    assert set(runs) == {(p, s) for p in cfg["retrain"]["policies"] for s in (1, 2)} - {("long", 1)}
    n = runs["scratch", 2]["sequence"]["examples"]
    assert runs["scratch", 1]["sequence"]["trained_on"] == round(n / 2)
    for pol in ("forget", "el2n"):
        q = runs[pol, 2]["sequence"]
        assert q["old_kept"] == round(0.5 * q["old"]) and q["trained_on"] == n - q["old"] + q["old_kept"]
    assert [x["kind"] for x in runs["kd", 2]["reused"]] == ["logit_cache"]
    steps = cumulative(sequence_rows([str(tmp_path / m.run_dir(cfg, "d", m.step_name(p, s), 0) / "run.json")
                                      for p, s in runs]))
    assert runs["long", 2]["sequence"]["own_flops"] == sum(runs["warm", s]["sequence"]["own_flops"] for s in (1, 2))
    assert anchor_policy(steps) == "scratch"
    g = steps[steps["policy"] == "kd"].sort_values("step")
    assert g["cum_flops"].tolist() == [g["own_flops"].iloc[0], g["own_flops"].sum()]


# ----------------------------------------------------------------------------- the studies
def _row(policy, seed, step, val, test, flops, state="COMPLETE", scenario="search", **cfg):
    return {"dataset": "d", "model": "m", "scenario": scenario, "policy": policy, "seed": seed, "step": step,
            "state": state, "val_acc": val, "test_acc": test, "own_flops": flops, "own_time_s": flops / 10,
            "equal_cost": cfg.get("equal_cost"), "config": cfg}


def test_the_shipped_model_is_chosen_on_validation():
    import pandas as pd

    df = pd.DataFrame([_row("p", 0, 0, 0.5, 0.9, 10), _row("p", 0, 1, 0.6, 0.2, 10),
                       _row("p", 0, 2, 0.9, 0.95, 10, state="PRUNED"), _row("p", 0, 3, 0.55, 0.99, 10)])
    out = cumulative(df).sort_values("step")
    assert out["shipped_step"].tolist() == [0, 1, 1, 1]  # never the pruned trial, never by test accuracy
    assert out["shipped_test_acc"].tolist() == [0.9, 0.2, 0.2, 0.2]
    assert out["cum_flops"].tolist() == [10, 20, 30, 40]


def _tables(tmp_path, monkeypatch, rows, name="s"):
    """The steps and policy tables the studies write from ``rows`` (one per run), read back."""
    import pandas as pd

    from reuse.methods.sequences.stage import steps_study

    monkeypatch.setattr("reuse.methods.sequences.stage.sequence_rows", lambda files: pd.DataFrame(copy.deepcopy(rows)))
    kw = {"runs_csvs": [], "baseline_csv": "", "extra": {"runs_json": []}, "params": {"confidence": 0.95}}
    steps_study(**kw, out_csv=str(tmp_path / f"{name}_steps.csv"))
    policy_study(**kw, out_csv=str(tmp_path / f"{name}.csv"))
    return pd.read_csv(tmp_path / f"{name}_steps.csv"), pd.read_csv(tmp_path / f"{name}.csv").set_index("policy")


def _search_rows():
    rows = []
    for seed in (0, 1, 2):
        # the anchor: validation 0.5, 0.8, 0.6, 0.7 -> ships trial 1 from trial 1 on: its target is 0.8, which it
        # reaches at trial 1 (cost 20 of its 40): its speed-up is 1, not 40 / 20; its test accuracy peaks at trial 3
        rows += [_row("anchor", seed, k, v, t, 10) for k, (v, t) in
                 enumerate([(0.5, 0.5), (0.8, 0.6), (0.6, 0.7), (0.7, 0.9)])]
        # "fast" gets to 0.8 on validation at trial 0 (cost 5 + seed): 20 / (5 + seed)
        rows += [_row("fast", seed, k, 0.8 + 0.01 * k, 0.5, 5 + seed, teacher="best") for k in range(4)]
        # "never" stays below on validation (its test accuracy is higher than the anchor's: never read)
        rows += [_row("never", seed, k, 0.1, 0.99, 1 + seed, init="best") for k in range(4)]
        # "late" reaches it in repeats 0 and 1 at its last trial (cost 8), never in repeat 2 (total 8)
        rows += [_row("late", seed, k, 0.85 if (k == 3 and seed < 2) else 0.2, 0.3, 2,
                      pruner={"kind": "halving"}) for k in range(4)]
    return rows


def test_policy_study_speedups(tmp_path, monkeypatch):
    """Against the anchor, per repeat: the anchor's cost to reach its own target (its final shipped model's
    validation accuracy) over the policy's cost to reach it; geometric mean, t-interval on the logs."""
    from reuse import stats

    steps, df = _tables(tmp_path, monkeypatch, _search_rows())
    assert (df["anchor"] == "anchor").all()
    a = df.loc["anchor"]
    # the anchor's speed-up over itself is 1 exactly, with a degenerate interval, in FLOPs and wall-clock
    for axis in ("flops", "time"):
        assert (a[f"speedup_{axis}"], a[f"speedup_{axis}_lo"], a[f"speedup_{axis}_hi"]) == (1.0, 1.0, 1.0)
        assert df.loc["anchor", f"speedup_{axis}_bound"] != df.loc["anchor", f"speedup_{axis}_bound"]  # NaN: none
    assert a["reach_cum_flops"] == a["anchor_reach_cum_flops"] == 20 and a["total_flops"] == 40
    assert a["target_val_acc"] == pytest.approx(0.8) and a["reached"] == 3 and a["n_censored"] == 0
    # fast: 20 / 5, 20 / 6, 20 / 7, geometric mean, t-interval of the logs
    ups = np.array([20 / 5, 20 / 6, 20 / 7])
    lo, hi = stats.mean_ci(np.log(ups))
    f = df.loc["fast"]
    assert f["speedup_flops"] == pytest.approx(np.exp(np.log(ups).mean()))
    assert (f["speedup_flops_lo"], f["speedup_flops_hi"]) == pytest.approx((np.exp(lo), np.exp(hi)))
    assert f["reach_cum_flops"] == pytest.approx(6) and f["reached"] == 3 and f["pairs"] == 3
    # the steps table marks the target and where each shipped model is at it
    st = steps.set_index(["policy", "seed", "step"])
    assert (steps["target_val_acc"] == 0.8).all()
    assert st.loc[("anchor", 0), "at_target"].tolist() == [False, True, True, True]
    assert st.loc[("late", 0), "at_target"].tolist() == [False, False, False, True]


def test_a_repeat_that_never_reaches_the_target_is_censored_not_dropped_nor_zero(tmp_path, monkeypatch):
    """Its speed-up is the anchor's cost over its whole cost, an upper bound: counted in n_censored, with the
    summary an upper bound (interval from 0)."""
    import math

    _, df = _tables(tmp_path, monkeypatch, _search_rows())
    n = df.loc["never"]
    ups = np.array([20 / 4, 20 / 8, 20 / 12])  # its whole cost: 4 trials of 1, 2, 3
    assert n["speedup_flops"] == pytest.approx(np.exp(np.log(ups).mean())) and n["speedup_flops"] > 0
    assert n["speedup_flops_bound"] == "upper" and n["speedup_time_bound"] == "upper"
    assert n["n_censored"] == 3 and n["reached"] == 0 and n["pairs"] == 3
    assert n["speedup_flops_lo"] == 0 and math.isfinite(n["speedup_flops_hi"])
    assert n["reach_bound"] == "lower" and n["reach_cum_flops"] == pytest.approx(8)  # at least its whole cost
    # one repeat of three censored: all three in the mean (20/8, 20/8, 20/8: the censored one at its total)
    late = df.loc["late"]
    assert late["speedup_flops"] == pytest.approx(20 / 8) and late["n_censored"] == 1 and late["reached"] == 2
    assert late["speedup_flops_bound"] == "upper"
    assert df.loc["fast", "n_censored"] == 0 and df.loc["fast", "speedup_flops_bound"] != "upper"


def test_test_accuracy_changes_no_choice_target_reach_or_speed_up(tmp_path, monkeypatch):
    """Replacing every run's test accuracy with other numbers changes only the reported test accuracies
    (and their differences) in both study tables: the shipped models, targets, reaches, speed-ups, costs
    and which policy reaches the target cheapest all come from validation accuracy and cost."""
    import pandas as pd

    rows = _search_rows() + [dict(r, scenario="search", policy="warm", config={"init": "best"},
                                  val_acc=r["val_acc"] + 0.05, own_flops=7) for r in _search_rows()
                             if r["policy"] == "anchor"]
    rng = np.random.default_rng(0)
    shuffled = [dict(r, test_acc=float(rng.uniform(0, 1))) for r in rows]
    steps_a, pol_a = _tables(tmp_path, monkeypatch, rows, "a")
    steps_b, pol_b = _tables(tmp_path, monkeypatch, shuffled, "b")
    test_cols = {c for c in pol_a.columns if "test" in c}
    assert {"test_acc", "test_acc_lo", "test_acc_hi"} <= test_cols
    pd.testing.assert_frame_equal(pol_a.drop(columns=sorted(test_cols)), pol_b.drop(columns=sorted(test_cols)))
    assert not np.allclose(pol_a["test_acc"], pol_b["test_acc"])
    keep = [c for c in steps_a.columns if "test" not in c]
    pd.testing.assert_frame_equal(steps_a[keep], steps_b[keep])
    assert (steps_a["shipped_step"] == steps_b["shipped_step"]).all()
    # retraining: the same with the equal-cost comparator and its gain (only the test gain may change)
    rows = _retrain_rows()
    shuffled = [dict(r, test_acc=float(rng.uniform(0, 1))) for r in rows]
    steps_a, pol_a = _tables(tmp_path, monkeypatch, rows, "c")
    steps_b, pol_b = _tables(tmp_path, monkeypatch, shuffled, "d")
    test_cols = sorted(c for c in pol_a.columns if "test" in c)
    assert "gain_test_acc" in test_cols and "gain_test_verdict" in test_cols
    pd.testing.assert_frame_equal(pol_a.drop(columns=test_cols), pol_b.drop(columns=test_cols))
    keep = [c for c in steps_a.columns if "test" not in c]
    pd.testing.assert_frame_equal(steps_a[keep], steps_b[keep])


def _retrain_rows():
    """scratch (anchor) and warm over 3 steps, and warm's equal-cost comparator at the last step."""
    rows = []
    for seed in (0, 1, 2):
        for k in (1, 2, 3):
            rows.append(_row("scratch", seed, k, 0.5 + 0.1 * k, 0.5 + 0.1 * k, 10 * k, scenario="retrain"))
            rows.append(_row("warm", seed, k, 0.55 + 0.12 * k, 0.55 + 0.1 * k, 10, scenario="retrain",
                             init="previous"))
        rows.append(_row("long", seed, 3, 0.8 + 0.01 * seed, 0.8 + 0.02 * seed, 30, scenario="retrain",
                         equal_cost="warm", steps="last"))
    return rows


def test_the_equal_cost_comparator_and_the_gain_over_it(tmp_path, monkeypatch):
    """The comparator is no anchor; its cost at its step is its own run's, equal to warm's cumulative cost;
    warm's gain over it is paired by repeat at that step, with a t-interval and a Holm-adjusted p-value."""
    from reuse import stats

    steps, df = _tables(tmp_path, monkeypatch, _retrain_rows())
    assert (df["anchor"] == "scratch").all() and not df.loc["long", "is_anchor"]
    assert df.loc["long", "steps"] == 1 and df.loc["long", "equal_cost_of"] == "warm"
    assert df.loc["warm", "equal_cost_policy"] == "long"
    st = steps.set_index(["policy", "seed", "step"])
    for seed in (0, 1, 2):
        assert st.loc[("long", seed, 3), "cum_flops"] == st.loc[("warm", seed, 3), "cum_flops"] == 30
    assert df.loc["long", "total_flops"] == df.loc["warm", "total_flops"] == 30
    w = df.loc["warm"]
    assert w["gain_step"] == 3 and w["gain_pairs"] == 3 and w["gain_cost_ratio_flops"] == 1.0
    d_test = np.array([0.85 - (0.8 + 0.02 * s) for s in (0, 1, 2)])
    d_val = np.array([0.91 - (0.8 + 0.01 * s) for s in (0, 1, 2)])
    assert w["gain_test_acc"] == pytest.approx(d_test.mean())
    assert (w["gain_test_acc_lo"], w["gain_test_acc_hi"]) == pytest.approx(stats.mean_ci(d_test))
    assert w["gain_val_acc"] == pytest.approx(d_val.mean())
    assert w["gain_test_acc_p"] == pytest.approx(stats.t_test(d_test))
    assert w["gain_test_acc_p_holm"] == pytest.approx(stats.t_test(d_test))  # a family of one
    assert w["gain_test_verdict"] == stats.decide(d_test.mean(), stats.t_test(d_test))
    # the anchor: scratch reaches its target (0.8 on validation) at its last step only: 1 exactly; the
    # comparator reaches it at its one step, for warm's cumulative cost (30 against the anchor's 60)
    assert df.loc["scratch", "speedup_flops"] == 1.0 and df.loc["long", "speedup_flops"] == pytest.approx(2.0)
    for pol in ("scratch", "long"):
        assert np.isnan(df.loc[pol, "gain_test_acc"])


def test_the_anchor_is_never_the_equal_cost_comparator():
    import pandas as pd

    df = pd.DataFrame([_row("long", 0, 2, 0.5, 0.5, 1, scenario="retrain", equal_cost="warm", steps="last"),
                       _row("scratch", 0, 1, 0.5, 0.5, 1, scenario="retrain"),
                       _row("warm", 0, 1, 0.5, 0.5, 1, scenario="retrain", init="previous")])
    assert anchor_policy(df) == "scratch"


def _equal_cost_cfg(**retrain) -> dict:
    c = copy.deepcopy(CONFIG)
    c["retrain"] = {"model": "m", "seeds": [0], "parts": [0.4, 1.0], "train": {"epochs": 2, "schedule": {"name": "cosine"}},
                    "policies": {"scratch": {}, "warm": {"init": "previous"},
                                 "long": {"equal_cost": "warm", "steps": "last"}}, **retrain}
    return c


def test_an_equal_cost_step_trains_exactly_the_warm_chains_examples(data_dir, tmp_path):
    """In process: scratch and warm over 2 steps, then long at step 2 from scratch on all the data for warm's
    2 x (40 % + 100 %) epochs = 2.8 epochs (2 whole and part of a third): its training examples and FLOPs
    equal warm's cumulative ones, its schedule spans exactly its steps, and the steps table says so."""
    import pandas as pd

    from reuse.methods.sequences.algorithms import ExampleBudget
    from reuse.methods.sequences.stage import steps_study

    cfg = validate_config(_equal_cost_cfg())
    m = get("retrain", cfg)
    assert [v for _, v in m.variants(cfg)] == ["scratch_p01", "scratch_p02", "warm_p01", "warm_p02", "long_p02"]
    assert m.inputs(cfg, "d", "long_p02", 0) == {"matched": [f"d/m/retrain/warm_p{j:02d}/s0/run.json" for j in (1, 2)]}
    runs = {}
    for pol, step in (("scratch", 1), ("scratch", 2), ("warm", 1), ("warm", 2), ("long", 2)):
        job = method_job(cfg, "retrain", "d", m.step_name(pol, step), 0, tmp_path, data_dir)
        train_step(Job(**job))
        runs[pol, step] = read_json(job["outputs"]["run"])
    long, warm = runs["long", 2], [runs["warm", 1], runs["warm", 2]]
    n = warm[1]["sequence"]["examples"]
    budget = sum(r["cost"]["examples_seen"] for r in warm)
    assert budget == 2 * (round(0.4 * n) + n) and budget % n  # not a whole number of epochs
    assert long["cost"]["examples_seen"] == long["sequence"]["budget_examples"] == budget
    assert long["cost"]["train_flops"] == sum(r["cost"]["train_flops"] for r in warm)
    assert long["sequence"]["own_flops"] == sum(r["sequence"]["own_flops"] for r in warm)
    assert long["recipe"]["epochs"] == 3
    algo = ExampleBudget(np.arange(n), budget, cfg["train"]["batch_size"])
    assert long["cost"]["step"] == algo.steps
    # the cosine schedule ends with the budget's last step, not with a third whole epoch's
    from reuse.train import lr_at

    last = [json.loads(line) for line in (tmp_path / m.run_dir(cfg, "d", "long_p02", 0) / "metrics.jsonl").read_text()
            .splitlines()][-1]
    kw = {"base_lr": long["recipe"]["optimizer"]["lr"], "schedule": long["recipe"]["schedule"],
          "steps_per_epoch": -(-n // cfg["train"]["batch_size"])}
    assert last["lr"] == pytest.approx(lr_at(algo.steps - 1, total_steps=algo.steps, **kw))
    assert last["lr"] != pytest.approx(lr_at(algo.steps - 1, total_steps=3 * kw["steps_per_epoch"], **kw))
    # every step's model is judged on the validation split
    assert all(0 < r["sequence"]["val_acc"] <= 1 for r in runs.values())
    files = [str(tmp_path / m.run_dir(cfg, "d", m.step_name(p, s), 0) / "run.json") for p, s in runs]
    steps_study(runs_csvs=[], baseline_csv="", extra={"runs_json": files}, params={}, out_csv=str(tmp_path / "s.csv"))
    st = pd.read_csv(tmp_path / "s.csv").set_index(["policy", "step"])
    assert st.loc[("long", 2), "cum_flops"] == st.loc[("warm", 2), "cum_flops"]
    assert st.loc[("long", 2), "train_examples"] == budget and st.loc[("long", 2), "equal_cost"] == "warm"


def test_the_example_budget_schedule():
    """Whole epochs over the ids in a fresh order each, then the first examples of one more; the learning-rate
    schedule sized for exactly those steps."""
    from reuse.methods.sequences.algorithms import ExampleBudget, budget_epochs
    from reuse.train.events import Event

    ids = np.arange(10, 20)
    algo = ExampleBudget(ids, 25, batch_size=4)
    assert (algo.epochs, algo.last, algo.steps) == (3, 5, 3 + 3 + 2) and budget_epochs(25, 10) == 3

    class St:
        seed, recipe, total_steps = 1, {"epochs": 3}, 9

    st = St()
    seen = []
    for e in range(3):
        st.epoch = e
        seen.append(algo.epoch_ids(st))
    assert [len(x) for x in seen] == [10, 10, 5] and sorted(seen[0].tolist()) == list(range(10, 20))
    assert not torch.equal(seen[0], seen[1])
    algo.on_event(Event.FIT_START, st)
    assert st.total_steps == 8
    st.recipe = {"epochs": 4}
    with pytest.raises(ValueError, match="takes 3 epochs"):
        algo.on_event(Event.FIT_START, st)


@pytest.mark.parametrize("policies, message", [
    ({"long": {"equal_cost": "wram"}}, "retrain.policies.long.equal_cost: no policy named 'wram' (did you mean 'warm'?)"),
    ({"long": {"equal_cost": "warm", "init": "previous"}}, "an equal-cost comparator trains from scratch"),
    ({"long": {"equal_cost": "long"}}, "'long' is itself an equal-cost comparator"),
    ({"other": {"steps": "last"}}, "retrain.policies.other.steps: 'last' is for an equal-cost comparator"),
])
def test_equal_cost_config_mistakes(policies, message):
    from reuse.errors import ConfigError

    c = _equal_cost_cfg()
    c["retrain"]["policies"] = {"scratch": {}, "warm": {"init": "previous"}, **policies}
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(c)


def test_retraining_needs_a_validation_split_or_holds_one_out(data_dir, tmp_path):
    """Without the dataset's validation split, retrain.holdout examples are held out of every part and judge
    each step's model; without either, the config is refused."""
    from reuse.data import prepare
    from reuse.errors import ConfigError

    raw = {k: v for k, v in DATASET.items() if k != "holdout"}
    base = {**_equal_cost_cfg(), "datasets": {"d": raw}}
    base.pop("search")
    with pytest.raises(ConfigError, match="retrain: dataset 'd' has no validation split"):
        validate_config(copy.deepcopy(base))
    cfg = validate_config({**copy.deepcopy(base), "retrain": {**base["retrain"], "holdout": 30}})
    d = tmp_path / "data"
    prepare("d", raw, d / "data.npz", d / "dataset.json")
    m = get("retrain", cfg)
    job = method_job(cfg, "retrain", "d", m.step_name("scratch", 2), 0, tmp_path / "r", d)
    train_step(Job(**job))
    r = read_json(job["outputs"]["run"])
    rows = [json.loads(line) for line in Path(job["outputs"]["metrics"]).read_text().splitlines()]
    from reuse.data import load

    n = len(load(d).train)
    assert r["sequence"]["examples"] == n - 30 and rows[0]["examples_seen"] == n - 30
    assert 0 < r["sequence"]["val_acc"] <= 1


@pytest.mark.workflow
def test_the_dag_is_the_sequence(cfg, tmp_path):
    """In the workflow's plan, trial k of a policy reads every earlier trial of the same policy and
    seed (and their logit caches when it distils), and nothing of a later one."""
    import yaml

    from tests.helpers import smk

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**copy.deepcopy(CONFIG), "results": "results", "device": "cpu"}))
    r = smk(tmp_path, "-n", config=path, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    blocks = {b.split("\n", 1)[0].strip(" :"): b for b in r.stdout.split("rule ")[1:]}
    for k in range(4):
        block = blocks[f"search__d__kd_best_t{k:02d}"]
        inputs = block.split("input:", 1)[1].split("output:", 1)[0]
        for j in range(4):
            there = f"search/kd_best_t{j:02d}/s0/run.json" in inputs
            assert there == (j < k), (k, j, inputs)
            assert (f"search/kd_best_t{j:02d}/s0/logits/meta.json" in inputs) == (j < k)
        assert "search/scratch_" not in inputs
    # the equal-cost comparator runs at the last step only and reads warm's steps 1 and 2, nothing of its own
    assert "retrain__d__long_p01" not in blocks
    inputs = blocks["retrain__d__long_p02"].split("input:", 1)[1].split("output:", 1)[0]
    assert "retrain/warm_p01/s0/run.json" in inputs and "retrain/warm_p02/s0/run.json" in inputs
    assert "ckpt" not in inputs and "retrain/long_" not in inputs


def test_a_search_holds_out_its_own_validation_split(data_dir, tmp_path):
    """On a dataset without a validation split, search.holdout examples of the training split are the
    validation split: trials never train on them."""
    from reuse.data import load, prepare

    raw = {k: v for k, v in DATASET.items() if k != "holdout"}
    d = tmp_path / "data"
    prepare("d", raw, d / "data.npz", d / "dataset.json")
    cfg = validate_config({**copy.deepcopy(CONFIG), "datasets": {"d": raw},
                           "search": {**copy.deepcopy(CONFIG["search"]), "holdout": 30},
                           "retrain": {**copy.deepcopy(CONFIG["retrain"]), "holdout": 30}})
    runs = run_search(cfg, tmp_path / "r", d, "scratch", trials=1)
    rows = [json.loads(line) for line in (runs[0] / "metrics.jsonl").read_text().splitlines()]
    n = len(load(d).train)
    assert all("val_acc" in r for r in rows)
    assert rows[0]["examples_seen"] == n - 30  # one epoch over the examples not held out
    with pytest.raises(Exception, match="no validation split"):
        validate_config({**copy.deepcopy(CONFIG), "datasets": {"d": raw}})
