"""Loss re-weighting by past runs' scores.

Each example's cross-entropy is multiplied by a weight from its difficulty rank:
``w = 1 + strength * (2 r - 1)`` with ``r = (rank + 1/2) / N`` in (0, 1) (rank 0 = easiest). The
weights average exactly 1 over the training set, so the learning rate keeps its meaning; a positive
``strength`` up-weights hard examples (focus on the informative ones), a negative one down-weights
them (robustness to label noise). Ranks make the rule independent of the score's scale.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from reuse.train.events import Algorithm, Event, State


def rank_weights(difficulty: np.ndarray, strength: float) -> np.ndarray:
    """Per-example weights in ``[1 - |strength|, 1 + |strength|]`` with mean 1 (ties share a rank)."""
    if not -1 <= strength <= 1:
        raise ValueError(f"strength must lie in [-1, 1] so that weights stay >= 0, got {strength}")
    from reuse.metrics import average_ranks

    n = len(difficulty)
    r = (average_ranks(difficulty) - 0.5) / n
    return 1.0 + strength * (2.0 * r - 1.0)


def weighted_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                           label_smoothing: float = 0.0) -> torch.Tensor:
    """``mean_i w_i * CE(logits_i, y_i)`` (the batch mean, not normalised by the weights' sum)."""
    per = F.cross_entropy(logits, targets, reduction="none", label_smoothing=label_smoothing)
    return (per * weights.to(per.dtype)).mean()


class Reweight(Algorithm):
    """Replace the loss with the weighted cross-entropy, weights looked up by example id."""

    name = "reweight"

    def __init__(self, weights: np.ndarray | torch.Tensor):
        self.weights = torch.as_tensor(np.asarray(weights), dtype=torch.float32)

    def on_event(self, event: Event, state: State) -> None:
        if event is Event.LOSS:
            x, y, idx = state.batch[:3]
            w = self.weights[idx.cpu()].to(state.outputs.device)
            state.loss = weighted_cross_entropy(state.outputs, y, w, state.recipe.get("label_smoothing", 0.0))
