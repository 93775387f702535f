"""Interleaving learning (reuse.methods.interleave): the schedules at equal steps, the tasks' streams,
the shared encoder and its heads, which task trains when in a real run, exact resume after SIGKILL,
the run files and studies, and a tiny end-to-end workflow run."""

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
import yaml

from reuse.config import validate_config
from reuse.errors import ConfigError
from reuse.io import read_json, read_jsonl
from reuse.methods.interleave import schedule as S
from reuse.methods.interleave import tasks as T
from reuse.methods.interleave.interleave import InterleavedRun, build_net, make_tasks, stream_batch
from reuse.methods.registry import get
from reuse.train import load_checkpoint
from reuse.workflow import Job
from tests.helpers import ROOT, jobs, method_job, smk

DATASET = {"kind": "mnist1d", "mnist1d": {"num_samples": 300, "seed": 3}}
TASKS = {"low": [0, 1, 2, 3, 4], "high": [5, 6, 7, 8, 9]}
CONFIG = {
    "datasets": {"d": DATASET},
    "models": {"m": {"arch": "mlp", "args": {"hidden": [16]}}, "c": {"arch": "cnn1d", "args": {"channels": 8}}},
    "train": {"epochs": 2, "batch_size": 32, "optimizer": {"lr": 0.05}, "schedule": {"name": "cosine"}},
    "baseline": {"seeds": [0]},
    "interleave": {"tasks": TASKS, "steps": 24, "seeds": [0, 1],
                   "variants": {"blocked": {"model": "c"}, "rounds_3": {"model": "c", "rounds": 3},
                                "joint": {"model": "c", "schedule": "joint"},
                                "independent": {"model": "c", "schedule": "independent"}}},
}


@pytest.fixture(scope="module")
def cfg() -> dict:
    return validate_config(copy.deepcopy(CONFIG))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from reuse.data import prepare

    d = tmp_path_factory.mktemp("interleave_data")
    prepare("d", DATASET, d / "data.npz", d / "dataset.json")
    return d


def job(cfg: dict, variant: str, seed: int, results: Path, data_dir: Path) -> dict:
    return method_job(cfg, "interleave", "d", variant, seed, results, data_dir)


# ----------------------------------------------------------------------------- the schedules
@pytest.mark.parametrize("steps, k, rounds", [(24, 2, 3), (25, 2, 3), (600, 5, 4), (7, 3, 2), (100, 20, 1)])
def test_every_schedule_takes_the_same_steps_and_examples(steps, k, rounds):
    runs = {"interleaved": S.turns("interleaved", k, steps, rounds), "blocked": S.turns("interleaved", k, steps, 1),
            "joint": S.turns("joint", k, steps), "independent": S.turns("independent", k, steps)}
    share = S.split_steps(steps, k)
    for name, turns in runs.items():
        assert sum(t.steps for t in turns) == steps, name
        assert all(t.steps >= 1 for t in turns), name
        # every task's loss sees the same examples in every schedule (up to the rounding of a split batch)
        ex = S.task_examples(turns, k, 32)
        assert all(abs(e - s * 32) < steps + 32 for e, s in zip(ex, share)), (name, ex)
    assert S.task_steps(runs["interleaved"], k) == share == S.task_steps(runs["blocked"], k)
    assert S.task_steps(runs["independent"], k) == share
    assert S.task_steps(runs["joint"], k) == [steps] * k
    assert S.task_examples(runs["interleaved"], k, 32) == S.task_examples(runs["independent"], k, 32)
    assert sum(S.task_examples(runs["joint"], k, 32)) == steps * 32
    assert S.model_steps(runs["independent"]) == dict(enumerate(share))
    assert S.model_steps(runs["interleaved"]) == {0: steps} == S.model_steps(runs["joint"])


