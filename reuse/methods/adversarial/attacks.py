"""FGSM and PGD attacks (L-inf and L2), the valid input range, and robust accuracy.

Units: ``eps`` and ``step`` are in the units of the inputs the model sees, i.e. the dataset's
*normalised* inputs (``(x * scale - mean) / std`` per channel, see :class:`reuse.data.datasets.TensorData`),
not raw pixels. An L-inf budget of 8/255 on raw CIFAR pixels is about ``8/255/0.25 = 0.13`` here.

The valid input range (``bounds``) is the per-channel minimum and maximum of the normalised training
inputs (:func:`input_bounds`): an attack never produces a value that no training input takes on that
channel. An input that itself lies outside the bounds (a test signal beyond the training range, a
zero-padded shift) widens them for that input, so the adversarial input always stays within the
``eps`` ball around it.

The attacks are pure functions of the model, the inputs and a seeded generator (random start only);
they run the model in eval mode (BatchNorm uses its running statistics, dropout is off), restore its
mode afterwards and leave the parameters' ``.grad`` untouched.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from reuse.train.flops import FlopCounterMode

NORMS = ("linf", "l2")
KINDS = ("fgsm", "pgd")
STREAM_ATTACK = 101  # random starts of the attacks on a split (keyed by seed and batch number)
_TINY = 1e-12


class MeanLogits(torch.nn.Module):
    """The ensemble of several models as one: the mean of their logits (attacking past runs together)."""

    def __init__(self, models: Sequence[torch.nn.Module]):
        super().__init__()
        if not models:
            raise ValueError("MeanLogits needs at least one model")
        self.members = torch.nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)


def input_bounds(data) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(lo, hi)`` of the normalised training inputs of ``data`` (a DatasetPair or a
    split), each of shape ``(C, 1, ...)``, broadcastable to a batch ``(B, C, ...)``.

    In-memory splits use the actual minimum and maximum per channel (a documented choice: the valid
    range is what the data takes, not a nominal one); image folders, decoded on the fly, use the
    nominal pixel range [0, 1] normalised.
    """
    split = getattr(data, "train", data)
    if hasattr(split, "x"):
        mean, std = split.mean[0].float(), split.std[0].float()
        x = split.x
        axes = [0] + list(range(2, x.ndim))
        raw_lo = (x.amin(dim=axes).float() * split.scale).view(mean.shape)
        raw_hi = (x.amax(dim=axes).float() * split.scale).view(mean.shape)
    else:  # an image folder: its transforms end in Normalize(mean, std)
        from torchvision.transforms import v2

        norm = [t for t in split.eval_tf.transforms if isinstance(t, v2.Normalize)][-1]
        mean = torch.tensor(norm.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(norm.std, dtype=torch.float32).view(-1, 1, 1)
        raw_lo, raw_hi = torch.zeros_like(mean), torch.ones_like(mean)
    return (raw_lo - mean) / std, (raw_hi - mean) / std


def _per_example_norm(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of each example of ``t`` (B, ...), shaped (B, 1, ...) for broadcasting."""
    return t.flatten(1).norm(dim=1).clamp_min(_TINY).view(-1, *([1] * (t.ndim - 1)))


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """``delta`` projected onto the ``norm`` ball of radius ``eps`` (per example)."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    if norm == "l2":
        return delta * (eps / _per_example_norm(delta)).clamp(max=1.0)
    raise ValueError(f"unknown attack norm '{norm}' (one of {', '.join(NORMS)})")


def clip_to_bounds(x: torch.Tensor, x_adv: torch.Tensor, bounds: tuple[torch.Tensor, torch.Tensor] | None
                   ) -> torch.Tensor:
    """``x_adv`` clamped into ``bounds`` widened to contain ``x`` (so it stays in the eps ball around ``x``)."""
    if bounds is None:
        return x_adv
    lo, hi = (b.to(x.device, x.dtype) for b in bounds)
    return torch.maximum(torch.minimum(x_adv, torch.maximum(hi, x)), torch.minimum(lo, x))


def _random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype)
        return ((2 * u - 1) * eps).to(x.device)
    direction = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    direction = direction / _per_example_norm(direction)
    d = x[0].numel()
    radius = eps * torch.rand(x.shape[0], generator=generator, dtype=x.dtype) ** (1.0 / d)
    return (direction * radius.view(-1, *([1] * (x.ndim - 1)))).to(x.device)


def pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step: float, steps: int,
        norm: str = "linf", bounds: tuple[torch.Tensor, torch.Tensor] | None = None, random_start: bool = True,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient ascent on the cross-entropy of ``model`` (Madry et al. 2018): the adversarial
    inputs, within ``eps`` of ``x`` in ``norm`` and within ``bounds``.

    Each of ``steps`` steps moves by ``step`` along the gradient's sign (L-inf) or its unit direction
    (L2), then projects back onto the ball and clamps into the bounds. ``random_start`` starts from a
    uniform point of the ball drawn from ``generator`` (on the CPU, so a seed gives the same draw on
    any device).
    """
    if norm not in NORMS:
        raise ValueError(f"unknown attack norm '{norm}' (one of {', '.join(NORMS)})")
    if eps < 0 or step < 0 or steps < 0:
        raise ValueError(f"eps, step and steps must be >= 0, got {eps}, {step}, {steps}")
    x = x.detach()
    was_training = model.training
    model.eval()
    try:
        delta = _random_start(x, eps, norm, generator) if random_start and eps > 0 else torch.zeros_like(x)
        x_adv = clip_to_bounds(x, x + project(delta, eps, norm), bounds)
        for _ in range(steps):
            with torch.enable_grad():
                # A non-leaf input: autograd.grad on a leaf fails inside FlopCounterMode (torch 2.x).
                x_in = x_adv.detach().requires_grad_(True).clone()
                loss = F.cross_entropy(model(x_in).float(), y, reduction="sum")
                (grad,) = torch.autograd.grad(loss, x_in)
            move = grad.sign() if norm == "linf" else grad / _per_example_norm(grad)
            delta = project(x_adv.detach() + step * move - x, eps, norm)
            x_adv = clip_to_bounds(x, x + delta, bounds)
    finally:
        model.train(was_training)
    return x_adv.detach()


def fgsm(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
         bounds: tuple[torch.Tensor, torch.Tensor] | None = None, random_start: bool = False,
         step: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """The fast gradient (sign) method (Goodfellow et al. 2015): one step of size ``eps`` (or ``step``,
    e.g. 1.25 eps after a random start as in Wong et al. 2020), projected onto the ``eps`` ball."""
    return pgd(model, x, y, eps=eps, step=eps if step is None else step, steps=1, norm=norm, bounds=bounds,
               random_start=random_start, generator=generator)


def attack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, spec: dict[str, Any],
           bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Run the attack described by ``spec`` (config ``adv`` attack: kind, norm, eps, step, steps,
    random_start; a null step or random_start takes the kind's default)."""
    kind = spec["kind"]
    random_start = spec.get("random_start")
    if random_start is None:
        random_start = kind == "pgd"
    if kind == "fgsm":
        return fgsm(model, x, y, eps=spec["eps"], norm=spec.get("norm", "linf"), bounds=bounds,
                    random_start=random_start, step=spec.get("step"), generator=generator)
    if kind == "pgd":
        step = spec.get("step")
        if step is None:
            step = 2.5 * spec["eps"] / max(spec["steps"], 1)  # Madry et al.'s rule of thumb
        return pgd(model, x, y, eps=spec["eps"], step=step, steps=spec["steps"], norm=spec.get("norm", "linf"),
                   bounds=bounds, random_start=random_start, generator=generator)
    raise ValueError(f"unknown attack kind '{kind}' (one of {', '.join(KINDS)})")


def attack_split(model: torch.nn.Module, split, spec: dict[str, Any], bounds, *, batch_size: int,
                 device: torch.device, seed: int = 0, on_batch=None) -> dict[str, Any]:
    """Attack every example of ``split`` in id order, in batches. ``on_batch(idx, x, x_adv, y)`` is
    called for each batch (on the device). Returns the clean and adversarial accuracy and the cost:
    wall-clock seconds and FLOPs (measured once per batch size with FlopCounterMode, forward and the
    attack's backward passes)."""
    from reuse.data.augment import keyed_seed

    def one(x, y, g):
        x_adv = attack(model, x, y, spec, bounds, g)
        with torch.no_grad():
            return x_adv, model(x), model(x_adv)

    t0 = time.perf_counter()
    flops, measured = 0, {}
    n = clean = robust = 0
    was_training = model.training
    model.eval()
    try:
        for b, (x, y, idx) in enumerate(split.batches(batch_size)):
            x, y = x.to(device), y.to(device)
            g = torch.Generator().manual_seed(keyed_seed(seed, b, STREAM_ATTACK))
            size = x.shape[0]
            if size not in measured:
                with FlopCounterMode(display=False) as counter:
                    x_adv, out, out_adv = one(x, y, g)
                measured[size] = counter.get_total_flops()
            else:
                x_adv, out, out_adv = one(x, y, g)
            flops += measured[size]
            clean += (out.argmax(1) == y).sum().item()
            robust += (out_adv.argmax(1) == y).sum().item()
            n += size
            if on_batch is not None:
                on_batch(idx, x, x_adv, y)
    finally:
        model.train(was_training)
    return {"n": n, "clean_acc": clean / max(n, 1), "robust_acc": robust / max(n, 1),
            "cost": {"time_s": time.perf_counter() - t0, "flops": int(flops)}}


def robust_eval(model: torch.nn.Module, split, spec: dict[str, Any], bounds, *, batch_size: int = 1024,
                device: torch.device | str = "cpu", seed: int = 0) -> dict[str, Any]:
    """Robust accuracy of ``model`` on ``split`` (e.g. ``data.test``): the attack ``spec`` (PGD in the
    benchmark) against the model itself, beside its clean accuracy, with the evaluation's cost."""
    device = torch.device(device)
    model.to(device)
    res = attack_split(model, split, spec, bounds, batch_size=batch_size, device=device, seed=seed)
    return {**res, "attack": dict(spec)}

