"""Tables a doc quotes have a producer: ``python -m reuse tables`` renders them from a results folder,
``--update`` rewrites a doc's blocks from their own commands and ``--check`` catches a hand edit."""

from __future__ import annotations

import subprocess
import sys

import pytest

from reuse.report import markdown as md
from tests.helpers import ROOT

DOCS = sorted([*(ROOT / "docs").glob("*.md"), *(ROOT / "reuse" / "methods").glob("*/README.md"), ROOT / "README.md"])


def test_tables_render_from_the_summary(toy):
    root, _, _ = toy
    v = md.render(["verdicts", "--results", str(root), "--axis", "time_full"])
    lines = v.splitlines()
    assert lines[0].startswith("| run | comparator |") and len(lines) == 2 + 6  # 6 method variants
    w = next(ln for ln in lines if ln.startswith("| warmstart/w (small)"))
    assert "| better |" in w and "≥ 1.33×" in w
    c = md.render(["curves", "--results", str(root)])
    assert "| small | 0.5 |" in c and "| big | 2 |" in c
    r = md.render(["recommendations", "--results", str(root), "--axis", "time_full"])
    assert "warmstart/w (small)" in r
    s = md.render(["study", "--results", str(root), "--dataset", "toy", "--name", "shared", "--where", "method=warmstart"])
    assert s.splitlines()[2] == "| warmstart | w | 0.76 |"


def test_update_writes_each_block_from_its_command_and_check_catches_a_hand_edit(toy, tmp_path):
    root, _, _ = toy
    doc = tmp_path / "doc.md"
    args = ["curves", "--results", str(root), "--axis", "flops_full"]
    doc.write_text("# Figures\n\nText.\n\n" + md.block(args, "| stale |") + "\n\nMore text.\n")
    assert md.update(doc) == 1
    text = doc.read_text()
    assert md.render(args) in text and "| stale |" not in text and text.endswith("More text.\n")
    assert md.check(doc) == []
    doc.write_text(text.replace("| small | 0.5 |", "| small | 0.50 |"))
    assert "edited by hand" in md.check(doc)[0]
    doc.write_text(text.replace("curves --results", "nonsense --results"))
    assert "not a valid command" in md.check(doc)[0]


def test_the_cli(toy, tmp_path):
    root, _, _ = toy
    r = subprocess.run([sys.executable, "-m", "reuse", "tables", "verdicts", "--results", str(root)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("| run |"), r.stderr
    r = subprocess.run([sys.executable, "-m", "reuse", "tables", "curves", "--results", str(tmp_path / "none")],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 1 and "summary.parquet does not exist" in r.stderr


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_table_block_in_the_docs_is_what_its_command_wrote(doc):
    assert md.check(doc) == []
