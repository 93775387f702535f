"""The trainer hook of distillation from past runs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reuse import ops
from reuse.methods.kd.functional import beta_draws, mix, mixup_permutation
from reuse.train.events import Algorithm, Event, State


class Distill(Algorithm):
    """Replace the loss with ``alpha * T^2 * KL(p_teacher || softmax(s/T)) + (1 - alpha) * CE(s, y)``.

    ``teacher``: a :mod:`reuse.methods.kd.teachers` object. ``until``: distil over the first fraction
    of the optimizer steps only, then train on plain cross-entropy (an overhead-cutting strategy of
    Blakeney et al. 2022). ``input_mixup``: Beta parameter of input MixUp (Zhang et al. 2017) whose
    teacher targets and hard labels are mixed with the same ``lam`` as the inputs (None: off).
    """

    name = "kd"

    def __init__(self, teacher, *, temperature: float = 4.0, alpha: float = 0.9, until: float = 1.0,
                 input_mixup: float | None = None, seed: int = 0):
        self.teacher, self.temperature, self.alpha, self.until = teacher, temperature, alpha, until
        self.input_mixup, self.seed = input_mixup, seed
        self._mixed: tuple[torch.Tensor, torch.Tensor] | None = None

    def active(self, state: State) -> bool:
        return state.step < self.until * state.total_steps

    def flops_key(self, state: State) -> bool:
        return self.active(state)

    def on_event(self, event: Event, state: State) -> None:
        if event is Event.EPOCH_START:
            key = self.teacher.augment_key(state.epoch)
            if key is not None:
                state.extra["augment_key"] = key
        elif event is Event.BATCH and self.input_mixup and self.active(state):
            x, y, idx = state.batch
            lam = beta_draws(self.input_mixup, 1, self.seed, state.step)[0]
            perm = mixup_permutation(len(idx), self.seed, state.step).to(x.device)
            self._mixed = (lam, perm)
            state.batch = (mix(x, x[perm], lam), y, idx)
        elif event is Event.LOSS and self.active(state):
            state.loss = self.loss(state)

    def loss(self, state: State) -> torch.Tensor:
        s = state.outputs
        x, y, idx = state.batch
        if self._mixed is not None:
            lam, perm = self._mixed
            self._mixed = None
            p = mix(self.teacher.probs(idx, state.epoch), self.teacher.probs(idx[perm.cpu()], state.epoch), lam)
            kd = ops.kd_loss(s, p, y, self.temperature, 1.0, teacher_kind="probs")
            ce = lam * F.cross_entropy(s, y) + (1 - lam) * F.cross_entropy(s, y[perm])
            return self.alpha * kd + (1 - self.alpha) * ce
        kind, payload = self.teacher(idx, x, state.epoch, state.step)
        return ops.kd_loss(s, payload, y, self.temperature, self.alpha, teacher_kind=kind)
