"""Reusing past runs' weights: warm starts, shrink and perturb, model soups, SWA and EMA.

Pure functions on state dicts (``shrink_perturb``, ``average_state_dicts``, ``greedy_soup``) and on
models (``recompute_bn``), plus :class:`WeightAveraging`, the trainer hook that averages the weights
of one run along its trajectory (SWA per epoch, EMA per step) and makes the average the run's final
model.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterable, Mapping

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn
from reuse.train.flops import FlopCounterMode

from reuse.errors import ReuseError
from reuse.train.events import Algorithm, Event, State

StateDict = Mapping[str, torch.Tensor]


_WARM_FIX = "warm start from a run of the same architecture and args (set `from.model` to a model with the same arch and args as `model`)"


def check_same_architecture(target: StateDict, source: StateDict, what: str = "the past run", fix: str = _WARM_FIX) -> None:
    """Raise :class:`ReuseError` unless ``source`` has exactly the parameters and buffers of
    ``target`` with the same shapes; the message names the first mismatched entry and ``fix``."""
    missing = [k for k in target if k not in source]
    extra = [k for k in source if k not in target]
    if missing or extra:
        name = missing[0] if missing else extra[0]
        where = "is missing from" if missing else "is not in the new model but is in"
        raise ReuseError(f"architecture mismatch: parameter '{name}' {where} {what} ({len(missing)} missing, "
                         f"{len(extra)} extra); {fix}")
    for k, t in target.items():
        if tuple(source[k].shape) != tuple(t.shape):
            raise ReuseError(f"architecture mismatch: parameter '{k}' has shape {tuple(source[k].shape)} in {what} "
                             f"but {tuple(t.shape)} in the new model; {fix}")


def shrink_perturb(past: StateDict, fresh: StateDict, shrink: float = 1.0,
                   perturb: float = 0.0) -> dict[str, torch.Tensor]:
    """Ash & Adams 2020: ``shrink * past + perturb * fresh`` for every floating-point entry, where
    ``fresh`` is a new random initialisation of the same model (the "noise"). Integer entries (e.g.
    BatchNorm's ``num_batches_tracked``) come from ``past``. ``shrink=1, perturb=0`` is a plain warm
    start (the past weights, exactly)."""
    check_same_architecture(fresh, past)
    out = {}
    for k, w in past.items():
        if not w.is_floating_point():
            out[k] = w.clone()
        elif shrink == 1.0 and perturb == 0.0:
            out[k] = w.clone()
        else:
            out[k] = shrink * w + perturb * fresh[k].to(w.dtype)
    return out


def average_state_dicts(sds: list[StateDict]) -> dict[str, torch.Tensor]:
    """The uniform soup: the mean of every floating-point entry over ``sds`` (computed in float64);
    integer entries (``num_batches_tracked``) from the first."""
    if not sds:
        raise ValueError("a soup needs at least one ingredient")
    for i, sd in enumerate(sds[1:], 1):
        check_same_architecture(sds[0], sd, f"ingredient {i}")
    out = {}
    for k, w in sds[0].items():
        if w.is_floating_point():
            out[k] = (sum(sd[k].double() for sd in sds) / len(sds)).to(w.dtype)
        else:
            out[k] = w.clone()
    return out


def greedy_soup(sds: list[StateDict], score: Callable[[StateDict], float],
                scores: list[float] | None = None) -> dict[str, Any]:
    """The greedy soup (Wortsman et al. 2022): order the ingredients by held-out accuracy ``score``
    (best first, ties by position), start from the best and add each next one if the uniform mean of
    the chosen ones does not score lower on the held-out data.

    ``scores``: the ingredients' own held-out scores if already known. Returns ``state_dict``, the
    chosen indices ``chosen`` (in the order added), ``order``, the ingredients' ``scores`` and the
    soup's held-out ``score``; ``evaluations`` counts the calls of ``score``.
    """
    evaluations = 0
    if scores is None:
        scores = [score(sd) for sd in sds]
        evaluations += len(sds)
    order = sorted(range(len(sds)), key=lambda i: (-scores[i], i))
    chosen, best = [order[0]], scores[order[0]]
    for i in order[1:]:
        s = score(average_state_dicts([sds[j] for j in chosen + [i]]))
        evaluations += 1
        if s >= best:
            chosen.append(i)
            best = s
    return {"state_dict": average_state_dicts([sds[j] for j in chosen]), "chosen": chosen, "order": order,
            "scores": list(scores), "score": best, "evaluations": evaluations}


def has_batchnorm(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def recompute_bn(model: torch.nn.Module, batches: Iterable, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Recompute the BatchNorm running statistics of ``model`` on ``batches`` (``(x, ...)`` tuples)
    with :func:`torch.optim.swa_utils.update_bn` (an equal-weight average over the batches); averaged
    weights need this, as the mean of running statistics is not the statistics of the mean model.
    A model without BatchNorm is left alone. Returns ``done``, ``time_s`` and the forward ``flops``."""
    if not has_batchnorm(model):
        return {"done": False, "time_s": 0.0, "flops": 0}
    t = time.perf_counter()
    with FlopCounterMode(display=False) as counter:
        update_bn(batches, model, device=torch.device(device))
    return {"done": True, "time_s": time.perf_counter() - t, "flops": counter.get_total_flops()}


class WeightAveraging(Algorithm):
    """Average the weights of this run along its trajectory and end with the average.

    ``kind="swa"`` (Izmailov et al. 2018): the equal-weight mean of the weights at the end of every
    epoch after the first ``start`` fraction of the epochs, optionally at a constant learning rate
    ``swa_lr`` over those epochs. ``kind="ema"``: an exponential moving average with ``decay`` per
    optimizer step, from the first step after the ``start`` fraction. At FIT_END the model's weights
    become the average (BatchNorm statistics recomputed on ``bn_batches()``, an iterable of training
    batches, when the model has BatchNorm), so the run evaluates and saves the averaged model.
    """

    name = "weight_averaging"

    def __init__(self, kind: str, *, start: float = 0.75, decay: float = 0.999, swa_lr: float | None = None,
                 bn_batches: Callable[[], Iterable] | None = None):
        if kind not in ("swa", "ema"):
            raise ValueError(f"unknown weight averaging kind '{kind}' (swa, ema)")
        if not 0 <= start < 1:
            raise ValueError(f"start must lie in [0, 1), got {start}")
        self.kind, self.start, self.decay, self.swa_lr = kind, start, decay, swa_lr
        self.bn_batches = bn_batches
        self.avg: AveragedModel | None = None
        self.updated_at = -1          # the optimizer step whose weights were averaged last
        self.snapshots = 0
        self.done = False             # the model already holds the average (a resume after FIT_END)
        self._pending: dict[str, Any] | None = None

    def first_epoch(self, epochs: int) -> int:
        """The 0-based epoch at which averaging starts."""
        return min(epochs - 1, int(math.floor(self.start * epochs + 1e-9)))

    def _averaging(self, state: State) -> bool:
        """Whether the epoch in progress is in the averaging phase."""
        return state.epoch >= self.first_epoch(state.recipe["epochs"])

    def _update(self, state: State) -> None:
        if state.step > self.updated_at:
            self.avg.update_parameters(state.model)
            self.updated_at = state.step
            self.snapshots += 1

    def on_event(self, event: Event, state: State) -> None:
        if event == Event.FIT_START:
            multi = get_ema_multi_avg_fn(self.decay) if self.kind == "ema" else None
            self.avg = AveragedModel(state.model, device=state.device, multi_avg_fn=multi)
            if self._pending is not None:
                self.avg.load_state_dict(self._pending)
                self._pending = None
        elif event == Event.BATCH and self._averaging(state):
            if self.kind == "swa" and self.swa_lr is not None:
                for group in state.optimizer.param_groups:
                    group["lr"] = self.swa_lr
            if self.kind == "ema" and state.step > self.first_epoch(state.recipe["epochs"]) * state.steps_per_epoch:
                self._update(state)  # the weights after the previous step (a step of the averaging phase)
        elif event == Event.EPOCH_END and state.epoch > self.first_epoch(state.recipe["epochs"]):
            self._update(state)  # SWA: the epoch's final weights; EMA: the epoch's last step
        elif event == Event.FIT_END and not self.done:
            if self.snapshots == 0:
                raise ReuseError(f"{self.kind} averaged no weights: start={self.start} leaves no epoch to average; "
                                 "lower `start`")
            t = time.perf_counter()
            state.model.load_state_dict(self.avg.module.state_dict())
            cost = {"time_s": 0.0, "flops": 0}
            if self.bn_batches is not None:
                bn = recompute_bn(state.model, self.bn_batches(), state.device)
                cost["flops"] = bn["flops"]
            cost["time_s"] = time.perf_counter() - t
            self.done = True
            state.extra["weights_replaced"] = cost

    def state_dict(self) -> dict[str, Any]:
        return {"avg": None if self.avg is None else self.avg.state_dict(), "updated_at": self.updated_at,
                "snapshots": self.snapshots, "done": self.done}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        if not sd:
            return
        self._pending = sd["avg"]
        self.updated_at, self.snapshots, self.done = sd["updated_at"], sd["snapshots"], sd["done"]
