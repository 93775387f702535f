"""Pure-PyTorch reference implementations of the ops in :mod:`reuse.ops`.

They define what the compiled kernels must compute, serve as the test oracle,
and are the fallback when the extension ``reuse._C`` is not built. They follow
the definitions literally and favour clarity over speed and memory.
"""

from __future__ import annotations

import torch

__all__ = ["el2n_reference", "el2n_output_dtype"]

_LOGIT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_TARGET_DTYPES = (torch.int64, torch.int32)


def el2n_output_dtype(logits_dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 logits, float32 for every other logits dtype."""
    return torch.float64 if logits_dtype == torch.float64 else torch.float32


def _check_el2n_args(logits: torch.Tensor, targets: torch.Tensor) -> None:
    # Same conditions and wording as csrc/el2n.h, so both backends fail alike.
    if logits.dim() != 2:
        raise RuntimeError(
            f"reuse::el2n: logits must be a 2-D tensor [batch, classes], got "
            f"{logits.dim()}-D with shape {list(logits.shape)}; flatten leading "
            f"dimensions first, e.g. logits.reshape(-1, logits.shape[-1])"
        )
    if logits.shape[1] < 1:
        raise RuntimeError(
            f"reuse::el2n: logits must have at least one class column, got shape "
            f"{list(logits.shape)}"
        )
    if logits.dtype not in _LOGIT_DTYPES:
        raise RuntimeError(
            f"reuse::el2n: logits must be float32, float64, float16 or bfloat16, "
            f"got {logits.dtype}; convert with logits.float()"
        )
    if targets.dim() != 1:
        raise RuntimeError(
            f"reuse::el2n: targets must be a 1-D tensor of class indices [batch], got "
            f"{targets.dim()}-D with shape {list(targets.shape)}; pass class indices, "
            f"not one-hot or soft labels"
        )
    if targets.dtype not in _TARGET_DTYPES:
        raise RuntimeError(
            f"reuse::el2n: targets must be int64 or int32 class indices, got "
            f"{targets.dtype}; convert with targets.long()"
        )
    if targets.shape[0] != logits.shape[0]:
        raise RuntimeError(
            f"reuse::el2n: targets has {targets.shape[0]} entries but logits has "
            f"{logits.shape[0]} rows; they must match"
        )
    if targets.device != logits.device:
        raise RuntimeError(
            f"reuse::el2n: logits and targets must be on the same device, got logits "
            f"on {logits.device} and targets on {targets.device}; move one with .to(device)"
        )
    if targets.numel() > 0:
        lo, hi = int(targets.min()), int(targets.max())
        num_classes = logits.shape[1]
        if lo < 0 or hi >= num_classes:
            raise RuntimeError(
                f"reuse::el2n: targets must be class indices in [0, {num_classes}), got "
                f"values in [{lo}, {hi}]; check the label mapping or the number of logit "
                f"columns"
            )


def el2n_reference(
    logits: torch.Tensor, targets: torch.Tensor, *, check: bool = True
) -> torch.Tensor:
    """EL2N score per example: ``|| softmax(logits_i) - onehot(targets_i) ||_2``.

    Args:
        logits: ``[B, C]`` float32, float64, float16 or bfloat16, ``C >= 1``.
        targets: ``[B]`` int64 or int32 class indices in ``[0, C)``.

    Returns:
        ``[B]`` scores in ``[0, sqrt(2)]``; float64 for float64 logits, float32
        otherwise. Computed in the output dtype. Non-finite logits propagate as
        they do through ``torch.softmax``. Not differentiable: the result never
        requires grad.

    ``check=False`` skips argument validation, whose range check on
    ``targets`` synchronises with the device and breaks ``torch.compile``
    graphs; use it only with arguments known to be valid.
    """
    if check:
        _check_el2n_args(logits, targets)
    with torch.no_grad():
        p = torch.softmax(logits.to(el2n_output_dtype(logits.dtype)), dim=1)
        rows = torch.arange(p.shape[0], device=p.device)
        p[rows, targets.long()] -= 1.0
        return torch.linalg.vector_norm(p, dim=1)
