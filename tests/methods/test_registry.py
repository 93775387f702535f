"""Every registered method against its entry in ``tests/methods/settings.py`` (Composer's
``test_algorithm_settings`` shape): its files, its minimal block, each mistake's one problem, the runs
it declares and the jobs the workflow plans for it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reuse.config import _input_problems, validate_config
from reuse.errors import ConfigError
from reuse.methods import registry
from tests.conftest import ROOT
from tests.methods.settings import SETTINGS, SHARED, config

try:
    from tests.helpers import jobs, smk
except ImportError:  # tests/helpers.py not there (yet): the same two helpers
    import re

    def smk(workdir: Path, *args: str, config: Path, timeout: int = 600) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
               str(workdir), "--configfile", str(config), "--cores", "2", "--rerun-incomplete", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=workdir)

    def jobs(dry_run_output: str) -> dict[str, int]:
        table = dry_run_output.split("Job stats:")[1].split("total")[0]
        return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def builtin_methods() -> list[registry.Method]:
    """The registered methods that ship with the package (a test may have loaded a plugin too)."""
    return [m for m in registry.methods() if type(m).__module__ in registry.BUILTIN]


BUILTIN_NAMES = [m.name for m in builtin_methods()]
METHOD_NAMES = [name for name in SETTINGS if name not in SHARED]


def mistake_params():
    for name, entry in SETTINGS.items():
        for m in entry["mistakes"]:
            marks = [pytest.mark.xfail(strict=True, reason=m.xfail)] if m.xfail else []
            yield pytest.param(name, m, id=m.id, marks=marks)


# ----------------------------------------------------------------------------- the registry and the table
def test_every_builtin_method_has_settings():
    missing = [n for n in BUILTIN_NAMES if n not in SETTINGS]
    assert not missing, f"add an entry to tests/methods/settings.py for {missing}"
    assert sorted(METHOD_NAMES) == sorted(BUILTIN_NAMES)


def test_mistake_ids_are_unique():
    ids = [m.id for entry in SETTINGS.values() for m in entry["mistakes"]]
    assert len(ids) == len(set(ids))
    for name, entry in SETTINGS.items():
        assert entry["mistakes"] and all(m.id.startswith(f"{name}-") for m in entry["mistakes"])


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_method_files(name):
    m = registry.get(name)
    assert m.title and m.card is not None and m.card.is_file(), f"{name}: no card at {m.card}"
    # the schema fragment: its blocks and $defs belong to the methods of its folder
    own = {o.name for o in registry.methods() if o.folder == m.folder}
    frag = m.schema()
    assert name in frag.get("properties", {}), f"{name}: its fragment does not define its block"
    assert set(frag.get("properties", {})) <= own
    for key in frag.get("$defs", {}):
        assert any(key.startswith(o) for o in own), f"{m.folder}/{m.schema_file}: $defs '{key}' starts with none of {own}"
    # the stage (and each study's builder) is an importable "module:function"
    assert m.stage.count(":") == 1 and callable(registry.resolve(m.stage))
    for s in m.studies:
        assert callable(registry.resolve(s.build))
    if m.rules is not None:
        assert m.rules.is_file()


# ----------------------------------------------------------------------------- the config check
@pytest.mark.parametrize("name", list(SETTINGS))
def test_minimal_block_is_valid(name):
    cfg = validate_config(config(name))
    if name not in SHARED:
        assert list(registry.get(name, cfg).variants(cfg))


@pytest.mark.parametrize("name, mistake", list(mistake_params()))
def test_mistake_gives_one_problem(name, mistake):
    with pytest.raises(ConfigError) as e:
        validate_config(config(name, mistake.blocks))
    msg = str(e.value)
    assert "has 1 problem:" in msg and f"\n  - {mistake.expected}" in msg, msg


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_text_datasets_take_no_input_changes(name):
    """A variant that changes its inputs (Method.perturbs_inputs) is a problem on a text dataset: the
    check reads the dataset's kind only, so the mnist1d config is validated, then turned into text."""
    text = SETTINGS[name].get("text")
    cfg = validate_config(config(name, text.blocks if text else None))
    assert _input_problems(cfg) == []
    cfg["datasets"]["d"]["kind"] = "text"
    problems = _input_problems(cfg)
    if text is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problems[0].startswith(text.expected), problems


