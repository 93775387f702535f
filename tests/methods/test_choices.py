"""The validation-only check (tests/methods/choices.py) itself: it fails a choice that reads the test
split, fails as vacuous one that reads neither split, passes one that reads validation, and its
perturbed datasets load with only the perturbed split changed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.methods.choices import (assert_choice_ignores_test, fresh_dir, permute, relabel, same_choice,
                                   with_columns, with_split_labels)

RUNS = pd.DataFrame({"variant": ["a", "b", "c"], "val_acc": [0.7, 0.9, 0.8], "test_acc": [0.9, 0.7, 0.8]})


def by(column):
    return lambda t: t.loc[t[column].idxmax(), "variant"]


def replaced(column):
    return lambda t, rng: with_columns(t, [column], rng)


def test_a_choice_on_validation_passes_and_one_on_test_fails():
    assert assert_choice_ignores_test(by("val_acc"), RUNS, replaced("test_acc"), perturb_val=replaced("val_acc"),
                                      trials=5) == "b"
    with pytest.raises(AssertionError, match="a choice read the test split"):
        assert_choice_ignores_test(by("test_acc"), RUNS, replaced("test_acc"), trials=5)
    with pytest.raises(AssertionError, match="reads neither split"):
        assert_choice_ignores_test(lambda t: "a", RUNS, replaced("test_acc"), perturb_val=replaced("val_acc"))


def test_same_choice_compares_through_containers_with_nan_equal():
    assert same_choice({"a": [np.array([1.0, np.nan])], "b": float("nan")}, {"a": [np.array([1.0, np.nan])],
                                                                             "b": float("nan")})
    assert not same_choice({"a": [1, 2]}, {"a": [2, 1]})
    assert same_choice(RUNS, RUNS.copy()) and not same_choice(RUNS, RUNS.assign(val_acc=0.5))


def test_perturbations_change_what_they_say_and_nothing_else(tiny_data_dir, tmp_path):
    from reuse.data import load

    rng = np.random.default_rng(0)
    y = np.array([0, 0, 1, 2, 2, 2])
    p = permute(y, rng)
    assert not np.array_equal(p, y) and sorted(p) == sorted(y)
    assert (relabel(y, 3, rng) != y).all()
    with pytest.raises(ValueError, match="changes nothing"):
        permute(np.zeros(4), rng)
    before = load(tiny_data_dir)
    for how in ("permute", "relabel"):
        after = load(with_split_labels(tiny_data_dir, fresh_dir(tmp_path), rng, "test", how=how))
        assert after.train.fingerprint == before.train.fingerprint  # checkpoints of the original still load
        assert after.test.fingerprint["digest"] != before.test.fingerprint["digest"]
        assert np.array_equal(after.test.x, before.test.x) and not np.array_equal(after.test.y, before.test.y)
        if how == "permute":
            assert np.array_equal(np.bincount(after.test.y), np.bincount(before.test.y))
        else:
            assert (after.test.y != before.test.y).all()
