"""Tests of reuse.ops.kd_loss (and the reuse::kd_loss_* ops) against the reference.

The oracle is kd_loss_reference run in float64 on the same (already rounded)
inputs, so the tolerances below measure only the kernels' arithmetic (and the
rounding of low-precision gradients). Tests of the compiled extension are
skipped when reuse._C is not built; CUDA tests are skipped without a GPU.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import reuse.ops as ops
from reuse.ops import kd_loss, kd_loss_reference
from reuse.ops.reference import topk_teacher_logits

INFO = ops.backend_info()
COMPILED = INFO["backend"] == "compiled"

requires_compiled = pytest.mark.skipif(
    not COMPILED, reason=f"reuse._C is not in use ({INFO['load_error']})"
)
requires_cuda_kernel = pytest.mark.skipif(
    not (torch.cuda.is_available() and INFO["cuda_kernels"]),
    reason="needs a CUDA device and reuse._C built with CUDA kernels",
)

# Per student dtype: loss rtol, and gradient (rtol, atol as a fraction of the
# largest gradient entry). Float16 / bfloat16 students are computed in float32;
# their gradients are rounded to the student dtype.
TOL = {
    torch.float64: (1e-10, 1e-10, 1e-12),
    torch.float32: (5e-5, 2e-5, 1e-6),
    torch.float16: (5e-5, 2e-3, 1e-3),
    torch.bfloat16: (5e-5, 1e-2, 8e-3),
}


def make_case(batch, classes, *, s_dtype=torch.float32, t_dtype=torch.float16, kind="logits",
              temperature=4.0, seed=0, device="cpu", scale=4.0):
    g = torch.Generator().manual_seed(seed * 7919 + batch * 31 + classes)
    s = torch.randn(batch, classes, generator=g, dtype=torch.float64) * scale
    t = torch.randn(batch, classes, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, classes, (batch,), generator=g)
    if kind == "probs":
        t = torch.softmax(t / temperature, dim=1)
    return s.to(s_dtype).to(device), t.to(t_dtype).to(device), y.to(device)


def make_topk(batch, classes, k, *, seed=0, v_dtype=torch.float16, i_dtype=torch.int16, device="cpu"):
    """A top-k teacher as reuse/cache.py writes it, from random float32 logits."""
    g = torch.Generator().manual_seed(seed * 104729 + batch * 17 + classes + k)
    full = torch.randn(batch, classes, generator=g) * 4
    values, indices = full.topk(k, dim=1)
    lse = torch.logsumexp(full, dim=1)
    if classes > 32767 and i_dtype == torch.int16:
        i_dtype = torch.int32
    return values.to(v_dtype).to(device), indices.to(i_dtype).to(device), lse.to(device)


def loss_and_grad(fn, s, *args, grad_scale=1.0, **kwargs):
    s = s.detach().clone().requires_grad_(True)
    loss = fn(s, *args, **kwargs)
    (loss * grad_scale).backward()
    return loss.detach(), s.grad


def oracle(s, teacher, y, temperature, alpha, kind="logits", grad_scale=1.0):
    if kind == "topk":
        teacher = tuple(teacher)
    else:
        teacher = teacher.double()
    return loss_and_grad(kd_loss_reference, s.double(), teacher, y, temperature, alpha,
                         teacher_kind=kind, grad_scale=grad_scale)


def assert_matches(loss, grad, ref_loss, ref_grad, s_dtype):
    l_rtol, g_rtol, g_atol = TOL[s_dtype]
    assert loss.dtype == (torch.float64 if s_dtype == torch.float64 else torch.float32)
    assert loss.dim() == 0
    assert grad.dtype == s_dtype
    torch.testing.assert_close(loss.double(), ref_loss, rtol=l_rtol, atol=l_rtol * 1e-3)
    scale = ref_grad.abs().max().item() if ref_grad.numel() else 1.0
    torch.testing.assert_close(grad.double(), ref_grad.to(grad.device), rtol=g_rtol, atol=g_atol * scale)


def check(s, teacher, y, temperature, alpha, kind="logits", grad_scale=1.0):
    loss, grad = loss_and_grad(kd_loss, s, teacher, y, temperature, alpha, teacher_kind=kind,
                               grad_scale=grad_scale)
    cpu = lambda x: tuple(v.cpu() for v in x) if isinstance(x, tuple) else x.cpu()  # noqa: E731
    ref_loss, ref_grad = oracle(s.cpu(), cpu(teacher), y.cpu(), temperature, alpha, kind, grad_scale)
    assert_matches(loss.cpu(), grad.cpu(), ref_loss, ref_grad, s.dtype)


# ---------------------------------------------------------------- agreement (CPU)

# Up to 16 classes the CPU kernels take kGroup = 8 rows at a time (partial
# groups included); wider rows go in blocks of 1024 columns.
SHAPES = [(1, 2), (3, 7), (5, 10), (19, 16), (9, 17), (17, 100), (8, 1000), (3, 1001), (2, 32000)]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("s_dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_matches_reference(shape, s_dtype):
    s, t, y = make_case(*shape, s_dtype=s_dtype)
    check(s, t, y, 4.0, 0.5)


@pytest.mark.parametrize("kind", ["logits", "probs", "topk"])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 4.0, 20.0])
def test_temperature_and_alpha(temperature, alpha, kind):
    if kind == "topk":
        s, _, y = make_case(5, 1001)
        teacher = make_topk(5, 1001, 20)
    else:
        s, teacher, y = make_case(5, 1001, t_dtype=torch.float32, kind=kind, temperature=temperature)
    check(s, teacher, y, temperature, alpha, kind)


@pytest.mark.parametrize("t_dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("s_dtype", DTYPES, ids=str)
def test_teacher_dtypes(s_dtype, t_dtype):
    s, t, y = make_case(9, 100, s_dtype=s_dtype, t_dtype=t_dtype)
    check(s, t, y, 2.0, 0.7)


@pytest.mark.parametrize("kind", ["logits", "probs", "topk"])
def test_incoming_gradient_scale(kind):
    s, t, y = make_case(7, 300, kind=kind, t_dtype=torch.float32)
    teacher = make_topk(7, 300, 5) if kind == "topk" else t
    check(s, teacher, y, 3.0, 0.6, kind, grad_scale=-2.5)


@pytest.mark.parametrize("s_dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_non_contiguous_inputs(s_dtype):
    s, t, y = make_case(40, 74, s_dtype=s_dtype)
    s_t = s.t().contiguous().t()  # column-major
    t_sliced = torch.cat([t, t], dim=1)[:, ::2]
    y_strided = torch.stack([y, y], dim=1)[:, 0]
    assert not (s_t.is_contiguous() or t_sliced.is_contiguous() or y_strided.is_contiguous())
    check(s_t, t_sliced, y_strided, 4.0, 0.5)
    check(s[:, ::2], t[:, ::2], y.clamp_max(36), 4.0, 0.5)
    values, indices, lse = make_topk(40, 74, 6)
    check(s_t, (values.t().contiguous().t(), indices[:, :], lse), y_strided, 4.0, 0.5, "topk")


def test_int32_targets_and_batch_of_one():
    s, t, y = make_case(1, 1000)
    a = kd_loss(s, t, y, 4.0, 0.5)
    b = kd_loss(s, t, y.int(), 4.0, 0.5)
    assert a.item() == b.item()
    check(s, t, y.int(), 4.0, 0.5)


def test_empty_batch_and_single_class():
    s = torch.zeros(0, 5, requires_grad=True)
    loss = kd_loss(s, torch.zeros(0, 5), torch.zeros(0, dtype=torch.long), 2.0, 0.5)
    assert torch.isnan(loss)  # a mean over no rows, as torch.mean gives
    loss.backward()
    assert s.grad.shape == (0, 5)
    s1, t1, y1 = make_case(4, 1)  # one class: both terms are 0
    loss, grad = loss_and_grad(kd_loss, s1, t1, y1, 2.0, 0.5)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    assert grad.abs().max().item() < 1e-7


def test_extreme_logits():
    s, t, y = make_case(6, 500, scale=1e3)
    check(s, t, y, 4.0, 0.5)
    check(s + 1e4, t - 3e4, y, 2.0, 0.5)  # large common offsets cancel


def test_probs_with_zeros():
    s, t, y = make_case(6, 50, kind="probs", t_dtype=torch.float32, temperature=2.0)
    t[:, ::3] = 0.0
    t[2] = 0.0
    t[2, 7] = 1.0  # a one-hot teacher row
    t = t / t.sum(1, keepdim=True)
    check(s, t, y, 2.0, 0.8, "probs")
    check(s, t.half(), y, 2.0, 0.8, "probs")


@pytest.mark.parametrize("k", [1, 5, 20])
def test_topk_matches_dense_teacher(k):
    # The top-k teacher is the dense teacher t_full (rest > 0 here), so the
    # dense logits path of the reference is the oracle.
    s, _, y = make_case(6, 100)
    values, indices, lse = make_topk(6, 100, k, v_dtype=torch.float32)
    t_full = topk_teacher_logits(values, indices, lse, 100)
    assert torch.isfinite(t_full).all()
    for temperature in (1.0, 4.0):
        loss, grad = loss_and_grad(kd_loss, s, (values, indices, lse), y, temperature, 0.5, teacher_kind="topk")
        ref_loss, ref_grad = loss_and_grad(kd_loss_reference, s.double(), t_full, y, temperature, 0.5)
        assert_matches(loss, grad, ref_loss, ref_grad, s.dtype)
    # At T = 1, softmax(t_full) is the cache's distribution.
    p = torch.softmax(t_full, dim=1)
    kept = torch.exp(values.double() - lse.double()[:, None])
    torch.testing.assert_close(p.gather(1, indices.long()), kept)


def test_topk_without_rest_mass():
    # The kept mass reaches 1 (k = C, and a row where the other classes
    # vanish): non-kept classes get probability 0.
    s, _, y = make_case(4, 30)
    full = torch.randn(4, 30, generator=torch.Generator().manual_seed(5)) * 4
    full[1, 5:] = -1e4
    values, indices = full.topk(5, dim=1)
    lse = torch.logsumexp(full, dim=1)
    check(s, (values, indices, lse), y, 2.0, 0.5, "topk")
    v_all, i_all = full.topk(30, dim=1)
    check(s, (v_all, i_all, lse), y, 2.0, 0.5, "topk")
    # Row 1's kept mass rounds to 1 or just above: its other classes get
    # probability 0 (logit -inf), or a negligible one.
    t_full = topk_teacher_logits(values, indices, lse, 30)
    assert torch.softmax(t_full[1], dim=0)[5:].sum() < 1e-6


@pytest.mark.parametrize("i_dtype", [torch.int16, torch.int32, torch.int64], ids=str)
@pytest.mark.parametrize("v_dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_topk_dtypes(v_dtype, i_dtype):
    s, _, y = make_case(5, 200, s_dtype=torch.float16)
    check(s, make_topk(5, 200, 7, v_dtype=v_dtype, i_dtype=i_dtype), y, 4.0, 0.5, "topk")


def test_teacher_gets_no_gradient():
    s, t, y = make_case(4, 20, t_dtype=torch.float32)
    t.requires_grad_(True)
    s.requires_grad_(True)
    kd_loss(s, t, y, 2.0, 0.5).backward()
    assert s.grad is not None and t.grad is None


@requires_compiled
def test_deterministic_across_thread_counts():
    s, t, y = make_case(300, 2000)  # several parallel tasks of 2^16 logits
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = loss_and_grad(kd_loss, s, t, y, 4.0, 0.9)
        torch.set_num_threads(2)
        b = loss_and_grad(kd_loss, s, t, y, 4.0, 0.9)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# ----------------------------------------------------------------- gradcheck


@pytest.mark.parametrize("kind", ["logits", "probs", "topk"])
def test_gradcheck_float64(kind):
    s, t, y = make_case(3, 7, s_dtype=torch.float64, t_dtype=torch.float64, kind=kind, temperature=2.0)
    teacher = make_topk(3, 7, 3, v_dtype=torch.float64) if kind == "topk" else t
    s.requires_grad_(True)
    for alpha in (0.0, 0.3, 1.0):
        assert torch.autograd.gradcheck(
            lambda x, a=alpha: kd_loss(x, teacher, y, 2.0, a, teacher_kind=kind), (s,), eps=1e-6, atol=1e-7
        )


# --------------------------------------------------------------- errors


def _nan_student():
    s, t, y = make_case(4, 6)
    s[2, 1] = math.nan
    return (s, t, y, 2.0, 0.5), {}


def _inf_teacher():
    s, t, y = make_case(4, 6)
    t[3, 0] = -math.inf
    return (s, t, y, 2.0, 0.5), {}


def _bad_target():
    s, t, y = make_case(4, 6)
    y[1] = 6
    return (s, t, y, 2.0, 0.5), {}


def _negative_target():
    s, t, y = make_case(4, 6)
    y[0] = -1
    return (s, t, y, 2.0, 0.5), {}


def _teacher_shape():
    s, t, y = make_case(4, 6)
    return (s, t[:, :5], y, 2.0, 0.5), {}


def _batch_mismatch():
    s, t, y = make_case(4, 6)
    return (s, t, y[:3], 2.0, 0.5), {}


def _float_targets():
    s, t, y = make_case(4, 6)
    return (s, t, y.float(), 2.0, 0.5), {}


def _int_student():
    s, t, y = make_case(4, 6)
    return (s.long(), t, y, 2.0, 0.5), {}


def _student_1d():
    s, t, y = make_case(4, 6)
    return (s[0], t[0], y, 2.0, 0.5), {}


def _bad_temperature():
    s, t, y = make_case(4, 6)
    return (s, t, y, 0.0, 0.5), {}


def _bad_alpha():
    s, t, y = make_case(4, 6)
    return (s, t, y, 2.0, 1.5), {}


def _negative_probs():
    s, t, y = make_case(4, 6, kind="probs", t_dtype=torch.float32)
    t[1, 2] = -0.1
    return (s, t, y, 2.0, 0.5), {"teacher_kind": "probs"}


def _unnormalised_probs():
    s, t, y = make_case(4, 6, kind="probs", t_dtype=torch.float32)
    return (s, t * 1.5, y, 2.0, 0.5), {"teacher_kind": "probs"}


def _topk_bad_index():
    s, _, y = make_case(4, 6)
    values, indices, lse = make_topk(4, 6, 2)
    indices[3, 1] = 6
    return (s, (values, indices, lse), y, 2.0, 0.5), {"teacher_kind": "topk"}


def _topk_bad_lse():
    s, _, y = make_case(4, 6)
    values, indices, lse = make_topk(4, 6, 2)
    return (s, (values, indices, lse - 3.0), y, 2.0, 0.5), {"teacher_kind": "topk"}


def _topk_float_indices():
    s, _, y = make_case(4, 6)
    values, indices, lse = make_topk(4, 6, 2)
    return (s, (values, indices.float(), lse), y, 2.0, 0.5), {"teacher_kind": "topk"}


def _topk_shape():
    s, _, y = make_case(4, 6)
    values, indices, lse = make_topk(4, 6, 2)
    return (s, (values, indices[:, :1], lse), y, 2.0, 0.5), {"teacher_kind": "topk"}


def _topk_nan_value():
    s, _, y = make_case(4, 6)
    values, indices, lse = make_topk(4, 6, 2)
    values[0, 0] = math.nan
    return (s, (values, indices, lse), y, 2.0, 0.5), {"teacher_kind": "topk"}


ERRORS = {
    "nan_student": (_nan_student, r"student_logits has a non-finite value .* row 2"),
    "inf_teacher": (_inf_teacher, r"teacher has a non-finite value .* row 3"),
    "target_too_large": (_bad_target, r"targets must be class indices in \[0, 6\); row 1"),
    "target_negative": (_negative_target, r"targets must be class indices in \[0, 6\); row 0"),
    "teacher_shape": (_teacher_shape, r"teacher must have the shape of student_logits"),
    "batch_mismatch": (_batch_mismatch, r"targets has 3 entries but student_logits has 4 rows"),
    "float_targets": (_float_targets, r"targets must be int64 or int32"),
    "int_student": (_int_student, r"student_logits must be float32, float64, float16 or bfloat16"),
    "student_1d": (_student_1d, r"student_logits must be a 2-D tensor"),
    "temperature": (_bad_temperature, r"temperature must be a finite number > 0"),
    "alpha": (_bad_alpha, r"alpha must be in \[0, 1\]"),
    "negative_probs": (_negative_probs, r"teacher probabilities must be >= 0; row 1"),
    "unnormalised_probs": (_unnormalised_probs, r"must sum to 1 per row .* row 0"),
    "topk_index": (_topk_bad_index, r"top-k teacher indices must be class indices in \[0, 6\); row 3"),
    "topk_mass": (_topk_bad_lse, r"must sum to 1 per row .* row 0"),
    "topk_index_dtype": (_topk_float_indices, r"top-k teacher indices must be int16, int32 or int64"),
    "topk_shape": (_topk_shape, r"top-k teacher indices must have the shape of the values"),
    "topk_nan": (_topk_nan_value, r"teacher has a non-finite value .* row 0"),
}


@pytest.mark.parametrize("impl", [kd_loss, kd_loss_reference], ids=["kd_loss", "reference"])
@pytest.mark.parametrize("case", list(ERRORS))
def test_invalid_arguments_raise(case, impl):
    make, pattern = ERRORS[case]
    args, kwargs = make()
    with pytest.raises(RuntimeError, match=pattern):
        impl(*args, **kwargs)


def test_unknown_teacher_kind():
    s, t, y = make_case(2, 3)
    with pytest.raises(ValueError, match="teacher_kind"):
        kd_loss(s, t, y, 1.0, 0.5, teacher_kind="soft")
    with pytest.raises(RuntimeError, match=r"\(values, indices, logsumexp\)"):
        kd_loss(s, t, y, 1.0, 0.5, teacher_kind="topk")


def test_unused_inputs_are_not_read():
    s, t, y = make_case(4, 6)
    nan_teacher = torch.full_like(t, math.nan)
    bad_targets = torch.full_like(y, -1)
    for impl in (kd_loss, kd_loss_reference):
        # alpha = 0: the teacher is ignored (its shape is still checked) ...
        a = impl(s, nan_teacher, y, 2.0, 0.0)
        torch.testing.assert_close(a, torch.nn.functional.cross_entropy(s, y))
        with pytest.raises(RuntimeError, match="shape of student_logits"):
            impl(s, nan_teacher[:, :3], y, 2.0, 0.0)
        # ... alpha = 1: the targets are ignored.
        b = impl(s, t, bad_targets, 2.0, 1.0)
        assert torch.isfinite(b)


# --------------------------------------------------- op registration (compiled)


@requires_compiled
@pytest.mark.parametrize(
    "s_dtype,kind", [(torch.float32, 0), (torch.float64, 1), (torch.bfloat16, 0), (torch.float16, 1)], ids=str
)
def test_opcheck_dense(s_dtype, kind):
    s, t, y = make_case(5, 33, s_dtype=s_dtype, kind="probs" if kind else "logits", t_dtype=torch.float32)
    op = torch.ops.reuse.kd_loss_fwd.default
    torch.library.opcheck(op, (s, t, y, 3.0, 0.5, kind))
    torch.library.opcheck(op, (s.detach().requires_grad_(True), t, y.int(), 3.0, 0.5, kind))
    loss, stats = op(s, t, y, 3.0, 0.5, kind)
    grad = torch.tensor(1.5, dtype=loss.dtype)
    torch.library.opcheck(torch.ops.reuse.kd_loss_bwd.default, (grad, s, t, y, stats, 3.0, 0.5, kind))


@requires_compiled
def test_opcheck_topk():
    s, _, y = make_case(5, 40)
    values, indices, lse = make_topk(5, 40, 4)
    op = torch.ops.reuse.kd_loss_topk_fwd.default
    torch.library.opcheck(op, (s, values, indices, lse, y, 2.0, 0.5))
    torch.library.opcheck(op, (s.requires_grad_(True), values, indices, lse, y, 2.0, 0.5))
    loss, stats = op(s.detach(), values, indices, lse, y, 2.0, 0.5)
    torch.library.opcheck(
        torch.ops.reuse.kd_loss_topk_bwd.default,
        (torch.tensor(1.0), s.detach(), values, indices, y, stats, 2.0, 0.5),
    )


@requires_compiled
def test_registered_autograd_matches_eager_path():
    # kd_loss's eager fast path (an autograd.Function) and the formula
    # registered with torch.library give the same gradient.
    s, t, y = make_case(6, 50)
    a = loss_and_grad(kd_loss, s, t, y, 3.0, 0.4)
    b = loss_and_grad(lambda x: torch.ops.reuse.kd_loss_fwd(x, t, y, 3.0, 0.4, 0)[0], s)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_torch_func_grad():
    s, t, y = make_case(4, 9, s_dtype=torch.float64, t_dtype=torch.float64)
    grad = torch.func.grad(lambda x: kd_loss(x, t, y, 2.0, 0.5))(s)
    torch.testing.assert_close(grad, oracle(s, t, y, 2.0, 0.5)[1])
    topk = make_topk(4, 9, 3, v_dtype=torch.float64)
    grad = torch.func.grad(lambda x: kd_loss(x, topk, y, 2.0, 0.5, teacher_kind="topk"))(s)
    torch.testing.assert_close(grad, oracle(s, topk, y, 2.0, 0.5, "topk")[1])


@requires_compiled
def test_inside_torch_compile():
    s, t, y = make_case(6, 20)
    values, indices, lse = make_topk(6, 20, 3)

    @torch.compile(backend="aot_eager", fullgraph=True)
    def f(x):
        return kd_loss(x * 1.0, t, y, 2.0, 0.5) + kd_loss(x, (values, indices, lse), y, 2.0, 0.5, teacher_kind="topk")

    loss, grad = loss_and_grad(f, s)
    ref = loss_and_grad(
        lambda x: kd_loss(x, t, y, 2.0, 0.5) + kd_loss(x, (values, indices, lse), y, 2.0, 0.5, teacher_kind="topk"), s
    )
    torch.testing.assert_close(loss, ref[0])
    torch.testing.assert_close(grad, ref[1])


# ----------------------------------------------------------------- fallback


def test_force_reference_env():
    code = textwrap.dedent(
        """
        import warnings
        warnings.simplefilter("error")
        import torch
        import reuse.ops as ops
        from reuse.ops import kd_loss, kd_loss_reference
        assert ops.BACKEND == "reference", ops.BACKEND
        g = torch.Generator().manual_seed(0)
        s = torch.randn(9, 50, generator=g, requires_grad=True)
        t = torch.randn(9, 50, generator=g).half()
        y = torch.randint(0, 50, (9,), generator=g)
        loss = kd_loss(s, t, y, 4.0, 0.5)
        loss.backward()
        assert loss.dtype == torch.float32 and s.grad.shape == s.shape
        torch.testing.assert_close(loss, kd_loss_reference(s, t, y, 4.0, 0.5))
        try:
            kd_loss(s, t, y.float(), 4.0, 0.5)
        except RuntimeError as e:
            assert "targets must be int64 or int32" in str(e)
        else:
            raise AssertionError("no error")
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "REUSE_FORCE_REFERENCE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok"


