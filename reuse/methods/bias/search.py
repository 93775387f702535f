"""The bias search, as pure numpy: which shift of some classes' logits maximises accuracy.

Hinton et al. (2015) trained a student on a transfer set without any 3, then raised the 3's bias by
the value that was best (3.5) and recovered most threes; with a transfer set of only 7s and 8s they
lowered those two biases by one shared value (7.6). A shift of the classifier's bias by ``d`` on class
``c`` adds ``d`` to every example's logit ``c``, so the search needs the logits only, never the model.

``mode="shared"``: one shift for all the listed classes (the paper's two experiments), searched over
a grid; ``mode="per_class"``: a shift per listed class, every combination of grid values (exhaustive,
so it stays exact; the product of grid sizes is bounded by :data:`MAX_COMBINATIONS`). Ties go to the
smallest total |shift| (the least change), then to the smaller shift, so the choice is deterministic.
"""

from __future__ import annotations

import itertools

import numpy as np

from reuse.methods.bias.spec import MAX_COMBINATIONS  # per_class: grid size ** classes, checked there too


def grid_values(low: float, high: float, step: float) -> np.ndarray:
    """``low, low + step, ..., high`` (inclusive, to the nearest step), always holding 0 when in range."""
    if not step > 0 or not high > low:
        raise ValueError(f"a bias grid needs low < high and step > 0 (got {low}, {high}, {step})")
    n = int(np.floor((high - low) / step + 1e-9)) + 1
    values = low + step * np.arange(n)
    if low <= 0 <= high:
        values = np.union1d(values, [0.0])
    return np.round(values, 10)


def shift_vector(num_classes: int, classes: list[int], shifts) -> np.ndarray:
    """The per-class bias shift: ``shifts`` (one value, or one per class) on ``classes``, 0 elsewhere."""
    v = np.zeros(num_classes, dtype=np.float64)
    v[np.asarray(classes, dtype=np.int64)] = shifts
    return v


def accuracy_with_shift(logits: np.ndarray, labels: np.ndarray, shift: np.ndarray) -> float:
    """Accuracy of ``argmax(logits + shift)`` (first index on ties, as torch's argmax)."""
    return float(np.mean(np.argmax(np.asarray(logits, np.float64) + shift, axis=1) == labels))


def search_shift(logits: np.ndarray, labels: np.ndarray, classes: list[int], grid: np.ndarray,
                 mode: str = "shared") -> dict:
    """The best shift of ``classes``: ``{"shift": per-class vector, "value(s)", "acc", "acc_before",
    "curve": [(value, acc), ...] for shared mode}``."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    n, c = logits.shape
    classes = [int(k) for k in classes]
    bad = [k for k in classes if not 0 <= k < c]
    if bad or not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes {classes}: each must be one class of 0..{c - 1}, listed once")
    grid = np.asarray(grid, dtype=np.float64)
    before = accuracy_with_shift(logits, labels, np.zeros(c))
    if mode == "shared":
        accs = [accuracy_with_shift(logits, labels, shift_vector(c, classes, d)) for d in grid]
        combos = [(float(d),) * len(classes) for d in grid]
    elif mode == "per_class":
        if len(grid) ** len(classes) > MAX_COMBINATIONS:
            raise ValueError(f"per_class search over {len(classes)} classes and {len(grid)} grid values is "
                             f"{len(grid) ** len(classes)} combinations (at most {MAX_COMBINATIONS}); use fewer "
                             "classes, a coarser grid or mode shared")
        combos = [tuple(float(x) for x in t) for t in itertools.product(grid, repeat=len(classes))]
        accs = [accuracy_with_shift(logits, labels, shift_vector(c, classes, list(t))) for t in combos]
    else:
        raise ValueError(f"unknown bias search mode {mode!r} (shared or per_class)")
    best = max(range(len(combos)), key=lambda i: (accs[i], -sum(abs(x) for x in combos[i]), [-x for x in combos[i]]))
    out = {"shift": shift_vector(c, classes, list(combos[best])).tolist(), "values": list(combos[best]),
           "acc": accs[best], "acc_before": before, "n": int(n)}
    if mode == "shared":
        out["curve"] = [[float(d), a] for d, a in zip(grid, accs)]
    return out