def test_which_task_trains_when():
    # 2 tasks, 3 rounds, 25 steps: task 0 gets 13 (5+4+4), task 1 gets 12 (4+4+4), alternating
    assert S.turns("interleaved", 2, 25, 3) == [S.Turn((0,), 5), S.Turn((1,), 4), S.Turn((0,), 4), S.Turn((1,), 4),
                                                  S.Turn((0,), 4), S.Turn((1,), 4)]
    assert S.turns("interleaved", 3, 9, 1) == [S.Turn((0,), 3), S.Turn((1,), 3), S.Turn((2,), 3)]  # blocked
    assert S.turns("joint", 3, 9) == [S.Turn((0, 1, 2), 9)]
    assert S.turns("independent", 3, 10) == [S.Turn((0,), 4, 0), S.Turn((1,), 3, 1), S.Turn((2,), 3, 2)]
    assert S.split_batch(32, (0, 1, 2)) == {0: 11, 1: 11, 2: 10} and S.split_batch(32, (1,)) == {1: 32}
    assert S.last_turns(S.turns("interleaved", 2, 8, 2), 2) == [2, 3]


def test_impossible_schedules_are_refused():
    with pytest.raises(ValueError, match="5 rounds need at least 5 steps per task"):
        S.turns("interleaved", 2, 8, 5)
    with pytest.raises(ValueError, match="cannot give each of 3 tasks a step"):
        S.turns("joint", 3, 2)
    with pytest.raises(ValueError, match="unknown schedule 'round_robin'"):
        S.turns("round_robin", 2, 8)


def test_forgetting_is_accuracy_after_the_last_own_turn_minus_final():
    turns = S.turns("interleaved", 2, 8, 2)  # 0, 1, 0, 1
    acc = [[0.6, 0.1], [0.4, 0.7], [0.8, 0.5], [0.5, 0.9]]
    assert S.forgetting(turns, acc) == pytest.approx([0.8 - 0.5, 0.0])
    assert S.forgetting(S.turns("joint", 2, 8), [[0.7, 0.6]]) == [0.0, 0.0]


def test_cifar100_superclasses_partition_the_fine_classes():
    groups = T.PRESETS["cifar100_superclasses"]
    assert len(groups) == 20 and all(len(g) == 5 for g in groups.values())
    assert sorted(c for g in groups.values() for c in g) == list(range(100))
    assert groups["people"] == [2, 11, 35, 46, 98] and groups["trees"] == [47, 52, 56, 59, 96]
    assert T.problems("t", "cifar100_superclasses", {"c": "cifar100"}) == []
    assert T.problems("t", "cifar100_superclasses", {"c": "cifar10"})[0].startswith(
        "t (cifar100_superclasses).")


# ----------------------------------------------------------------------------- streams and the model
def test_a_task_stream_is_full_batches_over_seeded_passes():
    ids = torch.arange(100, 170)  # 70 ids, batches of 16: batch 4 runs over into pass 1
    batches = [stream_batch(ids, 16, j, seed=3, task=1) for j in range(10)]
    assert all(sum(len(b) for b, _ in pieces) == 16 for pieces in batches)
    assert [[p for _, p in pieces] for pieces in batches[3:5]] == [[0], [0, 1]]
    flat = torch.cat([b for pieces in batches for b, _ in pieces])
    for p in (0, 1):
        assert sorted(flat[70 * p:70 * (p + 1)].tolist()) == ids.tolist()  # each pass: every id once
    passes = torch.cat([torch.full((len(b),), p) for pieces in batches for b, p in pieces])
    assert (passes[:70] == 0).all() and (passes[70:140] == 1).all()
    assert not torch.equal(flat[:70], flat[70:140])
    again = stream_batch(ids, 16, 7, seed=3, task=1)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(again, batches[7]))
    assert not torch.equal(stream_batch(ids, 16, 0, seed=3, task=0)[0][0], batches[0][0][0])  # tasks draw apart
    tiny = stream_batch(torch.arange(5), 12, 1, seed=0, task=0)  # a batch larger than the task: several passes
    assert [p for _, p in tiny] == [2, 3, 4] and sum(len(b) for b, _ in tiny) == 12


def test_tasks_select_by_label_from_each_split(tiny_data):
    tasks = make_tasks(TASKS, tiny_data.train.y, tiny_data.test.y)
    for t in tasks:
        assert torch.isin(tiny_data.train.y[t.train_ids], torch.tensor(t.classes)).all()
        assert torch.isin(tiny_data.test.y[t.test_ids], torch.tensor(t.classes)).all()
    assert len(tasks[0].train_ids) + len(tasks[1].train_ids) == len(tiny_data.train)


