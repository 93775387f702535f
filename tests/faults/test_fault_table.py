"""docs/reliability.md's fault table is the one the fault tests' case lists make, names only tests
that exist, and has a test for every stage and fault."""

from __future__ import annotations

from tests.faults import table


def test_the_documented_table_is_the_tests_table():
    assert table.current() == table.table(), (
        "docs/reliability.md's fault table differs from the fault tests: run `python -m tests.faults.table --write`")


def test_the_tests_the_table_names_exist():
    assert table.missing_tests() == []


def test_every_stage_has_a_test_for_every_fault():
    untested = [(r[0], fault) for r in table.rows() for fault, cell in zip(("SIGKILL", "disk full", "bad input"), r[1:])
                if "no test" in cell]
    assert untested == []
