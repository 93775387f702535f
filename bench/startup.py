"""Start-up cost of the workflow: the config check and a Snakemake dry run, before and after a change.

What is measured: the fixed cost every Snakemake start pays (locally, and again in every SLURM job,
which re-reads the Snakefile), in fresh processes, for two checkouts of this repository: "after",
the working tree, and "before", a git ref (``--before``, default ``HEAD``) checked out with
``git worktree add --detach`` into a temporary folder (the compiled extension ``reuse/_C*.so`` of the
working tree is copied into it; the worktree is removed at the end). For each config (default:
``config.yaml``, the MNIST-1D benchmark, and ``configs/cifar100.yaml``, the full CIFAR-100 one):

* ``config check``  - wall time of ``python -c "import yaml, reuse.config; ...validate_config(cfg)"``;
* ``snakemake -n``  - wall time of ``python -m snakemake -n --cores 1`` with the config: reading the
                      Snakefile, the config check, and planning the whole DAG (no job runs).

Each checkout reads its own copy of the config (the config format may change between them), with
the datasets stood in for by empty files in each kind's layout (a dry run only checks that they are
there), as in tests/workflow/test_configs.py, so no data are needed. Each measurement runs once
untimed first (it must succeed; a dry run's job count is read from it), then ``--repeats`` timed
runs, before and after alternating so that both see the same load; reported: the median seconds
and after/before. "torch" says whether the process imported torch, from one more run under
``python -X importtime``.

Usage:  python bench/startup.py [--before REF] [--repeats 5] [--configs config.yaml,configs/cifar100.yaml]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import yaml
from machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = "config.yaml,configs/cifar100.yaml"

# Empty files where a dataset of each kind must be found (tests/workflow/test_configs.py).
STAND_IN = {"mnist": ["MNIST/raw/train-images-idx3-ubyte"],
            "fashion_mnist": ["FashionMNIST/raw/train-images-idx3-ubyte"],
            "cifar10": [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)] + ["cifar-10-batches-py/test_batch"],
            "cifar100": ["cifar-100-python/train", "cifar-100-python/test"],
            "mnist1d": []}

CHECK = """
import sys, yaml
import reuse.config
assert reuse.config.__file__.startswith(sys.argv[2]), reuse.config.__file__
reuse.config.validate_config(yaml.safe_load(open(sys.argv[1])))
"""


def local_config(config: Path, folder: Path) -> Path:
    """A copy of ``config`` whose datasets' roots are stand-in files under ``folder``."""
    cfg = yaml.safe_load(config.read_text())
    for name, spec in cfg["datasets"].items():
        spec["root"] = str(folder / "data" / name)
        kind = spec["kind"]
        files = {"imagefolder": [f"{spec.get('train_dir', 'train')}/c0/0.jpg", f"{spec.get('test_dir', 'val')}/c0/0.jpg"],
                 "text": [spec.get("train_file", "train.csv"), spec.get("test_file", "test.csv")]}.get(kind)
        for f in files if files is not None else STAND_IN[kind]:
            (Path(spec["root"]) / f).parent.mkdir(parents=True, exist_ok=True)
            (Path(spec["root"]) / f).touch()
    out = folder / config.name
    out.write_text(yaml.safe_dump(cfg))
    return out


def command(what: str, tree: Path, config: Path, workdir: Path) -> list[str]:
    if what == "config check":
        return ["-c", CHECK, str(config), str(tree)]
    return ["-m", "snakemake", "-n", "--snakefile", str(tree / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(config), "--cores", "1"]


def run(args: list[str], tree: Path, workdir: Path, flags: tuple[str, ...] = ()) -> tuple[float, subprocess.CompletedProcess]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPROFILEIMPORTTIME"}
    env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")])
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, *flags, *args], capture_output=True, text=True, cwd=workdir, env=env,
                       timeout=900)
    return time.perf_counter() - t0, r


def imports_torch(importtime_stderr: str) -> bool:
    names = (line.rsplit("|", 1)[1].strip() for line in importtime_stderr.splitlines()
             if line.startswith("import time:") and line.count("|") == 2)
    return any(n.split(".")[0] == "torch" for n in names)


