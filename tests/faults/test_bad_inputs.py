"""Bad input artifacts at every artifact-producing stage (issue 17: every fault leaves results intact).

Each case damages one input of one stage in a copy of finished tiny-workflow results: truncated (its
first half), emptied (0 bytes), or replaced by a file of the right format made for other data (the
tiny dataset prepared from another seed, and a CNN trained on it: its checkpoints, logit caches,
score files and score table) or for another model. The stage then runs in-process, as its rule
would, and the outcome must be one :class:`reuse.errors.ReuseError` that names the damaged file (or
its cache folder) and the fix (delete it and re-run snakemake / run the rule that makes it), raised
before any training starts, with nothing else written: every file under the results is as it was.

Test ids read as the fault table: ``<stage>-<artifact>-<fault>``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch

from reuse.errors import ReuseError
from reuse.methods.registry import get
from reuse.train import trainer
from tests.faults.conftest import (CFG, CNN, DS, absent_methods, adv_cache, baseline, logit_cache, method_cases,
                                   method_run, report, robust_eval, score_agreement, score_run, score_table,
                                   stray_temps, study, summarize)
from tests.helpers import snapshot

pytestmark = pytest.mark.workflow
# the fix a message gives: delete and re-run snakemake, let the workflow rebuild it, run the rule that makes it
FIX = re.compile(r"re-run snakemake|let the workflow rebuild|run the workflow's", re.I)


# ----------------------------------------------------------------------------- the faults
def truncated(victim: Path, foreign: Path, res: Path) -> None:
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])


def emptied(victim: Path, foreign: Path, res: Path) -> None:
    victim.write_bytes(b"")


def other_data(victim: Path, foreign: Path, res: Path) -> None:
    """The same artifact, made for the tiny dataset prepared from another seed (a file, or a whole cache
    folder when ``victim`` is one)."""
    src = foreign / str(victim.relative_to(res)).replace("/s1/", "/s0/")  # the foreign runs are seed 0
    if victim.is_dir():
        shutil.rmtree(victim)
        shutil.copytree(src, victim)
    else:
        shutil.copyfile(src, victim)


def other_model(victim: Path, foreign: Path, res: Path) -> None:
    """A checkpoint of the same data but another model: the CNN baseline's final one."""
    shutil.copyfile(res / CNN / "ckpt" / "e3.pt", victim)


FAULTS = {"truncated": truncated, "emptied": emptied, "other_data": other_data, "other_model": other_model}


# ----------------------------------------------------------------------------- the cases
# (stage, artifact id, the stage, the damaged path relative to the results, faults)
def _m(name: str) -> tuple[str, Callable[[Path], None], str]:
    """A registered method's first tiny run: (name, its stage, its run folder)."""
    case = next(c for c in method_cases(CFG) if c[0] == name)
    return name, method_run(*case), get(name, CFG).run_dir(CFG, DS, case[1], case[2])


