"""The disk-full and bad-input faults (issue 17) for the registered methods that the tiny workflow
config declares no run of (``absent_methods``: bias, transfer, interleave, specialists), and SIGKILL
then rerun for bias (the other three have theirs in tests/methods).

Each method runs on the small finished results its own tests build (tests/methods/test_<method>.py:
their configs and fixtures), copied per test; the checks are those of test_disk_full.py and
test_bad_inputs.py: one :class:`reuse.errors.DiskFull` naming the run.json being written (a run's last
file), no half file, nothing else changed; one :class:`reuse.errors.ReuseError` naming a damaged input
and the fix, before any training, nothing written.

Test ids read as the fault table: ``<method>-<artifact>`` and ``<method>-<artifact>-<fault>``.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from reuse.config import validate_config
from reuse.errors import DiskFull, ReuseError
from reuse.io import FAULT_DISK_FULL
from reuse.methods.registry import get, resolve
from reuse.workflow import Job, remove_stale_temps
from tests.faults.conftest import CFG, absent_methods, stray_temps
from tests.faults.kill_fixtures import artifacts, differences
from tests.faults.test_bad_inputs import FIX, emptied, no_training, truncated  # noqa: F401 (no_training: a fixture)
from tests.faults.test_disk_full import _check
from tests.helpers import ROOT, method_job, snapshot, train_baseline
from tests.methods import test_bias, test_interleave, test_specialists, test_transfer
from tests.methods.test_bias import omitted  # noqa: F401 (a fixture)
from tests.methods.test_interleave import data_dir  # noqa: F401 (a fixture)
from tests.methods.test_transfer import data_dirs  # noqa: F401 (a fixture)

pytestmark = pytest.mark.workflow


@dataclass(frozen=True)
class Case:
    """One method's run under test: its tests' config, the results fixture (below) it runs on, the run."""
    config: dict
    world: str
    ds: str
    variant: str
    seed: int

    @property
    def cfg(self) -> dict:
        return validate_config(copy.deepcopy(self.config))


CASES = {
    # the student that never saw a 3, shifted: reads the kd run's final checkpoint and run.json
    "bias": Case(test_bias.CONFIG, "bias_world", "d", "shift3", 0),
    # a counterfactual run: reads the source and target data and the influence table
    "transfer": Case(test_transfer.CONFIG, "transfer_world", "src", "harmful_k3", 0),
    # reads nothing but the prepared data
    "interleave": Case(test_interleave.CONFIG, "interleave_world", "d", "blocked", 0),
    # reads the generalist (baseline seed 1) checkpoint and run.json
    "specialists": Case(test_specialists.CONFIG, "specialists_world", "d", "g3", 0),
}


# ----------------------------------------------------------------------------- the finished results, per method
@pytest.fixture(scope="module")
def bias_world(omitted) -> Path:  # noqa: F811
    return omitted[1]


@pytest.fixture(scope="module")
def transfer_world(data_dirs) -> Path:  # noqa: F811
    """Both datasets, the subset runs and the influence table that a counterfactual run reads."""
    cfg = CASES["transfer"].cfg
    for s in get("transfer", cfg).seeds(cfg, "subsets"):
        test_transfer.train(test_transfer.job_of(cfg, "subsets", s, data_dirs))
    test_transfer.build_influence(cfg, data_dirs)
    return data_dirs


@pytest.fixture(scope="module")
def interleave_world(data_dir, tmp_path_factory) -> Path:  # noqa: F811
    res = tmp_path_factory.mktemp("interleave_world")
    shutil.copytree(data_dir, res / "d" / "data")
    return res


@pytest.fixture(scope="module")
def specialists_world(tmp_path_factory) -> Path:
    """The two baseline runs (the generalists), as tests/methods/test_specialists.py's ``done`` makes them."""
    from reuse.data import prepare

    res = tmp_path_factory.mktemp("specialists_world")
    data = res / "d" / "data"
    prepare("d", test_specialists.DATASET, data / "data.npz", data / "dataset.json")
    test_specialists._train_baselines(CASES["specialists"].cfg, res, data)
    return res


@pytest.fixture(scope="module")
def foreign(tmp_path_factory) -> Path:
    """Right-format artifacts made for other data: each test config's datasets prepared from another
    seed (``<foreign>/<method>/<dataset>/data``), and a final checkpoint of the ``m`` model (bias's and
    specialists': the same MLP) trained on one of them (``<foreign>/m.pt``)."""
    from reuse.data import prepare

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("other_methods_foreign")
    for name, case in CASES.items():
        for ds, spec in case.config["datasets"].items():
            d = root / name / ds / "data"
            prepare(ds, {**spec, "mnist1d": {**spec["mnist1d"], "seed": spec["mnist1d"]["seed"] + 6}},
                    d / "data.npz", d / "dataset.json")
    cfg = CASES["bias"].cfg
    run = train_baseline(cfg, root / "bias" / "d" / "data", root / "m_run", "m", epochs=1)
    shutil.copyfile(run / "ckpt" / "e1.pt", root / "m.pt")
    return root


