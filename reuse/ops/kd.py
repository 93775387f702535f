"""Knowledge-distillation loss, :func:`kd_loss`, on the compiled ``reuse::kd_loss_*`` ops.

Registers the fake (meta) kernels of ``reuse::kd_loss_fwd``, ``kd_loss_bwd``,
``kd_loss_topk_fwd`` and ``kd_loss_topk_bwd`` for ``torch.compile``, and the
autograd formulas of the two forward ops (their backward is the matching
``*_bwd`` op, which reads the per-row statistics the forward saved). Without
the compiled extension :func:`kd_loss` is
:func:`reuse.ops.reference.kd_loss_reference`.
"""

from __future__ import annotations

import torch

from .backend import BACKEND
from .reference import KD_TEACHER_KINDS, el2n_output_dtype, kd_loss_reference

__all__ = ["kd_loss"]

# `kind` argument of reuse::kd_loss_fwd / kd_loss_bwd (csrc/kd_loss.h).
_DENSE_KINDS = {"logits": 0, "probs": 1}
_DENSE_STATS = 5
_TOPK_STATS = 6


def _check_shapes(s: torch.Tensor, targets: torch.Tensor) -> None:
    torch._check(s.dim() == 2, lambda: "reuse::kd_loss: student_logits must be 2-D [batch, classes]")
    torch._check(targets.dim() == 1, lambda: "reuse::kd_loss: targets must be 1-D [batch]")
    torch._check(
        targets.shape[0] == s.shape[0],
        lambda: "reuse::kd_loss: targets and student_logits must have the same batch size",
    )


