"""Curricula ordered by past runs' scores (Wu, Dyer & Neyshabur 2021, "When do curricula work?").

The examples are sorted by difficulty (easy first; ``anti`` reverses it; ``random`` is a seeded
random order, the control). A pacing function ``g(t)`` gives the fraction of the sorted data that is
available at step ``t``; every step's batch is drawn uniformly, without replacement, from that
prefix. All draws are functions of ``(seed, step)``, so a resumed run sees the same batches.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from reuse.data.augment import STREAM_CURRICULUM, keyed_seed
from reuse.train.events import Algorithm, State

ORDERS = ("easy", "anti", "random")
PACINGS = ("linear", "exp", "step")


def pacing(kind: str, t: int | float, total: int, *, start: float, full_at: float, stages: int = 4) -> float:
    """Fraction of the sorted data available at step ``t`` of ``total``.

    ``start``: the fraction at step 0 (b in Wu et al.); ``full_at``: the fraction of training after
    which the whole set is in (a). ``linear`` grows linearly, ``exp`` geometrically from ``start``,
    ``step`` in ``stages`` equal jumps.
    """
    if not 0 < start <= 1:
        raise ValueError(f"start must lie in (0, 1], got {start}")
    if full_at <= 0:
        return 1.0
    u = min(1.0, t / (full_at * total))
    if kind == "linear":
        g = start + (1 - start) * u
    elif kind == "exp":
        g = start * (1 / start) ** u
    elif kind == "step":
        g = start + (1 - start) * math.floor(u * stages) / stages
    else:
        raise ValueError(f"unknown pacing '{kind}' (one of {', '.join(PACINGS)})")
    return min(1.0, g)


def curriculum_order(difficulty: np.ndarray | None, order: str, *, seed: int = 0, n: int | None = None) -> np.ndarray:
    """Example ids from first to last seen: ``easy`` (ascending difficulty, ties by id), ``anti``
    (descending) or ``random`` (seeded permutation; ``difficulty`` unused)."""
    if order == "random":
        n = len(difficulty) if difficulty is not None else n
        return np.random.default_rng(keyed_seed(seed, STREAM_CURRICULUM)).permutation(n)
    if order not in ORDERS:
        raise ValueError(f"unknown curriculum order '{order}' (one of {', '.join(ORDERS)})")
    ids = np.arange(len(difficulty))
    easy_first = np.lexsort((ids, difficulty))
    return easy_first if order == "easy" else np.lexsort((ids, -difficulty))


def step_batches(order: np.ndarray, steps: range, batch_sizes: list[int], total: int, *, seed: int,
                 kind: str, start: float, full_at: float, stages: int = 4) -> torch.Tensor:
    """The ids of the batches of ``steps`` (one size per step), concatenated."""
    n = len(order)
    out = []
    for t, bs in zip(steps, batch_sizes, strict=True):
        m = min(n, max(bs, math.ceil(pacing(kind, t, total, start=start, full_at=full_at, stages=stages) * n)))
        g = torch.Generator().manual_seed(keyed_seed(seed, STREAM_CURRICULUM, t))
        pick = torch.randperm(m, generator=g)[:bs]
        out.append(torch.as_tensor(order)[pick])
    return torch.cat(out) if out else torch.empty(0, dtype=torch.int64)


class Curriculum(Algorithm):
    """Feed each epoch's steps from the paced prefix of ``order`` (epochs keep the full set's size)."""

    name = "curriculum"

    def __init__(self, order: np.ndarray, *, pacing: str = "linear", start: float = 0.1, full_at: float = 0.5,
                 stages: int = 4):
        self.order = np.asarray(order, dtype=np.int64)
        self.kind, self.start, self.full_at, self.stages = pacing, start, full_at, stages
        if pacing not in PACINGS:
            raise ValueError(f"unknown pacing '{pacing}' (one of {', '.join(PACINGS)})")

    def epoch_ids(self, state: State) -> torch.Tensor:
        bs = state.recipe["batch_size"]
        n, spe = len(self.order), state.steps_per_epoch
        sizes = [bs] * spe
        if not state.recipe.get("drop_last", False) and n % bs:
            sizes[-1] = n - bs * (spe - 1)  # the same batch sizes as a full-data epoch
        first = state.epoch * spe
        return step_batches(self.order, range(first, first + spe), sizes, state.total_steps, seed=state.seed,
                            kind=self.kind, start=self.start, full_at=self.full_at, stages=self.stages)

    def available(self, state: State) -> float:
        return pacing(self.kind, state.step, state.total_steps, start=self.start, full_at=self.full_at,
                      stages=self.stages)