# ----------------------------------------------------------------------------- the runs a block declares
def variants(name: str) -> dict[str, str]:
    """The minimal block's variants and their models: its ``variants``, or those a sequence method
    generates (``<policy>_t<k>``, ``<policy>_p<s>``), spelled out here rather than asked of the method."""
    block = SETTINGS[name]["block"][name]
    if "variants" in block:
        return {v: c["model"] for v, c in block["variants"].items()}
    if name == "transfer":
        cf = block["counterfactual"]
        names = ["subsets", "full", *(f"{kind}_k{k}" for kind in cf["kinds"] for k in cf["k"])]
        return {v: block["model"] for v in names}
    steps = [f"t{k:02d}" for k in range(block["trials"])] if name == "search" else \
        [f"p{s:02d}" for s in range(1, len(block["parts"]) + 1)]
    return {f"{p}_{s}": block["model"] for p in block["policies"] for s in steps}


def seeds(name: str, variant: str) -> list[int]:
    """The seeds of a variant's runs: the block's (or the baseline seeds); a transfer subset run's is its subset."""
    block = SETTINGS[name]["block"][name]
    if name == "transfer" and variant == "subsets":
        return list(range(block["subsets"]))
    return block.get("seeds") or config(name)["baseline"]["seeds"]


def declared(name: str) -> list[str]:
    """``d/<model>/<method>/<variant>/s<seed>`` for each variant x seed of the minimal block."""
    return sorted(f"d/{m}/{name}/{variant}/s{s}" for variant, m in variants(name).items() for s in seeds(name, variant))


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_expected_runs(name):
    cfg = validate_config(config(name))
    runs = [r for r in registry.expected_runs(cfg) if r["method"] == name]
    assert sorted(r["relpath"] for r in runs) == declared(name)
    for r in runs:
        assert r["dataset"] == "d" and r["relpath"] == f"d/{r['model']}/{name}/{r['variant']}/s{r['seed']}"
        assert r["config"] == registry.get(name, cfg).variant(cfg, r["variant"])
    baselines = [r for r in registry.expected_runs(cfg) if r["method"] == "baseline"]
    assert len(baselines) == 2 * 2  # models c and m x baseline seeds 0 and 1


# ----------------------------------------------------------------------------- the workflow's plan
def dry_run(tmp_path: Path, name: str) -> dict[str, int]:
    cfg = {**config(name), "results": "results", "device": "cpu",
           "report": {"figures": []}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = smk(tmp_path, "-n", config=path, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return jobs(r.stdout)


@pytest.mark.workflow
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_dry_run_plans_the_method(tmp_path, name):
    counts = dry_run(tmp_path, name)
    for variant in variants(name):
        assert counts.get(f"{name}__d__{variant}") == len(seeds(name, variant)), counts
    assert counts.get("summarize_method", 0) >= 1, counts
    if any(s.datasets is None for s in registry.get(name).studies):  # not one built on some datasets only
        assert counts.get("study", 0) >= 1, counts


@pytest.mark.workflow
def test_dry_run_plans_the_scores(tmp_path):
    counts = dry_run(tmp_path, "scores")
    assert counts.get("score_run") == 2 and counts.get("score_table") == 1, counts
    assert counts.get("score_agreement") == 1, counts


# ----------------------------------------------------------------------------- the plugin boundary
# The shared code that plans, checks and reports: it loops over the registry and names no method.
SHARED_CODE = ["reuse/config.py", "reuse/plan.py", "reuse/methods/registry.py", "reuse/workflow.py", "reuse/report",
               "reuse/data", "rules/common.smk", "rules/methods.smk", "rules/report.smk", "rules/scripts"]


@pytest.mark.parametrize("name", [m.name for m in registry.methods()])
def test_no_shared_file_names_the_method(name):
    """Only the method's one registry line (its module in BUILTIN) may name it."""
    r = subprocess.run(["git", "grep", "-n", "-w", "-i", name, "--", *SHARED_CODE], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode in (0, 1), r.stderr
    lines = [line for line in r.stdout.splitlines()
             if not any(line.endswith(f'"{mod}",') for mod in registry.BUILTIN)]
    assert lines == [], f"shared code names method '{name}':\n" + "\n".join(lines)


def test_a_plugin_belongs_to_the_configs_that_name_it():
    """A plugin loaded for one config (in this process) is not a method of another config: its block
    gets no default there, and a config that names it still gets it."""
    plugin = "tests.workflow.toy_method.spec"
    with_plugin = validate_config({**config("averaging"), "plugins": [plugin]})
    assert "toy" in with_plugin and "toy" in [m.name for m in registry.methods(with_plugin)]
    without = validate_config(config("averaging"))
    assert "toy" not in without and "toy" not in [m.name for m in registry.methods(without)]
    with pytest.raises(ConfigError, match="toy: unknown key"):
        validate_config({**config("averaging"), "toy": {}})
    with pytest.raises(ConfigError, match="plugins: cannot import method module 'no.such.module'"):
        validate_config({**config("averaging"), "plugins": ["no.such.module"]})
