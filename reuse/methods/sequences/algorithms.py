"""Trainer hooks of the sequences: a validation curve that may stop a trial early, distillation on
the old part of the data only, and a training budget of an exact number of examples (the
equal-cost comparator of a retraining policy)."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from reuse import ops
from reuse.data.datasets import epoch_order
from reuse.train import evaluate
from reuse.train.events import Algorithm, Event, State


class ValCurve(Algorithm):
    """Evaluate the model on the validation split after every epoch (``val_acc``, ``val_loss`` in the
    epoch's metrics row, with the running ``val_flops`` and ``val_time_s``), and call
    ``report(epoch, val_acc)``; when it returns a reason, training stops after this epoch."""

    name = "val_curve"

    def __init__(self, val, batch_size: int, device: torch.device,
                 report: Callable[[int, float], str | None] | None = None):
        self.val, self.batch_size, self.device, self.report = val, batch_size, device, report
        self.flops, self.time_s = 0, 0.0

    def on_event(self, event: Event, state: State) -> None:
        if event is not Event.EPOCH_END:
            return
        t = time.perf_counter()
        fl: dict[str, int] = {}
        ev = evaluate(state.model, self.val, self.batch_size, self.device, flops=fl)
        self.flops += fl["eval_flops"]
        self.time_s += time.perf_counter() - t
        state.metrics[-1].update(val_acc=ev["acc"], val_loss=ev["loss"], val_flops=self.flops, val_time_s=self.time_s)
        if self.report is not None and (why := self.report(state.epoch, ev["acc"])):
            state.extra["stop"] = why

    def state_dict(self) -> dict:
        return {"flops": self.flops, "time_s": self.time_s}

    def load_state_dict(self, sd: dict) -> None:
        self.flops, self.time_s = sd.get("flops", 0), sd.get("time_s", 0.0)


class PartialDistill(Algorithm):
    """Distil from ``teacher`` (a cached teacher of :mod:`reuse.methods.kd.teachers`) on the examples
    whose ids are ``old``, and train on labels alone on the rest: the batch loss is
    ``(sum over old of [alpha T^2 KL + (1 - alpha) CE] + sum over new of CE) / batch size``."""

    name = "partial_kd"

    def __init__(self, teacher, old: np.ndarray, n: int, *, temperature: float, alpha: float):
        self.teacher, self.temperature, self.alpha = teacher, temperature, alpha
        self.is_old = torch.zeros(n, dtype=torch.bool)
        self.is_old[torch.as_tensor(np.asarray(old), dtype=torch.int64)] = True

    def on_event(self, event: Event, state: State) -> None:
        if event is not Event.LOSS:
            return
        x, y, idx = state.batch
        s = state.outputs
        old = self.is_old[idx.cpu()].to(s.device)
        n_old = int(old.sum())
        loss = F.cross_entropy(s[~old], y[~old], reduction="sum") if n_old < len(y) else s.new_zeros(())
        if n_old:
            kind, payload = self.teacher(idx[old.cpu()] if idx.device.type == "cpu" else idx[old], x[old],
                                         state.epoch, state.step)
            loss = loss + n_old * ops.kd_loss(s[old], payload, y[old], self.temperature, self.alpha,
                                              teacher_kind=kind)
        state.loss = loss / len(y)


def budget_epochs(budget: int, n: int) -> int:
    """The epochs over ``n`` examples that :class:`ExampleBudget` takes for ``budget`` examples (the
    last one partial when ``n`` does not divide ``budget``)."""
    return -(-int(budget) // int(n))


class ExampleBudget(Algorithm):
    """Train on the examples ``ids`` for exactly ``budget`` examples: whole epochs over them, each in
    a fresh order (a function of seed and epoch, drawn as :class:`reuse.methods.prune.prune.Prune`
    draws it, so the whole epochs are those of a run on ``ids``), then the first ``budget mod
    len(ids)`` examples of one more epoch's order. The learning-rate schedule spans exactly the steps
    taken: the trainer sizes it for whole epochs, so this sets ``state.total_steps`` at the start of
    fit (also after a resume). The recipe's ``epochs`` must be :func:`budget_epochs` and its
    ``drop_last`` false (every example of the budget is trained on)."""

    name = "example_budget"

    def __init__(self, ids: np.ndarray | torch.Tensor, budget: int, batch_size: int):
        self.ids = torch.as_tensor(np.asarray(ids), dtype=torch.int64)
        n, bs = len(self.ids), int(batch_size)
        if n == 0 or budget < 1:
            raise ValueError(f"an example budget needs examples and a positive budget (got {n} examples, "
                             f"budget {budget})")
        self.budget = int(budget)
        self.epochs = budget_epochs(self.budget, n)
        self.last = self.budget - (self.epochs - 1) * n  # examples of the last (maybe partial) epoch
        self.steps = (self.epochs - 1) * -(-n // bs) + -(-self.last // bs)

    def examples_per_epoch(self, n: int) -> int:
        return len(self.ids)

    def epoch_ids(self, state: State) -> torch.Tensor:
        order = self.ids[epoch_order(len(self.ids), state.seed, state.epoch)]
        return order[: self.last] if state.epoch == self.epochs - 1 else order

    def on_event(self, event: Event, state: State) -> None:
        if event is Event.FIT_START:
            if state.recipe["epochs"] != self.epochs:
                raise ValueError(f"an example budget of {self.budget} over {len(self.ids)} examples takes "
                                 f"{self.epochs} epochs; the recipe says {state.recipe['epochs']}")
            state.total_steps = self.steps
