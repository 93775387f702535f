"""Gaussian clusters (dataset kind ``clusters``): a generated data set whose class separation is a
config key, for sweeps of how a method behaves as classes get easier to tell apart (Hinton et al.'s
tutorial plan: "a synthetic data set with varying degrees of separability").

``classes`` classes, each the union of ``clusters_per_class`` Gaussian clusters in ``dims``
dimensions. The ``classes * clusters_per_class`` cluster centres are the vertices of a regular
simplex: every two centres (of the same class or not) lie ``separation`` apart, in units of the
within-cluster standard deviation (every cluster is an isotropic Gaussian of std 1). Centre ``k``
is ``separation / sqrt(2) * e_k`` (``e_k`` the k-th unit vector; so ``dims`` must be at least the
number of clusters), shifted so the centres' mean is the origin. Cluster ``k`` belongs to class
``k % classes``; with more than one cluster per class a class is a mixture, whose Bayes boundary is
no longer a hyperplane (the centres themselves, a simplex's vertices, stay separable by one).

Each split holds ``n_train`` (``n_test``) examples, the classes in turn (example i of the split is of
class ``i % classes``, of that class's clusters in turn) in a seeded random order. The noise of the
training split is drawn from ``numpy.random.default_rng([seed, 0])``, the test split's from
``[seed, 1]``, and the draws do not depend on ``separation``: data sets that differ only in
``separation`` hold the same noise around farther or nearer centres (common random numbers), so a
sweep over it changes nothing else. Same spec, same arrays, on any machine (numpy's PCG64).

``dataset.json`` records the centres and the test accuracy of the centre rule (each example to the
class of the nearest true centre: the Bayes classifier with one cluster per class), a measure of
how hard the data set is. Inputs are ``(N, dims)`` float32 features, not standardised further
(mean 0 and std 1 keep :func:`reuse.data.sources.read` from measuring them); models for them are
the MLPs, as for tabular data.
"""

from __future__ import annotations

import math

import numpy as np

from reuse.data.raw import RawData, register_reader
from reuse.data.tabular import feature_model_problems

KIND = "clusters"
#: the defaults of the ``clusters`` block (the schema fills them too; ``separation`` is required)
DEFAULTS = {"classes": 4, "clusters_per_class": 1, "dims": 8, "n_train": 2000, "n_test": 2000, "seed": 0}
KEYS = (*DEFAULTS, "separation")


def spec_of(spec: dict) -> dict:
    """The dataset's ``clusters`` block with the defaults filled in."""
    return {**DEFAULTS, **(spec.get(KIND) or {})}


def block_problems(c: dict) -> list[tuple[str, str]]:
    """What is wrong with a ``clusters`` block (defaults filled), as ``(key, message)`` pairs."""
    out = []
    unknown = sorted(set(c) - set(KEYS))
    out += [(k, f"unknown key; the keys are {', '.join(KEYS)}") for k in unknown]
    if "separation" not in c:
        out.append(("separation", "required: the distance between cluster centres in within-cluster stds, e.g. 2"))
    elif not isinstance(c["separation"], (int, float)) or isinstance(c["separation"], bool) \
            or not math.isfinite(c["separation"]) or c["separation"] < 0:
        out.append(("separation", f"{c['separation']!r} must be a number >= 0 (0: every centre at the origin)"))
    for k, low in (("classes", 2), ("clusters_per_class", 1), ("dims", 1), ("n_train", 1), ("n_test", 1),
                   ("seed", 0)):
        v = c.get(k)
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            out.append((k, f"{v!r} must be an integer >= {low}"))
    if not out:
        n = c["classes"] * c["clusters_per_class"]
        if c["dims"] < n:
            out.append(("dims", f"{c['dims']} is fewer than the {n} cluster centres (classes x clusters_per_class), "
                                "which lie on a regular simplex with one axis each; raise dims to at least "
                                f"{n} or use fewer clusters"))
        for k in ("n_train", "n_test"):
            if c[k] < c["classes"]:
                out.append((k, f"{c[k]} examples cannot hold each of the {c['classes']} classes; raise it to at "
                               f"least {c['classes']}"))
    return out


def centres(classes: int, clusters_per_class: int, dims: int, separation: float) -> np.ndarray:
    """The ``(classes * clusters_per_class, dims)`` cluster centres: a regular simplex of edge
    ``separation``, centred on the origin; centre k belongs to class ``k % classes``."""
    n = classes * clusters_per_class
    c = np.zeros((n, dims), dtype=np.float64)
    c[np.arange(n), np.arange(n)] = separation / math.sqrt(2.0)
    return c - c.mean(axis=0)


def draw_split(c: dict, n: int, stream: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One split of ``n`` examples: features ``(n, dims)`` float32, labels int64 and each example's
    cluster, from ``default_rng([seed, stream])`` (draws independent of ``separation``)."""
    rng = np.random.default_rng([int(c["seed"]), stream])
    i = np.arange(n)
    cluster = (i % c["classes"]) + c["classes"] * ((i // c["classes"]) % c["clusters_per_class"])
    order = rng.permutation(n)
    noise = rng.standard_normal((n, c["dims"]))
    cluster = cluster[order]
    x = centres(c["classes"], c["clusters_per_class"], c["dims"], float(c["separation"]))[cluster] + noise
    return x.astype(np.float32), (cluster % c["classes"]).astype(np.int64), cluster


def centre_rule_accuracy(x: np.ndarray, y: np.ndarray, cen: np.ndarray, classes: int) -> float:
    """Accuracy of assigning each example to the class of its nearest centre in ``cen``."""
    d = ((x[:, None, :].astype(np.float64) - cen[None]) ** 2).sum(-1)
    return float(np.mean(d.argmin(1) % classes == y))


@register_reader(KIND)
def read_clusters(name: str, spec: dict) -> RawData:
    from reuse.errors import DataError

    c = spec_of(spec)
    bad = block_problems(c)
    if bad:
        raise DataError("; ".join(f"datasets.{name}.{KIND}.{k}: {m}" for k, m in bad))
    x_train, y_train, _ = draw_split(c, c["n_train"], 0)
    x_test, y_test, _ = draw_split(c, c["n_test"], 1)
    cen = centres(c["classes"], c["clusters_per_class"], c["dims"], float(c["separation"]))
    extra = {"classes": [str(k) for k in range(c["classes"])], "clusters": {
        **c, "centres": cen.tolist(), "centre_of_class": [k % c["classes"] for k in range(len(cen))],
        "centre_rule_test_acc": centre_rule_accuracy(x_test, y_test, cen, c["classes"])}}
    return RawData(num_classes=c["classes"], x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                   mean=[0.0], std=[1.0], extra=extra)


def config_problems(config: dict) -> list[str]:
    """What a (schema-valid) config asks of clusters datasets that cannot work: a bad ``clusters``
    block, one on another kind, a model that does not take a row of features, or augmentation."""
    problems = []
    mine = set()
    for ds, spec in config["datasets"].items():
        if spec["kind"] != KIND:
            if KIND in spec:
                problems.append(f"datasets.{ds}.{KIND}: only a dataset of kind {KIND} takes this block (this one is "
                                f"{spec['kind']}); drop it or set kind: {KIND}")
            continue
        mine.add(ds)
        problems += [f"datasets.{ds}.{KIND}.{k}: {m}" for k, m in block_problems(spec_of(spec))]
    return problems + feature_model_problems(config, mine, KIND)
