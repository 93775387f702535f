"""Where the default benchmark's wall-clock goes: each job's fixed start-up against its own training.

What is measured: one run of the workflow (default: the whole default benchmark, ``config.yaml``)
from nothing, with ``snakemake --cores N`` into a fresh results folder, every job recording its
times (``REUSE_JOB_TIMES``, written by ``reuse.zygote.run``, which every rule script calls):

* ``start``    from the rule script's process start to the job being handed on: the interpreter,
               Snakemake's script preamble and the fork server's hand-over (or the job's own
               imports where it runs in its own process);
* ``job``      the rest of the job's wall-clock, split for runs that train (a ``run.json`` among
               the job's outputs) into ``train`` (the epochs' training steps, ``train_time_s``),
               ``eval`` (the test evaluations, ``eval_time_s``) and ``other`` (data, model, caches,
               files);

printed per job kind (the rule, or its family for per-dataset/model rules) as totals and medians.
Then the whole run: its wall-clock; the jobs' summed wall-clock / cores ("busy"), so that
``wall - busy`` is what the jobs did not fill (Snakemake's scheduling and bookkeeping between jobs,
and idle cores where the DAG allows fewer jobs than cores); and the floor, the summed training time
/ cores, with wall / floor. ``--times FILE`` analyses the job times of an earlier run instead of
running (with ``--wall S`` its wall-clock). ``--same-as DIR``: compare this run's ``summary.csv`` with
the one in results folder DIR (an earlier run, e.g. before a change), run by run: accuracies, losses
and FLOP counts must be identical (wall-clock times, of course, are not compared).

Usage:  python bench/workflow.py [--cores 2] [--configfile config.yaml] [--keep DIR] [snakemake targets...]
        python bench/workflow.py --times DIR/job_times.jsonl [--wall S] [--cores 2] [--same-as OLD/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from importlib.metadata import version
from pathlib import Path

from machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]


def kind_of(rule: str) -> str:
    """The job kind: per-(dataset, model) rules (``train_baseline__mnist1d__mlp``) by their family."""
    return rule.split("__")[0]


def run_dir(job: dict) -> Path | None:
    """The run folder of a job that trained (an output of it is a run.json), else None."""
    d = job.get("run")
    return Path(d) if d and (Path(d) / "metrics.jsonl").is_file() else None


def training_times(d: Path) -> tuple[float, float]:
    """``train_time_s`` and ``eval_time_s`` of a finished run (its last metrics row)."""
    last = None
    with open(d / "metrics.jsonl") as f:
        for line in f:
            if line.strip():
                last = line
    row = json.loads(last) if last else {}
    return float(row.get("train_time_s") or 0.0), float(row.get("eval_time_s") or 0.0)


def analyse(times: Path, wall: float | None, cores: int, root: Path) -> None:
    jobs = [json.loads(x) for x in times.read_text().splitlines() if x.strip()]
    if not jobs:
        sys.exit(f"workflow bench: {times} records no job")
    cwd = Path.cwd()
    os.chdir(root)  # the recorded paths are relative to the workflow's folder
    try:
        rows = []
        for j in jobs:
            total = j["ended"] - (j["started"] or j["called"])
            start = j["called"] - (j["started"] or j["called"])
            d = run_dir(j)
            train, ev = training_times(d) if d is not None else (0.0, 0.0)
            rows.append({"kind": kind_of(j["rule"]), "total": total, "start": start, "train": train,
                         "eval": ev, "other": total - start - train - ev, "trains": d is not None,
                         "ok": j["status"] == ["exit", 0]})
    finally:
        os.chdir(cwd)
    by = defaultdict(list)
    for r in rows:
        by[r["kind"]].append(r)
    cols = ("total", "start", "train", "eval", "other")
    print(f"{'job kind':<26}{'jobs':>6}" + "".join(f"{c + ' s':>10}" for c in cols) + "   median job: "
          + " ".join(f"{c}" for c in ("total", "start", "train")))
    for kind, rs in sorted(by.items(), key=lambda kv: -sum(r["total"] for r in kv[1])):
        sums = [sum(r[c] for r in rs) for c in cols]
        med = [statistics.median(r[c] for r in rs) for c in ("total", "start", "train")]
        print(f"{kind:<26}{len(rs):>6}" + "".join(f"{s:>10.1f}" for s in sums) + "   "
              + " ".join(f"{m:.2f}" for m in med))
    sums = {c: sum(r[c] for r in rows) for c in cols}
    print(f"{'all':<26}{len(rows):>6}" + "".join(f"{sums[c]:>10.1f}" for c in cols))
    failed = sum(not r["ok"] for r in rows)
    first = min(j["started"] or j["called"] for j in jobs)
    last = max(j["ended"] for j in jobs)
    busy = sums["total"] / cores
    floor = sums["train"] / cores
    print()
    print(f"jobs: {len(rows)} ({sum(r['trains'] for r in rows)} trained a model, {failed} failed)")
    if wall is not None:
        print(f"wall-clock of the whole run:            {wall:8.1f} s")
    print(f"first job start to last job end:        {last - first:8.1f} s")
    print(f"busy (jobs' summed wall-clock / {cores}):     {busy:8.1f} s  (start-up {sums['start'] / cores:.1f} s)")
    print(f"floor (summed training time / {cores}):       {floor:8.1f} s  (with the test evaluations "
          f"{(sums['train'] + sums['eval']) / cores:.1f} s)")
    if wall is not None and floor > 0:
        print(f"wall / floor: {wall / floor:.2f}   busy / wall: {busy / wall:.2f}")


# summary.csv columns that a change of speed must leave as they were, run by run
SAME = ("test_acc", "best_test_acc", "test_nll", "test_ece", "robust_acc", "epochs", "steps", "examples_seen",
        "train_flops", "eval_flops", "reused_flops", "cost_flops_full")
KEY = ("row", "dataset", "model", "method", "variant", "seed")


def compare(new: Path, old: Path) -> bool:
    """Print whether ``new/summary.csv`` has the same rows and values as ``old/summary.csv``."""
    import pandas as pd

    a, b = (pd.read_csv(d / "summary.csv", low_memory=False) for d in (old, new))
    key = [k for k in KEY if k in a and k in b]
    label = lambda d: d[key].astype(object).where(d[key].notna(), "").astype(str).agg("/".join, axis=1)
    a, b = a.set_index(label(a)).sort_index(), b.set_index(label(b)).sort_index()
    only = sorted(set(a.index) ^ set(b.index))
    cols = [c for c in SAME if c in a and c in b]
    both = a.index.intersection(b.index)
    x, y = a.loc[both, cols], b.loc[both, cols]
    differ = ~((x == y) | (x.isna() & y.isna())).all(axis=1)
    print(f"same as {old}: {len(both) - int(differ.sum())} of {len(both)} rows identical in {', '.join(cols)}; "
          f"{len(only)} rows in one table only")
    for label_ in list(differ[differ].index)[:10]:
        print(f"  differs: {label_}")
    for label_ in only[:10]:
        print(f"  only in {'the new' if label_ in b.index else 'the old'} table: {label_}")
    return not only and not differ.any()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--configfile", default=None, help="a config to run instead of config.yaml")
    ap.add_argument("--keep", type=Path, default=None, help="run into this folder and keep it (default: a temporary one)")
    ap.add_argument("--times", type=Path, default=None, help="analyse this job_times.jsonl instead of running")
    ap.add_argument("--wall", type=float, default=None, help="with --times: the run's wall-clock in seconds")
    ap.add_argument("--same-as", type=Path, default=None,
                    help="an earlier run's results folder: its summary.csv must match this run's")
    ap.add_argument("targets", nargs="*", help="Snakemake targets (default: the whole benchmark)")
    a = ap.parse_args()
    import torch

    print(f"# bench/workflow.py  {time.strftime('%Y-%m-%d %H:%M')}  {cpu_model()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, torch {torch.__version__}, snakemake {version('snakemake')}")
    if a.times is not None:
        print(f"# job times of an earlier run: {a.times}")
        analyse(a.times, a.wall, a.cores, ROOT)
        if a.same_as is not None and not compare(a.times.parent / "results", a.same_as):
            sys.exit(1)
        return
    out = a.keep or Path(tempfile.mkdtemp(prefix="reuse-bench-workflow-"))
    out.mkdir(parents=True, exist_ok=True)
    times = out / "job_times.jsonl"
    times.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(a.cores), "--config", f"results={out / 'results'}"]
    if a.configfile:
        cmd += ["--configfile", a.configfile]
    cmd += a.targets
    print(f"# {' '.join(cmd[1:])}  (results in {out}, Snakemake's output in {out / 'snakemake.log'})")
    env = dict(os.environ, REUSE_JOB_TIMES=str(times))
    t0 = time.perf_counter()
    with open(out / "snakemake.log", "w") as log:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    if rc != 0:
        sys.exit(f"workflow bench: snakemake failed (exit {rc}); see {out / 'snakemake.log'}")
    analyse(times, wall, a.cores, ROOT)
    same = compare(out / "results", a.same_as) if a.same_as is not None else True
    if a.keep is None:
        shutil.rmtree(out)
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
