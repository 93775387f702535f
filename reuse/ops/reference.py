"""Pure-PyTorch reference implementations of the ops in :mod:`reuse.ops`.

They define what the compiled kernels must compute, serve as the test oracle,
and are the fallback when the extension ``reuse._C`` is not built. They follow
the definitions literally and favour clarity over speed and memory.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "el2n_reference",
    "el2n_output_dtype",
    "kd_loss_reference",
    "topk_teacher_logits",
]

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


# ----------------------------------------------------------------------------- kd_loss

KD_TEACHER_KINDS = ("logits", "probs", "topk")
# Teacher probabilities (teacher_kind="probs") and the kept mass of a top-k
# teacher may differ from 1 by this much (rounding); beyond it they are
# rejected. Same value as kMassTolerance in csrc/kd_loss.h.
KD_MASS_TOLERANCE = 1e-2
_TOPK_INDEX_DTYPES = (torch.int16, torch.int32, torch.int64)


def topk_teacher_logits(
    values: torch.Tensor, indices: torch.Tensor, lse: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Dense teacher logits ``t_full`` ``[B, C]`` (float64) of a top-k teacher.

    The top-k form of a logit cache (see :mod:`reuse.cache`) keeps the ``k``
    largest logits ``values`` at ``indices`` and the row's ``lse``; at
    temperature 1 the ``C - k`` other classes share the remaining mass
    ``rest = 1 - sum exp(values - lse)`` equally. ``t_full`` has the kept
    values at their indices and ``lse + log(rest / (C - k))`` elsewhere (``-inf``
    when ``rest <= 0``), so ``softmax(t_full)`` reproduces the cache and
    ``softmax(t_full / T)`` is the teacher at temperature ``T``.
    """
    v = values.detach().double()
    lse = lse.detach().double()
    k = v.shape[1]
    rest = 1.0 - torch.exp(v - lse[:, None]).sum(1)
    n_rest = num_classes - k
    if n_rest > 0:
        r = torch.where(
            rest > 0, lse + torch.log(rest.clamp_min(1e-300) / n_rest), torch.full_like(rest, -math.inf)
        )
    else:
        r = torch.full_like(rest, -math.inf)
    full = r[:, None].expand(-1, num_classes).clone()
    return full.scatter_(1, indices.long(), v)


def _first_row(bad: torch.Tensor) -> int:
    return int(bad.nonzero()[0, 0])


