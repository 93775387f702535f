"""Specialist models on confusable classes (Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in
a Neural Network", section 5: the JFT experiment): the functional core, testable alone.

- :func:`prediction_covariance` and :func:`cluster_classes`: the groups of confusable classes, by
  K-means on the columns of the covariance matrix of a generalist's predicted class probabilities
  (the paper: "an on-line version of the K-means algorithm to the columns of the covariance matrix");
  deterministic for a seed.
- :func:`label_map`: a specialist's labels, its group's classes then one dustbin class for all others.
- :func:`enriched_ids` and :class:`Enrich`: a specialist's training examples, a ``fraction`` from its
  group and the rest drawn from the other classes, afresh each epoch (the paper: half and half);
  :func:`dustbin_correction`: the dustbin logit's correction for that oversampling.
- :func:`specialist_head`: a specialist's classifier initialised from the generalist's.
- :func:`active_specialists` and :func:`combine`: the paper's combination of the generalist with the
  specialists whose group meets its top-n classes, by minimising a sum of KL divergences.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from reuse.data.augment import keyed_seed
from reuse.data.datasets import epoch_order
from reuse.train.events import Algorithm, Event, State

STREAM_ENRICH = 0x5E   # the keyed stream of the enriched epochs' draws of other examples
STREAM_CLUSTER = 0x5F  # ... and of the K-means starts


# ----------------------------------------------------------------------------- groups
MATRICES = ("correlation", "covariance")


def prediction_covariance(probs: np.ndarray, matrix: str = "covariance") -> np.ndarray:
    """The ``[C, C]`` covariance over examples of the predicted class probabilities ``probs [N, C]``,
    or with ``matrix="correlation"`` the same scaled by the classes' standard deviations (a class whose
    probability never varies gets a zero row and column)."""
    if matrix not in MATRICES:
        raise ValueError(f"unknown matrix '{matrix}' ({', '.join(MATRICES)})")
    p = np.asarray(probs, dtype=np.float64)
    d = p - p.mean(0, keepdims=True)
    cov = d.T @ d / max(len(p) - 1, 1)
    if matrix == "covariance":
        return cov
    sd = np.sqrt(np.diag(cov))
    sd[sd == 0] = np.inf
    return cov / np.outer(sd, sd)


def _kmeans(points: np.ndarray, k: int, rng: np.random.Generator, iters: int) -> tuple[np.ndarray, np.ndarray, float]:
    """One Lloyd run from a k-means++ start: (assignment [n], centroids [k, d], inertia)."""
    n = len(points)
    centers = [points[rng.integers(n)]]
    for _ in range(1, k):
        d2 = np.min(((points[:, None] - np.asarray(centers)[None]) ** 2).sum(-1), 1)
        total = d2.sum()
        centers.append(points[rng.choice(n, p=d2 / total)] if total > 0 else points[rng.integers(n)])
    c = np.asarray(centers, dtype=np.float64)
    assign = np.full(n, -1)
    for _ in range(iters):
        d2 = ((points[:, None] - c[None]) ** 2).sum(-1)
        new = d2.argmin(1)
        for j in range(k):  # an empty cluster takes the point farthest from its centroid
            if not (new == j).any():
                far = d2[np.arange(n), new].argmax()
                new[far] = j
                d2[far] = 0.0
        if (new == assign).all():
            break
        assign = new
        c = np.stack([points[assign == j].mean(0) for j in range(k)])
    inertia = float(((points - c[assign]) ** 2).sum())
    return assign, c, inertia


def cluster_classes(probs: np.ndarray, groups: int, size: int | None = None, *, seed: int = 0, restarts: int = 10,
                    iters: int = 100, matrix: str = "correlation") -> list[list[int]]:
    """Groups of confusable classes from a generalist's predicted probabilities ``probs [N, C]``.

    Each class is the point given by its column of the covariance matrix of ``probs`` (classes the
    generalist confuses rise and fall together, so their columns are close); K-means (k-means++
    starts, ``restarts`` Lloyd runs from the generator seeded by ``seed``, the one of least inertia
    kept) makes ``groups`` clusters. ``matrix``: ``covariance`` (the paper's) or ``correlation`` (the
    covariance scaled by the classes' standard deviations: otherwise a class predicted confidently,
    whose probability varies most, has a column far from all others and becomes a cluster of its own).
    With ``size`` None the groups are the clusters (disjoint, of varying size); with ``size`` each
    group is its cluster's classes nearest its centroid, filled up to ``size`` with the nearest classes
    of other clusters (so groups may overlap, and a class of a cluster larger than ``size`` may be in
    none). Groups are sorted lists of class ids, in the order of their smallest class."""
    cov = prediction_covariance(probs, matrix)
    c = cov.shape[0]
    if not 1 <= groups <= c:
        raise ValueError(f"{groups} groups of {c} classes: need 1 <= groups <= classes")
    if size is not None and not 1 <= size <= c:
        raise ValueError(f"group size {size} of {c} classes: need 1 <= size <= classes")
    rng = np.random.default_rng(keyed_seed(seed, STREAM_CLUSTER))
    best = None
    for _ in range(max(1, restarts)):
        assign, centers, inertia = _kmeans(cov, groups, rng, iters)
        if best is None or inertia < best[2] - 1e-15:
            best = (assign, centers, inertia)
    assign, centers, _ = best
    if size is None:
        out = [sorted(np.flatnonzero(assign == j).tolist()) for j in range(groups)]
    else:
        d2 = ((cov[:, None] - centers[None]) ** 2).sum(-1)  # [C, k]
        # members first (nearest first), then the other classes by distance; ties to the lower id
        out = [sorted(np.lexsort((np.arange(c), d2[:, j], assign != j))[:size].tolist()) for j in range(groups)]
    return sorted(out, key=lambda g: (g[0], g))


def membership(groups: list[list[int]], num_classes: int) -> np.ndarray:
    """``[M, C]`` booleans: whether class c is in group m."""
    g = np.zeros((len(groups), num_classes), dtype=bool)
    for m, classes in enumerate(groups):
        g[m, classes] = True
    return g


def coverage(groups: list[list[int]], targets: np.ndarray, num_classes: int) -> np.ndarray:
    """Per example, the number of groups (specialists) whose classes include its class ``targets``."""
    return membership(groups, num_classes).sum(0)[np.asarray(targets)]


# ----------------------------------------------------------------------------- a specialist's data
def label_map(group: list[int], num_classes: int) -> np.ndarray:
    """``[C]``: a specialist's label for each class: its group's classes in order (0..len-1), then
    the dustbin ``len(group)`` for every other class."""
    out = np.full(num_classes, len(group), dtype=np.int64)
    out[np.asarray(group, dtype=np.int64)] = np.arange(len(group))
    return out


def others_per_epoch(n_group: int, n_other: int, fraction: float) -> int:
    """How many examples of other classes an enriched epoch draws: those that make ``fraction`` of it
    the group's (all of them), at most every other example."""
    if not 0 < fraction <= 1:
        raise ValueError(f"enrichment fraction {fraction} lies outside (0, 1]")
    return min(n_other, int(round(n_group * (1 - fraction) / fraction)))


