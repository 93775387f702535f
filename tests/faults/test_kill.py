"""SIGKILL at every stage of the workflow, then the documented recovery: the run finishes and every
output equals the uninterrupted run's.

Each stage's job is held by the fault hook (reuse/faults.py) at a seeded random point of its own
(its start, an artifact written but not yet renamed into place, or a training step), and the whole
run (Snakemake, the rule scripts, the jobs) is then killed with SIGKILL, as a lost machine or the
OOM killer would. Recovery is what docs/usage.md says: ``snakemake --unlock`` (a killed Snakemake
leaves its lock behind), then the same command again (the profile's ``rerun-incomplete`` redoes the
jobs it had started). The kills are chained in one results folder to keep the file quick: the run
that kills stage i (``--until`` its rule) also recovers what the kill before it left, and a last
full run recovers everything; then every artifact is compared with the reference run (which ran
with no fault, tests/faults/kill_fixtures.py says how, and what is left out of the comparison).

The report is killed apart, on a copy of the reference's finished results, so that its pages and
figures can be compared byte for byte with the reference's (in the chain, its inputs hold other
wall-clock times than the reference's, which its pages and time axes show).
"""

from __future__ import annotations

import json
import random
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.faults.kill_fixtures import reference  # noqa: F401 (a fixture)
from tests.faults.kill_fixtures import (DS, artifacts, build_reference, cmdline, differences, gone, kill_group, point_counts, run,
                                        start, write_kill_config)

pytestmark = pytest.mark.workflow
SEED = 17  # the kill points' seed (issue 17)

# The shared stages (the chain kills them in the order the reference run started the chosen jobs: a
# job never starts before its inputs' jobs, so no stage's job is an input of an earlier stage's job
# and none has run yet when its turn to be killed comes).
SHARED = ["prepare_data", "train_baseline", "logit_cache", "summarize_baselines", "score_run", "score_table",
          "score_agreement"]
LATE = ["summarize_method", "study"]
REPORT = "report"
TRAINING = "train"  # a label whose job trains a run (resumes from state/last.pt)


def method_rules(cfg: dict) -> list[str]:
    """The rules the registered methods add in their own rules.smk (e.g. the adversarial cache)."""
    from reuse.methods.registry import methods

    names = []
    for path in dict.fromkeys(m.rules for m in methods(cfg) if m.rules is not None):
        names += re.findall(r"^rule (\w+):", Path(path).read_text(), re.M)
    return names


def stages(cfg: dict) -> list[str]:
    """Every stage kind the workflow of ``cfg`` runs: the registry's methods (plugins
    included) each count as one, so a new method is never silently skipped. The built-in methods
    that the tiny config declares no variant of (bias, transfer, interleave) run no job here; their
    exact resume after SIGKILL is tested in tests/methods."""
    from reuse.methods.registry import methods

    declared = [m.name for m in methods(cfg) if any(ds == DS for ds, _ in m.variants(cfg))]
    return SHARED + method_rules(cfg) + declared + LATE


def kind(rule: str, kinds: list[str]) -> str | None:
    """The stage kind of a rule: its own name, or the prefix of a per-(dataset, model/variant) rule."""
    if rule in kinds:
        return rule
    return next((k for k in kinds if rule.startswith(f"{k}__")), None)


def pick_jobs(counts: dict[str, int], kinds: list[str]) -> dict[str, str]:
    """Per stage kind, the job of the reference run to kill (the first label in sorted order: seed 0,
    the first variant), in the order the reference run started them (``counts`` is in that order)."""
    out = {}
    for label in sorted(counts):
        k = kind(label.split()[0], kinds)
        if k is not None and k not in out:
            out[k] = label
    started = list(counts)
    return dict(sorted(out.items(), key=lambda kv: started.index(kv[1])))


def run_dir(cfg: dict, label: str) -> Path | None:
    """The run folder (under the results folder) a training job's label trains, else None."""
    from reuse.methods.registry import get
    from reuse.plan import run_path

    rule, *wild = label.split()
    wc = dict(w.split("=", 1) for w in wild)
    parts = rule.split("__")
    if len(parts) != 3 or "seed" not in wc:
        return None
    name, ds, what = parts
    if name == "train_baseline":
        return Path(run_path(ds, what, seed=int(wc["seed"])))
    if name == "logit_cache":
        return None
    return Path(get(name, cfg).run_dir(cfg, ds, what, int(wc["seed"])))


