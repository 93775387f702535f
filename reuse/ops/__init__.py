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
* :data:`BACKEND` - ``"compiled"`` or ``"reference"``.
* :func:`backend_info` - what was loaded and which kernels are registered.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch

from .reference import el2n_output_dtype, el2n_reference

__all__ = ["BACKEND", "backend_info", "el2n", "el2n_reference", "kd_loss", "kd_loss_reference"]

_C: Any = None
_LOAD_ERROR: str | None = None
_FORCED_REFERENCE = os.environ.get("REUSE_FORCE_REFERENCE", "") not in ("", "0")

if _FORCED_REFERENCE:
    _LOAD_ERROR = "REUSE_FORCE_REFERENCE is set"
else:
    try:
        from reuse import _C  # loading the library registers torch.ops.reuse.*
    except (ImportError, OSError) as exc:
        _LOAD_ERROR = f"{type(exc).__name__}: {exc}"
        warnings.warn(
            f"reuse._C is not built ({_LOAD_ERROR}); using the pure-PyTorch reference "
            f"ops, which are slower. Build it with `pip install --no-build-isolation -e .`",
            RuntimeWarning,
            stacklevel=2,
        )

BACKEND: str = "compiled" if _C is not None else "reference"


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


def _has_kernel(op: str, dispatch_key: str) -> bool:
    if BACKEND != "compiled":
        return False
    return bool(torch._C._dispatch_has_kernel_for_dispatch_key(op, dispatch_key))


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


from .kd import kd_loss  # noqa: E402  (needs BACKEND, defined above)
from .reference import kd_loss_reference  # noqa: E402