if BACKEND == "compiled":

    @torch.library.register_fake("reuse::kd_loss_fwd")
    def _kd_loss_fwd_fake(s, t, targets, temperature, alpha, kind):
        _check_shapes(s, targets)
        torch._check(t.shape == s.shape, lambda: "reuse::kd_loss: teacher must have the shape of student_logits")
        acc = el2n_output_dtype(s.dtype)
        return s.new_empty((), dtype=acc), s.new_empty((s.shape[0], _DENSE_STATS), dtype=acc)

    @torch.library.register_fake("reuse::kd_loss_bwd")
    def _kd_loss_bwd_fake(grad, s, t, targets, row_stats, temperature, alpha, kind):
        _check_shapes(s, targets)
        return s.new_empty(s.shape)

    @torch.library.register_fake("reuse::kd_loss_topk_fwd")
    def _kd_loss_topk_fwd_fake(s, values, indices, lse, targets, temperature, alpha):
        _check_shapes(s, targets)
        torch._check(values.dim() == 2, lambda: "reuse::kd_loss: top-k teacher values must be [batch, k]")
        torch._check(indices.shape == values.shape, lambda: "reuse::kd_loss: top-k indices must match values")
        acc = el2n_output_dtype(s.dtype)
        return s.new_empty((), dtype=acc), s.new_empty((s.shape[0], _TOPK_STATS), dtype=acc)

    @torch.library.register_fake("reuse::kd_loss_topk_bwd")
    def _kd_loss_topk_bwd_fake(grad, s, values, indices, targets, row_stats, temperature, alpha):
        _check_shapes(s, targets)
        return s.new_empty(s.shape)

    def _setup_dense(ctx, inputs, output):
        s, t, targets, temperature, alpha, kind = inputs
        _, row_stats = output
        ctx.mark_non_differentiable(row_stats)
        ctx.save_for_backward(s, t, targets, row_stats)
        ctx.args = (temperature, alpha, kind)

    def _backward_dense(ctx, grad_loss, _grad_row_stats):
        grad_s = None
        if ctx.needs_input_grad[0]:
            s, t, targets, row_stats = ctx.saved_tensors
            grad_s = torch.ops.reuse.kd_loss_bwd(grad_loss, s, t, targets, row_stats, *ctx.args)
        return grad_s, None, None, None, None, None

    def _setup_topk(ctx, inputs, output):
        s, values, indices, _lse, targets, temperature, alpha = inputs
        _, row_stats = output
        ctx.mark_non_differentiable(row_stats)
        ctx.save_for_backward(s, values, indices, targets, row_stats)
        ctx.args = (temperature, alpha)

    def _backward_topk(ctx, grad_loss, _grad_row_stats):
        grad_s = None
        if ctx.needs_input_grad[0]:
            s, values, indices, targets, row_stats = ctx.saved_tensors
            grad_s = torch.ops.reuse.kd_loss_topk_bwd(
                grad_loss, s, values, indices, targets, row_stats, *ctx.args
            )
        return grad_s, None, None, None, None, None, None

    torch.library.register_autograd("reuse::kd_loss_fwd", _backward_dense, setup_context=_setup_dense)
    torch.library.register_autograd("reuse::kd_loss_topk_fwd", _backward_topk, setup_context=_setup_topk)

    _kd_loss_fwd = torch.ops.reuse.kd_loss_fwd.default
    _kd_loss_bwd = torch.ops.reuse.kd_loss_bwd.default
    _kd_loss_topk_fwd = torch.ops.reuse.kd_loss_topk_fwd.default
    _kd_loss_topk_bwd = torch.ops.reuse.kd_loss_topk_bwd.default

    # Eager fast path. The autograd formulas registered above run in Python
    # through torch.library's generic wrapper, which costs tens of
    # microseconds per call: as much as the kernels themselves at small
    # batches. In eager mode kd_loss therefore calls the ops below the
    # autograd dispatch key from a plain autograd.Function with the same
    # backward (the *_bwd op). Under torch.compile, and for anyone calling
    # torch.ops.reuse.kd_loss_fwd directly, the registered formulas apply.
    # Under torch.func transforms (which need the setup_context form of
    # autograd.Function, itself slower per call in eager mode than the
    # classic form) a setup_context variant is used.

    def _dense_fwd(s, t, targets, temperature, alpha, kind):
        with torch._C._AutoDispatchBelowAutograd():
            return _kd_loss_fwd(s, t, targets, temperature, alpha, kind)

    def _dense_bwd(ctx, grad_loss):
        s, t, targets, row_stats = ctx.saved_tensors
        grad_s = _kd_loss_bwd(grad_loss, s, t, targets, row_stats, *ctx.args)
        return grad_s, None, None, None, None, None

    def _topk_fwd(s, values, indices, lse, targets, temperature, alpha):
        with torch._C._AutoDispatchBelowAutograd():
            return _kd_loss_topk_fwd(s, values, indices, lse, targets, temperature, alpha)

    def _topk_bwd(ctx, grad_loss):
        s, values, indices, targets, row_stats = ctx.saved_tensors
        grad_s = _kd_loss_topk_bwd(grad_loss, s, values, indices, targets, row_stats, *ctx.args)
        return grad_s, None, None, None, None, None, None

    class _DenseKD(torch.autograd.Function):
        @staticmethod
        def forward(ctx, s, t, targets, temperature, alpha, kind):
            loss, row_stats = _dense_fwd(s, t, targets, temperature, alpha, kind)
            ctx.save_for_backward(s, t, targets, row_stats)
            ctx.args = (temperature, alpha, kind)
            return loss

        backward = staticmethod(_dense_bwd)

    class _TopkKD(torch.autograd.Function):
        @staticmethod
        def forward(ctx, s, values, indices, lse, targets, temperature, alpha):
            loss, row_stats = _topk_fwd(s, values, indices, lse, targets, temperature, alpha)
            ctx.save_for_backward(s, values, indices, targets, row_stats)
            ctx.args = (temperature, alpha)
            return loss

        backward = staticmethod(_topk_bwd)

    class _DenseKDFunc(torch.autograd.Function):
        forward = staticmethod(_dense_fwd)

        @staticmethod
        def setup_context(ctx, inputs, output):
            s, t, targets, temperature, alpha, kind = inputs
            ctx.mark_non_differentiable(output[1])
            ctx.save_for_backward(s, t, targets, output[1])
            ctx.args = (temperature, alpha, kind)

        @staticmethod
        def backward(ctx, grad_loss, _grad_row_stats):
            return _dense_bwd(ctx, grad_loss)

    class _TopkKDFunc(torch.autograd.Function):
        forward = staticmethod(_topk_fwd)

        @staticmethod
        def setup_context(ctx, inputs, output):
            s, values, indices, _lse, targets, temperature, alpha = inputs
            ctx.mark_non_differentiable(output[1])
            ctx.save_for_backward(s, values, indices, targets, output[1])
            ctx.args = (temperature, alpha)

        @staticmethod
        def backward(ctx, grad_loss, _grad_row_stats):
            return _topk_bwd(ctx, grad_loss)

    def _dense(s, t, targets, temperature, alpha, kind):
        if torch.compiler.is_compiling():
            return _kd_loss_fwd(s, t, targets, temperature, alpha, kind)[0]
        if torch._C._are_functorch_transforms_active():
            return _DenseKDFunc.apply(s, t, targets, temperature, alpha, kind)[0]
        if s.requires_grad and torch.is_grad_enabled():
            return _DenseKD.apply(s, t, targets, temperature, alpha, kind)
        return _dense_fwd(s, t, targets, temperature, alpha, kind)[0]

    def _topk(s, values, indices, lse, targets, temperature, alpha):
        if torch.compiler.is_compiling():
            return _kd_loss_topk_fwd(s, values, indices, lse, targets, temperature, alpha)[0]
        if torch._C._are_functorch_transforms_active():
            return _TopkKDFunc.apply(s, values, indices, lse, targets, temperature, alpha)[0]
        if s.requires_grad and torch.is_grad_enabled():
            return _TopkKD.apply(s, values, indices, lse, targets, temperature, alpha)
        return _topk_fwd(s, values, indices, lse, targets, temperature, alpha)[0]