@pytest.fixture(scope="module")
def kill_cfg(reference) -> dict:
    import yaml

    from reuse.config import validate_config

    return validate_config(yaml.safe_load((reference / "kill.yaml").read_text()))


def kill_once(workdir: Path, config: Path, plan: Path, env: dict, label: str, k: int, *until: str) -> dict:
    """Run Snakemake (``--until`` the given rules) with job ``label`` held at its ``k``-th fault point,
    SIGKILL the whole run there; returns the hook's mark (pid, ppid, job, point, k) and what was
    seen at the kill."""
    mark = workdir / "mark.json"
    mark.unlink(missing_ok=True)
    plan.write_text(json.dumps({"job": label, "at": k, "mark": str(mark)}))
    proc = start(workdir, config, *(("--until", *until) if until else ()), env=env)
    try:
        deadline = time.monotonic() + 400
        while not mark.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        held = json.loads(mark.read_text()) if mark.exists() else None
        server_alive = None
        if held is not None:
            kill_group(proc)
            held["job_gone"] = gone(held["pid"])
            held["zygote"] = "reuse.zygote serve" in cmdline(held["ppid"])
            server_alive = held["zygote"] and not gone(held["ppid"], timeout=0)
        else:
            kill_group(proc)
    finally:
        plan.write_text("{}")
    if held is None:
        log = (workdir / "snakemake.out").read_text()[-3000:]
        raise AssertionError(f"{label} never reached fault point {k} (exit status {proc.returncode}): {log}")
    held["server_alive"] = server_alive
    return held


def check_kill(label: str, k: int, held: dict) -> list[str]:
    problems = []
    if held["job"] != label or held["k"] != k:
        problems.append(f"{label}: held the wrong job or point: {held}")
    if not held["job_gone"]:
        problems.append(f"{label}: its job (pid {held['pid']}) outlived the killed run")
    if held["zygote"] and not held["server_alive"]:
        problems.append(f"{label}: the fork server (pid {held['ppid']}) died with the run")
    return problems


def test_every_rule_is_a_stage(reference, kill_cfg):
    """Every rule that ran in the reference run belongs to a stage the kill test kills, and every
    stage ran: a new rule or method cannot slip past the test."""
    kinds = stages(kill_cfg) + [REPORT]
    rules = {label.split()[0] for label in point_counts(reference)}
    assert {r for r in rules if kind(r, kinds) is None} == set()
    assert set(kinds) == {kind(r, kinds) for r in rules}


def test_sigkill_at_every_stage_then_recovery(reference, kill_cfg, tmp_path):
    counts = point_counts(reference)
    kinds = stages(kill_cfg)
    jobs = pick_jobs(counts, kinds)
    assert set(jobs) == set(kinds), f"stages with no job in the reference run: {set(kinds) - set(jobs)}"
    config = write_kill_config(tmp_path / "kill.yaml")
    plan = tmp_path / "plan.json"
    plan.write_text("{}")
    env = {"REUSE_FAULTS": str(plan)}
    problems, resumed_expected, seen = [], {}, []
    for stage, label in jobs.items():
        k = random.Random(f"{SEED}:{label}").randint(1, counts[label])
        held = kill_once(tmp_path, config, plan, env, label, k, label.split()[0])
        seen.append((stage, held["point"], k, counts[label], "zygote" if held["zygote"] else "own process"))
        problems += check_kill(label, k, held)
        rd = run_dir(kill_cfg, label)
        if rd is not None and (tmp_path / "results" / rd / "state" / "last.pt").exists():
            resumed_expected[label] = tmp_path / "results" / rd / "train.log"
        # the documented recovery: unlock (the killed run's lock is left), then run again
        unlock = run(tmp_path, config, "--unlock", env=env)
        assert unlock.returncode == 0, unlock.stdout[-3000:]
    final = run(tmp_path, config, env=env)
    assert final.returncode == 0, final.stdout[-4000:]
    assert "Nothing to be done" in run(tmp_path, config, "-n", env=env).stdout
    # a kill after a checkpoint resumes from it (the log says so) rather than training again
    for label, log in resumed_expected.items():
        if not re.search(r"resumed from \S+last\.pt at epoch \d+", log.read_text()):
            problems.append(f"{label}: killed with state/last.pt in place, but the rerun did not resume from it")
    ref, got = reference / "results", tmp_path / "results"
    report_files = {str(p.relative_to(ref)) for p in (ref / "report").rglob("*")} | {"summary.csv", "summary.parquet"}
    files = [f for f in artifacts(ref) if f not in report_files]
    assert artifacts(got) == artifacts(ref), "the recovered results hold other files than the reference"
    # nor is anything of the killed writes left (reuse.workflow.remove_stale_temps)
    assert sorted(str(p.relative_to(got)) for p in got.rglob(".*.tmp*")) == []
    problems += differences(ref, got, files)
    assert not problems, "\n".join(problems) + f"\nkills: {seen}"
    # every kind of point was hit somewhere: a start, a write before its rename, a training step
    assert {s[1] for s in seen} == {"start", "write", "step"}, seen