@pytest.mark.parametrize("arch, args", [("mlp", {"hidden": [16]}), ("cnn1d", {"channels": 8})])
def test_every_schedule_starts_from_the_same_weights(tiny_data, arch, args):
    tasks = make_tasks(TASKS, tiny_data.train.y, tiny_data.test.y)
    probe = tiny_data.train.get(torch.arange(4))[0]
    shared = build_net(arch, args, tiny_data.input_shape, 10, tasks, seed=5, independent=False, probe=probe)
    indep = build_net(arch, args, tiny_data.input_shape, 10, tasks, seed=5, independent=True, probe=probe)
    assert len(shared.encoders) == 1 and len(indep.encoders) == 2 and indep.owner == [0, 1]
    assert [h.out_features for h in shared.heads] == [5, 5]
    for enc in indep.encoders:
        a, b = enc.state_dict(), shared.encoders[0].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(shared.heads[1].weight, indep.heads[1].weight)
    assert not torch.equal(shared.heads[0].weight[:, :3], shared.heads[1].weight[:, :3])
    x = tiny_data.train.get(torch.arange(3))[0]
    assert shared(x, 1).shape == (3, 5)
    assert torch.equal(shared.encoders[0](x), indep.encoders[1](x))


# ----------------------------------------------------------------------------- the loop
def _run(data, tmp: Path, kind: str, rounds: int = 1, steps: int = 12, seed: int = 0, spy=None) -> InterleavedRun:
    tasks = make_tasks(TASKS, data.train.y, data.test.y)
    turns = S.turns(kind, len(tasks), steps, rounds)
    net = build_net("mlp", {"hidden": [16]}, data.input_shape, 10, tasks, seed=seed, independent=kind == "independent")
    recipe = {"batch_size": 16, "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4},
              "schedule": {"name": "cosine", "warmup_epochs": 0.5}, "augment": {"translate": 2}}
    run = InterleavedRun(net, data, tasks, turns, recipe, seed=seed, state_dir=tmp / "state",
                         device=torch.device("cpu"), identity={"kind": kind}, model_spec={"arch": "mlp"})
    if spy is not None:
        spy(run)
    return run.fit()


def _params(run: InterleavedRun) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in run.net.named_parameters()}


@pytest.mark.parametrize("kind, rounds", [("interleaved", 3), ("interleaved", 1), ("joint", 1), ("independent", 1)])
def test_only_the_turns_tasks_train(tiny_data, tmp_path, kind, rounds):
    """Each turn changes exactly the parameters of its tasks' heads and of its encoder, by the turn's
    number of steps; a task's stream advances only in its turns."""
    snaps, taken = [], []

    def spy(run):
        snaps.append(_params(run))
        save = run._checkpoint

        def after_turn():
            snaps.append(_params(run))
            taken.append(list(run.taken))
            save()
        run._checkpoint = after_turn

    run = _run(tiny_data, tmp_path, kind, rounds, spy=spy)
    assert len(snaps) == len(run.schedule) + 1
    steps_so_far = [0, 0]
    for i, turn in enumerate(run.schedule):
        before, after = snaps[i], snaps[i + 1]
        changed = {k for k in before if not torch.equal(before[k], after[k])}
        want = {f"heads.{k}.{p}" for k in turn.tasks for p in ("weight", "bias")}
        want |= {k for k in before if k.startswith(f"encoders.{turn.model}.")}
        assert changed == want, (i, turn, sorted(changed ^ want))
        for k, n in S.split_batch(16, turn.tasks).items():
            steps_so_far[k] += turn.steps
        assert taken[i] == steps_so_far
    assert run.step == 12 and len(run.metrics) == len(run.schedule)
    assert [m["tasks"] for m in run.metrics] == [[["low", "high"][k] for k in t.tasks] for t in run.schedule]
    assert run.metrics[-1]["step"] == 12 and run.metrics[-1]["train_flops"] > 0
    assert run.examples_seen == 12 * 16


