"""Exact per-example gradient norms (GraNd scores): :func:`per_example_grad_norms`.

For a classifier ``model`` and a batch ``(inputs, targets)``,
``per_example_grad_norms(model, inputs, targets)[i]`` is

    || d/dtheta CE(model(inputs[i]), targets[i]) ||_2

over all trainable parameters ``theta``, with the model in eval mode (so
BatchNorm uses its running statistics and its affine weight and bias count as
parameters). It takes one forward and one backward pass and never forms the
batched weight gradients:

* the trainable parameters are set to ``requires_grad=False`` for the call, so
  autograd computes only activation gradients;
* the loss is ``cross_entropy(..., reduction="sum")``, so the gradient reaching
  a layer's output for example ``i`` is that of example ``i``'s own loss;
* a forward hook on every layer with trainable parameters keeps its input and
  registers a tensor hook on its output, which receives ``dL/d(output)``
  during the backward pass and hands both to the layer's *norm rule*;
* autograd starts at the first such layer's output (a no-op autograd function
  marks it as requiring grad), so no gradient is computed below it;
* each rule returns the per-example *squared* norm of the gradient of its own
  layer's trainable parameters from one of the ops ``reuse::linear_sq_norms``,
  ``conv_sq_norms``, ``affine_sq_norms``, ``embedding_sq_norms``; the sum over
  layers, square-rooted, is the result.

Rules (one function per layer type, registered with :func:`register_norm_rule`,
looked up by exact type): ``nn.Linear`` (inputs ``[B, *, Din]``),
``nn.Conv1d`` / ``nn.Conv2d`` (any stride, padding, dilation, groups, padding
mode), ``nn.BatchNorm1d/2d/3d`` (eval mode with running statistics),
``nn.LayerNorm``, ``nn.GroupNorm`` and ``nn.Embedding``. A module with trainable
parameters of its own and no rule raises :class:`UnsupportedLayerError` before
any forward work.

This module also holds the Python wrappers of the four ops (compiled kernels,
or the pure-PyTorch references of :mod:`reuse.ops.grad_norm_reference` when
``reuse._C`` is not in use or has no kernel for the tensors' device).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from reuse.errors import ReuseError

from .backend import BACKEND, _has_kernel
from .grad_norm_reference import (
    affine_sq_norms_reference,
    conv_sq_norms_reference,
    embedding_sq_norms_reference,
    grad_norm_output_dtype,
    linear_sq_norms_reference,
)

__all__ = [
    "NormRule",
    "UnsupportedLayerError",
    "affine_sq_norms",
    "conv_sq_norms",
    "embedding_sq_norms",
    "linear_sq_norms",
    "per_example_grad_norms",
    "register_norm_rule",
]

_OP_NAMES = ("linear_sq_norms", "conv_sq_norms", "affine_sq_norms", "embedding_sq_norms")
_REFERENCES = {
    "linear_sq_norms": linear_sq_norms_reference,
    "conv_sq_norms": conv_sq_norms_reference,
    "affine_sq_norms": affine_sq_norms_reference,
    "embedding_sq_norms": embedding_sq_norms_reference,
}
_BACKENDS = ("compiled", "reference")


class UnsupportedLayerError(ReuseError, TypeError):
    """A layer whose per-example gradient norm :func:`per_example_grad_norms` cannot compute."""


# ---------------------------------------------------------------------------- op wrappers


def _kernel(name: str, device: torch.device, backend: str | None):
    """The compiled op when it has a kernel for ``device``, else the reference."""
    return _kernel_for(name, device.type, BACKEND if backend is None else backend)


@functools.lru_cache(maxsize=None)
def _kernel_for(name: str, device_type: str, backend: str):
    if backend == "compiled" and BACKEND == "compiled":
        key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
        if key is not None and _has_kernel(f"reuse::{name}", key):
            return getattr(torch.ops.reuse, name).default
    return _REFERENCES[name]


def linear_sq_norms(a: torch.Tensor, g: torch.Tensor, bias: bool, *, backend: str | None = None) -> torch.Tensor:
    """Per-example squared gradient norm of a linear layer, ``[B]``.

    ``a``: the layer's input ``[B, Din]`` or ``[B, T, Din]``; ``g``: the
    gradient of the loss with respect to its output, ``[B, Dout]`` or
    ``[B, T, Dout]`` (same dtype and device). Example ``b``'s weight gradient
    is ``sum_t g_bt a_bt^T`` (for 2-D inputs its norm is ``||a_b|| ||g_b||``);
    with ``bias`` the squared norm of ``sum_t g_bt`` is added. float64 for
    float64 inputs, float32 otherwise. ``backend``: ``"compiled"``,
    ``"reference"`` or None (the package's :data:`reuse.ops.BACKEND`).
    """
    return _kernel("linear_sq_norms", a.device, backend)(a.detach(), g.detach(), bool(bias))


def conv_sq_norms(
    x: torch.Tensor,
    g: torch.Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    bias: bool,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Per-example squared gradient norm of a 1-D or 2-D convolution with zero padding, ``[B]``.

    ``x``: the input ``[B, Cin, *spatial]``; ``g``: the gradient of the
    output ``[B, Cout, *out_spatial]``; the int lists have one entry per
    spatial dimension (``padding='same'`` converted to ints, other padding
    modes applied to ``x`` first). With ``bias`` the bias gradient's squared
    norm is added. float64 for float64 inputs, float32 otherwise.
    """
    return _kernel("conv_sq_norms", x.device, backend)(
        x.detach(),
        g.detach(),
        [int(k) for k in kernel_size],
        [int(s) for s in stride],
        [int(p) for p in padding],
        [int(d) for d in dilation],
        int(groups),
        bool(bias),
    )


def affine_sq_norms(
    x: torch.Tensor,
    g: torch.Tensor,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    weight: bool = True,
    bias: bool = True,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Per-example squared gradient norm of a per-channel affine map, ``[B]``.

    ``y = w[c] * xhat + b[c]`` with ``xhat = x * scale[c] + shift[c]``
    (``scale`` None means 1, ``shift`` None means 0); ``x``, ``g = dL/dy``:
    ``[B, C, S]``, any strides. Returns the sum over channels of the squares of
    ``sum_s g xhat`` (with ``weight``) and ``sum_s g`` (with ``bias``).
    """
    return _kernel("affine_sq_norms", x.device, backend)(
        x.detach(),
        g.detach(),
        None if scale is None else scale.detach(),
        None if shift is None else shift.detach(),
        bool(weight),
        bool(bias),
    )


def embedding_sq_norms(
    indices: torch.Tensor,
    g: torch.Tensor,
    num_embeddings: int,
    padding_idx: int = -1,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Per-example squared gradient norm of an embedding table, ``[B]``.

    ``indices`` ``[B, T]`` (int64 or int32), ``g = dL/d(output)``
    ``[B, T, D]``. Example ``b``'s gradient row of id ``v`` is the sum of
    ``g[b, t]`` over the positions ``t`` holding ``v``; the row of
    ``padding_idx`` (``-1``: none) gets no gradient.
    """
    return _kernel("embedding_sq_norms", g.device, backend)(
        indices, g.detach(), int(num_embeddings), int(padding_idx)
    )


# ------------------------------------------------------------------------------ rules


@dataclasses.dataclass(frozen=True)
class _Ops:
    """The four ops bound to one backend, as the rules call them."""

    backend: str | None

    def linear(self, a, g, bias):
        return linear_sq_norms(a, g, bias, backend=self.backend)

    def conv(self, x, g, kernel_size, stride, padding, dilation, groups, bias):
        return conv_sq_norms(x, g, kernel_size, stride, padding, dilation, groups, bias, backend=self.backend)

    def affine(self, x, g, scale, shift, weight, bias):
        return affine_sq_norms(x, g, scale, shift, weight, bias, backend=self.backend)

    def embedding(self, indices, g, num_embeddings, padding_idx):
        return embedding_sq_norms(indices, g, num_embeddings, padding_idx, backend=self.backend)


# A rule: (module, input, grad_output, trainable, ops) -> [B] per-example
# squared norms of the module's own trainable parameters, where `trainable` is
# the set of names ("weight", "bias", ...) of those parameters.
NormRule = Callable[[nn.Module, torch.Tensor, torch.Tensor, frozenset, _Ops], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class _RuleEntry:
    rule: NormRule
    check: Callable[[nn.Module, frozenset], None] | None
    params: frozenset


_RULES: dict[type, _RuleEntry] = {}


def register_norm_rule(*types: type, params: Sequence[str] = ("weight", "bias"), check=None):
    """Register the decorated function as the norm rule of the given module types.

    The rule is called as ``rule(module, x, g, trainable, ops)`` with the
    module's input ``x`` (its first argument), the gradient ``g`` of the loss
    (summed over the batch) with respect to its output, the names of its
    trainable parameters (a subset of ``params``) and an object whose methods
    ``linear``, ``conv``, ``affine`` and ``embedding`` call the ops. It returns
    the ``[B]`` per-example squared gradient norms of those parameters.
    ``check(module, trainable)``, if given, runs before the forward pass and
    raises :class:`UnsupportedLayerError` for configurations the rule cannot
    handle. Rules are looked up by exact type: a subclass needs its own.
    """

    def deco(fn: NormRule) -> NormRule:
        for t in types:
            _RULES[t] = _RuleEntry(fn, check, frozenset(params))
        return fn

    return deco


def _acc(t: torch.Tensor) -> torch.dtype:
    return grad_norm_output_dtype(t.dtype)


def _common(a: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Under autocast a layer's input and output gradient can differ in dtype.
    if a.dtype != g.dtype:
        dt = torch.promote_types(a.dtype, g.dtype)
        a, g = a.to(dt), g.to(dt)
    return a, g


def _bias_only(g: torch.Tensor) -> torch.Tensor:
    """Squared norm of the bias gradient, g [B, C, *] summed over positions."""
    return g.to(_acc(g)).reshape(g.shape[0], g.shape[1], -1).sum(2).square().sum(1)


def _path_error(module: nn.Module, message: str) -> UnsupportedLayerError:
    return UnsupportedLayerError(f"{type(module).__name__}: {message}")


@register_norm_rule(nn.Linear)
def _linear_rule(module: nn.Linear, a, g, trainable, ops: _Ops):
    if a.dim() < 2:
        raise ReuseError(
            f"nn.Linear got an input of shape {list(a.shape)} with no batch dimension; "
            f"per-example gradient norms need inputs [batch, ..., features]"
        )
    a, g = _common(a, g)
    B = a.shape[0]
    if a.dim() > 3:
        a = a.reshape(B, -1, a.shape[-1])
        g = g.reshape(B, -1, g.shape[-1])
    bias = "bias" in trainable
    if "weight" in trainable:
        return ops.linear(a, g, bias)
    return _bias_only(g.transpose(1, -1) if g.dim() == 3 else g)


def _check_conv(module: nn.Module, trainable) -> None:
    if isinstance(module.padding, str) and module.padding not in ("same", "valid"):
        raise _path_error(module, f"padding={module.padding!r} is not supported")


@register_norm_rule(nn.Conv1d, nn.Conv2d, check=_check_conv)
def _conv_rule(module: nn.Conv1d | nn.Conv2d, x, g, trainable, ops: _Ops):
    x, g = _common(x, g)
    nd = len(module.kernel_size)
    if x.dim() != nd + 2:
        raise ReuseError(
            f"{type(module).__name__} got an input of shape {list(x.shape)}; per-example gradient "
            f"norms need batched inputs [batch, channels, *spatial]"
        )
    if "weight" not in trainable:
        return _bias_only(g)
    # Same padding as nn.Conv*'s own forward: other modes pad x first; 'same'
    # with an even kernel pads asymmetrically, also done on x here.
    pads = module._reversed_padding_repeated_twice  # [left, right] per dim, last dim first
    if module.padding_mode != "zeros":
        x = F.pad(x, pads, mode=module.padding_mode)
        padding = [0] * nd
    elif isinstance(module.padding, str):
        left, right = pads[0::2][::-1], pads[1::2][::-1]
        if list(left) == list(right):
            padding = list(left)
        else:
            x = F.pad(x, pads)
            padding = [0] * nd
    else:
        padding = list(module.padding)
    return ops.conv(
        x, g, module.kernel_size, module.stride, padding, module.dilation, module.groups, "bias" in trainable
    )


def _check_batchnorm(module: nn.modules.batchnorm._BatchNorm, trainable) -> None:
    if not module.track_running_stats or module.running_mean is None or module.running_var is None:
        raise _path_error(
            module,
            "track_running_stats=False: in eval mode it normalises with the statistics of the "
            "batch, which couple the examples, so per-example gradients are not defined; use "
            "running statistics (track_running_stats=True)",
        )


@register_norm_rule(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, check=_check_batchnorm)
def _batchnorm_rule(module: nn.modules.batchnorm._BatchNorm, x, g, trainable, ops: _Ops):
    x, g = _common(x, g)
    B, C = x.shape[0], x.shape[1]
    # Eval mode: xhat = (x - mean) / sqrt(var + eps) = x * scale + shift.
    var = module.running_var.detach().double()
    scale = torch.rsqrt(var + module.eps)
    shift = -module.running_mean.detach().double() * scale
    return ops.affine(
        x.reshape(B, C, -1), g.reshape(B, C, -1), scale, shift, "weight" in trainable, "bias" in trainable
    )


@register_norm_rule(nn.LayerNorm)
def _layernorm_rule(module: nn.LayerNorm, x, g, trainable, ops: _Ops):
    x, g = _common(x, g)
    ns = tuple(module.normalized_shape)
    if x.dim() <= len(ns):
        raise ReuseError(
            f"nn.LayerNorm{ns} got an input of shape {list(x.shape)} with no batch dimension"
        )
    B = x.shape[0]
    C = math.prod(ns)
    xhat = F.layer_norm(x, ns, None, None, module.eps) if "weight" in trainable else x
    # [B, *lead, *ns] -> [B, S, C] -> [B, C, S] (a transposed view: the kernels read it in place).
    xhat = xhat.reshape(B, -1, C).transpose(1, 2)
    g = g.reshape(B, -1, C).transpose(1, 2)
    return ops.affine(xhat, g, None, None, "weight" in trainable, "bias" in trainable)


@register_norm_rule(nn.GroupNorm)
def _groupnorm_rule(module: nn.GroupNorm, x, g, trainable, ops: _Ops):
    x, g = _common(x, g)
    B, C = x.shape[0], x.shape[1]
    xhat = F.group_norm(x, module.num_groups, None, None, module.eps) if "weight" in trainable else x
    return ops.affine(
        xhat.reshape(B, C, -1), g.reshape(B, C, -1), None, None, "weight" in trainable, "bias" in trainable
    )


def _check_embedding(module: nn.Embedding, trainable) -> None:
    if module.scale_grad_by_freq:
        raise _path_error(
            module,
            "scale_grad_by_freq=True scales gradients by id counts over the whole batch, which "
            "couple the examples; per-example gradients are not defined",
        )


@register_norm_rule(nn.Embedding, params=("weight",), check=_check_embedding)
def _embedding_rule(module: nn.Embedding, indices, g, trainable, ops: _Ops):
    B = indices.shape[0]
    if indices.dim() < 1 or g.dim() != indices.dim() + 1:
        raise ReuseError(f"nn.Embedding got indices of shape {list(indices.shape)} with no batch dimension")
    pad = -1 if module.padding_idx is None else int(module.padding_idx)
    return ops.embedding(indices.reshape(B, -1), g.reshape(B, -1, g.shape[-1]), module.num_embeddings, pad)


# ------------------------------------------------------------------ per_example_grad_norms


class _StartGrad(torch.autograd.Function):
    """Marks ``t`` (in place, no copy) as requiring grad, without a gradient below it.

    Applied to the output of a layer whose input does not require grad, so the
    backward pass starts at that output and computes nothing under it. The
    result is ``t`` itself (not a view), so a following in-place op works.
    """

    @staticmethod
    def forward(ctx, t, dummy):
        ctx.mark_dirty(t)
        return t

    @staticmethod
    def backward(ctx, grad):
        return None, None


@dataclasses.dataclass
class _Layer:
    name: str
    module: nn.Module
    entry: _RuleEntry
    trainable: frozenset
    calls: int = 0


@dataclasses.dataclass
class _State:
    ops: _Ops
    dummy: torch.Tensor
    acc: torch.dtype
    total: torch.Tensor | None = None


def _plan(model: nn.Module) -> tuple[list[_Layer], list[nn.Parameter]]:
    """Layers with trainable parameters and their rules; raises before any forward work."""
    layers: list[_Layer] = []
    params: list[nn.Parameter] = []
    owner: dict[int, str] = {}
    for name, module in model.named_modules():
        own = [(n, p) for n, p in module.named_parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        path = name or "<root>"
        for n, p in own:
            if id(p) in owner:
                raise ReuseError(
                    f"parameter '{path}.{n}' is the same tensor as '{owner[id(p)]}' (tied weights); "
                    f"per-example gradient norms of shared parameters are not supported"
                )
            owner[id(p)] = f"{path}.{n}"
        entry = _RULES.get(type(module))
        names = frozenset(n for n, _ in own)
        if entry is None or not names <= entry.params:
            extra = "" if entry is None else f" (parameters {sorted(names - entry.params)} have no rule)"
            raise UnsupportedLayerError(
                f"module '{path}' of type {type(module).__module__}.{type(module).__qualname__} has "
                f"trainable parameters {sorted(names)} but no per-example gradient norm rule{extra}; "
                f"supported: {', '.join(sorted(t.__name__ for t in _RULES))}. Freeze its parameters "
                f"(requires_grad=False) or register a rule with reuse.ops.grad_norms.register_norm_rule"
            )
        if entry.check is not None:
            try:
                entry.check(module, names)
            except UnsupportedLayerError as exc:
                raise UnsupportedLayerError(f"module '{path}': {exc}") from None
        layers.append(_Layer(path, module, entry, names))
        params.extend(p for _, p in own)
    return layers, params


def _forward_hook(layer: _Layer, state: _State):
    def hook(module, args, kwargs, out):
        layer.calls += 1
        if layer.calls > 1:
            raise ReuseError(
                f"module '{layer.name}' ({type(module).__name__}) was called {layer.calls} times in "
                f"one forward pass; per-example gradient norms of parameters used more than once "
                f"are not supported"
            )
        if not torch.is_grad_enabled():
            return None  # no gradient flows to this layer: it contributes 0
        if args:
            x = args[0]
        elif kwargs:
            x = next(iter(kwargs.values()))
        else:
            raise ReuseError(f"module '{layer.name}' was called without an input")
        if not isinstance(out, torch.Tensor) or not isinstance(x, torch.Tensor):
            raise ReuseError(f"module '{layer.name}' must take and return tensors")
        # The input is dropped once used: holding every layer's input until the
        # end of the backward pass would keep memory that autograd frees as it
        # goes, and the gradients allocated later would page-fault on fresh
        # memory instead of reusing it (measured: +25% time on ResNet-20).
        saved = [x.detach()]
        version = x._version
        replaced = None
        if out._is_view():
            # A tensor hook on a view is lost when the view is later modified
            # in place (e.g. a ReLU(inplace=True) after a Linear on [B, T, D]).
            out = replaced = out.clone()
        if not out.requires_grad:
            out = replaced = _StartGrad.apply(out, state.dummy)

        def grad_hook(grad):
            if not saved:
                return None  # already used (the hook cannot fire twice; defensive)
            x = saved.pop()
            if x._version != version:
                raise ReuseError(
                    f"the input of module '{layer.name}' was modified in place after the module "
                    f"used it; per-example gradient norms need it unchanged (avoid in-place ops on "
                    f"that tensor)"
                )
            sq = layer.entry.rule(layer.module, x, grad, layer.trainable, state.ops)
            sq = sq.to(state.acc)
            state.total = sq if state.total is None else state.total + sq
            return None

        out.register_hook(grad_hook)
        return replaced

    return hook


def per_example_grad_norms(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    backend: str | None = None,
    return_logits: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Exact per-example gradient norms of the cross-entropy loss (GraNd scores).

    ``out[i] = || d/dtheta CE(model(inputs[i]), targets[i]) ||_2`` over all
    parameters with ``requires_grad=True``, the model in eval mode (BatchNorm
    uses its running statistics; its weight and bias count).

    Args:
        model: a classifier returning logits ``[B, C]`` (or ``[B, C, *]`` with
            targets ``[B, *]``) built from layers with a norm rule (Linear,
            Conv1d/2d, BatchNorm1d/2d/3d, LayerNorm, GroupNorm, Embedding) and
            any parameter-free modules and functions. Frozen parameters are
            skipped. Each layer with trainable parameters may run at most once
            per forward pass.
        inputs: the batch, ``[B, ...]``; never modified, no gradient is formed
            for it.
        targets: class indices ``[B]`` (or class probabilities, as
            ``F.cross_entropy`` takes them).
        backend: ``"compiled"``, ``"reference"`` or None (the package's
            :data:`reuse.ops.BACKEND`); the reference ops give the same result,
            slower.
        return_logits: also return the forward pass's logits (detached), so
            that forward-only scores (EL2N, loss, margin) need no second pass.

    Returns:
        ``[B]``, float64 when the trainable parameters are float64, float32
        otherwise, on the inputs' device; not differentiable. With
        ``return_logits``, the pair ``(norms, logits)``.

    One forward and one backward pass; no batched weight gradient is formed and
    no parameter's ``.grad`` is touched. The model's training flags and the
    parameters' ``requires_grad`` are restored and its hooks removed, also when
    an error is raised. Layers with trainable parameters and no rule raise
    :class:`UnsupportedLayerError` before the forward pass; a layer called
    twice, a tied parameter or an input modified in place raise
    :class:`reuse.errors.ReuseError`.
    """
    if backend not in (None,) + _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS} or None, got {backend!r}")
    if torch.is_inference_mode_enabled():
        raise ReuseError(
            "per_example_grad_norms needs autograd and cannot run under torch.inference_mode(); "
            "call it outside (torch.no_grad() is fine)"
        )
    layers, params = _plan(model)
    if not isinstance(inputs, torch.Tensor) or inputs.dim() < 1:
        raise ReuseError("inputs must be a batched tensor [B, ...]")
    B = inputs.shape[0]
    acc = torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32
    if not layers or B == 0:
        zeros = torch.zeros(B, dtype=acc, device=inputs.device)
        if not return_logits:
            return zeros
        training = model.training
        try:
            with torch.no_grad():
                return zeros, model.eval()(inputs)
        finally:
            model.train(training)

    training = {m: m.training for m in model.modules()}
    handles = []
    state = _State(_Ops(backend), torch.zeros((), requires_grad=True), acc)
    try:
        model.eval()
        for p in params:
            p.requires_grad_(False)
        for layer in layers:
            handles.append(
                layer.module.register_forward_hook(_forward_hook(layer, state), with_kwargs=True)
            )
        with torch.enable_grad():
            logits = model(inputs.detach())
            if not isinstance(logits, torch.Tensor):
                raise ReuseError(
                    f"the model must return a logits tensor, got {type(logits).__name__}"
                )
            loss = F.cross_entropy(logits, targets, reduction="sum")
            if loss.requires_grad:
                # Only the (never populated) dummy is an input: no leaf gets a .grad.
                torch.autograd.backward(loss, inputs=[state.dummy])
    finally:
        for h in handles:
            h.remove()
        for p in params:
            p.requires_grad_(True)
        for m, flag in training.items():
            m.training = flag
    norms = torch.zeros(B, dtype=acc, device=inputs.device) if state.total is None else state.total.sqrt()
    return (norms, logits.detach()) if return_logits else norms
