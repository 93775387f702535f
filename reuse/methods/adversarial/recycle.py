"""Training with adversarial examples: recycled from a cache made against past runs, or generated
against the current model on every step (the costly baseline).

Pure functions transform a batch; :class:`AdversarialTraining` applies them in the trainer at
``Event.BATCH``. Uses:

- ``mix``: a ``ratio`` of each batch (``round(ratio * B)`` positions, drawn per step) is replaced by
  the adversarial versions of the same examples; labels and ids stay as they are;
- ``mixup`` ("past-adversarial MixUp"): every input becomes ``lam * x + (1 - lam) * x_adv`` of its
  own adversarial version, ``lam ~ Beta(alpha, alpha)`` once per step, same labels;
- ``advprop``: as ``mix``, but the adversarial rows go through an auxiliary set of BatchNorm layers
  (Xie et al. 2020); the clean rows and evaluation use the main ones, so the checkpoint is a standard
  model.

Recycled adversarial inputs are those stored in the cache: the *unaugmented* training input plus its
perturbation (the perturbation was computed for it, and would not be adversarial for a shifted
copy). Online adversarial inputs are generated from the batch as the trainer made it (augmented).
Every random draw is a function of ``(seed, step)``, so a resumed run is exact.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from reuse.data.augment import keyed_seed
from reuse.errors import ReuseError
from reuse.methods.adversarial.attacks import attack
from reuse.train.events import Algorithm, Event, State

USES = ("mix", "mixup", "advprop")
STREAM_MIX, STREAM_LAMBDA, STREAM_ONLINE = 102, 103, 104


def _generator(*keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(keyed_seed(*keys))


def mix_positions(batch_size: int, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Boolean mask of the ``round(ratio * batch_size)`` batch positions that take adversarial inputs,
    drawn with ``generator``."""
    if not 0 <= ratio <= 1:
        raise ValueError(f"mix ratio must lie in [0, 1], got {ratio}")
    k = int(round(ratio * batch_size))
    mask = torch.zeros(batch_size, dtype=torch.bool)
    mask[torch.randperm(batch_size, generator=generator)[:k]] = True
    return mask


