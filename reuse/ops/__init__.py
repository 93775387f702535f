"""Custom operators of the reuse package.

Importing this module loads the compiled extension ``reuse._C``, which
registers the operators under ``torch.ops.reuse``. If the extension is missing
or fails to load, a warning is issued once and the pure-PyTorch references in
:mod:`reuse.ops.reference` are used instead; results agree, only speed differs.

Set ``REUSE_FORCE_REFERENCE=1`` in the environment before the import to use the
references even when the extension is built (no warning is issued then).

Public API:

* :func:`el2n` - EL2N score per example.
* :func:`kd_loss` - knowledge-distillation loss (teacher logits, probabilities or top-k).
* :func:`per_example_grad_norms` - exact per-example gradient norms of the cross-entropy
  loss (GraNd scores), one forward and one backward pass; its per-layer ops
  :func:`linear_sq_norms`, :func:`conv_sq_norms`, :func:`affine_sq_norms` and
  :func:`embedding_sq_norms` (see :mod:`reuse.ops.grad_norms`).
* :data:`BACKEND` - ``"compiled"`` or ``"reference"``.
* :func:`backend_info` - what was loaded and which kernels are registered.
"""

from __future__ import annotations

from typing import Any

import torch

from .backend import _C, _LOAD_ERROR, BACKEND, _has_kernel  # noqa: F401  (loads reuse._C)
from .grad_norms import affine_sq_norms, conv_sq_norms, embedding_sq_norms, linear_sq_norms, per_example_grad_norms
from .kd import kd_loss
from .reference import el2n_output_dtype, el2n_reference, kd_loss_reference

__all__ = [
    "BACKEND",
    "affine_sq_norms",
    "backend_info",
    "conv_sq_norms",
    "el2n",
    "el2n_reference",
    "embedding_sq_norms",
    "kd_loss",
    "kd_loss_reference",
    "linear_sq_norms",
    "per_example_grad_norms",
]



if BACKEND == "compiled":

    @torch.library.register_fake("reuse::el2n")
    def _el2n_fake(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        torch._check(logits.dim() == 2, lambda: "reuse::el2n: logits must be 2-D [batch, classes]")
        torch._check(targets.dim() == 1, lambda: "reuse::el2n: targets must be 1-D [batch]")
        torch._check(
            targets.shape[0] == logits.shape[0],
            lambda: "reuse::el2n: targets and logits must have the same batch size",
        )
        return logits.new_empty(logits.shape[:1], dtype=el2n_output_dtype(logits.dtype))

    _el2n_impl = torch.ops.reuse.el2n.default

    # Per-example gradient norms (reuse/ops/grad_norms.py): every op returns [B].
    def _gn_out(t: torch.Tensor) -> torch.Tensor:
        return t.new_empty(t.shape[:1], dtype=torch.float64 if t.dtype == torch.float64 else torch.float32)

    @torch.library.register_fake("reuse::linear_sq_norms")
    def _linear_sq_norms_fake(a, g, bias):
        torch._check(a.dim() in (2, 3), lambda: "reuse::linear_sq_norms: a must be 2-D or 3-D")
        torch._check(g.dim() == a.dim(), lambda: "reuse::linear_sq_norms: g must have the dims of a")
        torch._check(g.shape[0] == a.shape[0], lambda: "reuse::linear_sq_norms: batch sizes must match")
        return _gn_out(a)

    @torch.library.register_fake("reuse::conv_sq_norms")
    def _conv_sq_norms_fake(x, g, kernel_size, stride, padding, dilation, groups, bias):
        torch._check(x.dim() in (3, 4), lambda: "reuse::conv_sq_norms: x must be 3-D or 4-D")
        torch._check(g.dim() == x.dim(), lambda: "reuse::conv_sq_norms: g must have the dims of x")
        torch._check(g.shape[0] == x.shape[0], lambda: "reuse::conv_sq_norms: batch sizes must match")
        return _gn_out(x)

    @torch.library.register_fake("reuse::affine_sq_norms")
    def _affine_sq_norms_fake(x, g, scale, shift, weight, bias):
        torch._check(x.dim() == 3, lambda: "reuse::affine_sq_norms: x must be 3-D [B, C, S]")
        torch._check(g.shape == x.shape, lambda: "reuse::affine_sq_norms: g must have the shape of x")
        return _gn_out(x)

    @torch.library.register_fake("reuse::embedding_sq_norms")
    def _embedding_sq_norms_fake(indices, g, num_embeddings, padding_idx):
        torch._check(indices.dim() == 2, lambda: "reuse::embedding_sq_norms: indices must be 2-D")
        torch._check(g.dim() == 3, lambda: "reuse::embedding_sq_norms: g must be 3-D")
        return _gn_out(g)
else:
    _el2n_impl = el2n_reference


def el2n(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """EL2N score per example (Paul et al. 2021).

    ``el2n(logits, targets)[i] = || softmax(logits[i]) - onehot(targets[i]) ||_2``

    Args:
        logits: ``[B, C]`` float32, float64, float16 or bfloat16, any strides,
            ``B >= 0``, ``C >= 1``.
        targets: ``[B]`` int64 or int32 class indices in ``[0, C)``, on the same
            device as ``logits``.

    Returns:
        ``[B]`` scores in ``[0, sqrt(2)]``: float64 for float64 logits, float32
        otherwise (half-precision inputs are accumulated in float32). NaN for a
        row with a NaN or +inf logit or with only -inf logits.

    The score is not differentiable: ``logits`` is detached and the result never
    requires grad. Invalid arguments raise ``RuntimeError``.
    """
    return _el2n_impl(logits.detach(), targets)


def backend_info() -> dict[str, Any]:
    """Which implementation :mod:`reuse.ops` uses and what it provides.

    Keys: ``backend`` ("compiled" or "reference"), ``extension`` (path of the
    loaded shared library or None), ``built_with_cuda`` (whether the library
    was compiled with CUDA kernels; None without the library), ``cpu_kernels``
    and ``cuda_kernels`` (whether ``reuse::el2n`` has a kernel registered for
    that device), ``cuda_available`` (``torch.cuda.is_available()``) and
    ``load_error`` (why the extension is not used, or None).
    """
    return {
        "backend": BACKEND,
        "extension": getattr(_C, "__file__", None),
        "built_with_cuda": bool(_C.WITH_CUDA) if _C is not None else None,
        "cpu_kernels": _has_kernel("reuse::el2n", "CPU"),
        "cuda_kernels": _has_kernel("reuse::el2n", "CUDA"),
        "cuda_available": torch.cuda.is_available(),
        "load_error": _LOAD_ERROR,
    }