def kd_loss(
    student_logits: torch.Tensor,
    teacher,
    targets: torch.Tensor,
    temperature: float,
    alpha: float,
    *,
    teacher_kind: str = "logits",
) -> torch.Tensor:
    """Knowledge-distillation loss (Hinton et al. 2015), mean over the batch.

    ``mean_i [alpha T^2 KL(p_i || softmax(s_i / T)) + (1 - alpha) CE(s_i, y_i)]``

    Args:
        student_logits: ``[B, C]`` float32, float64, float16 or bfloat16, any
            strides. The only differentiable input.
        teacher: depends on ``teacher_kind``:

            * ``"logits"``: ``[B, C]`` teacher logits (float16 as in a logit
              cache, bfloat16, float32 or float64); ``p = softmax(t / T)``.
            * ``"probs"``: ``[B, C]`` probabilities already at temperature
              ``T`` (an ensemble's mean of tempered softmaxes, a mix of two
              teachers), used as ``p``; rows must be >= 0 and sum to 1 within
              1e-2. Zeros are allowed (``0 log 0 = 0``).
            * ``"topk"``: ``(values [B, k], indices [B, k], logsumexp [B])`` as
              stored by :mod:`reuse.cache`: at ``T = 1`` the kept classes have
              probability ``exp(value - logsumexp)`` and the other ``C - k``
              share the rest equally; at temperature ``T`` every non-kept class
              gets the logit ``logsumexp + log(rest / (C - k))``. Indices must
              be distinct within a row.
        targets: ``[B]`` int64 or int32 class indices in ``[0, C)``.
        temperature: ``T > 0``.
        alpha: weight of the distillation term, in ``[0, 1]``. With ``alpha == 0``
            the teacher is not read (only its shape and dtype are checked); with
            ``alpha == 1`` the targets are not read.
        teacher_kind: ``"logits"``, ``"probs"`` or ``"topk"``.

    Returns:
        0-d loss, float64 for a float64 student and float32 otherwise (low
        precision inputs are accumulated in float32). NaN for ``B == 0``.

    Non-finite student or teacher values, out-of-range targets or indices and
    mismatched shapes, dtypes or devices raise ``RuntimeError``.
    """
    temperature = float(temperature)
    alpha = float(alpha)
    if BACKEND == "compiled":
        if teacher_kind == "logits" or teacher_kind == "probs":
            return _dense(
                student_logits, teacher.detach(), targets, temperature, alpha, _DENSE_KINDS[teacher_kind]
            )
        if teacher_kind == "topk":
            if not (isinstance(teacher, (tuple, list)) and len(teacher) == 3):
                raise RuntimeError(
                    "reuse::kd_loss: teacher_kind='topk' needs teacher = (values, indices, logsumexp)"
                )
            values, indices, lse = teacher
            return _topk(student_logits, values.detach(), indices, lse.detach(), targets, temperature, alpha)
        raise ValueError(f"teacher_kind must be one of {KD_TEACHER_KINDS}, got {teacher_kind!r}")
    return kd_loss_reference(
        student_logits, teacher, targets, temperature, alpha, teacher_kind=teacher_kind
    )
