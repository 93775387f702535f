"""Tests of the per-example gradient-norm ops (reuse::linear_sq_norms, conv_sq_norms,
affine_sq_norms, embedding_sq_norms) against their float64 pure-PyTorch references.

The reference always gets the same (already rounded) inputs upcast to float64, so the
tolerances measure only the kernels' arithmetic. Kernel tests are skipped when
reuse._C is not in use; the CUDA rows are skipped without a GPU or without CUDA kernels.
Model-level tests of per_example_grad_norms are in test_grad_norms.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import reuse.ops as ops
from reuse.ops.grad_norm_reference import (
    affine_sq_norms_reference,
    conv_sq_norms_reference,
    embedding_sq_norms_reference,
    linear_sq_norms_reference,
)

INFO = ops.backend_info()
COMPILED = INFO["backend"] == "compiled"
CUDA_KERNELS = bool(COMPILED and torch.cuda.is_available() and INFO["cuda_kernels"])

requires_compiled = pytest.mark.skipif(
    not COMPILED,
    reason=f"reuse._C is not in use ({INFO['load_error']}); "
    "build it with `pip install --no-build-isolation -e .`",
)

DEVICES = [
    pytest.param("cpu", marks=requires_compiled),
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(
            not CUDA_KERNELS, reason="needs a CUDA device and reuse._C built with CUDA kernels"
        ),
    ),
]

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# Half-precision inputs are widened exactly and accumulated in float32.
TOLERANCES = {
    torch.float32: dict(rtol=2e-5, atol=1e-6),
    torch.float64: dict(rtol=1e-12, atol=1e-12),
    torch.float16: dict(rtol=1e-4, atol=1e-5),
    torch.bfloat16: dict(rtol=1e-4, atol=1e-5),
}


def expected_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def randn(*shape, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)


def check(out, ref, dtype, device):
    assert out.shape == ref.shape
    assert out.dtype == expected_dtype(dtype)
    assert out.device.type == torch.device(device).type
    torch.testing.assert_close(out.double().cpu(), ref.double().cpu(), **TOLERANCES[dtype])


# ------------------------------------------------------------------------------ conv

# (batch, in_channels, out_channels, input spatial, kernel, stride, padding, dilation, groups)
CONV_CASES = {
    # 2-D
    "resnet_stage1": (2, 16, 16, (32, 32), 3, 1, 1, 1, 1),
    "resnet_stage2": (2, 32, 32, (16, 16), 3, 1, 1, 1, 1),
    "resnet_stage3": (3, 64, 64, (8, 8), 3, 1, 1, 1, 1),
    "winograd_odd_out": (2, 24, 24, (9, 7), 3, 1, 1, 1, 1),
    "winograd_no_padding": (2, 24, 16, (10, 11), 3, 1, 0, 1, 1),
    "winograd_pad2_groups": (2, 32, 32, (6, 6), 3, 1, 2, 1, 2),
    "resnet_down": (3, 16, 32, (16, 16), 3, 2, 1, 1, 1),
    "first_rgb": (2, 3, 16, (11, 13), 3, 1, 1, 1, 1),
    "batch1_odd": (1, 5, 7, (9, 7), 3, 1, 1, 1, 1),
    "pointwise": (3, 8, 12, (5, 6), 1, 1, 0, 1, 1),
    "pointwise_stride2": (2, 8, 9, (7, 6), 1, 2, 0, 1, 1),
    "rect_mixed": (2, 4, 6, (10, 9), (3, 2), (2, 1), (0, 1), (1, 2), 2),
    "groups3_dil2": (2, 6, 9, (11, 12), 5, 3, 2, 2, 3),
    "depthwise": (3, 8, 8, (9, 9), 3, 1, 1, 1, 8),
    "no_padding": (2, 3, 5, (8, 10), 3, 1, 0, 1, 1),
    "big_padding": (2, 3, 4, (4, 5), 3, 1, 3, 1, 1),
    "stride3_pad2": (2, 4, 5, (13, 11), 4, 3, 2, 1, 1),
    "kernel_eq_input": (2, 3, 4, (5, 5), 5, 1, 0, 1, 1),
    "one_output": (2, 6, 4, (4, 4), 2, 3, 0, 1, 2),
    "ghost_small_out": (2, 64, 48, (4, 4), 3, 1, 1, 1, 1),
    "ghost_wide": (2, 256, 8, (2, 2), 3, 1, 1, 1, 1),
    "imagenet_stem": (1, 3, 8, (40, 40), 7, 2, 3, 1, 1),
    "shift_ghost_groups_dil": (2, 64, 128, (8, 8), 3, 1, 2, 2, 2),
    "shift_ghost_rect": (2, 64, 64, (5, 7), (3, 1), 1, (1, 0), 1, 1),
    # 1-D
    "cnn1d_first": (3, 1, 32, (40,), 5, 2, 2, 1, 1),
    "cnn1d_mid": (3, 32, 32, (10,), 5, 2, 2, 1, 1),
    "conv1d_groups_dil": (2, 4, 6, (17,), 3, 1, 0, 2, 2),
    "conv1d_long": (2, 2, 3, (5000,), 3, 1, 1, 1, 1),
    "conv1d_batch1": (1, 3, 2, (7,), 7, 1, 0, 1, 1),
    "conv1d_shift_ghost": (2, 64, 64, (6,), 3, 1, 1, 1, 1),
}


def conv_inputs(case, dtype, device, seed=0):
    B, cin, cout, spatial, k, s, p, d, groups = CONV_CASES[case]
    conv_cls = nn.Conv1d if len(spatial) == 1 else nn.Conv2d
    conv = conv_cls(cin, cout, k, s, p, d, groups)
    x = randn(B, cin, *spatial, dtype=torch.float64, device="cpu", seed=seed)
    with torch.no_grad():
        out_shape = conv.double()(x).shape
    g = randn(*out_shape, dtype=dtype, device=device, seed=seed + 1)
    args = (list(conv.kernel_size), list(conv.stride), list(conv.padding), list(conv.dilation), groups)
    return x.to(dtype=dtype, device=device), g, args


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv_matches_reference(case, dtype, bias, device):
    x, g, args = conv_inputs(case, dtype, device)
    out = ops.conv_sq_norms(x, g, *args, bias, backend="compiled")
    check(out, conv_sq_norms_reference(x.double(), g.double(), *args, bias), dtype, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    "case", ["resnet_stage1", "winograd_odd_out", "resnet_down", "resnet_stage3", "ghost_small_out", "cnn1d_mid"]
)
def test_conv_half_precision(case, dtype, device):
    x, g, args = conv_inputs(case, dtype, device)
    out = ops.conv_sq_norms(x, g, *args, True, backend="compiled")
    check(out, conv_sq_norms_reference(x.double(), g.double(), *args, True), dtype, device)


@pytest.mark.parametrize("device", DEVICES)
def test_conv_non_contiguous_inputs(device):
    x, g, args = conv_inputs("first_rgb", torch.float32, device)
    xc = x.to(memory_format=torch.channels_last)
    gc = g.transpose(2, 3).contiguous().transpose(2, 3)
    out = ops.conv_sq_norms(xc, gc, *args, True, backend="compiled")
    check(out, conv_sq_norms_reference(x.double(), g.double(), *args, True), torch.float32, device)


def test_conv_reference_is_the_per_example_weight_gradient():
    # The reference itself against autograd on each example alone.
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1, groups=2).double()
    x = torch.randn(3, 4, 9, 8, dtype=torch.float64)
    g = torch.randn_like(conv(x))
    ref = conv_sq_norms_reference(x, g, [3, 3], [2, 2], [1, 1], [1, 1], 2, True)
    for b in range(3):
        gw, gb = torch.autograd.grad(conv(x[b : b + 1]), (conv.weight, conv.bias), g[b : b + 1])
        assert ref[b].item() == pytest.approx((gw.square().sum() + gb.square().sum()).item(), rel=1e-12)


# ---------------------------------------------------------------------------- linear

# (batch, positions or None for 2-D, in_features, out_features)
LINEAR_CASES = {
    "mlp_hidden": (4, None, 1200, 120),
    "classifier_10": (5, None, 64, 10),
    "batch1": (1, None, 7, 3),
    "one_feature": (3, None, 1, 1),
    "seq_t1": (4, 1, 5, 6),
    "seq_odd": (3, 7, 9, 10),
    "seq_long_narrow": (2, 50, 3, 4),
    "seq_ghost": (3, 3, 100, 64),
    "seq_panel_a": (2, 9, 16, 5),
    "seq_blocked": (2, 3000, 9, 16),
    "seq_ghost_wide": (2, 4, 2500, 40),
    "seq_square": (2, 40, 20, 30),
}


def linear_inputs(case, dtype, device, seed=0):
    B, T, din, dout = LINEAR_CASES[case]
    lead = (B,) if T is None else (B, T)
    a = randn(*lead, din, dtype=dtype, device=device, seed=seed)
    g = randn(*lead, dout, dtype=dtype, device=device, seed=seed + 1)
    return a, g


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(LINEAR_CASES))
def test_linear_matches_reference(case, dtype, bias, device):
    a, g = linear_inputs(case, dtype, device)
    out = ops.linear_sq_norms(a, g, bias, backend="compiled")
    check(out, linear_sq_norms_reference(a.double(), g.double(), bias), dtype, device)


@pytest.mark.parametrize("device", DEVICES)
def test_linear_non_contiguous_inputs(device):
    a, g = linear_inputs("seq_odd", torch.float32, device)
    at = a.transpose(0, 1).contiguous().transpose(0, 1)
    gs = torch.cat([g, g], 2)[:, :, ::2]
    assert not at.is_contiguous() and not gs.is_contiguous()
    out = ops.linear_sq_norms(at, gs, True, backend="compiled")
    check(out, linear_sq_norms_reference(a.double(), gs.double(), True), torch.float32, device)
    a2, g2 = linear_inputs("classifier_10", torch.float64, device)
    out = ops.linear_sq_norms(a2[:, ::2], g2.t().contiguous().t(), False, backend="compiled")
    check(out, linear_sq_norms_reference(a2[:, ::2], g2, False), torch.float64, device)


def test_linear_reference_known_value():
    # 2-D: the weight gradient is the outer product g a^T, norm ||a|| ||g||.
    a = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    g = torch.tensor([[1.0, 2.0, 2.0]], dtype=torch.float64)
    assert linear_sq_norms_reference(a, g, False).item() == 25.0 * 9.0
    assert linear_sq_norms_reference(a, g, True).item() == 25.0 * 9.0 + 9.0


# ---------------------------------------------------------------------------- affine

# (batch, channels, positions, layout)
AFFINE_CASES = {
    "bn2d": (4, 16, 64, "bcs"),
    "bn1d_flat": (5, 7, 1, "bcs"),
    "batch1": (1, 3, 10, "bcs"),
    "odd": (3, 5, 13, "bcs"),
    "layernorm_like": (3, 24, 7, "bsc"),
    "layernorm_one_position": (4, 9, 1, "bsc"),
    "strided": (3, 6, 11, "strided"),
}


def affine_inputs(case, dtype, device, seed=0):
    B, C, S, layout = AFFINE_CASES[case]
    if layout == "bcs":
        x = randn(B, C, S, dtype=dtype, device=device, seed=seed) * 3 + 1
        g = randn(B, C, S, dtype=dtype, device=device, seed=seed + 1)
    elif layout == "bsc":
        x = (randn(B, S, C, dtype=dtype, device=device, seed=seed) * 3 + 1).transpose(1, 2)
        g = randn(B, S, C, dtype=dtype, device=device, seed=seed + 1).transpose(1, 2)
    else:
        x = randn(B, C, 2 * S, dtype=dtype, device=device, seed=seed)[:, :, ::2]
        g = randn(B, 2 * C, S, dtype=dtype, device=device, seed=seed + 1)[:, ::2]
    return x, g


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "weight,bias", [(True, True), (True, False), (False, True), (False, False)], ids=["wb", "w", "b", "none"]
)
@pytest.mark.parametrize("affine", ["scale_shift", "scale", "shift", "none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(AFFINE_CASES))
def test_affine_matches_reference(case, dtype, affine, weight, bias, device):
    x, g = affine_inputs(case, dtype, device)
    C = x.shape[1]
    scale = torch.rand(C, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) + 0.5
    shift = torch.randn(C, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    scale = scale.to(device) if "scale" in affine else None
    shift = shift.to(device) if "shift" in affine else None
    out = ops.affine_sq_norms(x, g, scale, shift, weight, bias, backend="compiled")
    ref = affine_sq_norms_reference(x.double(), g.double(), scale, shift, weight, bias)
    check(out, ref, dtype, device)


@pytest.mark.parametrize("device", DEVICES)
def test_affine_float32_scale_and_large_mean(device):
    # BatchNorm after a layer whose outputs have a large mean: xhat is formed per
    # element, so there is no cancellation between a scaled and a shifted sum.
    x = randn(4, 8, 100, dtype=torch.float32, device=device, seed=0) * 0.1 + 50.0
    g = randn(4, 8, 100, dtype=torch.float32, device=device, seed=1)
    mean = x.double().mean((0, 2))
    scale = (x.double().var((0, 2)) + 1e-5).rsqrt()
    shift = -mean * scale
    out = ops.affine_sq_norms(x, g, scale.float(), shift.float(), True, False, backend="compiled")
    ref = affine_sq_norms_reference(x.double(), g.double(), scale.float(), shift.float(), True, False)
    torch.testing.assert_close(out.double().cpu(), ref.cpu(), rtol=1e-3, atol=0)


# ------------------------------------------------------------------------- embedding

# (batch, positions, vocabulary, dim, padding_idx, id range)
EMBEDDING_CASES = {
    "tokens": (4, 12, 50, 16, -1, 50),
    "repeated_ids": (5, 20, 10, 7, -1, 4),
    "padding_idx": (5, 20, 10, 7, 2, 4),
    "padding_idx_zero": (3, 9, 6, 5, 0, 6),
    "t1": (6, 1, 9, 3, -1, 9),
    "batch1": (1, 8, 5, 9, 4, 5),
    "all_same": (2, 10, 3, 4, -1, 1),
}


def embedding_inputs(case, dtype, device, index_dtype=torch.int64, seed=0):
    B, T, V, D, pad, hi = EMBEDDING_CASES[case]
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, hi, (B, T), generator=gen).to(device=device, dtype=index_dtype)
    g = randn(B, T, D, dtype=dtype, device=device, seed=seed + 1)
    return idx, g, V, pad


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(EMBEDDING_CASES))
def test_embedding_matches_reference(case, dtype, index_dtype, device):
    idx, g, V, pad = embedding_inputs(case, dtype, device, index_dtype)
    out = ops.embedding_sq_norms(idx, g, V, pad, backend="compiled")
    check(out, embedding_sq_norms_reference(idx.long(), g.double(), V, pad), dtype, device)


def test_embedding_reference_known_value():
    # Ids [1, 1, 2]: row 1 gets g0 + g1, row 2 gets g2.
    g = torch.tensor([[[1.0, 0.0], [2.0, 1.0], [0.0, 3.0]]], dtype=torch.float64)
    idx = torch.tensor([[1, 1, 2]])
    assert embedding_sq_norms_reference(idx, g, 3, -1).item() == 9.0 + 1.0 + 9.0
    assert embedding_sq_norms_reference(idx, g, 3, 2).item() == 10.0
    assert embedding_sq_norms_reference(idx, g, 3, 1).item() == 9.0


# ------------------------------------------------------------------ empty and opcheck


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(device):
    f32 = dict(dtype=torch.float32, device=device)
    assert ops.linear_sq_norms(torch.zeros(0, 3, **f32), torch.zeros(0, 2, **f32), True, backend="compiled").shape == (0,)
    assert ops.conv_sq_norms(
        torch.zeros(0, 2, 5, 5, **f32), torch.zeros(0, 3, 5, 5, **f32), [3, 3], [1, 1], [1, 1], [1, 1], 1, True,
        backend="compiled",
    ).shape == (0,)
    assert ops.affine_sq_norms(torch.zeros(0, 2, 3, **f32), torch.zeros(0, 2, 3, **f32), backend="compiled").shape == (0,)
    assert ops.embedding_sq_norms(
        torch.zeros(0, 4, dtype=torch.long, device=device), torch.zeros(0, 4, 3, **f32), 5, backend="compiled"
    ).shape == (0,)


@pytest.mark.parametrize("device", DEVICES)
def test_zero_sizes_give_zeros(device):
    f64 = dict(dtype=torch.float64, device=device)
    out = ops.linear_sq_norms(torch.zeros(2, 0, 3, **f64), torch.zeros(2, 0, 4, **f64), True, backend="compiled")
    assert out.tolist() == [0.0, 0.0]
    out = ops.embedding_sq_norms(torch.zeros(2, 0, dtype=torch.long, device=device), torch.zeros(2, 0, 3, **f64), 5, 1,
                                 backend="compiled")
    assert out.tolist() == [0.0, 0.0]
    out = ops.affine_sq_norms(torch.zeros(2, 3, 0, **f64), torch.zeros(2, 3, 0, **f64), backend="compiled")
    assert out.tolist() == [0.0, 0.0]


@requires_compiled
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_opcheck(dtype):
    x, g, args = conv_inputs("resnet_down", dtype, "cpu")
    torch.library.opcheck(torch.ops.reuse.conv_sq_norms.default, (x, g, *args, True))
    x, g, args = conv_inputs("cnn1d_mid", dtype, "cpu")
    torch.library.opcheck(torch.ops.reuse.conv_sq_norms.default, (x, g, *args, False))
    for case in ("classifier_10", "seq_odd"):
        a, g = linear_inputs(case, dtype, "cpu")
        torch.library.opcheck(torch.ops.reuse.linear_sq_norms.default, (a, g, True))
    x, g = affine_inputs("odd", dtype, "cpu")
    scale = torch.rand(x.shape[1], dtype=dtype) + 0.5
    torch.library.opcheck(torch.ops.reuse.affine_sq_norms.default, (x, g, scale, -scale, True, True))
    torch.library.opcheck(torch.ops.reuse.affine_sq_norms.default, (x, g, None, None, True, False))
    idx, g, V, pad = embedding_inputs("padding_idx", dtype, "cpu")
    torch.library.opcheck(torch.ops.reuse.embedding_sq_norms.default, (idx, g, V, pad))


@requires_compiled
def test_fake_kernels_under_torch_compile():
    a, g = linear_inputs("seq_odd", torch.float32, "cpu")

    @torch.compile(backend="aot_eager", fullgraph=True)
    def f(a, g):
        return torch.ops.reuse.linear_sq_norms(a * 2.0, g, True) + 1.0

    ref = linear_sq_norms_reference(2.0 * a.double(), g.double(), True) + 1.0
    torch.testing.assert_close(f(a, g).double(), ref, rtol=2e-5, atol=0)


# -------------------------------------------------------------------------- errors

_f = dict(dtype=torch.float32)
_ERROR_CASES = {
    "linear_a_1d": (
        "linear", lambda: (torch.zeros(5, **_f), torch.zeros(5, **_f), True),
        r"linear_sq_norms: a \(the layer's input\) must be 2-D.*got 1-D",
    ),
    "linear_a_4d": (
        "linear", lambda: (torch.zeros(2, 3, 4, 5, **_f), torch.zeros(2, 3, 4, 6, **_f), True),
        r"got 4-D with shape \[2, 3, 4, 5\]; flatten the dimensions between batch and features",
    ),
    "linear_dims_differ": (
        "linear", lambda: (torch.zeros(2, 3, 4, **_f), torch.zeros(2, 6, **_f), False),
        r"g \(the gradient of the layer's output\) must have as many dimensions as a \(3\), got 2-D",
    ),
    "linear_batch_mismatch": (
        "linear", lambda: (torch.zeros(3, 4, **_f), torch.zeros(2, 6, **_f), False),
        r"a has batch size 3 but g has 2; they must match",
    ),
    "linear_positions_mismatch": (
        "linear", lambda: (torch.zeros(2, 3, 4, **_f), torch.zeros(2, 5, 6, **_f), False),
        r"a has 3 positions \(dim 1\) but g has 5",
    ),
    "linear_dtype_mismatch": (
        "linear", lambda: (torch.zeros(2, 4, **_f), torch.zeros(2, 6, dtype=torch.float64), False),
        r"a and g must have the same dtype, got Float and Double; convert one with \.to\(other\.dtype\)",
    ),
    "linear_int": (
        "linear", lambda: (torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 6, dtype=torch.long), False),
        r"a must be float32, float64, float16 or bfloat16, got Long",
    ),
    "conv_x_2d": (
        "conv", lambda: (torch.zeros(2, 3, **_f), torch.zeros(2, 3, **_f), [3], [1], [1], [1], 1, False),
        r"conv_sq_norms: x \(the layer's input\) must be 3-D .* or 4-D .*got 2-D.*unsqueeze\(0\)",
    ),
    "conv_x_5d": (
        "conv", lambda: (torch.zeros(1, 1, 2, 2, 2, **_f), torch.zeros(1, 1, 2, 2, 2, **_f), [1, 1, 1], [1, 1, 1],
                         [0, 0, 0], [1, 1, 1], 1, False),
        r"only 1-D and 2-D convolutions are supported",
    ),
    "conv_batch_mismatch": (
        "conv", lambda: (torch.zeros(2, 3, 8, 8, **_f), torch.zeros(3, 4, 8, 8, **_f), [3, 3], [1, 1], [1, 1], [1, 1], 1, False),
        r"x has batch size 2 but g has 3",
    ),
    "conv_list_length": (
        "conv", lambda: (torch.zeros(2, 3, 8, 8, **_f), torch.zeros(2, 4, 8, 8, **_f), [3], [1, 1], [1, 1], [1, 1], 1, False),
        r"kernel_size must have one entry per spatial dimension \(2\), got \[3\]",
    ),
    "conv_bad_stride": (
        "conv", lambda: (torch.zeros(2, 3, 8, 8, **_f), torch.zeros(2, 4, 8, 8, **_f), [3, 3], [0, 1], [1, 1], [1, 1], 1, False),
        r"stride entries must be >= 1, got \[0, 1\]",
    ),
    "conv_groups": (
        "conv", lambda: (torch.zeros(2, 3, 8, 8, **_f), torch.zeros(2, 4, 8, 8, **_f), [3, 3], [1, 1], [1, 1], [1, 1], 2, False),
        r"input channels \(3\) and output channels \(4\) must both be divisible by groups \(2\)",
    ),
    "conv_wrong_out_size": (
        "conv", lambda: (torch.zeros(2, 3, 8, 8, **_f), torch.zeros(2, 4, 8, 7, **_f), [3, 3], [1, 1], [1, 1], [1, 1], 1, False),
        r"g has size 7 along spatial dim 1 but a convolution of x .* gives 8; pass the module's own geometry",
    ),
    "conv_too_small": (
        "conv", lambda: (torch.zeros(2, 3, 2, 2, **_f), torch.zeros(2, 4, 1, 1, **_f), [5, 5], [1, 1], [0, 0], [1, 1], 1, False),
        r"is smaller than the dilated kernel \(5\)",
    ),
    "conv_dtype_mismatch": (
        "conv", lambda: (torch.zeros(2, 3, 8, **_f), torch.zeros(2, 4, 8, dtype=torch.float16), [3], [1], [1], [1], 1, False),
        r"x and g must have the same dtype, got Float and Half",
    ),
    "affine_x_2d": (
        "affine", lambda: (torch.zeros(2, 3, **_f), torch.zeros(2, 3, **_f), None, None, True, True),
        r"affine_sq_norms: x .* must be 3-D \[batch, channels, positions\], got 2-D.*reshape\(B, C, -1\)",
    ),
    "affine_shape_mismatch": (
        "affine", lambda: (torch.zeros(2, 3, 4, **_f), torch.zeros(2, 3, 5, **_f), None, None, True, True),
        r"g \(the gradient of the layer's output\) must have the shape of x \[2, 3, 4\], got \[2, 3, 5\]",
    ),
    "affine_scale_shape": (
        "affine", lambda: (torch.zeros(2, 3, 4, **_f), torch.zeros(2, 3, 4, **_f), torch.ones(4), None, True, True),
        r"scale must be 1-D with one entry per channel \(3\), got shape \[4\]",
    ),
    "affine_shift_int": (
        "affine", lambda: (torch.zeros(2, 3, 4, **_f), torch.zeros(2, 3, 4, **_f), None, torch.zeros(3, dtype=torch.long), True, True),
        r"shift must be float32, float64, float16 or bfloat16, got Long",
    ),
    "embedding_indices_1d": (
        "embedding", lambda: (torch.zeros(4, dtype=torch.long), torch.zeros(4, 3, **_f), 5, -1),
        r"embedding_sq_norms: indices must be 2-D \[batch, positions\], got 1-D.*unsqueeze\(1\)",
    ),
    "embedding_float_indices": (
        "embedding", lambda: (torch.zeros(2, 4), torch.zeros(2, 4, 3, **_f), 5, -1),
        r"indices must be int64 or int32, got Float; convert with indices\.long\(\)",
    ),
    "embedding_g_2d": (
        "embedding", lambda: (torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4, **_f), 5, -1),
        r"g \(the gradient of the embedding's output\) must be 3-D",
    ),
    "embedding_shape_mismatch": (
        "embedding", lambda: (torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 5, 3, **_f), 5, -1),
        r"indices has shape \[2, 4\] but g has shape \[2, 5, 3\]",
    ),
    "embedding_padding_idx": (
        "embedding", lambda: (torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4, 3, **_f), 5, 5),
        r"padding_idx must be in \[0, 5\) or -1 for none, got 5",
    ),
    "embedding_id_range": (
        "embedding", lambda: (torch.tensor([[0, 7], [1, -2]]), torch.zeros(2, 2, 3, **_f), 5, -1),
        r"indices must be in \[0, 5\), got values in \[-2, 7\]",
    ),
}

_IMPLS = {
    "linear": (ops.linear_sq_norms, linear_sq_norms_reference),
    "conv": (ops.conv_sq_norms, conv_sq_norms_reference),
    "affine": (ops.affine_sq_norms, affine_sq_norms_reference),
    "embedding": (ops.embedding_sq_norms, embedding_sq_norms_reference),
}


@pytest.mark.parametrize(
    "impl", ["compiled", "reference"], ids=str,
)
@pytest.mark.parametrize("case", list(_ERROR_CASES))
def test_invalid_arguments_raise(case, impl):
    if impl == "compiled" and not COMPILED:
        pytest.skip("reuse._C is not in use")
    family, make, pattern = _ERROR_CASES[case]
    wrapper, reference = _IMPLS[family]
    args = make()
    with pytest.raises(RuntimeError, match=pattern):
        if impl == "compiled":
            wrapper(*args, backend="compiled")
        else:
            reference(*args)