def enriched_ids(group_ids: np.ndarray, other_ids: np.ndarray, fraction: float, seed: int, epoch: int) -> np.ndarray:
    """One enriched epoch's example ids, in training order: every example of the group and
    :func:`others_per_epoch` examples of the other classes drawn without replacement, both a
    function of ``(seed, epoch)``, shuffled together."""
    k = others_per_epoch(len(group_ids), len(other_ids), fraction)
    rng = np.random.default_rng(keyed_seed(seed, STREAM_ENRICH, epoch))
    drawn = np.sort(rng.choice(np.asarray(other_ids), size=k, replace=False)) if k else np.zeros(0, np.int64)
    ids = np.concatenate([np.asarray(group_ids, dtype=np.int64), drawn.astype(np.int64)])
    return ids[epoch_order(len(ids), seed, epoch).numpy()]


def dustbin_correction(n_group: int, n_other: int, fraction: float) -> float:
    """What to add to the dustbin logit of a specialist trained on enriched data so that its
    probabilities are those of the true class frequencies (the paper: "incrementing the logit of the
    dustbin class by the log of the proportion by which the specialist class is oversampled").

    Training saw the group with probability ``f`` and the others with ``1 - f``; the data holds
    ``n_group`` and ``n_other`` examples of them. Bayes' rule moves each logit by log(true prior /
    training prior), so the dustbin moves, relative to the group's classes, by
    ``log(n_other / (1 - f)) - log(n_group / f)``, computed with the count an epoch really draws
    (:func:`others_per_epoch`): ``log(n_other / drawn)``. Zero when the epoch draws every other example."""
    k = others_per_epoch(n_group, n_other, fraction)
    if k == 0 or n_group == 0:
        return 0.0
    return math.log(n_other / k)


