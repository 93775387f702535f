"""Tests of reuse.ops.el2n against the float64 pure-PyTorch reference.

Every comparison feeds the reference the same (already rounded) logits upcast
to float64, so the tolerances below measure only the kernel's arithmetic.
Tests of the compiled extension are skipped when reuse._C is not built; CUDA
tests are skipped without a GPU.
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
from reuse.ops import el2n, el2n_reference

INFO = ops.backend_info()
COMPILED = INFO["backend"] == "compiled"

requires_compiled = pytest.mark.skipif(
    not COMPILED,
    reason=f"reuse._C is not in use ({INFO['load_error']}); "
    "build it with `pip install --no-build-isolation -e .`",
)
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
requires_cuda_kernel = pytest.mark.skipif(
    not (torch.cuda.is_available() and INFO["cuda_kernels"]),
    reason="needs a CUDA device and reuse._C built with CUDA kernels",
)

SHAPES = [
    (1, 1),
    (0, 10),
    (1, 2),
    (3, 10),
    (7, 13),
    (128, 100),
    (33, 1000),
    (4, 32000),
    (2, 100003),
]
# Shapes for CUDA: both launch paths (one warp per row up to 1024 classes, one
# block per row beyond), partial blocks and rows shorter than a warp.
CUDA_SHAPES = SHAPES + [(9, 31), (17, 1024), (5, 1025), (3, 262144)]

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# Half-precision logits are widened exactly and accumulated in float32, so they
# share float32's tolerance.
TOLERANCES = {
    torch.float32: dict(rtol=1e-5, atol=1e-6),
    torch.float64: dict(rtol=1e-11, atol=1e-13),
    torch.float16: dict(rtol=1e-5, atol=1e-6),
    torch.bfloat16: dict(rtol=1e-5, atol=1e-6),
}


def make_inputs(batch, classes, dtype, device="cpu", seed=0, scale=4.0):
    """Spread-out logits; every other row made confident in its label."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, generator=g, dtype=torch.float64) * scale
    targets = torch.randint(0, classes, (batch,), generator=g)
    logits[::2][torch.arange(len(logits[::2])), targets[::2]] += 2 * scale
    return logits.to(dtype=dtype, device=device), targets.to(device)


def oracle(logits, targets):
    return el2n_reference(logits.double(), targets)


def expected_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def assert_matches_oracle(out, logits, targets):
    assert out.shape == (logits.shape[0],)
    assert out.dtype == expected_dtype(logits.dtype)
    assert out.device == logits.device
    assert not out.requires_grad
    torch.testing.assert_close(
        out.double(), oracle(logits.detach(), targets), equal_nan=True, **TOLERANCES[logits.dtype]
    )


# --------------------------------------------------------------------------- CPU


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_matches_reference(shape, dtype):
    logits, targets = make_inputs(*shape, dtype)
    assert_matches_oracle(el2n(logits, targets), logits, targets)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_non_contiguous_inputs(dtype):
    base, _ = make_inputs(40, 37, dtype)
    transposed = base.t().contiguous().t()  # column-major view
    sliced = base[:, ::2]
    g = torch.Generator().manual_seed(1)
    targets = torch.randint(0, sliced.shape[1], (80,), generator=g)[::2]
    assert not targets.is_contiguous()
    for logits in (transposed, sliced):
        assert not logits.is_contiguous()
        assert_matches_oracle(el2n(logits, targets), logits, targets)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_int32_targets(dtype):
    logits, targets = make_inputs(33, 1000, dtype)
    out = el2n(logits, targets.int())
    assert_matches_oracle(out, logits, targets)
    torch.testing.assert_close(out, el2n(logits, targets), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_extreme_logits(dtype):
    logits, targets = make_inputs(16, 500, torch.float64, scale=1e4)
    logits = logits.clamp(-6e4, 6e4).to(dtype)  # stay inside float16's range
    out = el2n(logits, targets)
    assert torch.isfinite(out).all()
    assert_matches_oracle(out, logits, targets)


def test_known_values():
    # One class: p = [1] = onehot, score 0. Uniform over C classes: the label
    # gets 1/C, score sqrt((1 - 1/C)^2 + (C - 1) / C^2) = sqrt(1 - 1/C).
    out = el2n(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long))
    assert out.tolist() == [0.0, 0.0]
    for c in (2, 10, 1000):
        out = el2n(torch.zeros(1, c, dtype=torch.float64), torch.tensor([c - 1]))
        assert out.item() == pytest.approx(math.sqrt(1 - 1 / c), rel=1e-14)
    # Certain and wrong: score sqrt(2).
    wrong = torch.tensor([[0.0, 1e4]])
    assert el2n(wrong, torch.tensor([0])).item() == pytest.approx(math.sqrt(2), rel=1e-6)