def test_the_learning_rate_runs_over_each_encoders_steps(tiny_data, tmp_path):
    from reuse.train import lr_at

    sched = {"name": "cosine", "warmup_epochs": 0.5}
    inter = _run(tiny_data, tmp_path / "i", "interleaved", 3)
    indep = _run(tiny_data, tmp_path / "n", "independent")
    # an epoch of the schedule: a pass over the training examples of the encoder's tasks
    assert inter.steps_per_epoch == {0: -(-len(tiny_data.train) // 16)}
    assert indep.steps_per_epoch == {k: -(-len(t.train_ids) // 16) for k, t in enumerate(indep.tasks)}
    assert inter.metrics[-1]["lr"] == pytest.approx(lr_at(11, base_lr=0.1, schedule=sched, total_steps=12,
                                                          steps_per_epoch=inter.steps_per_epoch[0]))
    # model 0 of the independent run takes its whole schedule in its own 6 steps
    assert indep.metrics[0]["lr"] == pytest.approx(lr_at(5, base_lr=0.1, schedule=sched, total_steps=6,
                                                         steps_per_epoch=indep.steps_per_epoch[0]))
    # ... and model 1 its own whole schedule again, from step 0 of its own
    assert indep.metrics[1]["lr"] == pytest.approx(lr_at(5, base_lr=0.1, schedule=sched, total_steps=6,
                                                         steps_per_epoch=indep.steps_per_epoch[1]))
    assert inter.metrics[2]["lr"] == pytest.approx(lr_at(5, base_lr=0.1, schedule=sched, total_steps=12,
                                                         steps_per_epoch=inter.steps_per_epoch[0]))


def test_a_run_is_deterministic(tiny_data, tmp_path):
    a = _run(tiny_data, tmp_path / "a", "interleaved", 2)
    b = _run(tiny_data, tmp_path / "b", "interleaved", 2)
    sa, sb = a.net.state_dict(), b.net.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [m["task_test_acc"] for m in a.metrics] == [m["task_test_acc"] for m in b.metrics]


_KILLED = """
import json, os, signal, sys
import torch
torch.set_num_threads(1)
from reuse.methods.interleave import interleave as il
step = il.InterleavedRun._step
def killing(self, turn):
    if self.step == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
    return step(self, turn)
il.InterleavedRun._step = killing
from reuse.methods.interleave.stage import train
from reuse.workflow import Job
train(Job(**json.load(open(sys.argv[1]))))
"""


@pytest.mark.parametrize("variant, kill_at", [("rounds_3", 9), ("independent", 14)])
def test_a_run_resumes_after_sigkill(cfg, data_dir, tmp_path, variant, kill_at):
    """A run killed (SIGKILL) in the middle of a turn resumes at that turn's start and ends with the
    same weights, accuracies and curve as an uninterrupted run."""
    straight = job(cfg, variant, 0, tmp_path / "straight", data_dir)
    from reuse.methods.interleave.stage import train

    train(Job(**straight))
    killed = job(cfg, variant, 0, tmp_path / "killed", data_dir)
    (tmp_path / "job.json").write_text(json.dumps(killed))
    (tmp_path / "killed.py").write_text(_KILLED)
    proc = subprocess.run([sys.executable, str(tmp_path / "killed.py"), str(tmp_path / "job.json"), str(kill_at)],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    run = Path(killed["outputs"]["run"]).parent
    assert not (run / "run.json").exists()
    state = load_checkpoint(run / "state" / "last.pt")
    assert 0 < state["step"] < kill_at  # killed after a checkpoint, in the middle of a turn
    train(Job(**killed))
    assert not (run / "state").exists()
    mine, theirs = read_json(run / "run.json"), read_json(Path(straight["outputs"]["run"]))
    assert mine["final"] == theirs["final"] and mine["interleave"] == theirs["interleave"]
    assert mine["cost"]["step"] == theirs["cost"]["step"] == 24
    a = load_checkpoint(run / "ckpt" / "last.pt")["model"]
    b = load_checkpoint(straight["outputs"]["ckpts"]["last"])["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_resume_state_of_another_schedule_is_discarded(tiny_data, tmp_path):
    _run(tiny_data, tmp_path, "interleaved", 2)  # leaves state/last.pt
    fresh = _run(tiny_data, tmp_path / "fresh", "interleaved", 3)
    other = _run(tiny_data, tmp_path, "interleaved", 3)
    assert other.resumed_at is None
    sa, sb = fresh.net.state_dict(), other.net.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


# ----------------------------------------------------------------------------- the run files and the studies
@pytest.fixture(scope="module")
def results(cfg, data_dir, tmp_path_factory) -> Path:
    """Every variant x seed of CONFIG, run through the stage."""
    from reuse.methods.interleave.stage import train

    res = tmp_path_factory.mktemp("interleave_results")
    m = get("interleave", cfg)
    for ds, v in m.variants(cfg):
        for s in m.seeds(cfg):
            train(Job(**job(cfg, v, s, res, data_dir)))
    return res


def test_the_run_files_describe_every_task(cfg, results):
    m = get("interleave", cfg)
    for v in ("blocked", "rounds_3", "joint", "independent"):
        run = results / m.run_dir(cfg, "d", v, 0)
        r = read_json(run / "run.json")
        il = r["interleave"]
        accs = [t["test_acc"] for t in il["tasks"]]
        assert r["final"]["test_acc"] == pytest.approx(np.mean(accs))
        assert r["cost"]["step"] == 24 and r["cost"]["examples_seen"] == 24 * 32
        assert [t["name"] for t in il["tasks"]] == ["low", "high"]
        assert sum(t["examples"] for t in il["tasks"]) == 24 * 32
        assert il["turns"] == {"blocked": 2, "rounds_3": 6, "joint": 1, "independent": 2}[v] == len(il["curve"])
        for k, t in enumerate(il["tasks"]):
            assert t["forgetting"] == pytest.approx(t["acc_after_last_turn"] - t["test_acc"])
            assert il["curve"][-1]["acc"][k] == t["test_acc"]
        if v in ("joint", "independent"):
            assert all(t["forgetting"] == 0 for t in il["tasks"])
        assert il["tasks"][-1]["forgetting"] == 0  # nothing trains after the last task's last turn
        rows = read_jsonl(run / "metrics.jsonl")
        assert [row["turn"] for row in rows] == list(range(1, il["turns"] + 1))
        assert rows[-1]["train_flops"] == r["cost"]["train_flops"]
        with np.load(run / "predictions.npz") as p:
            # task-aware predictions: the argmax lies in the example's task; accuracy by task matches run.json
            pred = p["logits"].argmax(1)
            low = np.isin(p["target"], TASKS["low"])
            assert np.isin(pred[low], TASKS["low"]).all() and np.isin(pred[~low], TASKS["high"]).all()
            assert (pred[low] == p["target"][low]).mean() == pytest.approx(accs[0])
            assert (pred[~low] == p["target"][~low]).mean() == pytest.approx(accs[1])
        ck = load_checkpoint(run / "ckpt" / "last.pt")
        assert ck["model_spec"]["tasks"] == TASKS and "optimizer" not in ck
    # the same steps of full batches: the same training FLOPs
    flops = {v: read_json(results / m.run_dir(cfg, "d", v, 0) / "run.json")["cost"]["train_flops"]
             for v in ("blocked", "rounds_3", "joint", "independent")}
    assert flops["blocked"] == flops["rounds_3"] == flops["independent"] == flops["joint"] > 0


def test_the_studies_and_their_charts(cfg, results, tmp_path):
    from reuse.methods.interleave import charts
    from reuse.methods.interleave.stage import study, turns_study

    m = get("interleave", cfg)
    extra = m.runs_json(cfg, "d")
    extra = {k: [str(results / f) for f in v] for k, v in extra.items()}
    params = {"confidence": 0.95}
    study(runs_csvs=[], baseline_csv="", extra=extra, params=params, out_csv=str(tmp_path / "s.csv"))
    turns_study(runs_csvs=[], baseline_csv="", extra=extra, params=params, out_csv=str(tmp_path / "t.csv"))
    s, t = pd.read_csv(tmp_path / "s.csv"), pd.read_csv(tmp_path / "t.csv")
    assert list(s["variant"].drop_duplicates()) == ["blocked", "rounds_3", "joint", "independent"]
    assert set(s["task"]) == {"low", "high", "mean"} and (s["n"] == 2).all() and (s["method"] == "interleave").all()
    mean = s[(s["variant"] == "joint") & (s["task"] == "mean")].iloc[0]
    accs = [read_json(results / m.run_dir(cfg, "d", "joint", sd) / "run.json")["final"]["test_acc"] for sd in (0, 1)]
    assert mean["acc_mean"] == pytest.approx(np.mean(accs)) and mean["acc_lo"] <= mean["acc_mean"] <= mean["acc_hi"]
    r3 = t[t["variant"] == "rounds_3"]
    assert sorted(set(r3["turn"])) == list(range(7)) and (r3[r3["turn"] == 0]["step"] == 0).all()
    assert r3[r3["turn"] == 1].set_index("task")["trained"].to_dict() == {"low": True, "high": False}
    for chart_fn, table in ((charts.study_charts, s), (charts.turn_charts, t)):
        out = chart_fn(table)
        assert out and all(isinstance(title, str) and chart.to_dict(validate=False) for title, chart, _ in out)


# ----------------------------------------------------------------------------- the config
def test_the_block_declares_a_run_per_variant_and_seed(cfg, tmp_path):
    m = get("interleave", cfg)
    assert list(m.variants(cfg)) == [("d", v) for v in ("blocked", "rounds_3", "joint", "independent")]
    assert m.run_dir(cfg, "d", "rounds_3", 1) == "d/c/interleave/rounds_3/s1"
    assert m.params(cfg, "d", "rounds_3") == {"tasks": TASKS, "kind": "interleaved", "rounds": 3, "steps": 24}
    assert m.variant(cfg, "joint") == {"model": "c", "schedule": "joint", "train": {}, "steps": 24,
                                       "task_names": ["low", "high"]}
    assert m.variant(cfg, "rounds_3")["rounds"] == 3
    (tmp_path / "cifar-100-python").mkdir()
    for f in ("train", "test"):  # stand-ins: the config check looks for the files only
        (tmp_path / "cifar-100-python" / f).touch()
    with_preset = validate_config({**copy.deepcopy(CONFIG), "datasets": {"d": {"kind": "cifar100",
                                                                                "root": str(tmp_path)}},
                                   "interleave": {**CONFIG["interleave"], "tasks": "cifar100_superclasses",
                                                  "steps": 400}})
    assert len(get("interleave", with_preset).params(with_preset, "d", "joint")["tasks"]) == 20


def test_a_bad_block_is_one_clear_error_before_any_job(tmp_path):
    bad = {**copy.deepcopy(CONFIG), "results": "results", "device": "cpu"}
    bad["interleave"]["variants"]["rounds_3"]["rounds"] = 30
    with pytest.raises(ConfigError, match=r"has 1 problem:\n  - interleave.variants.rounds_3.rounds: 30 rounds"):
        validate_config(copy.deepcopy(bad))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(bad))
    r = smk(tmp_path, "-n", config=tmp_path / "config.yaml", timeout=300)
    assert r.returncode != 0 and "interleave.variants.rounds_3.rounds: 30 rounds" in r.stdout + r.stderr
    assert not (tmp_path / "results").exists()


# ----------------------------------------------------------------------------- end to end
@pytest.mark.workflow
def test_a_tiny_workflow_run(tmp_path):
    """The variants' runs and both studies through Snakemake (2 cores), then a dry run has nothing left to do."""
    cfg = {**copy.deepcopy(CONFIG), "results": "results", "device": "cpu", "models": {"c": CONFIG["models"]["c"]},
           "report": {"figures": []}}
    cfg["interleave"]["seeds"] = [0]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    targets = ["results/d/studies/interleave.csv", "results/d/studies/interleave_turns.csv"]
    plan = smk(tmp_path, "-n", *targets, config=tmp_path / "config.yaml", timeout=300)
    assert plan.returncode == 0, (plan.stdout + plan.stderr)[-3000:]
    counts = jobs(plan.stdout)
    assert all(counts.get(f"interleave__d__{v}") == 1 for v in CONFIG["interleave"]["variants"]), counts
    r = smk(tmp_path, *targets, config=tmp_path / "config.yaml", timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    s = pd.read_csv(tmp_path / targets[0])
    assert set(s["variant"]) == set(CONFIG["interleave"]["variants"]) and (s["n"] == 1).all()
    again = smk(tmp_path, "-n", *targets, config=tmp_path / "config.yaml", timeout=300)
    assert "Nothing to be done" in again.stdout + again.stderr