class Enrich(Algorithm):
    """Train a specialist on :func:`enriched_ids` epochs of ``group_ids`` and ``other_ids``."""

    name = "enrich"

    def __init__(self, group_ids: np.ndarray, other_ids: np.ndarray, fraction: float):
        self.group_ids, self.other_ids = np.asarray(group_ids, np.int64), np.asarray(other_ids, np.int64)
        self.fraction = fraction
        if len(self.group_ids) == 0:
            raise ValueError("a specialist's group has no training example")

    def examples_per_epoch(self, n: int) -> int:
        return len(self.group_ids) + others_per_epoch(len(self.group_ids), len(self.other_ids), self.fraction)

    def epoch_ids(self, state: State) -> torch.Tensor:
        return torch.from_numpy(enriched_ids(self.group_ids, self.other_ids, self.fraction, state.seed, state.epoch))

    def on_event(self, event: Event, state: State) -> None:
        pass


def specialist_head(weight: torch.Tensor, bias: torch.Tensor | None, group: list[int]
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A specialist's classifier (``len(group) + 1`` outputs) from the generalist's ``weight [C, D]``
    and ``bias [C]``: the group's rows as they are, and for the dustbin the mean of the other rows
    with the mean of their biases plus log(number of other classes) (the log-sum-exp of equal logits:
    a first guess at the dustbin's total, which training then adjusts)."""
    g = torch.as_tensor(group, dtype=torch.long)
    rest = torch.ones(weight.shape[0], dtype=torch.bool)
    rest[g] = False
    n_rest = int(rest.sum())
    if n_rest == 0:
        raise ValueError("a group of every class leaves the dustbin empty")
    w = torch.cat([weight[g], weight[rest].mean(0, keepdim=True)])
    b = None if bias is None else torch.cat([bias[g], (bias[rest].mean() + math.log(n_rest)).reshape(1)])
    return w, b


# ----------------------------------------------------------------------------- the combination
def active_specialists(generalist_probs: torch.Tensor, member: torch.Tensor, top_n: int) -> torch.Tensor:
    """``[B, M]`` booleans: the specialists whose group meets the generalist's ``top_n`` most probable
    classes of each example (the paper's active set A_k)."""
    top = generalist_probs.topk(min(top_n, generalist_probs.shape[1]), dim=1).indices  # [B, n]
    hit = member.T[top]  # [B, n, M]
    return hit.any(1)


def combine(log_pg: torch.Tensor, log_ps: list[torch.Tensor], groups: list[list[int]], active: torch.Tensor, *,
            steps: int = 100, lr: float = 2.0) -> torch.Tensor:
    """The paper's combination of a generalist with its active specialists (Hinton et al. 2015,
    section 5.4, eq. 5): for each example, the full distribution ``q`` over the C classes that minimises

        KL(p_g || q) + sum over active specialists m of KL(p_m || q_m),

    where ``p_g`` is the generalist's distribution, ``p_m`` specialist m's over its group's classes and
    its dustbin, and ``q_m`` is ``q`` seen by specialist m: ``q`` on the group's classes, and the sum
    of ``q`` over all other classes on the dustbin. ``q = softmax(z)``; ``z`` starts at ``log p_g``
    and takes ``steps`` steps of gradient descent (rate ``lr``) on the objective divided by
    ``1 + |active|`` (each term's Hessian in ``z``, diag(q) - q q^T or its grouped form, has eigenvalues
    at most 1/2, so gradient descent on the average is stable for any rate below 4 on every example);
    the examples are a batch. With no active specialist ``log p_g`` is the minimum and is
    returned unchanged.

    ``log_pg [B, C]``: the generalist's log-probabilities; ``log_ps``: per specialist ``[B, |g_m| + 1]``
    (dustbin last); ``active [B, M]``. Returns ``log q [B, C]``."""
    b, c = log_pg.shape
    m = len(groups)
    if m == 0 or not bool(active.any()):
        return log_pg.clone()
    member = torch.as_tensor(membership(groups, c), device=log_pg.device)
    # each specialist's probabilities spread over the C classes (0 outside its group) and its dustbin's
    spread = torch.zeros(b, m, c, dtype=log_pg.dtype, device=log_pg.device)
    dust = torch.zeros(b, m, dtype=log_pg.dtype, device=log_pg.device)
    for j, g in enumerate(groups):
        p = log_ps[j].to(log_pg.dtype).exp()
        spread[:, j, torch.as_tensor(g, device=log_pg.device)] = p[:, :-1]
        dust[:, j] = p[:, -1]
    act = active.to(log_pg.dtype)
    n_terms = 1.0 + act.sum(1, keepdim=True)  # [B, 1]
    pg = log_pg.exp()
    outside = (~member).to(log_pg.dtype)  # [M, C]
    # the targets that do not move with q: p_g and the active specialists' group probabilities
    fixed = pg + (act[:, :, None] * spread).sum(1)                   # [B, C]
    dust_w = act * dust                                              # [B, M]
    z = log_pg.clone()
    for _ in range(steps):
        # Each term is a cross-entropy -sum_t p_t log r_t(z) plus a constant; its gradient in z is
        # (sum_t p_t) q - (the target spread over the classes), where a dustbin target D_m spreads
        # over the classes outside group m in proportion to q: D_m q_c / Q_out,m.
        q = torch.softmax(z, 1)
        q_out = q[:, None, :] * outside[None]                        # [B, M, C]
        share = q_out / q_out.sum(2, keepdim=True).clamp_min(1e-300)
        grad = n_terms * q - fixed - (dust_w[:, :, None] * share).sum(1)
        z = z - lr * grad / n_terms
    return torch.log_softmax(z, 1)


def objective(log_q: torch.Tensor, log_pg: torch.Tensor, log_ps: list[torch.Tensor], groups: list[list[int]],
              active: torch.Tensor) -> torch.Tensor:
    """``[B]``: the combination's objective KL(p_g || q) + sum over active m of KL(p_m || q_m) at ``log q``
    (what :func:`combine` minimises; for checks)."""
    c = log_q.shape[1]
    kl = (log_pg.exp() * (log_pg - log_q)).sum(1)
    member = membership(groups, c)
    for j, g in enumerate(groups):
        lq_m = torch.cat([log_q[:, g], torch.logsumexp(log_q[:, ~member[j]], 1, keepdim=True)], 1)
        pm = log_ps[j].exp()
        kl = kl + active[:, j].to(log_q.dtype) * (pm * (log_ps[j] - lq_m)).sum(1)
    return kl


__all__ = ["MATRICES", "Enrich", "active_specialists", "cluster_classes", "combine", "coverage", "dustbin_correction",
           "enriched_ids", "label_map", "membership", "objective", "others_per_epoch", "prediction_covariance",
           "specialist_head"]