@requires_compiled
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64], ids=str)
def test_confident_rows_keep_relative_precision(dtype):
    # Scores near 0: the kernel sums only non-negative terms, so it keeps
    # relative precision where sum p^2 - 2 p_y + 1 would cancel to noise.
    logits, targets = make_inputs(64, 1000, torch.float64, scale=1.0)
    logits[torch.arange(64), targets] += 25.0
    logits = logits.to(dtype)
    out = el2n(logits, targets).double()
    ref = oracle(logits, targets)
    assert (ref < 1e-5).all() and (ref > 0).all()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_non_finite_logits_propagate(dtype):
    inf, nan = math.inf, math.nan
    logits = torch.tensor(
        [
            [1.0, nan, 2.0, 0.5],  # NaN anywhere: NaN
            [1.0, 2.0, 3.0, nan],  # NaN at the label: NaN
            [1.0, inf, 2.0, 0.5],  # +inf: NaN, as softmax gives
            [-inf, -inf, -inf, -inf],  # no finite logit: NaN
            [-inf, 2.0, -inf, 1.0],  # masked classes: probability 0
            [-inf, 2.0, 3.0, 1.0],  # label masked: p_y = 0
            [0.0, 0.0, -inf, 0.0],
        ],
        dtype=dtype,
    )
    targets = torch.tensor([0, 3, 0, 1, 1, 0, 3])
    out = el2n(logits, targets)
    assert torch.isnan(out[:4]).all()
    assert torch.isfinite(out[4:]).all()
    assert_matches_oracle(out, logits, targets)


def test_result_never_requires_grad():
    logits, targets = make_inputs(8, 10, torch.float32)
    logits.requires_grad_(True)
    out = el2n(logits, targets)
    assert not out.requires_grad
    assert_matches_oracle(out, logits.detach(), targets)


_ERROR_CASES = {
    "target_negative": (lambda: (torch.zeros(3, 5), torch.tensor([0, -1, 2])), r"class indices in \[0, 5\).*\[-1, 2\]"),
    "target_too_large": (lambda: (torch.zeros(3, 5), torch.tensor([0, 5, 2])), r"class indices in \[0, 5\).*\[0, 5\]"),
    "logits_1d": (lambda: (torch.zeros(5), torch.tensor([0])), r"logits must be a 2-D tensor.*1-D"),
    "logits_3d": (lambda: (torch.zeros(2, 3, 5), torch.tensor([0, 1])), r"logits must be a 2-D tensor.*3-D.*reshape"),
    "no_classes": (lambda: (torch.zeros(3, 0), torch.tensor([0, 0, 0])), r"at least one class column"),
    "targets_2d": (lambda: (torch.zeros(3, 5), torch.zeros(3, 5, dtype=torch.long)), r"targets must be a 1-D tensor.*not one-hot"),
    "batch_mismatch": (lambda: (torch.zeros(3, 5), torch.tensor([0, 1])), r"targets has 2 entries but logits has 3 rows"),
    "float_targets": (lambda: (torch.zeros(3, 5), torch.tensor([0.0, 1.0, 2.0])), r"targets must be int64 or int32.*targets\.long\(\)"),
    "int_logits": (lambda: (torch.zeros(3, 5, dtype=torch.long), torch.tensor([0, 1, 2])), r"logits must be float32, float64, float16 or bfloat16"),
}


@pytest.mark.parametrize("impl", [el2n, el2n_reference], ids=["el2n", "reference"])
@pytest.mark.parametrize("case", list(_ERROR_CASES), ids=str)
def test_invalid_arguments_raise(case, impl):
    make, pattern = _ERROR_CASES[case]
    logits, targets = make()
    with pytest.raises(RuntimeError, match=pattern):
        impl(logits, targets)


# ------------------------------------------------------- compiled op registration


@requires_compiled
def test_backend_info_compiled():
    assert INFO["cpu_kernels"] is True
    assert INFO["extension"] is not None and os.path.exists(INFO["extension"])
    assert INFO["load_error"] is None
    assert INFO["cuda_kernels"] == INFO["built_with_cuda"]
    assert INFO["cuda_available"] == torch.cuda.is_available()


@requires_compiled
@pytest.mark.parametrize(
    "shape,dtype",
    [((3, 10), torch.float32), ((7, 13), torch.float64), ((4, 300), torch.bfloat16), ((0, 4), torch.float16)],
    ids=str,
)
def test_opcheck(shape, dtype):
    logits, targets = make_inputs(*shape, dtype)
    torch.library.opcheck(torch.ops.reuse.el2n.default, (logits, targets))
    torch.library.opcheck(torch.ops.reuse.el2n.default, (logits, targets.int()))