def results(request, name: str, tmp_path: Path) -> Path:
    """A fresh copy (modification times kept) of the finished results the method ``name`` runs on."""
    out = tmp_path / "results"
    shutil.copytree(request.getfixturevalue(CASES[name].world), out, copy_function=shutil.copy2)
    return out


def job_of(name: str, res: Path) -> dict:
    c = CASES[name]
    return method_job(c.cfg, name, c.ds, c.variant, c.seed, res, res / c.ds / "data")


def run_dir(name: str) -> str:
    c = CASES[name]
    return get(name, c.cfg).run_dir(c.cfg, c.ds, c.variant, c.seed)


def run_stage(name: str, res: Path, *, keep_state: bool = False) -> None:
    """The method's run as its rule runs it: its outputs (the whole run folder; with ``keep_state``,
    all but the resume state, as a rerun after a kill finds it) and stale temporary files removed
    first, then its stage, in process."""
    job = job_of(name, res)
    run = res / run_dir(name)
    if keep_state:
        outs = [*job["outputs"]["ckpts"].values(), *(job["outputs"][k] for k in ("metrics", "run", "predictions")),
                *job["outputs"]["extra"]]
        for f in outs:
            Path(f).unlink(missing_ok=True)
        remove_stale_temps(outs)
    elif run.exists():
        shutil.rmtree(run)
    torch.set_num_threads(1)
    resolve(get(name, CASES[name].cfg).stage)(Job(**job))


def test_every_absent_method_has_a_case():
    """The tiny config's absent methods are exactly those covered here (a new one fails until added)."""
    assert set(absent_methods(CFG)) == set(CASES)


# ----------------------------------------------------------------------------- the disk fills up
@pytest.mark.parametrize("name", [pytest.param(n, id=f"{n}-run.json") for n in CASES])
def test_disk_full_leaves_results_intact_other_methods(request, tmp_path, monkeypatch, name):
    """The disk fills while the run writes its run.json, the file it writes last (after its checkpoint,
    metrics, predictions and extra files)."""
    res = results(request, name, tmp_path)
    shutil.rmtree(res / run_dir(name), ignore_errors=True)  # as Snakemake does before the job
    before = snapshot(res)
    glob = f"*/{run_dir(name)}/run.json"
    monkeypatch.setenv(FAULT_DISK_FULL, glob)
    with pytest.raises(DiskFull) as info:
        run_stage(name, res)
    monkeypatch.delenv(FAULT_DISK_FULL)
    _check(res, before, str(info.value), glob, [f"{run_dir(name)}/"])


# ----------------------------------------------------------------------------- bad inputs
def other_data(victim: Path, foreign: Path, res: Path, name: str) -> None:
    """The same artifact made for other data: a dataset file prepared from another seed, or the ``m``
    model's checkpoint trained on it."""
    if victim.suffix == ".pt":
        shutil.copyfile(foreign / "m.pt", victim)
    else:
        shutil.copyfile(foreign / name / victim.relative_to(res), victim)


FAULTS = {"truncated": lambda v, f, r, n: truncated(v, f, r), "emptied": lambda v, f, r, n: emptied(v, f, r),
          "other_data": other_data}
TE = ["truncated", "emptied"]
TEO = ["truncated", "emptied", "other_data"]
INPUTS = {  # per method: (artifact id, path relative to the results, faults)
    "bias": [("ckpt", "d/m/kd/omit3/s0/ckpt/e4.pt", TEO), ("run.json", "d/m/kd/omit3/s0/run.json", TE),
             ("data.npz", "d/data/data.npz", ["truncated"])],
    "transfer": [("target-data.npz", "tgt/data/data.npz", TEO), ("target-dataset.json", "tgt/data/dataset.json", TE),
                 ("influence.csv", "src/transfer/influence.csv", TE),
                 ("influence.json", "src/transfer/influence.json", TE),
                 ("data.npz", "src/data/data.npz", ["truncated", "other_data"])],
    "interleave": [("data.npz", "d/data/data.npz", TEO), ("dataset.json", "d/data/dataset.json", TE)],
    "specialists": [("ckpt", "d/m/baseline/s1/ckpt/e4.pt", TEO), ("run.json", "d/m/baseline/s1/run.json", TE),
                    ("data.npz", "d/data/data.npz", ["truncated"])],
}

# This file's cases as the fault table reads them (tests/faults/table.py, docs/reliability.md).
TABLE = {"disk": [(n, "run.json") for n in CASES],
         "bad": [(n, art, f) for n, ins in INPUTS.items() for art, _, fs in ins for f in fs],
         "kill": ["bias", "specialists"]}


def test_the_inputs_are_the_runs_inputs():
    """Every damaged file is one the run reads: its staged inputs (Method.inputs) or its data."""
    for name, inputs in INPUTS.items():
        c = CASES[name]
        declared = {f for files in get(name, c.cfg).inputs(c.cfg, c.ds, c.variant, c.seed).values() for f in files}
        assert declared <= {rel for _, rel, _ in inputs}, name
        assert {rel for _, rel, _ in inputs} - declared <= {f"{c.ds}/data/data.npz", f"{c.ds}/data/dataset.json"}