def job_count(dry_run_stdout: str) -> int | None:
    m = re.search(r"^total\s+(\d+)$", dry_run_stdout, re.M)
    return int(m.group(1)) if m else None


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="HEAD", help="git ref of the 'before' checkout (default HEAD)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per cell (median reported)")
    parser.add_argument("--configs", default=CONFIGS, help="comma-separated configs, relative to the repository")
    args = parser.parse_args()
    started = time.time()

    before_rev = git("rev-parse", "--short", args.before)
    dirty = bool(git("status", "--porcelain", "--untracked-files=no")) or bool(
        git("ls-files", "--others", "--exclude-standard", "reuse", "rules", "Snakefile"))
    print(f"# Start-up cost: the config check and a Snakemake dry run, before ({args.before} = {before_rev}) "
          f"and after (the working tree{', with uncommitted changes' if dirty else ''} on {git('rev-parse', '--short', 'HEAD')})")
    print(f"python {platform.python_version()} | snakemake {version('snakemake')} | torch {version('torch')} | "
          f"{platform.machine()}")
    print(f"CPU: {cpu_model()} | cores {os.cpu_count()}")
    if hasattr(os, "getloadavg"):
        print("load average at start: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"median of {args.repeats} timed runs per cell, fresh processes; before and after alternate\n")

    tmp = Path(tempfile.mkdtemp(prefix="reuse-startup-"))
    before = tmp / "checkout"
    try:
        subprocess.run(["git", "worktree", "add", "--detach", str(before), args.before], cwd=ROOT, check=True,
                       capture_output=True, text=True)
        for so in (ROOT / "reuse").glob("_C*.so"):
            shutil.copy2(so, before / "reuse" / so.name)
        trees = {"before": before, "after": ROOT}
        rows = []
        for name in args.configs.split(","):
            # each checkout reads its own copy of the config (the config format may differ between them)
            configs = {}
            for t, tree in trees.items():
                (tmp / t / Path(name).stem).mkdir(parents=True)
                configs[t] = local_config(tree / name, tmp / t / Path(name).stem)
            for what in ("config check", "snakemake -n"):
                times: dict[str, list[float]] = {t: [] for t in trees}
                torch, jobs = {}, {}
                for t, tree in trees.items():
                    wd = configs[t].parent / what.split()[0]
                    wd.mkdir()
                    _, r = run(command(what, tree, configs[t], wd), tree, wd)  # untimed: it must work
                    if r.returncode != 0:
                        raise SystemExit(f"{what} of {name} failed in the {t} checkout:\n{r.stderr[-3000:]}")
                    jobs[t] = job_count(r.stdout) if what == "snakemake -n" else None
                    _, r = run(command(what, tree, configs[t], wd), tree, wd, ("-X", "importtime"))
                    torch[t] = imports_torch(r.stderr)
                for i in range(args.repeats):
                    order = list(trees) if i % 2 == 0 else list(trees)[::-1]
                    for t in order:
                        wd = configs[t].parent / what.split()[0]
                        dt, r = run(command(what, trees[t], configs[t], wd), trees[t], wd)
                        assert r.returncode == 0, r.stderr[-3000:]
                        times[t].append(dt)
                med = {t: statistics.median(v) for t, v in times.items()}
                rows.append((what, name, med["before"], med["after"], med["after"] / med["before"],
                             torch["before"], torch["after"], jobs["before"], jobs["after"]))
                print(f"  measured {what} {name}: {med['before']:.2f} s -> {med['after']:.2f} s", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)

    yes = lambda b: "yes" if b else "no"
    print("\n| what | config | before median s | after median s | after/before | torch before | torch after | "
          "dry-run jobs before / after |")
    print("|---|---|---|---|---|---|---|---|")
    for what, name, b, a, ratio, tb, ta, jb, ja in rows:
        jobs_s = f"{jb} / {ja}" if jb is not None else "-"
        print(f"| {what} | {name} | {b:.2f} | {a:.2f} | {ratio:.2f} | {yes(tb)} | {yes(ta)} | {jobs_s} |")
    load = f"; load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}" if hasattr(os, "getloadavg") else ""
    print(f"\ntotal wall-clock {time.time() - started:.0f} s{load}")


if __name__ == "__main__":
    main()
