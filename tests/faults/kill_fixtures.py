"""What the SIGKILL and concurrency tests (test_kill.py, test_concurrency.py) share: a reduced tiny
config, Snakemake run in its own process group, the uninterrupted reference run (built once per
session, shared by the xdist workers), and the comparison of two results folders on what is
deterministic.

The reduced config is tests/workflow/config.yaml with every method cut to its first variant and one
seed (the search to two trials of two policies, retraining to two policies, the budget curve to one
budget): every stage and every method of the tiny config still runs, in a fraction of its jobs, so a
full reference run stays cheap.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from tests.helpers import ROOT, WORKFLOW_CONFIG

DS = "tiny"


def kill_config() -> dict:
    """The tiny workflow config (raw, as a file holds it), reduced as the module docstring says."""
    from reuse.config import validate_config
    from reuse.methods.registry import methods

    raw = yaml.safe_load(WORKFLOW_CONFIG.read_text())
    cfg = copy.deepcopy(raw)
    for m in methods(validate_config(copy.deepcopy(raw))):
        if m.name not in cfg:
            continue
        block = cfg[m.name]
        if "variants" in block:
            first = next(iter(block["variants"]))
            block["variants"] = {first: block["variants"][first]}
        block["seeds"] = [0]
    cfg["search"].update(trials=2, policies={"scratch": {}, "kd_best": {"teacher": "best"}})
    cfg["retrain"]["policies"] = {"scratch": {}, "kd": {"teacher": "previous"}}
    cfg["soup"]["variants"]["greedy"]["ingredients"]["runs"] = 1  # warm has one seed now
    cfg["baseline"]["budgets"] = [0.5, 1]  # one run of the budget curve per model: its stage is killed too
    return cfg


def write_kill_config(path: Path) -> Path:
    path.write_text(yaml.safe_dump(kill_config()))
    return path


def snakemake_cmd(workdir: Path, config: Path, *args: str, cores: int = 2) -> list[str]:
    """The workflow's command line as tests.helpers.smk builds it. ``--rerun-incomplete`` is what the
    default profile (profiles/default, which Snakemake finds beside the Snakefile) sets too; it is
    spelled out so that the tests do not depend on the profile."""
    return [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(config), "--cores", str(cores), "--rerun-incomplete", *args]


def start(workdir: Path, config: Path, *args: str, env: dict | None = None, cores: int = 2,
          log: Path | None = None) -> subprocess.Popen:
    """Snakemake in a process group of its own (so it and every job it started can be killed at once),
    its output (stdout and stderr) to ``log`` (default ``workdir/snakemake.out``, appended)."""
    with open(log or workdir / "snakemake.out", "a") as out:
        return subprocess.Popen(snakemake_cmd(workdir, config, *args, cores=cores), cwd=workdir,
                                env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def run(workdir: Path, config: Path, *args: str, env: dict | None = None, cores: int = 2,
        timeout: float = 600) -> subprocess.CompletedProcess:
    """Snakemake run to its end; ``stdout``: its output (stdout and stderr)."""
    log = workdir / f"snakemake.{time.monotonic_ns()}.out"
    proc = start(workdir, config, *args, env=env, cores=cores, log=log)
    try:
        proc.wait(timeout=timeout)
    finally:
        kill_group(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, log.read_text(), "")


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc``'s whole process group (Snakemake, its rule scripts, their jobs) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def gone(pid: int, timeout: float = 15.0) -> bool:
    """Whether process ``pid`` has ended (or is a zombie) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# ----------------------------------------------------------------------------- the reference run
def build_reference(root: Path) -> Path:
    """The reduced workflow run once, uninterrupted, in ``root`` (results/ and, per job, how many
    fault points it passes: counts.tsv). Built once per session: the xdist workers share it through a
    lock in the session's common temporary folder."""
    from filelock import FileLock

    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock"):
        done = root / "done.json"
        if done.exists():
            return root
        config = write_kill_config(root / "kill.yaml")
        plan = root / "plan.json"
        plan.write_text(json.dumps({"count": str(root / "counts.tsv")}))
        r = run(root, config, env={"REUSE_FAULTS": str(plan)})
        assert r.returncode == 0, r.stdout[-4000:]
        plan.write_text("{}")
        done.write_text(json.dumps({"ok": True}))
    return root


def point_counts(reference: Path) -> dict[str, int]:
    """Fault points per job label of the reference run."""
    counts: dict[str, int] = {}
    for line in (reference / "counts.tsv").read_text().splitlines():
        job = line.split("\t")[0]
        counts[job] = counts.get(job, 0) + 1
    return counts