def test_sigkill_in_the_report_then_recovery(reference, tmp_path):
    """The report killed at a seeded point on a copy of the reference's finished results: after
    the recovery its tables, pages and figures are byte for byte the reference's."""
    ref = reference / "results"
    shutil.copytree(ref, tmp_path / "results", copy_function=shutil.copy2)  # times kept: nothing else reruns
    shutil.rmtree(tmp_path / "results" / "report")
    for name in ("summary.csv", "summary.parquet"):
        (tmp_path / "results" / name).unlink()
    config = write_kill_config(tmp_path / "kill.yaml")
    plan = tmp_path / "plan.json"
    env = {"REUSE_FAULTS": str(plan)}
    counts = point_counts(reference)
    k = random.Random(f"{SEED}:{REPORT}").randint(1, counts[REPORT])
    held = kill_once(tmp_path, config, plan, env, REPORT, k)
    assert not check_kill(REPORT, k, held)
    assert run(tmp_path, config, "--unlock", env=env).returncode == 0
    r = run(tmp_path, config, env=env)
    assert r.returncode == 0, r.stdout[-4000:]
    assert re.findall(r"^localrule (\w+):", r.stdout, re.M) in (["report", "all"], ["report"]), r.stdout[-3000:]
    files = sorted({str(p.relative_to(ref)) for p in (ref / "report").rglob("*") if p.is_file()}
                   | {"summary.csv", "summary.parquet"})
    got = tmp_path / "results"
    assert sorted(str(p.relative_to(got)) for p in (got / "report").rglob("*") if p.is_file()) == \
        [f for f in files if f.startswith("report/")]
    different = [f for f in files if (ref / f).read_bytes() != (got / f).read_bytes()]
    assert different == [], different


# ----------------------------------------------------------------------------- the hook itself
def test_fault_hook_counts_only_when_armed(tmp_path, monkeypatch):
    from reuse import faults

    counts = tmp_path / "counts.tsv"
    plan = tmp_path / "plan.json"
    try:
        monkeypatch.delenv(faults.ENV, raising=False)
        faults.arm("a x=1")
        faults.point("write")
        plan.write_text(json.dumps({"job": "other", "at": 1, "mark": str(tmp_path / "mark.json")}))
        monkeypatch.setenv(faults.ENV, str(plan))
        faults.arm("a x=1")  # a plan for another job: inert
        faults.point("write")
        assert not counts.exists() and not (tmp_path / "mark.json").exists()
        plan.write_text(json.dumps({"count": str(counts)}))
        faults.arm(faults.label("a", {"x": 1}))
        faults.point("step")
        assert [line.split("\t")[:2] for line in counts.read_text().splitlines()] == [["a x=1", "start"],
                                                                                    ["a x=1", "step"]]
    finally:
        monkeypatch.delenv(faults.ENV, raising=False)
        faults.arm("")  # disarmed again


def test_fault_hook_holds_its_job_at_the_chosen_point(tmp_path):
    """The job stops at its k-th point (marked), and ends as a killed job would if nobody kills it."""
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT

    plan, mark = tmp_path / "plan.json", tmp_path / "mark.json"
    plan.write_text(json.dumps({"job": "j", "at": 3, "mark": str(mark), "hold_s": 0.1}))
    code = "from reuse import faults\nfaults.arm('j')\nfaults.point('write')\nfaults.point('step')\nprint('passed')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "REUSE_FAULTS": str(plan)})
    assert r.returncode == 137 and "passed" not in r.stdout, r.stdout + r.stderr
    held = json.loads(mark.read_text())
    assert (held["job"], held["point"], held["k"]) == ("j", "step", 3)
