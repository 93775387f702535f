"""Imports: every module of ``reuse/`` imports on its own (no import cycle bites whichever module
comes first), and what every Snakemake start runs (the config check, the run list, the report's
outputs) imports no torch: starting Snakemake, locally and in every SLURM job, stays fast."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "pandas", "altair", "scipy")

# Modules that the config check and the planning of the benchmark read: importing any of them on its
# own must import none of HEAVY.
LIGHT = ["reuse", "reuse.errors", "reuse.lazy", "reuse.plan", "reuse.models", "reuse.models.catalog",
              "reuse.models.registry", "reuse.data", "reuse.data.raw", "reuse.data.sources", "reuse.data.text",
              "reuse.methods", "reuse.methods.registry", "reuse.report", "reuse.report.layout"]
LIGHT += sorted(f"reuse.methods.{p.parent.name}" for p in (ROOT / "reuse" / "methods").glob("*/__init__.py"))
LIGHT += sorted(f"reuse.methods.{p.parent.name}.spec" for p in (ROOT / "reuse" / "methods").glob("*/spec.py"))


def modules() -> list[str]:
    """Every Python module of the package (the compiled extension reuse._C aside)."""
    out = []
    for path in sorted((ROOT / "reuse").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def fresh(code: str, *argv: str) -> subprocess.CompletedProcess:
    """``code`` run by a fresh interpreter in the checkout, with ``argv`` as its arguments."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=env)


# Imports the module named by its argument, then prints the heavy packages that came with it.
IMPORT_ALONE = f"import importlib, sys; importlib.import_module(sys.argv[1]); print(*[m for m in {HEAVY} if m in sys.modules])"


def import_alone(module: str) -> tuple[str, subprocess.CompletedProcess]:
    return module, fresh(IMPORT_ALONE, module)


def test_every_module_imports_on_its_own():
    mods = modules()
    assert "reuse.models.catalog" in mods and "reuse.report.layout" in mods
    # One fresh interpreter per module; most of the time is torch's import, so run them side by side.
    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2))) as pool:
        results = dict(pool.map(import_alone, mods))
    failed = {m: r.stderr.strip().splitlines()[-1:] for m, r in results.items() if r.returncode != 0}
    assert not failed, f"modules that fail to import on their own: {failed}"
    heavy = {m: results[m].stdout.split() for m in LIGHT if m in results and results[m].stdout.split()}
    assert not heavy, f"modules of the config check that import heavy packages: {heavy}"


def test_the_config_check_and_planning_import_nothing_heavy():
    code = textwrap.dedent("""
        import sys
        import yaml
        import reuse.config
        from reuse.methods.registry import expected_runs
        cfg = yaml.safe_load(open("config.yaml"))
        reuse.config.validate_config(cfg)
        assert list(expected_runs(cfg))
        import reuse.report.layout
        assert reuse.report.layout.expected_outputs(cfg)["pages"]
        print(*[m for m in {heavy} if m in sys.modules])
    """).format(heavy=HEAVY)
    r = fresh(code)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "torch" not in r.stdout.split(), f"imported: {r.stdout.split()}"
    assert r.stdout.split() == [], f"imported: {r.stdout.split()}"


def imported(importtime_stderr: str) -> list[str]:
    """The modules of a ``python -X importtime`` run (lines ``import time: self | cumulative | name``)."""
    out = []
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":  # the header line
                out.append(name)
    return out


def test_imported_parses_importtime_lines():
    err = ("import time: self [us] | cumulative | imported package\n"
           "import time:       120 |        120 |   torch._C\nimport time:  5 |  9 | yaml\nsome other line\n")
    assert imported(err) == ["torch._C", "yaml"]


@pytest.mark.workflow
def test_a_snakemake_start_imports_no_torch(tmp_path):
    cmd = [sys.executable, "-X", "importtime", "-m", "snakemake", "-n", "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(tmp_path), "--configfile", str(ROOT / "config.yaml"), "--cores", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    names = imported(r.stderr)
    assert any(n == "reuse.config" or n.startswith("reuse.") for n in names), "the importtime lines were not found"
    torch = [n for n in names if n.split(".")[0] in ("torch", "torchvision")]
    assert not torch, f"a Snakemake start imported {torch[:10]}"


def test_a_training_job_imports_no_tables_or_statistics_packages(tmp_path):
    """A reuse method's training job imports its stage module and reads its inputs; pandas, scipy and
    altair cost 0.2-0.5 s each per job (the fork server preloads torch, not these), so only the studies and
    the report import them, where they are used. Checked here: every registered method's stage module,
    and a score table opened and looked up as the score-based methods do."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    df = pd.DataFrame({"idx": np.arange(6) % 3, "score": pd.Categorical(["el2n"] * 3 + ["loss"] * 3),
                       "epoch": np.full(6, 2), "value": np.arange(6.0)[::-1], "std": 0.0, "n_runs": 1})
    t = pa.Table.from_pandas(df, preserve_index=False)
    meta = b'{"n": 3, "scores": ["el2n", "loss"], "epochs": [2]}'
    pq.write_table(t.replace_schema_metadata({**t.schema.metadata, b"reuse": meta}), tmp_path / "scores.parquet")
    code = textwrap.dedent("""
        import importlib, sys
        import yaml
        from reuse.methods.registry import methods
        from reuse.config import validate_config
        cfg = validate_config(yaml.safe_load(open("config.yaml")))
        for m in methods(cfg):
            importlib.import_module(m.stage.split(":")[0])
        from reuse.scores import ScoreTable
        v = ScoreTable.open(sys.argv[1] + "/scores.parquet").values("loss", 2)
        assert v.tolist() == [2.0, 1.0, 0.0], v
        print(*[m for m in ("pandas", "scipy", "altair") if m in sys.modules])
    """)
    r = fresh(code, str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == [], f"imported: {r.stdout.split()}"