def mix_batch(x: torch.Tensor, x_adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` with the rows in ``mask`` replaced by ``x_adv`` (rows of the same examples; ``x_adv`` has
    one row per position of ``mask``, or one per True of it)."""
    m = mask.to(x.device)
    out = x.clone()
    out[m] = x_adv if x_adv.shape[0] == int(m.sum()) else x_adv[m]
    return out


def mixup_batch(x: torch.Tensor, x_adv: torch.Tensor, lam: float) -> torch.Tensor:
    """The convex combination ``lam * x + (1 - lam) * x_adv`` (labels unchanged: both are the same example)."""
    return lam * x + (1.0 - lam) * x_adv


def sample_lambda(alpha: float, seed: int) -> float:
    """``lam ~ Beta(alpha, alpha)``, drawn with a numpy generator seeded by ``seed``."""
    return float(np.random.default_rng(seed).beta(alpha, alpha))


# ----------------------------------------------------------------------------- auxiliary BatchNorm
_BN_TYPES = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)


def batchnorm_layers(model: torch.nn.Module) -> dict[str, torch.nn.modules.batchnorm._BatchNorm]:
    return {name: m for name, m in model.named_modules() if isinstance(m, _BN_TYPES)}


class AuxBatchNorm:
    """An auxiliary copy of every BatchNorm layer of ``model``; while attached, the rows of a batch
    flagged in :attr:`mask` go through the copies, the others through the model's own layers.

    The copies live here, not in the model: attaching only routes each BatchNorm's forward (an
    instance attribute, removed by :meth:`detach`), so the model's ``state_dict`` keeps its standard
    keys all along, in every checkpoint the trainer writes, and loads into a fresh model.
    """

    def __init__(self, model: torch.nn.Module):
        self.main = batchnorm_layers(model)
        if not self.main:
            raise ReuseError(f"advprop needs a model with BatchNorm layers for its auxiliary BatchNorm, and "
                             f"{type(model).__name__} has none; use `use: mix` or `mixup` for this model")
        self.aux = torch.nn.ModuleDict({k.replace(".", "__"): copy.deepcopy(m) for k, m in self.main.items()})
        self.mask: torch.Tensor | None = None
        self.attached = False

    def parameters(self):
        return self.aux.parameters()

    def attach(self) -> None:
        for name, bn in self.main.items():
            bn.forward = self._routed(bn, self.aux[name.replace(".", "__")])
        self.attached = True

    def detach(self) -> None:
        for bn in self.main.values():
            bn.__dict__.pop("forward", None)
        self.attached = False

    def _routed(self, bn, aux):
        plain = type(bn).forward

        def forward(x: torch.Tensor) -> torch.Tensor:
            m = self.mask
            if not bn.training or m is None or not bool(m.any()):
                return plain(bn, x)
            m = m.to(x.device)
            if bool(m.all()):
                return aux(x)
            order = torch.cat([torch.nonzero(~m).flatten(), torch.nonzero(m).flatten()])
            out = torch.cat([plain(bn, x[~m]), aux(x[m])])
            return out[torch.argsort(order)]

        return forward


# ----------------------------------------------------------------------------- the trainer hook
class AdversarialTraining(Algorithm):
    """Adversarial examples in training: from ``cache`` (:class:`AdvCache`, recycled) with ``train``
    (the training split, for the clean inputs), or, with ``online`` (an attack spec), generated
    against the current model on every step.

    ``use``: mix | mixup | advprop (see the module doc); ``ratio``: fraction of each batch made
    adversarial (mix, advprop); ``alpha``: Beta parameter of mixup. An online attack runs inside the
    trainer's step, so its forward and backward passes are counted in the run's FLOPs and time.
    """

    name = "adversarial"

    def __init__(self, *, use: str = "mix", ratio: float = 0.5, alpha: float = 1.0, cache=None, train=None,
                 online: dict[str, Any] | None = None, bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
                 seed: int = 0):
        if use not in USES:
            raise ValueError(f"unknown adversarial use '{use}' (one of {', '.join(USES)})")
        if (cache is None) == (online is None):
            raise ValueError("give either a cache of recycled adversarial examples or an online attack, not both")
        if cache is not None and train is None:
            raise ValueError("recycled adversarial examples need the training split for their clean inputs")
        if not 0 <= ratio <= 1:
            raise ValueError(f"mix ratio must lie in [0, 1], got {ratio}")
        self.use, self.ratio, self.alpha = use, ratio, alpha
        self.cache, self.train, self.online, self.seed = cache, train, online, seed
        self.bounds = bounds if bounds is not None else (cache.bounds if cache is not None else None)
        self.aux: AuxBatchNorm | None = None
        self.aux_opt: torch.optim.Optimizer | None = None
        self._pending: dict[str, Any] = {}

    # -- the adversarial rows of one step
    def adversarial_rows(self, state: State, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
        """Adversarial versions of the batch rows in ``mask`` (one row per True)."""
        m = mask.to(x.device)
        if self.cache is not None:
            ids = idx[m].cpu()
            x_clean = self.train.get(ids)[0].to(x.device)
            return self.cache.adversarial(x_clean, ids)
        g = _generator(self.seed, state.step, STREAM_ONLINE)
        return attack(state.model, x[m], y[m], self.online, self.bounds, g)

    def transform(self, state: State, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The step's training inputs and the mask of adversarial rows (None for mixup)."""
        if self.use == "mixup":
            mask = torch.ones(x.shape[0], dtype=torch.bool)
            lam = sample_lambda(self.alpha, keyed_seed(self.seed, state.step, STREAM_LAMBDA))
            return mixup_batch(x, self.adversarial_rows(state, x, y, idx, mask), lam), None
        mask = mix_positions(x.shape[0], self.ratio, _generator(self.seed, state.step, STREAM_MIX))
        if not bool(mask.any()):
            return x, mask
        return mix_batch(x, self.adversarial_rows(state, x, y, idx, mask), mask), mask

    # -- events
    def on_event(self, event: Event, state: State) -> None:
        if event is Event.FIT_START and self.use == "advprop":
            self._start_aux(state)
        elif event is Event.BATCH:
            x, y, idx = state.batch[:3]
            x, mask = self.transform(state, x, y, idx)
            state.batch = (x, y, idx)
            if self.aux is not None:
                self.aux.mask = mask
        elif event is Event.AFTER_BACKWARD and self.aux_opt is not None:
            for group in self.aux_opt.param_groups:
                group["lr"] = state.optimizer.param_groups[0]["lr"]
            self.aux_opt.step()
            self.aux_opt.zero_grad(set_to_none=True)
            self.aux.mask = None
        elif event is Event.FIT_END and self.aux is not None:
            self.aux.detach()

    def _start_aux(self, state: State) -> None:
        from reuse.train.trainer import make_optimizer

        self.aux = AuxBatchNorm(state.model)
        self.aux.aux.to(state.device)
        self.aux_opt = make_optimizer(self.aux.parameters(), state.recipe["optimizer"])
        if self._pending:
            self.aux.aux.load_state_dict(self._pending["aux"])
            self.aux_opt.load_state_dict(self._pending["aux_opt"])
            self._pending = {}
        self.aux.attach()

    def state_dict(self) -> dict[str, Any]:
        if self.aux is None:
            return {}
        return {"aux": self.aux.aux.state_dict(), "aux_opt": self.aux_opt.state_dict()}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self._pending = dict(sd)