MLP0 = f"{DS}/mlp/baseline/s0"
CNN1 = f"{DS}/cnn/baseline/s1"
DATA = f"{DS}/data"
CASES = [
    # the prepared data, as every training stage reads it (the baseline's, here)
    ("baseline", "data.npz", baseline, f"{DATA}/data.npz", ["truncated", "emptied", "other_data"]),
    ("baseline", "dataset.json", baseline, f"{DATA}/dataset.json", ["truncated", "emptied", "other_data"]),
    ("logit_cache", "ckpt", logit_cache, f"{CNN}/ckpt/e3.pt", ["truncated", "emptied", "other_data"]),
    ("score_run", "ckpt", score_run, f"{CNN}/ckpt/e1.pt", ["truncated", "other_data"]),
    ("score_run", "example_stats.npz", score_run, f"{CNN}/example_stats.npz", ["truncated", "emptied"]),
    ("score_table", "scores.npz", score_table, f"{CNN}/scores.npz", ["truncated", "emptied"]),
    ("score_table", "scores.json", score_table, f"{CNN}/scores.json", ["truncated", "emptied", "other_data"]),
    ("score_agreement", "scores.npz", score_agreement, f"{CNN}/scores.npz", ["truncated", "emptied"]),
    ("adv_cache", "ckpt", adv_cache, f"{CNN}/ckpt/e3.pt", ["truncated", "other_data"]),
    # (the adversarial cache names its source runs' folders but reads only their checkpoints)
    ("robust_eval", "ckpt", robust_eval, f"{CNN}/ckpt/e3.pt", ["truncated", "other_data"]),
    ("summarize", "run.json", summarize, f"{MLP0}/run.json", ["truncated", "emptied"]),
    ("study", "runs.csv", study, f"{DS}/prune.csv", ["truncated", "emptied"]),
    ("study", "baselines.csv", study, f"{DS}/baselines.csv", ["emptied"]),
]
_METHOD_INPUTS = {
    # the method's staged inputs: its teachers' logit caches and run.json, score tables, caches, checkpoints
    "kd": [("logits.npy", f"{CNN1}/logits/e3/logits.npy", ["truncated", "emptied"]),
           ("cache-meta.json", f"{CNN1}/logits/e3/meta.json", ["truncated", "emptied"]),
           ("logit_cache", f"{CNN1}/logits/e3", ["other_data"]),
           ("run.json", f"{CNN1}/run.json", ["truncated"])],
    "prune": [("scores.parquet", f"{DS}/scores.parquet", ["truncated", "emptied", "other_data"]),
              ("run.json", f"{CNN}/run.json", ["truncated"])],
    "curriculum": [("scores.parquet", f"{DS}/scores.parquet", ["truncated", "other_data"])],
    "reweight": [("scores.parquet", f"{DS}/scores.parquet", ["truncated", "other_data"])],
    "adv": [("adv.npz", f"{DS}/adv/pgd/adv.npz", ["truncated", "emptied"]),
            ("cache-meta.json", f"{DS}/adv/pgd/meta.json", ["emptied"]),
            ("run.json", f"{CNN}/run.json", ["truncated"])],
    "warm": [("ckpt", f"{MLP0}/ckpt/e3.pt", ["truncated", "emptied", "other_data", "other_model"]),
             ("run.json", f"{MLP0}/run.json", ["truncated"])],
    "soup": [("ckpt", f"{DS}/mlp/warm/tune/s1/ckpt/last.pt", ["truncated", "other_model"]),
             ("run.json", f"{DS}/mlp/warm/tune/s1/run.json", ["truncated"])],
    "toy": [("logits.npy", f"{CNN1}/logits/e3/logits.npy", ["truncated"]),
            ("cache-meta.json", f"{CNN1}/logits/e3/meta.json", ["emptied"])],
}
# Methods whose first tiny run reads nothing but the prepared data (SWA within a run, the first trial
# of a search, the first retraining step): the damaged data stands for their inputs.
_DATA_ONLY = {"averaging", "search", "retrain"}
for _name, _variant, _seed in method_cases(CFG):
    name, fn, _ = _m(_name)
    inputs = _METHOD_INPUTS.get(name) or ([("data.npz", f"{DATA}/data.npz", ["truncated"])] if name in _DATA_ONLY
                                          else None)
    assert inputs is not None, f"method {name} has no bad-input case: add its inputs to _METHOD_INPUTS"
    CASES += [(name, art, fn, rel, faults) for art, rel, faults in inputs]

# The report builds pages from whatever exists (after a failed run too): a damaged run is shown as failed,
# with why, and the rest of the report is built (test_report_shows_a_damaged_run_as_failed).


def _params():
    return [pytest.param(stage, fn, rel, fault, id=f"{stage}-{art}-{fault}")
            for stage, art, fn, rel, faults in CASES for fault in faults]


@pytest.fixture
def no_training(monkeypatch):
    """Training that starts fails the test: a bad input must be refused before it."""
    def fit(self, *a, **k):
        raise AssertionError("training started before the bad input was refused")
    monkeypatch.setattr(trainer.Trainer, "fit", fit)


@pytest.mark.parametrize("stage, fn, rel, fault", _params())
def test_bad_input_is_one_clear_error(res, foreign, no_training, stage, fn, rel, fault):
    torch.set_num_threads(1)
    victim = res / rel
    FAULTS[fault](victim, foreign, res)
    before = snapshot(res)
    with pytest.raises(ReuseError) as info:
        fn(res)
    msg = str(info.value)
    named = victim if victim.is_dir() else victim.parent
    assert str(victim) in msg or str(named) in msg, msg
    assert FIX.search(msg), msg
    assert "Traceback" not in msg
    # nothing written: every file as it was (the stage removed its own outputs before it ran, as
    # Snakemake does; those are gone from `before` too), and no temporary file
    assert snapshot(res) == {k: v for k, v in before.items() if (res / k).exists()}
    assert stray_temps(res) == []


def test_report_shows_a_damaged_run_as_failed(res):
    """The report is built from what exists: a truncated run.json or predictions.npz turns that run's row
    into a failed one that says why, and every other run is reported as before."""
    (res / MLP0 / "predictions.npz").write_bytes((res / MLP0 / "predictions.npz").read_bytes()[:100])
    run = res / f"{DS}/mlp/baseline/s1/run.json"
    run.write_bytes(run.read_bytes()[:50])
    out = report(res)
    runs = out["runs"]
    bad = [p for p in out["problems"] if "unreadable" in p]
    assert any(str(run) in p for p in bad) and any(str(res / MLP0 / "run.json") in p for p in bad), out["problems"]
    ok = runs[runs["status"] == "ok"]
    assert len(ok) >= 2 and not ok["run"].isin([str(run.parent), str(res / MLP0)]).any()


def test_every_method_has_a_bad_input_case(cfg):
    """Every registered method with a run in the tiny config has a case above (the loop asserts it); the
    others are the disk-full suite's ABSENT list (no run in the tiny config)."""
    names = {c[0] for c in CASES}
    assert {m for m, _, _ in method_cases(cfg)} <= names
    assert set(absent_methods(cfg)).isdisjoint(names)
