"""One check for every choice a method makes on held-out data (issue 25, "validation only"): a
choice reads the validation split, never the test split, whose accuracy is only reported.

:func:`assert_choice_ignores_test` runs a choice on its inputs, then on the same inputs with the
test labels (or the test predictions, or the test accuracies) replaced, and asserts the same
choice; given a ``perturb_val``, it also replaces the validation split's and asserts that the
choice moves, which shows the check is not vacuous (the choice does read what it should). The
rest of the module builds the perturbed inputs: a prepared dataset with one split's labels
permuted (re-fingerprinted, so it loads), arrays of an ``.npz`` permuted, columns of a run table
replaced, a value of a ``run.json`` replaced.

A choice is a function of one argument, the inputs (a path, a dict of paths, a table), that returns
something comparable: a class list, a shift, a table of the chosen values. Where its result holds
reported test figures beside the choice, the function returns the choice alone.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

_COUNT = itertools.count()


def assert_choice_ignores_test(choose: Callable[[Any], Any], inputs: Any,
                               perturb_test: Callable[[Any, np.random.Generator], Any], *,
                               perturb_val: Callable[[Any, np.random.Generator], Any] | None = None,
                               reference: Any = None, trials: int = 1,
                               same: Callable[[Any, Any], bool] | None = None) -> Any:
    """Assert that ``choose`` makes the same choice on ``inputs`` and on ``perturb_test(inputs, rng)``
    (``trials`` draws; ``reference``: the choice on ``inputs`` where the caller has it already, so it
    is not made again). With ``perturb_val``: the choice must differ on at least one of ``trials``
    draws of ``perturb_val(inputs, rng)``. ``same``: how two choices compare (default: exact
    equality, NaN equal to NaN, through dicts, lists, arrays and tables). Returns the choice."""
    same = same or same_choice
    ref = choose(inputs) if reference is None else reference
    for i in range(trials):
        changed = perturb_test(inputs, np.random.default_rng(1000 + i))
        got = choose(changed)
        assert same(got, ref), (f"the choice moved when only the test split changed (draw {i}): a choice read "
                                f"the test split.\nwith the test split as it is: {_show(ref)}\n"
                                f"with it replaced: {_show(got)}")
    if perturb_val is not None:
        moved = [not same(choose(perturb_val(inputs, np.random.default_rng(2000 + i))), ref) for i in range(trials)]
        assert any(moved), ("the choice stayed the same when the validation split changed too: it reads neither "
                            "split, and this check proves nothing about it")
    return ref


def same_choice(a: Any, b: Any) -> bool:
    """Exact equality through dicts, lists, tuples, numpy arrays and pandas tables (NaN equals NaN)."""
    if isinstance(a, pd.DataFrame) or isinstance(b, pd.DataFrame):
        try:
            pd.testing.assert_frame_equal(a, b, check_exact=True)
        except AssertionError:
            return False
        return True
    if isinstance(a, pd.Series):
        return same_choice(a.to_numpy(), np.asarray(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_choice(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_choice(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False
        return bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f" and b.dtype.kind == "f"))
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return True
    return a == b


def _show(choice: Any) -> str:
    text = choice.to_string() if isinstance(choice, pd.DataFrame) else repr(choice)
    return text if len(text) < 3000 else text[:3000] + " ..."


# ----------------------------------------------------------------------------- perturbations
def fresh_dir(root: str | Path, stem: str = "perturbed") -> Path:
    """A new, empty folder under ``root`` (one per call)."""
    d = Path(root) / f"{stem}{next(_COUNT)}"
    d.mkdir(parents=True)
    return d


def permute(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``a`` permuted along its first axis, redrawn until it differs from ``a`` (so the perturbation
    is never a no-op; an array whose rows are all equal cannot be perturbed this way)."""
    a = np.asarray(a)
    if len(a) < 2 or all(np.array_equal(a[0], r) for r in a[1:]):
        raise ValueError("an array whose rows are all equal: permuting it changes nothing")
    while True:
        out = a[rng.permutation(len(a))]
        if not np.array_equal(out, a):
            return out


def relabel(y: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Every label replaced by another class (a random non-zero offset, modulo ``num_classes``)."""
    y = np.asarray(y)
    return (y + rng.integers(1, num_classes, size=y.shape)) % num_classes


def with_split_labels(data_dir: str | Path, out_dir: str | Path, rng: np.random.Generator, split: str = "test",
                      how: str = "permute") -> Path:
    """A copy of the prepared dataset ``data_dir`` (``data.npz``, ``dataset.json``) in ``out_dir`` with
    the labels of ``split`` permuted (``how="permute"``: the class counts stay) or every one replaced
    by another class (``how="relabel"``), and the split's fingerprint made anew, so the copy loads and
    every other split's fingerprint (the training split's, which checkpoints check) is unchanged."""
    from reuse.data.fingerprint import make_fingerprint
    from reuse.io import save_npz

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = json.loads((data_dir / "dataset.json").read_text())
    with np.load(data_dir / "data.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    y = arrays[f"y_{split}"]
    arrays[f"y_{split}"] = permute(y, rng) if how == "permute" else relabel(y, meta["num_classes"], rng)
    old = meta["fingerprint"][split]
    meta["fingerprint"][split] = make_fingerprint(name=meta["name"], kind=meta["kind"], split=split,
                                                  labels=arrays[f"y_{split}"], inputs_sha256=old["inputs_sha256"],
                                                  num_classes=meta["num_classes"], input_shape=meta["input_shape"])
    save_npz(out_dir / "data.npz", **arrays)
    (out_dir / "dataset.json").write_text(json.dumps(meta))
    return out_dir


def with_npz_arrays(path: str | Path, out: str | Path, keys: list[str], rng: np.random.Generator) -> Path:
    """A copy of the ``.npz`` at ``path`` as ``out`` with each array of ``keys`` permuted (:func:`permute`)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for k in keys:
        arrays[k] = permute(arrays[k], rng)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)
    return out


def with_columns(table: pd.DataFrame, columns: list[str], rng: np.random.Generator) -> pd.DataFrame:
    """``table`` with each of ``columns`` replaced by uniform draws in [0, 1) (accuracies no run had)."""
    out = table.copy()
    for c in columns:
        out[c] = rng.uniform(0, 1, len(out))
    return out


def with_json_value(path: str | Path, out: str | Path, keys: list[tuple[str, ...]],
                    value: Callable[[Any, np.random.Generator], Any], rng: np.random.Generator) -> Path:
    """A copy of the JSON file ``path`` as ``out`` with the value at each key path of ``keys`` (a path
    through dicts; ``"*"`` for every item of a list) replaced by ``value(old, rng)``."""
    doc = json.loads(Path(path).read_text())

    def put(node: Any, rest: tuple[str, ...]) -> None:
        head, *tail = rest
        items = node if head == "*" else [node]
        for item in items:
            if head != "*" and not tail:
                item[head] = value(item[head], rng)
            elif head == "*" and not tail:
                raise ValueError("a key path cannot end in '*'")
            else:
                put(item if head == "*" else item[head], tuple(tail))

    for k in keys:
        put(doc, k)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc))
    return out



__all__ = ["assert_choice_ignores_test", "fresh_dir", "permute", "relabel", "same_choice",
           "with_columns", "with_json_value", "with_npz_arrays", "with_split_labels"]
