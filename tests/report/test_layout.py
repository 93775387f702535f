"""The report's light layer: its outputs named from the config alone, and method cards by registry."""

from __future__ import annotations

import subprocess
import sys

import yaml

from reuse.config import validate_config
from reuse.methods import registry
from reuse.report import layout
from reuse.report.build import method_card
from tests.helpers import ROOT


def test_the_old_names_stay_importable():
    from reuse.report import AXES, expected_outputs
    from reuse.report.build import FIGURE_KINDS, figure_name, method_page, scores_page
    from reuse.report.build import expected_outputs as build_expected_outputs
    from reuse.report.collect import AXES as collect_axes

    assert AXES is collect_axes is layout.AXES and expected_outputs is build_expected_outputs is layout.expected_outputs
    assert (FIGURE_KINDS, figure_name, method_page, scores_page) == (
        layout.FIGURE_KINDS, layout.figure_name, layout.method_page, layout.scores_page)


def test_build_and_collect_stay_the_functions_whatever_was_imported_first():
    # reuse.report.build and .collect are modules and the functions they define; the package's names
    # are the functions, also after the modules were imported first
    code = ("import reuse.report.build, reuse.report.collect, inspect; import reuse.report as r; "
            "from reuse.report import build, collect; "
            "assert inspect.isfunction(build) and inspect.isfunction(collect) and r.build is build, (build, collect); "
            "from reuse.report.build import Options; assert Options is r.Options")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr


def test_expected_outputs_name_every_method_page_and_figure():
    cfg = validate_config(yaml.safe_load((ROOT / "config.yaml").read_text()))
    out = layout.expected_outputs(cfg)
    methods = {e["method"] for e in registry.expected_runs(cfg)}
    assert {f"report/{layout.method_page(m)}" for m in methods} <= set(out["pages"])
    with_runs = {e["dataset"] for e in registry.expected_runs(cfg)}  # not a transfer target, which has none
    assert len(out["figures"]["frontier"]) == len(layout.figure_formats(cfg)) * len(layout.AXES) * len(with_runs)


def test_method_cards_come_from_the_registry():
    kd = registry.get("kd")
    assert method_card("kd", None) == kd.card and kd.card.name == "README.md" and kd.card.exists()
    assert method_card("baseline", None) is None
    assert method_card("no_such_method", None) is None  # found in results, not registered: no card
