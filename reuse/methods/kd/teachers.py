"""Where a student's soft targets come from: logit caches of past runs, or a live teacher model.

A teacher returns ``(kind, payload)`` for a batch, in the forms ``reuse.ops.kd_loss`` takes:
``("logits", t)`` (float16 straight from a cache), ``("topk", (values, indices, logsumexp))`` (a
cache's sparse form) or ``("probs", p)`` (probabilities already at temperature T: an ensemble's mean,
or a mix of two checkpoints).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from reuse.cache import LogitCache
from reuse.errors import ReuseError
from reuse.methods.kd.functional import beta_draws, ensemble_probs, mix, pick_teacher, tempered_probs

Payload = tuple[str, Any]


def _ids(idx: torch.Tensor) -> np.ndarray:
    return idx.cpu().numpy()


def _aug_views(cache: LogitCache) -> list[dict]:
    return [v for v in cache.views if v["kind"] == "augment"]


class CachedTeacher:
    """One or more past runs' logit caches (all of the same checkpoint epoch), looked up by example id.

    ``mode``: ``single`` (the first cache), ``ensemble`` (mean tempered probabilities of all) or
    ``random`` (one cache per step, drawn from ``(seed, step)``). ``views``: how many of the caches'
    augmented views the student cycles through, one per epoch (``None``: all; ``0``: the clean view
    only, and the student trains without augmentation).
    """

    def __init__(self, caches: list[LogitCache], *, mode: str = "single", temperature: float = 4.0,
                 seed: int = 0, views: int | None = None, device: torch.device | str = "cpu"):
        if not caches:
            raise ReuseError("a cached teacher needs at least one logit cache")
        if mode not in ("single", "ensemble", "random"):
            raise ReuseError(f"unknown teacher mode '{mode}' (single, ensemble, random)")
        keys = [[(v["seed"], v["view"], v["augment"]) for v in _aug_views(c)] for c in caches]
        if any(k != keys[0] for k in keys):
            raise ReuseError("the teacher caches hold different augmented views (their cache.seed differs); "
                             "an ensemble or random teacher needs caches written with the same cache.seed")
        available = len(keys[0])
        self.num_views = available if views is None else views
        if self.num_views > available:
            raise ReuseError(f"the student asks for {self.num_views} augmented views but the teacher caches hold "
                             f"{available}; raise cache.views or lower the variant's views")
        self.caches, self.mode, self.temperature, self.seed, self.device = caches, mode, temperature, seed, device
        self.aug = _aug_views(caches[0])[: self.num_views]

    @property
    def augment(self) -> dict | None:
        """The augmentation the student must use to see the cached views (None: clean inputs)."""
        return self.aug[0]["augment"] if self.aug else None

    def augment_key(self, epoch: int) -> tuple[int, int] | None:
        """The (seed, view) the student's augmentation draws in ``epoch``."""
        if not self.aug:
            return None
        v = self.aug[epoch % len(self.aug)]
        return v["seed"], v["view"]

    def cache_view(self, cache: LogitCache, epoch: int) -> int:
        key = self.augment_key(epoch)
        return 0 if key is None else cache.view_index("augment", seed=key[0], view=key[1])

    def _one(self, cache: LogitCache, idx: torch.Tensor, view: int) -> Payload:
        ids = _ids(idx)
        if "logits" in cache.arrays:
            return "logits", torch.from_numpy(np.asarray(cache.arrays["logits"][ids, view])).to(self.device)
        vals = torch.from_numpy(np.asarray(cache.arrays["topk_values"][ids, view]))
        ind = torch.from_numpy(np.asarray(cache.arrays["topk_indices"][ids, view]).astype(np.int64))
        lse = torch.from_numpy(np.asarray(cache.arrays["logsumexp"][ids, view]))
        return "topk", (vals.to(self.device), ind.to(self.device), lse.to(self.device))

    def probs(self, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        """Teacher probabilities at temperature T (for methods that mix targets)."""
        if self.mode == "ensemble":
            return ensemble_probs([c.logits(_ids(idx), self.cache_view(c, epoch)) for c in self.caches],
                                  self.temperature).to(self.device)
        return tempered_probs(self.caches[0].logits(_ids(idx), self.cache_view(self.caches[0], epoch)),
                              self.temperature).to(self.device)

    def __call__(self, idx: torch.Tensor, x: torch.Tensor, epoch: int, step: int) -> Payload:
        if self.mode == "ensemble":
            return "probs", self.probs(idx, epoch)
        cache = self.caches[pick_teacher(len(self.caches), self.seed, step) if self.mode == "random" else 0]
        return self._one(cache, idx, self.cache_view(cache, epoch))


class CheckpointMixupTeacher(CachedTeacher):
    """Soft targets ``lam * p_a + (1 - lam) * p_b`` from two checkpoints' caches of one past run, with
    ``lam ~ Beta(beta, beta)`` drawn per example from ``(seed, step)``."""

    def __init__(self, cache_a: LogitCache, cache_b: LogitCache, *, beta: float = 0.4, **kw):
        super().__init__([cache_a, cache_b], mode="single", **kw)
        self.beta = beta

    def __call__(self, idx: torch.Tensor, x: torch.Tensor, epoch: int, step: int) -> Payload:
        a, b = (tempered_probs(c.logits(_ids(idx), self.cache_view(c, epoch)), self.temperature) for c in self.caches)
        lam = beta_draws(self.beta, len(idx), self.seed, step)
        return "probs", mix(a, b, lam).to(self.device)

    def probs(self, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        raise ReuseError("checkpoint MixUp and input MixUp do not combine; choose one")


class OnlineTeacher:
    """A past run's model, evaluated on every batch (the costly baseline that caches avoid)."""

    augment = None
    num_views = 0

    def __init__(self, model: torch.nn.Module):
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def augment_key(self, epoch: int) -> None:
        return None

    @torch.no_grad()
    def __call__(self, idx: torch.Tensor, x: torch.Tensor, epoch: int, step: int) -> Payload:
        return "logits", self.model(x)
