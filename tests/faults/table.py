"""The fault table of docs/reliability.md, built from the fault tests themselves.

Rows are the workflow's artifact-producing stages (every registered method's training among them);
columns the three faults of issue 17 (SIGKILL then rerun, the disk full mid-write, a bad input
artifact). Each cell names the tests that assert its outcome: the parametrised cases are read from
the test modules' own case lists (``CASES``), so a case added or removed there changes the table, and
``tests/faults/test_fault_table.py`` fails until the document is rebuilt::

    python -m tests.faults.table --write     # rewrites the table in docs/reliability.md

A test named by hand (a module and function) is checked to exist by the same test.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reliability.md"
START, END = "<!-- fault-table:start (python -m tests.faults.table --write) -->", "<!-- fault-table:end -->"

KILL = "tests/faults/test_kill.py::test_sigkill_at_every_stage_then_recovery"
DISK = "tests/faults/test_disk_full.py::test_disk_full_leaves_results_intact"
BAD = "tests/faults/test_bad_inputs.py::test_bad_input_is_one_clear_error"
OTHER = "tests/faults/test_other_methods.py"

# The stages, in workflow order: (row label, names the stage has in the kill test's stage list, in the
# disk-full and bad-input case lists)
SHARED = [
    ("prepare data", ["prepare_data"], "prepare_data"),
    ("baseline training", ["train_baseline"], "baseline"),
    ("logit cache", ["logit_cache"], "logit_cache"),
    ("per-run scores", ["score_run"], "score_run"),
    ("score table", ["score_table"], "score_table"),
    ("score agreement", ["score_agreement"], "score_agreement"),
    ("adversarial cache", ["adv_cache"], "adv_cache"),
    ("robust evaluation", ["robust_eval"], "robust_eval"),
]
LATE = [
    ("run tables", ["summarize_baselines", "summarize_method"], "summarize"),
    ("study tables", ["study"], "study"),
]

# Cells the case lists do not make: a test named by hand, and what it asserts.
BY_HAND = {
    ("prepare data", "bad"): [
        ("tests/data/test_sources.py::test_cifar_garbage_file_is_a_clear_error", "a CIFAR batch that is no pickle"),
        ("tests/data/test_sources.py::test_cifar_missing_batch_names_the_file", "a missing batch"),
        ("tests/security/test_hostile_files.py", "a CIFAR batch or npz holding a code payload"),
        ("tests/data/test_text.py::test_bad_and_empty_files", "text: cut-short, empty, unreadable files"),
        ("tests/data/test_tabular.py::test_empty_files", "tables: empty files"),
        ("tests/data/test_tabular.py::test_non_numeric_value_in_numeric_column", "tables: a bad value"),
    ],
    ("report", "kill"): [("tests/faults/test_kill.py::test_sigkill_in_the_report_then_recovery",
                          "killed on finished results; pages and figures byte for byte the same")],
    ("report", "bad"): [("tests/faults/test_bad_inputs.py::test_report_shows_a_damaged_run_as_failed",
                         "a damaged run is shown as failed, with why; the rest is reported")],
    ("method: transfer", "kill"): [("tests/methods/test_transfer.py::test_a_run_resumes_after_sigkill_without_redoing_work",
                                    "resumes without redoing work")],
    ("method: interleave", "kill"): [("tests/methods/test_interleave.py::test_a_run_resumes_after_sigkill", "")],
}
# The load and cluster faults: (fault, outcome, test)
WORKFLOW = [
    ("two `snakemake` processes on one results folder", "the second refuses; the first finishes unharmed",
     "tests/faults/test_concurrency.py::test_a_second_snakemake_on_the_same_folder_refuses"),
    ("`--cores 4` on 2 cores (oversubscribed)", "the same summary as `--cores 2`",
     "tests/faults/test_concurrency.py::test_oversubscribed_cores_give_the_same_summary"),
    ("disk full in a job under Snakemake, then room again", "one clear error, no traceback; the rerun finishes from the saved state",
     "tests/faults/test_disk_full.py::test_disk_full_through_snakemake_then_rerun"),
    ("disk full while a checkpoint is copied (no hard links)", "no half checkpoint",
     "tests/faults/test_disk_full.py::test_disk_full_while_copying_a_checkpoint"),
    ("a SLURM job requeued mid-training", "resumes from its last checkpoint",
     "tests/workflow/test_cluster.py::test_requeued_training_resumes_from_its_last_checkpoint"),
    ("an S3 upload that fails once", "retried; the object is whole",
     "tests/workflow/test_s3_faults.py::test_s3_upload_that_fails_once_is_retried"),
    ("an S3 upload that keeps failing", "the job fails, its outputs are removed, the next run uploads",
     "tests/workflow/test_s3_faults.py::test_s3_upload_that_always_fails_fails_the_job_and_the_next_run_uploads"),
    ("a multipart S3 upload that fails", "retried; no partial object is left",
     "tests/workflow/test_s3_faults.py::test_s3_plugin_multipart_upload_retries_and_leaves_nothing_partial"),
    ("`--profile aws`: the upload keeps failing", "the job is retried",
     "tests/workflow/test_s3_faults.py::test_aws_profile_retries_the_job_when_the_upload_keeps_failing"),
]


def _code(s: str) -> str:
    return f"`{s}`"


def _disk_cell(cases: list[str]) -> str:
    return ", ".join(_code(a) for a in cases) + f" ({len(cases)} case{'s' * (len(cases) != 1)})"


def _bad_cell(cases: list[tuple[str, str]]) -> str:
    by_art: dict[str, list[str]] = defaultdict(list)
    for art, fault in cases:
        by_art[art].append(fault.replace("_", " "))
    n = len(cases)
    return "; ".join(f"{_code(a)}: {', '.join(f)}" for a, f in by_art.items()) + f" ({n} case{'s' * (n != 1)})"


def _hand(cell: list[tuple[str, str]]) -> str:
    return "<br>".join(f"{_code(t)}" + (f": {what}" if what else "") for t, what in cell)


def collect() -> dict:
    """What the fault tests cover, read from their case lists: per source (``tiny``: the tiny config's
    cases, ``other``: test_other_methods.py), per stage, the (artifact) or (artifact, fault) cases."""
    from reuse.config import validate_config
    from tests.faults import test_bad_inputs, test_disk_full, test_kill, test_other_methods
    from tests.faults.kill_fixtures import kill_config

    other = test_other_methods.TABLE  # {"disk": [(stage, artifact)], "bad": [(stage, artifact, fault)], "kill": [stage]}
    c = {k: defaultdict(list) for k in ("disk_tiny", "bad_tiny", "disk_other", "bad_other")}
    for stage, art, *_ in test_disk_full.CASES:
        c["disk_tiny"][stage].append(art)
    for stage, art, _fn, _rel, faults in test_bad_inputs.CASES:
        c["bad_tiny"][stage] += [(art, f) for f in faults]
    for stage, art in other["disk"]:
        c["disk_other"][stage].append(art)
    for stage, art, fault in other["bad"]:
        c["bad_other"][stage].append((art, fault))
    c["kill"] = set(test_kill.stages(validate_config(kill_config())))
    c["kill_other"] = set(other["kill"])
    return c


SHORT = {KILL: "K", DISK: "D", BAD: "B", OTHER: "O"}


def _cell(test: str, cases: list, fmt) -> str:
    return f"**{SHORT[test]}** " + fmt(cases)


def _cases_cell(c: dict, label: str, name: str, fault: str, test: str, fmt) -> str:
    """A stage's cell for ``fault`` (disk, bad): a test named by hand, else the tiny config's cases, else
    test_other_methods.py's."""
    if (label, fault) in BY_HAND:
        return _hand(BY_HAND[(label, fault)])
    for source, t in (("tiny", test), ("other", OTHER)):
        if name in c[f"{fault}_{source}"]:
            return _cell(t, c[f"{fault}_{source}"][name], fmt)
    return "**no test**"


