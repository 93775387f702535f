"""The pure functions of distillation from past runs.

Everything random is a function of ``(seed, step)`` (and example ids), never of a global generator, so
a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import torch

from reuse.data.augment import keyed_seed

STREAM_TEACHER, STREAM_MIXUP = 11, 12


def tempered_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / T) in float32."""
    return torch.softmax(logits.float() / temperature, dim=-1)


def ensemble_probs(teacher_logits: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """The ensemble teacher: the mean of the teachers' probabilities at temperature T (not of logits)."""
    return torch.stack([tempered_probs(t, temperature) for t in teacher_logits]).mean(0)


def pick_teacher(num_teachers: int, seed: int, step: int) -> int:
    """The teacher used at ``step`` when one past run is sampled per step (Blakeney et al. 2022)."""
    return keyed_seed(seed, step, STREAM_TEACHER) % num_teachers


def beta_draws(alpha: float, n: int, seed: int, step: int) -> torch.Tensor:
    """``n`` draws of lam ~ Beta(alpha, alpha), determined by ``(seed, step)``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(keyed_seed(seed, step, STREAM_MIXUP))
        return torch.distributions.Beta(alpha, alpha).sample((n,))


def mixup_permutation(n: int, seed: int, step: int) -> torch.Tensor:
    """The partner of each example in a batch of ``n`` for input MixUp, determined by ``(seed, step)``."""
    g = torch.Generator().manual_seed(keyed_seed(seed, step, STREAM_MIXUP, 1))
    return torch.randperm(n, generator=g)


def mix(a: torch.Tensor, b: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``lam * a + (1 - lam) * b`` with ``lam`` a scalar or one value per example (leading axis)."""
    lam = lam.to(a.device, torch.float32).view(-1, *([1] * (a.ndim - 1))) if lam.ndim else lam
    return (lam * a + (1 - lam) * b).to(a.dtype)
