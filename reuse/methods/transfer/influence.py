"""The functional core of class influence on transfer (Jain et al. 2023): which source classes each
subset run trains on, the influence estimator with its bootstrap over runs, and the classes a
counterfactual run leaves out. Pure numpy (the config check imports it to plan the subsets).

A subset run i trains on the source classes ``masks[i]`` and is transferred to the target; ``f_i(t)``
is then a number per target test example t (the probability of its correct class, its margin or
whether it is classified correctly). The influence of source class c on t is the mean of ``f_i(t)``
over the runs whose subset holds c, minus the mean over the runs without it.
"""

from __future__ import annotations

import warnings

import numpy as np

#: the per-example values a transfer records, of which the influence reads one (``influence.metric``)
METRICS = ("prob", "margin", "correct")
#: the counterfactual kinds: which k classes a run leaves out of the source
KINDS = ("harmful", "helpful", "random")
# seed streams of the draws below (a draw is a function of the configured seed, the subset or run
# seed and its stream, never of the order in which runs happen)
STREAM_SUBSET = 41
STREAM_RANDOM_CLASSES = 43


def subset_size(num_classes: int, fraction: float) -> int:
    """Classes per subset: ``fraction`` of the source classes, rounded, at least 1."""
    return max(1, int(round(fraction * num_classes)))


def subset_classes(num_classes: int, fraction: float, seed: int, index: int) -> np.ndarray:
    """The sorted source classes of subset ``index``: a uniform draw of :func:`subset_size` classes,
    seeded by ``(seed, index)`` alone, so subset i is the same whatever the number of subsets."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, STREAM_SUBSET]))
    return np.sort(rng.choice(num_classes, size=subset_size(num_classes, fraction), replace=False))


def subset_masks(num_classes: int, fraction: float, seed: int, subsets: int) -> np.ndarray:
    """``[subsets, num_classes]`` booleans: row i marks the classes of subset i."""
    masks = np.zeros((subsets, num_classes), dtype=bool)
    for i in range(subsets):
        masks[i, subset_classes(num_classes, fraction, seed, i)] = True
    return masks


def coverage_gaps(masks: np.ndarray) -> tuple[list[int], list[int]]:
    """The classes no subset holds, and those every subset holds: their influence is undefined."""
    n_in = masks.sum(0)
    return [int(c) for c in np.flatnonzero(n_in == 0)], [int(c) for c in np.flatnonzero(n_in == len(masks))]


def influences(masks: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``[C, ...]``: the influence of each source class on each column of ``values``.

    ``masks``: ``[M, C]`` booleans, the classes each of M runs trained on; ``values``: ``[M, ...]``,
    one value per run (and per target example, or per target class, ...). Entry ``[c, j]`` is the mean
    of ``values[:, j]`` over the runs holding class c minus the mean over the runs without it. A class
    in every run or in none has no influence (a ValueError names it)."""
    masks = np.asarray(masks, dtype=bool)
    values = np.asarray(values, dtype=np.float64)
    if masks.ndim != 2 or values.shape[0] != masks.shape[0]:
        raise ValueError(f"masks {masks.shape} and values {values.shape} must both have one row per run")
    none, every = coverage_gaps(masks)
    if none or every:
        raise ValueError(f"classes {none} are in no run and {every} in every run: their influence is undefined")
    inside = masks.astype(np.float64)
    flat = values.reshape(len(values), -1)
    mean_in = inside.T @ flat / inside.sum(0)[:, None]
    mean_out = (1 - inside).T @ flat / (1 - inside).sum(0)[:, None]
    return (mean_in - mean_out).reshape((masks.shape[1],) + values.shape[1:])


def group_sums(values: np.ndarray, labels: np.ndarray, num_groups: int) -> np.ndarray:
    """``[M, num_groups]``: per run, the sum of ``values[:, t]`` over the target examples t of each
    label (the influence is linear, so a class's influence on a target class is that of these sums)."""
    values = np.asarray(values, dtype=np.float64)
    onehot = np.zeros((values.shape[1], num_groups))
    onehot[np.arange(values.shape[1]), np.asarray(labels)] = 1.0
    return values @ onehot


def bootstrap_influence(masks: np.ndarray, totals: np.ndarray, *, resamples: int = 1000, confidence: float = 0.95,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile intervals of :func:`influences` (``[C, ...]`` lower and upper bounds) over the runs
    resampled with replacement. ``totals``: ``[M, ...]`` per-run values (e.g. the per-run sums over
    the target examples). A resample in which a class is in every drawn run or in none gives no value
    for it; the interval is over the others (NaN where none is left)."""
    masks = np.asarray(masks, dtype=bool)
    flat = np.asarray(totals, dtype=np.float64).reshape(len(masks), -1)
    m = len(masks)
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, m, m), minlength=m) for _ in range(resamples)]).astype(np.float64)
    inside = masks.astype(np.float64)
    n_in, n_out = counts @ inside, counts @ (1 - inside)                         # [B, C]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_in = np.einsum("bm,mc,mj->bcj", counts, inside, flat) / n_in[:, :, None]
        mean_out = np.einsum("bm,mc,mj->bcj", counts, 1 - inside, flat) / n_out[:, :, None]
    draws = mean_in - mean_out
    draws[(n_in == 0) | (n_out == 0)] = np.nan
    a = (1 - confidence) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class no resample could measure: NaN
        lo, hi = np.nanquantile(draws, a, axis=0), np.nanquantile(draws, 1 - a, axis=0)
    shape = (masks.shape[1],) + np.shape(totals)[1:]
    return lo.reshape(shape), hi.reshape(shape)


def removed_classes(scores: np.ndarray, kind: str, k: int, *, seed: int, run_seed: int) -> np.ndarray:
    """The sorted ``k`` source classes a counterfactual run leaves out: ``harmful``, the k with the
    lowest influence; ``helpful``, the k with the highest (ties to the lower class id); ``random``, the
    first k of a permutation drawn from ``(seed, run_seed)``, so a run's removals for a smaller k are
    a subset of those for a larger one."""
    scores = np.asarray(scores, dtype=np.float64)
    c = len(scores)
    if not 0 < k < c:
        raise ValueError(f"k={k} must leave at least one of the {c} source classes and remove at least one")
    ids = np.arange(c)
    if kind == "harmful":
        order = np.lexsort((ids, scores))
    elif kind == "helpful":
        order = np.lexsort((ids, -scores))
    elif kind == "random":
        order = np.random.default_rng(np.random.SeedSequence([seed, run_seed, STREAM_RANDOM_CLASSES])).permutation(c)
    else:
        raise ValueError(f"unknown counterfactual kind '{kind}' (one of {', '.join(KINDS)})")
    return np.sort(order[:k])


def per_example(logits: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per example, from its logits: the softmax probability of its correct class (``prob``), its
    margin (the correct class's logit minus the largest other one) and whether the top class is the
    correct one (``correct``)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    rows = np.arange(len(y))
    z = z - z.max(1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(1, keepdims=True)
    own = z[rows, y]
    other = z.copy()
    other[rows, y] = -np.inf
    return {"prob": p[rows, y], "margin": own - other.max(1), "correct": (z.argmax(1) == y).astype(np.float64)}


__all__ = ["KINDS", "METRICS", "bootstrap_influence", "coverage_gaps", "group_sums", "influences",
           "per_example", "removed_classes", "subset_classes", "subset_masks", "subset_size"]
