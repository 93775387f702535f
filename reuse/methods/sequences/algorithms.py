"""Trainer hooks of the sequences: a validation curve that may stop a trial early, and distillation
on the old part of the data only."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from reuse import ops
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
