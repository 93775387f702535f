"""Two Snakemake processes on one results folder, and more jobs than cores.

One run of the reduced tiny workflow (tests/faults/kill_fixtures.py) with ``--cores 4`` on this
2-core machine (oversubscribed: four one-thread jobs at once); while it runs, a second Snakemake is
started on the same folder with the same command. The second must refuse at once with Snakemake's
lock message and touch nothing; the first must finish unharmed, with every artifact equal to the
reference run's (made with ``--cores 2``), and the same summary.csv.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults.kill_fixtures import reference  # noqa: F401 (a fixture)
from tests.faults.kill_fixtures import artifacts, build_reference, differences, kill_group, run, start, write_kill_config

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def two_runs(reference, tmp_path_factory) -> dict:
    """The oversubscribed run (A), and the second process (B) started on its folder while A's first
    training job was running."""
    wd = tmp_path_factory.mktemp("concurrent")
    config = write_kill_config(wd / "kill.yaml")
    a = start(wd, config, cores=4, log=wd / "a.out")
    try:
        first_run = wd / "results" / "tiny"
        deadline = time.monotonic() + 300
        while (a.poll() is None and time.monotonic() < deadline
               and not list(first_run.glob("*/baseline/s*/state/last.pt"))):
            time.sleep(0.05)
        assert a.poll() is None, (wd / "a.out").read_text()[-3000:]
        b = run(wd, config, timeout=120)
        a.wait(timeout=900)
    finally:
        kill_group(a)
    return {"wd": wd, "a": a.returncode, "a_out": (wd / "a.out").read_text(), "b": b}


def test_a_second_snakemake_on_the_same_folder_refuses(two_runs, reference):
    b = two_runs["b"]
    assert b.returncode != 0
    assert "Directory cannot be locked" in b.stdout and "--unlock" in b.stdout, b.stdout[-3000:]
    assert "Traceback" not in b.stdout
    assert not any(line.startswith(("rule ", "localrule ")) for line in b.stdout.splitlines()), "B started jobs"
    # the first run was not disturbed: it finished, and its artifacts are the reference's
    assert two_runs["a"] == 0, two_runs["a_out"][-4000:]
    ref, got = reference / "results", two_runs["wd"] / "results"
    assert artifacts(got) == artifacts(ref)
    report = {f for f in artifacts(ref) if f.startswith("report/") or f.startswith("summary.")}
    assert differences(ref, got, [f for f in artifacts(ref) if f not in report]) == []


def test_oversubscribed_cores_give_the_same_summary(two_runs, reference):
    """``--cores 4`` on 2 cores: the summary table equals the ``--cores 2`` reference's, but for the
    wall-clock columns (kill_fixtures.timing_key)."""
    assert two_runs["a"] == 0, two_runs["a_out"][-4000:]
    assert "Provided cores: 4" in two_runs["a_out"]

    assert differences(reference / "results", two_runs["wd"] / "results", ["summary.csv"]) == []