def rows() -> list[tuple[str, str, str, str]]:
    from reuse.methods.registry import methods
    from tests.faults.conftest import CFG

    c = collect()
    stages = SHARED + [(f"method: {m.name}", [m.name], m.name) for m in methods(CFG)] + LATE + \
        [("report", ["report"], "report")]
    out = []
    for label, kill_names, name in stages:
        if (label, "kill") in BY_HAND:
            kill = _hand(BY_HAND[(label, "kill")])
        elif set(kill_names) <= c["kill"]:
            kill = "**K** " + ", ".join(_code(k) for k in kill_names)
        elif name in c["kill_other"]:
            kill = f"**O** {_code(name)}"
        else:
            kill = "**no test**"
        disk = _cases_cell(c, label, name, "disk", DISK, _disk_cell)
        bad = _cases_cell(c, label, name, "bad", BAD, _bad_cell)
        out.append((label, kill, disk, bad))
    return out


def table() -> str:
    legend = [f"- **{v}**: `{k}`" for k, v in SHORT.items()]
    lines = [START, "", "Where a cell names no test by hand, it is one of these, with the cases it runs:", "",
             *legend, "",
             "| stage | SIGKILL at a seeded point, then `--unlock` and the same command: outputs equal an "
             "uninterrupted run's | disk full mid-write: one `DiskFull`, target absent, all else untouched "
             "(ids `<stage>-<artifact>`) | bad input artifact: one `ReuseError` naming the file and the fix, "
             "before training, nothing written (ids `<stage>-<artifact>-<fault>`) |",
             "|---|---|---|---|"]
    lines += [f"| {' | '.join(r)} |" for r in rows()]
    lines += ["", "| load or cluster fault | outcome asserted | test |", "|---|---|---|"]
    lines += [f"| {f} | {o} | {_code(t)} |" for f, o, t in WORKFLOW]
    return "\n".join(lines + ["", END])


def named_tests() -> list[str]:
    """Every test named by hand in the table (``path::function``, or a whole file)."""
    return [t for cell in BY_HAND.values() for t, _ in cell] + [t for *_, t in WORKFLOW] + [KILL, DISK, BAD]


def missing_tests() -> list[str]:
    """The tests the table names that do not exist."""
    out = []
    for t in named_tests():
        path, _, fn = t.partition("::")
        f = ROOT / path
        if not f.exists() or (fn and not re.search(rf"^def {re.escape(fn)}\(", f.read_text(), re.M)):
            out.append(t)
    return out


def current() -> str:
    text = DOC.read_text()
    if START not in text or END not in text:
        return ""
    return text[text.index(START): text.index(END) + len(END)]


def write() -> None:
    text = DOC.read_text()
    new = table()
    DOC.write_text(text.replace(current(), new) if current() else text.rstrip() + "\n\n" + new + "\n")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--write", action="store_true", help=f"rewrite the table in {DOC.relative_to(ROOT)}")
    if p.parse_args().write:
        write()
    else:
        sys.stdout.write(table() + "\n")