# ----------------------------------------------------------------------------- comparing results
def artifacts(results: Path) -> list[str]:
    """Every artifact under a results folder (relative paths): not the jobs' logs (timestamps, and a
    rerun appends to them), the search's Optuna journals included."""
    return sorted(str(p.relative_to(results)) for p in results.rglob("*")
                  if p.is_file() and (not p.name.endswith(".log") or p.parent.name == "journal")
                  and not p.name.startswith("."))



# What is left out of the comparison, and why: wall-clock times and the clock itself (a run's
# "started"/"finished", every "*time_s", "time_s" of a reused past run, "epoch_time_s", "seconds")
# differ between any two runs, killed or not. The SHA-256 of a checkpoint (run.json's
# "checkpoints", a logit cache's "source") hashes a file that holds those times, so it is left out
# too (the checkpoints' tensors are compared instead), and so is a resumable checkpoint's
# "identity", which hashes (for a run started from a past run's weights) that checkpoint's SHA-256.
# Everything else must be equal: weights, optimizer and RNG states, predictions, caches, scores,
# accuracies, FLOPs, steps, tables (a table's cells that hold JSON are compared as JSON, with the same
# keys left out). Two uninterrupted runs, with --cores 2 and --cores 4, agree on all of it.
def timing_key(key: str) -> bool:
    k = key.lower()
    return (k in ("started", "finished", "seconds", "sha256", "time", "identity") or k.endswith("time_s") or k.endswith("_time")
            or k.endswith("_seconds") or k.startswith(("time_", "datetime")) or "_time_" in k)


def same(a: Any, b: Any, where: str = "") -> list[str]:
    """The differences between two loaded values, timing keys aside (see above)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        keys = {k for k in a if not timing_key(str(k))} | {k for k in b if not timing_key(str(k))}
        for k in sorted(keys, key=str):
            if k not in a or k not in b:
                out.append(f"{where}.{k}: only in one")
            else:
                out += same(a[k], b[k], f"{where}.{k}")
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in same(x, y, f"{where}[{i}]")]
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        ok = a.dtype == b.dtype and a.shape == b.shape and (
            torch.equal(a, b) or (a.is_floating_point() and bool(((a == b) | (a.isnan() & b.isnan())).all())))
        return [] if ok else [f"{where}: tensors differ"]
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        ok = a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
        return [] if ok else [f"{where}: arrays differ"]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    return [] if type(a) is type(b) and a == b else [f"{where}: {a!r} != {b!r}"]


def _frame(path: Path) -> pd.DataFrame:
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    return df[[c for c in df.columns if not timing_key(str(c))]]


def _cell(value: Any) -> Any:
    """A table cell; one that holds a JSON list or object (e.g. a run's "reused") as its value."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def load_for_compare(path: Path) -> Any:
    """A file's deterministic content: bytes for arrays, loaded values for the rest."""
    suffix = path.suffix
    if suffix in (".npy", ".npz"):
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    if suffix == ".pt":
        return torch.load(path, map_location="cpu", weights_only=False)
    if suffix == ".json":
        return json.loads(path.read_text())
    if suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if suffix == ".log" and path.parent.name == "journal":  # a search's Optuna journal: its trials
        return _journal_trials(path)
    if suffix in (".csv", ".parquet"):
        df = _frame(path)
        rows = df.astype(object).where(df.notna(), None).values.tolist()
        return {"columns": list(df.columns), "rows": [[_cell(v) for v in row] for row in rows]}
    return path.read_bytes()


def _journal_trials(path: Path) -> list[dict]:
    """The trials an Optuna journal holds (its lines also hold a random worker id per process, and
    the clock)."""
    import optuna

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    out = []
    for summary in optuna.study.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        out += [{"study": summary.study_name, "number": t.number, "state": t.state.name, "params": t.params,
                 "values": t.values, "intermediate": t.intermediate_values, "user_attrs": t.user_attrs}
                for t in study.trials]
    return out


def differences(reference: Path, results: Path, files: list[str]) -> list[str]:
    """``files`` (relative paths) compared between two results folders: identical bytes, or else the
    same deterministic content (see above); one line per difference."""
    out = []
    for rel in files:
        a, b = reference / rel, results / rel
        if not b.exists():
            out.append(f"{rel}: missing")
            continue
        if a.read_bytes() == b.read_bytes():
            continue
        if a.suffix in (".html", ".svg", ".png", ".js"):
            continue  # report pages and figures: compared by their own test (see test_kill.py)
        out += [f"{rel}{d}" for d in same(load_for_compare(a), load_for_compare(b))]
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted reference run, built once per session and shared by xdist workers."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    return build_reference(shared / "faults_reference")
