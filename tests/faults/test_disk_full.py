"""The disk filling up mid-write, at every artifact-producing stage (issue 17: every fault leaves
results intact).

The atomic writer's fault hook (``REUSE_FAULT_DISK_FULL``, reuse/io.py) cuts the temporary file of the
matching artifact to half of what its writer wrote and fails with ENOSPC, as a full disk would. Each
case runs the stage in-process on a copy of finished tiny-workflow results, with its outputs removed
first (as Snakemake does before a job), and checks the outcome: one :class:`reuse.errors.DiskFull`
naming the file, saying the disk is full and what to do; the artifact not there; no temporary file
left anywhere; every other file (inputs, other runs, earlier results) byte-for-byte and mtime
unchanged. One case goes through Snakemake end to end and then reruns the job once the disk has room.

Test ids read as the fault table: ``<stage>-<artifact>``.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import shutil
from pathlib import Path

import pytest
import torch

from reuse.errors import DiskFull
from reuse.io import FAULT_DISK_FULL, read_json
from reuse.methods.registry import get
from reuse.train import load_checkpoint
from tests.faults.conftest import (BASE, CFG, CNN, DS, absent_methods, adv_cache, baseline, logit_cache, method_cases,
                                   method_run, others, prepare, remove, report, robust_eval, score_agreement, score_run,
                                   score_table, stray_temps, study, summarize)
from tests.helpers import smk, snapshot

pytestmark = pytest.mark.workflow


# (stage, artifact): the stage, the glob the fault hook matches, the paths (relative to the results) the
# stage itself writes (removed or rewritten by it: everything else must stay as it was)
CASES: list = [
    ("prepare_data", "data.npz", prepare, f"*/{DS}/data/data.npz", [f"{DS}/data/"]),
    ("prepare_data", "dataset.json", prepare, f"*/{DS}/data/dataset.json", [f"{DS}/data/"]),
    ("baseline", "state-last.pt", baseline, f"*/{BASE}/state/last.pt", [f"{BASE}/"]),
    ("baseline", "predictions.npz", baseline, f"*/{BASE}/predictions.npz", [f"{BASE}/"]),
    ("baseline", "example_stats.npz", baseline, f"*/{BASE}/example_stats.npz", [f"{BASE}/"]),
    ("baseline", "metrics.jsonl", baseline, f"*/{BASE}/metrics.jsonl", [f"{BASE}/"]),
    ("baseline", "run.json", baseline, f"*/{BASE}/run.json", [f"{BASE}/"]),
    ("logit_cache", "logits.npy", logit_cache, f"*/{CNN}/logits/e3/logits.npy", [f"{CNN}/logits/"]),
    ("logit_cache", "topk_indices.npy", logit_cache, f"*/{CNN}/logits/e3/topk_indices.npy", [f"{CNN}/logits/"]),
    ("logit_cache", "meta.json", logit_cache, f"*/{CNN}/logits/e3/meta.json", [f"{CNN}/logits/"]),
    ("score_run", "scores.npz", score_run, f"*/{CNN}/scores.npz", [f"{CNN}/scores."]),
    ("score_run", "scores.json", score_run, f"*/{CNN}/scores.json", [f"{CNN}/scores."]),
    ("score_table", "scores.parquet", score_table, f"*/{DS}/scores.parquet", [f"{DS}/scores."]),
    ("score_table", "scores.json", score_table, f"*/{DS}/scores.json", [f"{DS}/scores."]),
    ("score_agreement", "score_agreement.csv", score_agreement, "*/studies/score_agreement.csv", []),
    ("adv_cache", "adv.npz", adv_cache, f"*/{DS}/adv/pgd/adv.npz", [f"{DS}/adv/pgd/"]),
    ("adv_cache", "meta.json", adv_cache, f"*/{DS}/adv/pgd/meta.json", [f"{DS}/adv/pgd/"]),
    ("robust_eval", "robust.json", robust_eval, f"*/{CNN}/robust.json", []),
    ("summarize", "baselines.csv", summarize, f"*/{DS}/baselines.csv", [f"{DS}/baselines.csv"]),
    ("study", "prune.csv", study, f"*/{DS}/studies/prune.csv", []),
    ("report", "summary.parquet", report, "*/summary.parquet", ["summary.", "report/"]),
    ("report", "figure.png", report, "*/report/figures/frontier_*.png", ["summary.", "report/"]),
    ("report", "index.html", report, "*/report/index.html", ["summary.", "report/"]),
]
# Every registered method's run (the registry's list, so a new method is not skipped), failing on its
# run.json, the file written last, after its checkpoint, metrics and predictions. The methods the tiny
# config declares no run of are listed by `test_methods_without_a_tiny_run_are_known` below.
for _name, _variant, _seed in method_cases(CFG):
    _dir = get(_name, CFG).run_dir(CFG, DS, _variant, _seed)
    # a search trial also appends to its policy's optuna journal (a journal, repaired on the next open)
    _own = [f"{_dir}/"] + ([f"{Path(_dir).parent.parent}/journal/"] if _name == "search" else [])
    CASES.append((_name, "run.json", method_run(_name, _variant, _seed), f"*/{_dir}/run.json", _own))


@pytest.mark.parametrize("stage, fn, glob, own", [pytest.param(s, f, g, o, id=f"{s}-{a}") for s, a, f, g, o in CASES])
def test_disk_full_leaves_results_intact(res, monkeypatch, stage, fn, glob, own):
    torch.set_num_threads(1)
    before = snapshot(res)
    monkeypatch.setenv(FAULT_DISK_FULL, glob)
    with pytest.raises(DiskFull) as info:
        fn(res)
    monkeypatch.delenv(FAULT_DISK_FULL)
    _check(res, before, str(info.value), glob, own)


def _check(res: Path, before: dict, msg: str, glob: str, own: list[str]) -> None:
    """One clear message naming the file; the file absent; no temporary file; all else unchanged."""
    target = Path(msg.split("writing ", 1)[1].split(" failed", 1)[0])  # the file the message names
    assert fnmatch.fnmatch(str(target), glob) and target.is_relative_to(res), msg
    assert "the disk is full" in msg and "No space left on device" in msg and "re-run snakemake" in msg, msg
    assert not target.exists(), f"{target} was left behind"
    assert stray_temps(res) == []
    after = snapshot(res)
    mine = tuple(own) + (str(target.relative_to(res)),)
    assert others(after, *mine) == others(before, *mine)


def test_disk_full_while_copying_a_checkpoint(res, monkeypatch):
    """A run's final checkpoints are hard links into state/; where linking fails (results on another
    file system than state/, or links refused) they are copied, through the atomic writer: a disk that fills
    mid-copy leaves no half checkpoint."""
    torch.set_num_threads(1)

    def no_link(src, dst, *a, **k):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(src), None, str(dst))

    before = snapshot(res)
    glob = f"*/{BASE}/ckpt/e3.pt"
    monkeypatch.setattr(os, "link", no_link)
    monkeypatch.setenv(FAULT_DISK_FULL, glob)
    with pytest.raises(DiskFull) as info:
        baseline(res)
    monkeypatch.delenv(FAULT_DISK_FULL)
    _check(res, before, str(info.value), glob, [f"{BASE}/"])
    assert (res / BASE / "ckpt" / "e1.pt").stat().st_nlink == 1  # e1 was copied whole, not linked


# Why a registered method has no case above: the tiny config declares no run of it (its faults are in
# tests/faults/test_other_methods.py, on the small worlds of its own tests).
ABSENT = {
    "bias": "needs a bias search on held-out examples of real classes (configs/mnist.yaml)",
    "transfer": "needs a second, target dataset to transfer to",
    "interleave": "needs several tasks trained in turns",
    "specialists": "new (Hinton et al.'s specialists on confused class groups); the tiny config has no variant yet",
}


def test_methods_without_a_tiny_run_are_known(cfg):
    """Every registered method either has a case above (a run in the tiny config) or a reason in
    ABSENT. Their runs write through the same Job.fit and atomic writer as the methods above. A method
    added to the registry fails here until the tiny config runs it or ABSENT says why not."""
    missing = set(absent_methods(cfg)) - set(ABSENT)
    assert not missing, f"registered methods with no disk-full case and no reason in ABSENT: {sorted(missing)}"


def test_disk_full_through_snakemake_then_rerun(built, tmp_path, monkeypatch):
    """End to end: the disk fills while a baseline job writes its run.json. Snakemake stops with the
    one clear error and no traceback; the run has no run.json and no temporary file, every other
    file is unchanged; once there is room, rerunning Snakemake finishes the job from the run's saved
    state and gives the same weights as before."""
    wd = tmp_path / "wd"
    shutil.copytree(built, wd, copy_function=shutil.copy2, symlinks=True,
                    ignore=shutil.ignore_patterns("locks", "incomplete"))
    res = wd / "results"
    run = res / DS / "mlp" / "baseline" / "s1"
    old = load_checkpoint(run / "ckpt" / "e3.pt")["model"]
    for f in ("ckpt", "metrics.jsonl", "run.json", "predictions.npz", "example_stats.npz"):
        remove(res, f"{DS}/mlp/baseline/s1/{f}")
    before = snapshot(res)
    target = f"results/{DS}/mlp/baseline/s1/run.json"
    monkeypatch.setenv(FAULT_DISK_FULL, f"*/{DS}/mlp/baseline/s1/run.json")
    r = smk(wd, target)
    monkeypatch.delenv(FAULT_DISK_FULL)
    assert r.returncode != 0
    assert f"reuse error: the disk is full: writing {target} failed" in r.stderr, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert not (run / "run.json").exists() and stray_temps(res) == []
    after = snapshot(res)
    assert others(after, f"{DS}/mlp/baseline/s1/") == others(before, f"{DS}/mlp/baseline/s1/")
    assert (run / "state" / "last.pt").exists()  # the trained state is kept for the rerun
    r = smk(wd, target)
    assert r.returncode == 0, r.stderr[-3000:]
    assert read_json(run / "run.json")["seed"] == 1
    new = load_checkpoint(run / "ckpt" / "e3.pt")["model"]
    assert all(torch.equal(old[k], new[k]) for k in old)
