"""Start-up of a rule job: in a process of its own versus forked from the fork server (reuse.zygote).

What is measured: the wall time of one short rule-like job, started as Snakemake starts a script
job, from outside (``subprocess.run``): a fresh ``python`` that unpickles a Snakemake object (as
Snakemake's script preamble does) and calls ``reuse.zygote.run(snakemake, "zygote:job")``, whose
job (:func:`job`, this file) imports ``reuse.workflow`` and runs one trivial torch op. Two ways,
alternating run by run so that machine noise hits both alike:

* ``own``     ``REUSE_ZYGOTE=0``: the job runs in the client process, which imports torch and the
              project itself (how every job ran before the fork server);
* ``server``  through a fork server that is already running, forked per job.

An untimed first run through the server starts it; its time is reported as ``cold`` (a server's
start plus the job: what the first job of a run pays, and every job under SLURM, where each job
gets a server of its own). The server lives in a temporary socket folder and is stopped at the end.
Reported: the median seconds of ``--repeats`` runs of each, and own/server.

Usage:  python bench/zygote.py [--repeats 8]
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent

# What Snakemake writes before a rule script's own lines (pickle.loads of the job's object), then the
# rule script of this project.
CLIENT = """import pickle, sys
snakemake = pickle.loads(bytes.fromhex(sys.argv[1]))
from reuse.zygote import run
run(snakemake, "zygote:job")
"""


def job(snakemake) -> None:
    """The job: what every stage does first (import the project and torch), and one torch op."""
    import torch

    import reuse.workflow  # noqa: F401

    torch.set_num_threads(max(1, int(snakemake.threads)))
    assert torch.ones(8).add(1).sum().item() == 16.0


def snakemake_object() -> bytes:
    """A small Snakemake object, pickled as Snakemake pickles it into a script's preamble."""
    from snakemake.iocontainers import InputFiles, Log, OutputFiles, Params, ResourceList, Snakemake, Wildcards

    sm = Snakemake(InputFiles(["results/tiny/data/data.npz"]), OutputFiles(["results/tiny/out.json"]),
                   Params(fromdict={"seed": 0, "device": "cpu"}), Wildcards(fromdict={"seed": "0"}), 1,
                   ResourceList(), Log([]), {"results": "results"}, "bench_zygote", None)
    return pickle.dumps(sm, protocol=4)


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"the job failed (exit status {r.returncode}):\n{r.stderr[-3000:]}")
    return dt


def stop_servers(socket_dir: Path) -> None:
    for pid_file in socket_dir.glob("*.pid"):
        try:
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        except (OSError, ValueError):
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=8, help="timed runs of each way (median reported)")
    args = parser.parse_args()
    started = time.time()
    print("# Rule job start-up: own process vs forked from the fork server (reuse.zygote)")
    print(f"python {platform.python_version()} | snakemake {version('snakemake')} | torch {version('torch')} | "
          f"{platform.machine()}")
    print(f"CPU: {cpu_model()} | cores {os.cpu_count()}")
    print("load average at start: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"median of {args.repeats} timed runs of each way, alternating; fresh client processes\n")

    tmp = Path(tempfile.mkdtemp(prefix="rzb", dir="/tmp"))  # short: Unix socket paths are limited
    client = tmp / "client.py"
    client.write_text(CLIENT)
    cmd = [sys.executable, str(client), snakemake_object().hex()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "REUSE_ZYGOTE_DIR": str(tmp / "s"), "REUSE_ZYGOTE_IDLE_S": "600"}
    ways = {"own": {**env, "REUSE_ZYGOTE": "0"}, "server": {**env, "REUSE_ZYGOTE": "1"}}
    try:
        cold = timed(cmd, ways["server"], tmp)
        if not list((tmp / "s").glob("*.pid")):
            raise SystemExit(f"no fork server started; see {tmp / 's'}")
        times: dict[str, list[float]] = {w: [] for w in ways}
        for i in range(args.repeats):
            for w in (ways if i % 2 == 0 else reversed(list(ways))):
                times[w].append(timed(cmd, ways[w], tmp))
    finally:
        stop_servers(tmp / "s")
        time.sleep(0.5)
        shutil.rmtree(tmp, ignore_errors=True)

    med = {w: statistics.median(v) for w, v in times.items()}
    print("| way | median s | min s | max s |")
    print("|---|---|---|---|")
    for w, v in times.items():
        print(f"| {w} | {med[w]:.3f} | {min(v):.3f} | {max(v):.3f} |")
    print(f"| cold (server start + job, once) | {cold:.3f} | | |")
    print(f"\nown/server: {med['own'] / med['server']:.1f}x; saved per job: {med['own'] - med['server']:.2f} s")
    print(f"total wall-clock {time.time() - started:.0f} s; load average at end: "
          + ", ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
