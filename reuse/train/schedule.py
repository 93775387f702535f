"""Learning-rate schedules as pure functions of the step, so a resumed run needs only the step.

``lr_at(step)`` is the learning rate used for optimizer step ``step`` (0-based). Epoch-valued
settings (warmup, milestones) are converted to steps with the run's steps per epoch.
"""

from __future__ import annotations

import math
from typing import Any


def lr_at(step: int, *, base_lr: float, schedule: dict[str, Any], steps_per_epoch: int, total_steps: int) -> float:
    name = schedule.get("name", "constant")
    warmup = round(float(schedule.get("warmup_epochs", 0)) * steps_per_epoch)
    if name == "onecycle":
        # Piecewise linear: start_fraction*lr -> lr at pct_start of training -> end_fraction*lr.
        peak = max(1, round(float(schedule.get("pct_start", 0.25)) * total_steps))
        lo, hi = float(schedule.get("start_fraction", 0.04)), float(schedule.get("end_fraction", 0.0))
        if step < peak:
            return base_lr * (lo + (1 - lo) * step / peak)
        return base_lr * (1 + (hi - 1) * min(1.0, (step - peak) / max(1, total_steps - peak)))
    factor = (step + 1) / warmup if step < warmup else 1.0
    if name == "constant":
        return base_lr * factor
    if name == "step":
        passed = sum(step >= round(float(m) * steps_per_epoch) for m in schedule.get("milestones", []))
        return base_lr * factor * float(schedule.get("gamma", 0.1)) ** passed
    if name == "cosine":
        t = min(1.0, max(0, step - warmup) / max(1, total_steps - warmup))
        floor = float(schedule.get("final_fraction", 0.0))
        return base_lr * factor * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))
    raise ValueError(f"unknown schedule '{name}' (constant, step, cosine, onecycle)")