def _check_kd_args(s, teacher, targets, temperature, alpha, teacher_kind) -> None:
    # Same conditions and wording as csrc/kd_loss.h (and in the same order),
    # so both backends fail alike.
    if not (math.isfinite(temperature) and temperature > 0):
        raise RuntimeError(
            f"reuse::kd_loss: temperature must be a finite number > 0, got {temperature}"
        )
    if not (math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
        raise RuntimeError(f"reuse::kd_loss: alpha must be in [0, 1], got {alpha}")
    if s.dim() != 2:
        raise RuntimeError(
            f"reuse::kd_loss: student_logits must be a 2-D tensor [batch, classes], got "
            f"{s.dim()}-D with shape {list(s.shape)}; flatten leading dimensions first, e.g. "
            f"x.reshape(-1, x.shape[-1])"
        )
    if s.shape[1] < 1:
        raise RuntimeError(
            f"reuse::kd_loss: student_logits must have at least one class column, got shape "
            f"{list(s.shape)}"
        )
    if s.dtype not in _LOGIT_DTYPES:
        raise RuntimeError(
            f"reuse::kd_loss: student_logits must be float32, float64, float16 or bfloat16, "
            f"got {s.dtype}"
        )
    if targets.dim() != 1:
        raise RuntimeError(
            f"reuse::kd_loss: targets must be a 1-D tensor of class indices [batch], got "
            f"{targets.dim()}-D with shape {list(targets.shape)}"
        )
    if targets.dtype not in _TARGET_DTYPES:
        raise RuntimeError(
            f"reuse::kd_loss: targets must be int64 or int32 class indices, got "
            f"{targets.dtype}; convert with targets.long()"
        )
    if targets.shape[0] != s.shape[0]:
        raise RuntimeError(
            f"reuse::kd_loss: targets has {targets.shape[0]} entries but student_logits has "
            f"{s.shape[0]} rows; they must match"
        )
    if targets.device != s.device:
        raise RuntimeError(
            f"reuse::kd_loss: targets must be on the device of student_logits ({s.device}), "
            f"got {targets.device}"
        )
    B, C = s.shape
    if teacher_kind == "topk":
        values, indices, lse = teacher
        if not (values.dim() == 2 and values.shape[0] == B and values.shape[1] <= C):
            raise RuntimeError(
                f"reuse::kd_loss: top-k teacher values must be [batch, k] with batch = {B} and "
                f"k <= {C} classes, got shape {list(values.shape)}"
            )
        if values.dtype not in _LOGIT_DTYPES:
            raise RuntimeError(
                f"reuse::kd_loss: top-k teacher values must be float16, bfloat16, float32 or "
                f"float64, got {values.dtype}"
            )
        if indices.shape != values.shape:
            raise RuntimeError(
                f"reuse::kd_loss: top-k teacher indices must have the shape of the values "
                f"{list(values.shape)}, got {list(indices.shape)}"
            )
        if indices.dtype not in _TOPK_INDEX_DTYPES:
            raise RuntimeError(
                f"reuse::kd_loss: top-k teacher indices must be int16, int32 or int64, got "
                f"{indices.dtype}"
            )
        if values.device != s.device or indices.device != s.device:
            raise RuntimeError(
                f"reuse::kd_loss: top-k teacher values and indices must be on the device of "
                f"student_logits ({s.device}), got {values.device} and {indices.device}"
            )
        if not (lse.dim() == 1 and lse.shape[0] == B):
            raise RuntimeError(
                f"reuse::kd_loss: top-k teacher logsumexp must be [batch] with batch = {B}, got "
                f"shape {list(lse.shape)}"
            )
        if lse.dtype not in (torch.float32, torch.float64):
            raise RuntimeError(
                f"reuse::kd_loss: top-k teacher logsumexp must be float32 or float64, got "
                f"{lse.dtype}"
            )
        if lse.device != s.device:
            raise RuntimeError(
                f"reuse::kd_loss: top-k teacher logsumexp must be on the device of "
                f"student_logits ({s.device}), got {lse.device}"
            )
    else:
        if teacher.shape != s.shape:
            raise RuntimeError(
                f"reuse::kd_loss: teacher must have the shape of student_logits "
                f"{list(s.shape)}, got {list(teacher.shape)}"
            )
        if teacher.dtype not in _LOGIT_DTYPES:
            raise RuntimeError(
                f"reuse::kd_loss: teacher must be float16, bfloat16, float32 or float64, got "
                f"{teacher.dtype}"
            )
        if teacher.device != s.device:
            raise RuntimeError(
                f"reuse::kd_loss: teacher must be on the device of student_logits ({s.device}), "
                f"got {teacher.device}"
            )
    if B == 0:
        return
    # Checks of the values, in the order the kernels report them.
    bad = ~torch.isfinite(s).all(1)
    if bad.any():
        raise RuntimeError(
            f"reuse::kd_loss: student_logits has a non-finite value (NaN or +-inf) in row "
            f"{_first_row(bad)}; the student has diverged or its input is bad"
        )
    if alpha > 0:
        if teacher_kind == "topk":
            values, indices, lse = teacher
            bad = ~(torch.isfinite(values).all(1) & torch.isfinite(lse))
        else:
            bad = ~torch.isfinite(teacher).all(1)
        if bad.any():
            raise RuntimeError(
                f"reuse::kd_loss: teacher has a non-finite value (NaN or +-inf) in row "
                f"{_first_row(bad)}; check the teacher logits / logit cache"
            )
    if alpha < 1:
        bad = (targets < 0) | (targets >= C)
        if bad.any():
            raise RuntimeError(
                f"reuse::kd_loss: targets must be class indices in [0, {C}); row "
                f"{_first_row(bad)} is out of range"
            )
    if alpha > 0 and teacher_kind == "probs":
        bad = (teacher < 0).any(1)
        if bad.any():
            raise RuntimeError(
                f"reuse::kd_loss: teacher probabilities must be >= 0; row {_first_row(bad)} "
                f'has a negative entry (pass logits with teacher_kind="logits")'
            )
    if alpha > 0 and teacher_kind in ("probs", "topk"):
        if teacher_kind == "probs":
            bad = (teacher.double().sum(1) - 1.0).abs() > KD_MASS_TOLERANCE
        else:
            values, indices, lse = teacher
            kept = torch.exp(values.double() - lse.double()[:, None]).sum(1)
            bad = kept > 1.0 + KD_MASS_TOLERANCE
        if bad.any():
            raise RuntimeError(
                f"reuse::kd_loss: teacher probabilities must sum to 1 per row (within "
                f"{KD_MASS_TOLERANCE}); row {_first_row(bad)} does not (for a top-k teacher: the "
                f"kept classes' mass exp(values - logsumexp) exceeds 1)"
            )
    if alpha > 0 and teacher_kind == "topk":
        indices = teacher[1]
        bad = ((indices < 0) | (indices >= C)).any(1)
        if bad.any():
            raise RuntimeError(
                f"reuse::kd_loss: top-k teacher indices must be class indices in [0, {C}); row "
                f"{_first_row(bad)} is out of range"
            )


def kd_loss_reference(
    student_logits: torch.Tensor,
    teacher,
    targets: torch.Tensor,
    temperature: float,
    alpha: float,
    *,
    teacher_kind: str = "logits",
    check: bool = True,
) -> torch.Tensor:
    """Knowledge-distillation loss (Hinton et al. 2015), the textbook formula.

    ``mean_i [alpha T^2 KL(p_i || softmax(s_i / T)) + (1 - alpha) CE(s_i, y_i)]``

    computed in float64 for float64 students and in float32 otherwise, with
    ``F.log_softmax``, ``F.kl_div`` and ``F.cross_entropy``; differentiable
    with respect to ``student_logits`` only. The teacher ``p_i`` is
    ``softmax(t_i / T)`` for ``teacher_kind="logits"``, ``t_i`` itself for
    ``"probs"`` (``0 log 0 = 0``), and for ``"topk"`` ``softmax(t_full_i / T)``
    with ``t_full = topk_teacher_logits(*teacher, C)``. With ``alpha == 0`` the
    teacher is not read, with ``alpha == 1`` the targets are not.

    ``check=False`` skips argument validation, whose value checks synchronise
    with the device and break ``torch.compile`` graphs.
    """
    if teacher_kind not in KD_TEACHER_KINDS:
        raise ValueError(
            f"teacher_kind must be one of {KD_TEACHER_KINDS}, got {teacher_kind!r}"
        )
    if teacher_kind == "topk" and not (isinstance(teacher, (tuple, list)) and len(teacher) == 3):
        raise RuntimeError(
            "reuse::kd_loss: teacher_kind='topk' needs teacher = (values, indices, logsumexp)"
        )
    temperature = float(temperature)
    alpha = float(alpha)
    if check:
        _check_kd_args(student_logits, teacher, targets, temperature, alpha, teacher_kind)
    acc = el2n_output_dtype(student_logits.dtype)
    s = student_logits.to(acc)
    T = temperature
    loss = None
    if alpha > 0:
        log_q = F.log_softmax(s / T, dim=1)
        if teacher_kind == "logits":
            log_p = F.log_softmax(teacher.detach().to(acc) / T, dim=1)
            kl = F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(1)
        else:
            if teacher_kind == "probs":
                p = teacher.detach().to(acc)
            else:
                t_full = topk_teacher_logits(*teacher, s.shape[1])
                p = torch.softmax(t_full / T, dim=1).to(acc)
            kl = F.kl_div(log_q, p, reduction="none").sum(1)
        loss = (alpha * T * T) * kl
    if alpha < 1:
        ce = (1.0 - alpha) * F.cross_entropy(s, targets.long(), reduction="none")
        loss = ce if loss is None else loss + ce
    return loss.mean()