@requires_compiled
def test_inside_torch_compile():
    logits, targets = make_inputs(6, 20, torch.float32)

    @torch.compile(backend="aot_eager", fullgraph=True)
    def scores(x, y):
        return el2n(x * 2.0, y) + 1.0

    assert_matches_oracle(scores(logits, targets) - 1.0, logits * 2.0, targets)


# ----------------------------------------------------------------- fallback path


def _run_python(*snippets, **env):
    code = "\n".join(textwrap.dedent(snippet) for snippet in snippets)
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


_FALLBACK_CHECK = """
    import torch
    from reuse.ops import el2n, el2n_reference
    g = torch.Generator().manual_seed(0)
    x = torch.randn(33, 100, generator=g)
    y = torch.randint(0, 100, (33,), generator=g)
    out = el2n(x, y)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), el2n_reference(x.double(), y))
"""


def test_force_reference_env():
    out = _run_python(
        """
        import warnings
        warnings.simplefilter("error")  # forcing the reference is silent
        import reuse.ops as ops
        assert ops.BACKEND == "reference", ops.BACKEND
        info = ops.backend_info()
        assert info["load_error"] == "REUSE_FORCE_REFERENCE is set", info
        assert info["cpu_kernels"] is False and info["extension"] is None, info
        """,
        _FALLBACK_CHECK,
        "print('ok')",
        REUSE_FORCE_REFERENCE="1",
    )
    assert out.strip() == "ok"


def test_missing_extension_warns_once_and_falls_back():
    out = _run_python(
        """
        import sys, warnings
        sys.modules["reuse._C"] = None  # makes `from reuse import _C` fail
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import reuse.ops as ops
            import reuse.ops  # a second import must not warn again
        messages = [str(w.message) for w in caught if "reuse._C" in str(w.message)]
        assert len(messages) == 1, messages
        assert "not built" in messages[0], messages[0]
        assert "pip install --no-build-isolation -e ." in messages[0], messages[0]
        assert ops.BACKEND == "reference"
        assert ops.backend_info()["load_error"].startswith(("ImportError", "ModuleNotFoundError"))
        """,
        _FALLBACK_CHECK,
        "print('ok')",
        REUSE_FORCE_REFERENCE="0",
    )
    assert out.strip() == "ok"


# -------------------------------------------------------------------------- CUDA


@requires_cuda_kernel
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", CUDA_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_cuda_matches_reference(shape, dtype):
    logits, targets = make_inputs(*shape, dtype, device="cuda")
    assert_matches_oracle(el2n(logits, targets), logits, targets)


@requires_cuda_kernel
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_matches_cpu_kernel(dtype):
    logits, targets = make_inputs(64, 5000, dtype)
    cpu = el2n(logits, targets)
    gpu = el2n(logits.cuda(), targets.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, **TOLERANCES[dtype])


@requires_cuda_kernel
def test_cuda_non_contiguous_int32_and_extreme():
    base, targets = make_inputs(40, 2000, torch.float32, device="cuda", scale=1e4)
    logits = base.t().contiguous().t()[:, ::2]
    targets = targets.clamp_max(logits.shape[1] - 1).int()
    out = el2n(logits, targets)
    assert torch.isfinite(out).all()
    assert_matches_oracle(out, logits, targets.long())


@requires_cuda_kernel
@pytest.mark.parametrize("classes", [13, 4000], ids=str)
def test_cuda_non_finite_logits_propagate(classes):
    logits, targets = make_inputs(6, classes, torch.float32)
    logits[0, 3] = math.nan
    logits[1, targets[1]] = math.nan
    logits[2, 5] = math.inf
    logits[3] = -math.inf
    logits[4, :: 2] = -math.inf
    logits[5, targets[5]] = -math.inf
    out = el2n(logits.cuda(), targets.cuda()).cpu()
    assert torch.isnan(out[:4]).all() and torch.isfinite(out[4:]).all()
    assert_matches_oracle(out, logits, targets)


@requires_cuda_kernel
def test_cuda_runs_on_current_stream():
    logits, targets = make_inputs(256, 3000, torch.float32, device="cuda")
    expected = el2n(logits, targets)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        out = el2n(logits, targets)
    side.synchronize()
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@requires_cuda_kernel
def test_cuda_errors():
    logits = torch.zeros(3, 5, device="cuda")
    with pytest.raises(RuntimeError, match=r"class indices in \[0, 5\).*\[0, 7\]"):
        el2n(logits, torch.tensor([0, 7, 1], device="cuda"))
    with pytest.raises(RuntimeError, match=r"same device"):
        el2n(logits, torch.tensor([0, 1, 2]))


@requires_cuda_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_cuda_opcheck(dtype):
    logits, targets = make_inputs(5, 1500, dtype, device="cuda")
    torch.library.opcheck(torch.ops.reuse.el2n.default, (logits, targets))
