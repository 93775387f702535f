"""The trainer's events and the base class of everything that hooks into them.

A reuse method is a small :class:`Algorithm` (as in Composer): the trainer calls
``algorithm.on_event(event, state)`` at each event, in the order the algorithms were given, and the
algorithm reads or replaces fields of :class:`State` (the batch before the forward pass, the loss
after it, the gradients after backward).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import torch


class Event(enum.Enum):
    FIT_START = "fit_start"            # before the first epoch (also after a resume)
    EPOCH_START = "epoch_start"
    BATCH = "batch"                    # state.batch = (x, y, idx) on the device; may be replaced
    LOSS = "loss"                      # state.outputs and state.loss set; state.loss may be replaced
    AFTER_BACKWARD = "after_backward"  # gradients are in .grad; before the optimizer step
    EPOCH_END = "epoch_end"            # after the epoch's evaluation; state.metrics[-1] is this epoch
    FIT_END = "fit_end"                # after the last epoch's checkpoint (also when a resume finds the
                                       # run complete); an algorithm that replaces the weights here sets
                                       # state.extra["weights_replaced"] (see Trainer._after_fit_end)


@dataclass
class State:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    recipe: dict[str, Any]
    seed: int
    device: torch.device
    steps_per_epoch: int
    total_steps: int
    epoch: int = 0                     # the epoch in progress (0-based); after fit, the number done
    step: int = 0                      # optimizer steps taken
    examples_seen: int = 0
    batch: tuple[torch.Tensor, ...] | None = None
    outputs: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    # Scratch space shared by algorithms. Read by the trainer: "augment_key" = (seed, view), set at
    # EPOCH_START, makes the epoch's augmentation draw that view instead of (run seed, epoch);
    # "stop" = a reason, set at EPOCH_END, ends training after this epoch (early stopping): the
    # trainer checkpoints the epoch, and a resume from that checkpoint does not train further.
    extra: dict[str, Any] = field(default_factory=dict)


class Algorithm:
    """Base class of a trainer hook. Subclasses override :meth:`on_event` and, if they keep state
    that must survive a resume, :meth:`state_dict` / :meth:`load_state_dict`."""

    name: str = "algorithm"

    def on_event(self, event: Event, state: State) -> None:  # pragma: no cover - default no-op
        pass

    def examples_per_epoch(self, n: int) -> int:
        """How many examples an epoch takes when ``n`` would (the trainer sizes epochs and the
        learning-rate schedule from it); a data-pruning method returns the kept count."""
        return n

    def epoch_ids(self, state: State) -> torch.Tensor | None:
        """The example ids the epoch ``state.epoch`` trains on, in order (batches are consecutive
        slices), or None to keep the trainer's shuffled full set. Called at the start of each epoch,
        after EPOCH_START; must be a function of (seed, epoch) so a resumed run sees the same data."""
        return None

    def flops_key(self, state: State) -> Any:
        """Anything that changes the cost of a training step (the trainer measures FLOPs once per key)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        pass