@pytest.fixture
def no_training_at_all(no_training, monkeypatch):  # noqa: F811
    """As ``no_training``, and for the interleaved run's own loop (not a Trainer) too."""
    from reuse.methods.interleave import interleave

    def fit(self, *a, **k):
        raise AssertionError("training started before the bad input was refused")
    monkeypatch.setattr(interleave.InterleavedRun, "fit", fit)


@pytest.mark.parametrize("name, rel, fault", [pytest.param(n, rel, f, id=f"{n}-{art}-{f}")
                                              for n, ins in INPUTS.items() for art, rel, fs in ins for f in fs])
def test_bad_input_is_one_clear_error_other_methods(request, tmp_path, name, rel, fault):
    res = results(request, name, tmp_path)  # the finished results and other data are made first, then
    foreign = request.getfixturevalue("foreign")  # training is forbidden
    request.getfixturevalue("no_training_at_all")
    shutil.rmtree(res / run_dir(name), ignore_errors=True)  # as Snakemake does before the job
    victim = res / rel
    FAULTS[fault](victim, foreign, res, name)
    before = snapshot(res)
    with pytest.raises(ReuseError) as info:
        run_stage(name, res)
    msg = str(info.value)
    assert str(victim) in msg or str(victim.parent) in msg, msg
    assert FIX.search(msg), msg
    assert "Traceback" not in msg
    assert snapshot(res) == before and stray_temps(res) == []
    assert not (res / run_dir(name)).exists()


# ----------------------------------------------------------------------------- SIGKILL, then rerun
_KILLED = """
import json, sys
import torch
torch.set_num_threads(1)
from reuse import faults
from reuse.methods.registry import resolve
from reuse.workflow import Job
faults.arm(sys.argv[3])
resolve(sys.argv[2])(Job(**json.load(open(sys.argv[1]))))
"""
# (method, where): bias trains nothing (a kill at its first write, before the rename, or at its run.json's,
# its last point); specialists are killed at a training step halfway through their points (a specialist
# mid-training, the earlier ones finished) and must resume from their saved states.
KILLS = [("bias", "first-write"), ("bias", "last"), ("specialists", "mid-step")]


@pytest.mark.parametrize("name, where", [pytest.param(n, w, id=f"{n}-{w}") for n, w in KILLS])
def test_sigkill_then_rerun_other_methods(request, tmp_path, monkeypatch, name, where):
    """The method's job is held by the fault hook (reuse/faults.py) at the chosen point and killed with
    SIGKILL; the rerun (its outputs and stale temporary files removed, as Snakemake and the rule do, its
    resume state kept) ends with a run equal to an uninterrupted one in the same place, on every
    deterministic content."""
    from reuse import faults

    res = results(request, name, tmp_path)
    run = res / run_dir(name)
    stage = get(name, CASES[name].cfg).stage
    # the uninterrupted run, counting the fault points it passes: the reference
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"count": str(tmp_path / "counts.tsv")}))
    monkeypatch.setenv(faults.ENV, str(plan))
    faults.arm(name)
    try:
        run_stage(name, res)
    finally:
        monkeypatch.delenv(faults.ENV)
        faults.arm("")  # disarmed
    points = [line.split("\t")[1] for line in (tmp_path / "counts.tsv").read_text().splitlines()]
    assert points[0] == "start" and points[-1] == "write" and "write" in points[1:], points
    if where == "first-write":
        k = points.index("write") + 1
    elif where == "last":
        k = len(points)
    else:
        steps = [i + 1 for i, p in enumerate(points) if p == "step"]
        assert steps, points
        k = steps[len(steps) // 2]
    ref = tmp_path / "reference"
    shutil.move(run, ref)
    # killed at point k
    mark = tmp_path / "held.json"
    plan.write_text(json.dumps({"job": name, "at": k, "mark": str(mark), "hold_s": 120}))
    (tmp_path / "job.json").write_text(json.dumps(job_of(name, res)))
    (tmp_path / "killed.py").write_text(_KILLED)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "killed.py"), str(tmp_path / "job.json"), stage, name],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), faults.ENV: str(plan)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not mark.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mark.exists(), proc.communicate(timeout=5)[0][-3000:] if proc.poll() is not None else "not held"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert json.loads(mark.read_text())["k"] == k
    assert not (run / "run.json").exists()
    # rerun, then compare
    run_stage(name, res, keep_state=True)
    assert artifacts(run) == artifacts(ref) and stray_temps(res) == []
    # the rerun records where it resumed (a specialist's epoch); all else is the uninterrupted run's
    resumed = [d for d in differences(ref, run, artifacts(ref)) if ".resumed_from: None != " in d]
    assert [d for d in differences(ref, run, artifacts(ref)) if d not in resumed] == []
    assert bool(resumed) == (where == "mid-step"), resumed