# ---------------------------------------------------------------------- CUDA

CUDA_SHAPES = [(1, 2), (3, 7), (33, 100), (9, 1024), (5, 1025), (4, 32000), (2, 262144)]


@requires_cuda_kernel
@pytest.mark.parametrize("s_dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", CUDA_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_cuda_matches_reference(shape, s_dtype):
    s, t, y = make_case(*shape, s_dtype=s_dtype, device="cuda")
    check(s, t, y, 4.0, 0.5)


@requires_cuda_kernel
@pytest.mark.parametrize("kind", ["logits", "probs", "topk"])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("classes", [100, 5000])
def test_cuda_kinds(classes, alpha, kind):
    if kind == "topk":
        s, _, y = make_case(6, classes, device="cuda")
        teacher = make_topk(6, classes, 10, device="cuda")
    else:
        s, teacher, y = make_case(6, classes, kind=kind, t_dtype=torch.float32, temperature=4.0, device="cuda")
    check(s, teacher, y, 4.0, alpha, kind)


@requires_cuda_kernel
def test_cuda_matches_cpu_and_is_deterministic():
    s, t, y = make_case(64, 5000)
    cpu = loss_and_grad(kd_loss, s, t, y, 4.0, 0.9)
    g1 = loss_and_grad(kd_loss, s.cuda(), t.cuda(), y.cuda(), 4.0, 0.9)
    g2 = loss_and_grad(kd_loss, s.cuda(), t.cuda(), y.cuda(), 4.0, 0.9)
    assert torch.equal(g1[0], g2[0]) and torch.equal(g1[1], g2[1])
    torch.testing.assert_close(g1[0].cpu(), cpu[0], rtol=2e-5, atol=1e-7)
    torch.testing.assert_close(g1[1].cpu(), cpu[1], rtol=2e-5, atol=1e-7)


@requires_cuda_kernel
@pytest.mark.parametrize("case", ["nan_student", "inf_teacher", "target_too_large", "negative_probs",
                                  "unnormalised_probs", "topk_index", "topk_mass"])
def test_cuda_errors(case):
    make, pattern = ERRORS[case]
    args, kwargs = make()
    args = tuple(tuple(v.cuda() for v in a) if isinstance(a, tuple) else a.cuda() if torch.is_tensor(a) else a
                 for a in args)
    with pytest.raises(RuntimeError, match=pattern):
        kd_loss(*args, **kwargs)
    s, t, y = make_case(3, 5, device="cuda")
    with pytest.raises(RuntimeError, match="device"):
        kd_loss(s, t.cpu(), y, 2.0, 0.5)


@requires_cuda_kernel
def test_cuda_runs_on_current_stream():
    s, t, y = make_case(256, 3000, device="cuda")
    expected = loss_and_grad(kd_loss, s, t, y, 4.0, 0.9)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        out = loss_and_grad(kd_loss, s, t, y, 4.0, 0.9)
    side.synchronize()
    assert torch.equal(out[0], expected[0]) and torch.equal(out[1], expected[1])


@requires_cuda_kernel
def test_cuda_opcheck():
    s, t, y = make_case(5, 1500, s_dtype=torch.bfloat16, device="cuda")
    torch.library.opcheck(torch.ops.reuse.kd_loss_fwd.default, (s.requires_grad_(True), t, y, 2.0, 0.5, 0))
    s, _, y = make_case(5, 1500, device="cuda")
    values, indices, lse = make_topk(5, 1500, 8, device="cuda")
    torch.library.opcheck(torch.ops.reuse.kd_loss_topk_fwd.default,
                          (s.requires_grad_(True), values, indices, lse, y, 2.0, 0.5))
