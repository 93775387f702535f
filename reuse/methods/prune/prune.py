"""Data pruning by past runs' scores (Paul et al. 2021, "Deep Learning on a Data Diet").

Pure functions pick which examples to keep; :class:`Prune` makes the trainer train on them only,
reshuffled each epoch. The workflow scales the epoch count so that a pruned run takes the same
number of optimisation steps as a full-data run (``matched_epochs``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from reuse.data.augment import STREAM_SELECT, keyed_seed
from reuse.data.datasets import epoch_order
from reuse.train.events import Algorithm, State

MODES = ("hardest", "easiest", "random", "drop_noisy")


def _pick(ids: np.ndarray, difficulty: np.ndarray | None, n_keep: int, mode: str, drop: float,
          rng: np.random.Generator) -> np.ndarray:
    if mode == "random":
        return rng.choice(ids, size=n_keep, replace=False)
    d = difficulty[ids]
    # Stable sort on (-difficulty, id): ties go to the lower id, so the choice is deterministic.
    order = ids[np.lexsort((ids, -d))]  # hardest first
    if mode == "hardest":
        return order[:n_keep]
    if mode == "easiest":
        return order[::-1][:n_keep]
    if mode == "drop_noisy":
        n_drop = min(len(ids) - n_keep, math.ceil(drop * len(ids)))
        return order[n_drop:n_drop + n_keep]
    raise ValueError(f"unknown pruning mode '{mode}' (one of {', '.join(MODES)})")


def select(difficulty: np.ndarray | None, keep: float, *, mode: str = "hardest", drop: float = 0.0,
           labels: np.ndarray | None = None, class_balanced: bool = False, seed: int = 0,
           n: int | None = None) -> np.ndarray:
    """The sorted ids of the examples to keep.

    ``difficulty`` [N]: higher is harder (see :func:`reuse.scores.difficulty`); not needed for
    ``random``. ``keep``: fraction kept, in (0, 1]. Modes: ``hardest`` (Data Diet), ``easiest``,
    ``random`` (seeded), ``drop_noisy`` (drop the ``drop`` fraction with the highest scores, likely
    label noise, then keep the hardest of the rest). ``class_balanced``: apply the rule within each
    class of ``labels``, keeping the same fraction of every class.
    """
    if not 0 < keep <= 1:
        raise ValueError(f"keep must lie in (0, 1], got {keep}")
    if mode not in MODES:
        raise ValueError(f"unknown pruning mode '{mode}' (one of {', '.join(MODES)})")
    if difficulty is None and mode != "random":
        raise ValueError(f"pruning mode '{mode}' needs a difficulty score")
    n = len(difficulty) if difficulty is not None else (n if n is not None else len(labels))
    rng = np.random.default_rng(keyed_seed(seed, STREAM_SELECT))
    groups = [np.arange(n)]
    if class_balanced:
        if labels is None:
            raise ValueError("class_balanced pruning needs the labels")
        labels = np.asarray(labels)
        groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    kept = [_pick(g, difficulty, max(1, round(keep * len(g))), mode, drop, rng) for g in groups if len(g)]
    return np.sort(np.concatenate(kept))


def matched_epochs(n_full: int, n_kept: int, batch_size: int, epochs: int, *, drop_last: bool = False,
                   budget: float = 1.0) -> int:
    """Epochs over ``n_kept`` examples that take (at least) ``budget`` times the optimisation steps of
    ``epochs`` epochs over ``n_full`` examples."""
    def spe(n: int) -> int:
        return n // batch_size if drop_last else -(-n // batch_size)

    if spe(n_kept) == 0:
        raise ValueError(f"{n_kept} kept examples make no full batch of {batch_size} with drop_last")
    return max(1, math.ceil(budget * spe(n_full) * epochs / spe(n_kept)))


class Prune(Algorithm):
    """Train on the examples ``ids`` only, in a fresh order each epoch (a function of seed and epoch)."""

    name = "prune"

    def __init__(self, ids: np.ndarray | torch.Tensor):
        self.ids = torch.as_tensor(np.asarray(ids), dtype=torch.int64)
        if len(self.ids) == 0:
            raise ValueError("pruning kept no examples")

    def examples_per_epoch(self, n: int) -> int:
        return len(self.ids)

    def epoch_ids(self, state: State) -> torch.Tensor:
        return self.ids[epoch_order(len(self.ids), state.seed, state.epoch)]
