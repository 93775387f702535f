"""Pure-PyTorch references of the per-example gradient-norm ops (GraNd).

``reuse::linear_sq_norms``, ``conv_sq_norms``, ``affine_sq_norms`` and
``embedding_sq_norms`` each return, for every example ``b`` of a batch, the
squared L2 norm of ``b``'s own gradient with respect to one layer's weight (and
bias), given the layer's input and the gradient of the loss with respect to the
layer's output. These references follow the definitions literally: they form
each example's weight gradient (``[B, *weight.shape]``, which the kernels never
do) and square it. They are the test oracle of the kernels and the fallback
when ``reuse._C`` is not built. They check their arguments with the same
messages as ``csrc/grad_norm.h``.

Results are float64 for float64 inputs and float32 otherwise; the computation
runs in that dtype (float16 / bfloat16 inputs are widened first).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "affine_sq_norms_reference",
    "conv_sq_norms_reference",
    "embedding_sq_norms_reference",
    "grad_norm_output_dtype",
    "linear_sq_norms_reference",
]

_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_INDEX_DTYPES = (torch.int64, torch.int32)


def grad_norm_output_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 inputs, float32 for every other input dtype."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def _list(v: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(e)) for e in v) + "]"


def _dtype(dt: torch.dtype) -> str:
    # c10's spelling, as the kernels print it.
    return {
        torch.float32: "Float",
        torch.float64: "Double",
        torch.float16: "Half",
        torch.bfloat16: "BFloat16",
        torch.int64: "Long",
        torch.int32: "Int",
        torch.int16: "Short",
        torch.int8: "Char",
        torch.uint8: "Byte",
        torch.bool: "Bool",
    }.get(dt, str(dt).replace("torch.", ""))


def _check_float(op: str, name: str, t: torch.Tensor) -> None:
    if t.dtype not in _FLOAT_DTYPES:
        raise RuntimeError(
            f"{op}: {name} must be float32, float64, float16 or bfloat16, got {_dtype(t.dtype)}; "
            f"convert with .float()"
        )


def _check_pair(op: str, a_name: str, a: torch.Tensor, g_name: str, g: torch.Tensor) -> None:
    _check_float(op, a_name, a)
    _check_float(op, g_name, g)
    if a.dtype != g.dtype:
        raise RuntimeError(
            f"{op}: {a_name} and {g_name} must have the same dtype, got {_dtype(a.dtype)} and "
            f"{_dtype(g.dtype)}; convert one with .to(other.dtype)"
        )
    if a.device != g.device:
        raise RuntimeError(
            f"{op}: {a_name} and {g_name} must be on the same device, got {a.device} and "
            f"{g.device}; move one with .to(device)"
        )


# ----------------------------------------------------------------------------- linear


def _check_linear(a: torch.Tensor, g: torch.Tensor) -> None:
    op = "reuse::linear_sq_norms"
    if a.dim() not in (2, 3):
        raise RuntimeError(
            f"{op}: a (the layer's input) must be 2-D [batch, in_features] or 3-D [batch, "
            f"positions, in_features], got {a.dim()}-D with shape {_shape(a)}; flatten the "
            f"dimensions between batch and features, e.g. a.reshape(B, -1, a.shape[-1])"
        )
    if g.dim() != a.dim():
        raise RuntimeError(
            f"{op}: g (the gradient of the layer's output) must have as many dimensions as a "
            f"({a.dim()}), got {g.dim()}-D with shape {_shape(g)}"
        )
    if g.shape[0] != a.shape[0]:
        raise RuntimeError(
            f"{op}: a has batch size {a.shape[0]} but g has {g.shape[0]}; they must match"
        )
    if a.dim() == 3 and g.shape[1] != a.shape[1]:
        raise RuntimeError(
            f"{op}: a has {a.shape[1]} positions (dim 1) but g has {g.shape[1]}; they must match"
        )
    _check_pair(op, "a", a, "g", g)


def linear_sq_norms_reference(a: torch.Tensor, g: torch.Tensor, bias: bool) -> torch.Tensor:
    """Per-example squared gradient norm of a linear layer ``y = a W^T (+ b)``.

    ``a`` ``[B, Din]`` or ``[B, T, Din]``, ``g = dL/dy`` of the same leading
    shape with ``Dout`` features. Example ``b``'s weight gradient is
    ``sum_t g_bt a_bt^T``; with ``bias`` its bias gradient ``sum_t g_bt`` is
    added. Returns ``[B]``.
    """
    _check_linear(a, g)
    acc = grad_norm_output_dtype(a.dtype)
    with torch.no_grad():
        a = a.to(acc)
        g = g.to(acc)
        if a.dim() == 2:
            a = a.unsqueeze(1)
            g = g.unsqueeze(1)
        w = torch.einsum("bto,bti->boi", g, a)
        out = w.square().sum((1, 2))
        if bias:
            out = out + g.sum(1).square().sum(1)
        return out


# ------------------------------------------------------------------------------- conv


def _check_conv(x, g, kernel_size, stride, padding, dilation, groups) -> None:
    op = "reuse::conv_sq_norms"
    if x.dim() not in (3, 4):
        raise RuntimeError(
            f"{op}: x (the layer's input) must be 3-D [batch, channels, length] or 4-D [batch, "
            f"channels, height, width], got {x.dim()}-D with shape {_shape(x)}; only 1-D and "
            f"2-D convolutions are supported, and unbatched inputs need x.unsqueeze(0)"
        )
    nd = x.dim() - 2
    if g.dim() != x.dim():
        raise RuntimeError(
            f"{op}: g (the gradient of the layer's output) must have as many dimensions as x "
            f"({x.dim()}), got {g.dim()}-D with shape {_shape(g)}"
        )
    if g.shape[0] != x.shape[0]:
        raise RuntimeError(
            f"{op}: x has batch size {x.shape[0]} but g has {g.shape[0]}; they must match"
        )
    for name, v, lo in (
        ("kernel_size", kernel_size, 1),
        ("stride", stride, 1),
        ("padding", padding, 0),
        ("dilation", dilation, 1),
    ):
        if len(v) != nd:
            raise RuntimeError(
                f"{op}: {name} must have one entry per spatial dimension ({nd}), got {_list(v)}; "
                f"pass the module's own values, e.g. conv.{name}"
            )
        if any(int(e) < lo for e in v):
            raise RuntimeError(f"{op}: {name} entries must be >= {lo}, got {_list(v)}")
    if groups < 1:
        raise RuntimeError(f"{op}: groups must be >= 1, got {groups}")
    if x.shape[1] % groups or g.shape[1] % groups:
        raise RuntimeError(
            f"{op}: the input channels ({x.shape[1]}) and output channels ({g.shape[1]}) must "
            f"both be divisible by groups ({groups})"
        )
    for d in range(nd):
        span = dilation[d] * (kernel_size[d] - 1) + 1
        padded = x.shape[2 + d] + 2 * padding[d]
        if padded < span:
            raise RuntimeError(
                f"{op}: the padded input (size {padded} along spatial dim {d}) is smaller than "
                f"the dilated kernel ({span}); the convolution has no output"
            )
        out = (padded - span) // stride[d] + 1
        if g.shape[2 + d] != out:
            raise RuntimeError(
                f"{op}: g has size {g.shape[2 + d]} along spatial dim {d} but a convolution of x "
                f"(shape {_shape(x)}) with kernel_size {_list(kernel_size)}, stride "
                f"{_list(stride)}, padding {_list(padding)}, dilation {_list(dilation)} gives "
                f"{out}; pass the module's own geometry (padding='same' converted to ints, other "
                f"padding modes applied to x first)"
            )
    _check_pair(op, "x", x, "g", g)


def conv_sq_norms_reference(
    x: torch.Tensor,
    g: torch.Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    bias: bool,
) -> torch.Tensor:
    """Per-example squared gradient norm of a 1-D or 2-D convolution (zero padding).

    ``x`` ``[B, Cin, *spatial]``, ``g = dL/dy`` ``[B, Cout, *out_spatial]``;
    the int lists have one entry per spatial dimension. Example ``b``'s weight
    gradient (per group) is ``G_b U_b^T`` with ``U_b`` the unfolded input;
    with ``bias`` the bias gradient (``g`` summed over positions) is added.
    Returns ``[B]``.
    """
    kernel_size, stride, padding, dilation = (
        [int(e) for e in v] for v in (kernel_size, stride, padding, dilation)
    )
    _check_conv(x, g, kernel_size, stride, padding, dilation, int(groups))
    acc = grad_norm_output_dtype(x.dtype)
    with torch.no_grad():
        x = x.to(acc)
        g = g.to(acc)
        if x.dim() == 3:  # 1-D as 2-D with height 1
            x, g = x.unsqueeze(2), g.unsqueeze(2)
            kernel_size, stride, padding, dilation = (
                [1] + kernel_size, [1] + stride, [0] + padding, [1] + dilation
            )
        B, cin, cout = x.shape[0], x.shape[1], g.shape[1]
        u = F.unfold(x, kernel_size, dilation=dilation, padding=padding, stride=stride)
        u = u.reshape(B, groups, cin // groups * kernel_size[0] * kernel_size[1], -1)
        gg = g.reshape(B, groups, cout // groups, -1)
        w = torch.einsum("bgop,bgip->bgoi", gg, u)
        out = w.square().sum((1, 2, 3))
        if bias:
            out = out + g.flatten(2).sum(2).square().sum(1)
        return out


# ----------------------------------------------------------------------------- affine


def _check_affine(x, g, scale, shift) -> None:
    op = "reuse::affine_sq_norms"
    if x.dim() != 3:
        raise RuntimeError(
            f"{op}: x (the normalisation layer's input, or its normalised input) must be 3-D "
            f"[batch, channels, positions], got {x.dim()}-D with shape {_shape(x)}; view it as "
            f"x.reshape(B, C, -1)"
        )
    if g.shape != x.shape:
        raise RuntimeError(
            f"{op}: g (the gradient of the layer's output) must have the shape of x {_shape(x)}, "
            f"got {_shape(g)}"
        )
    _check_pair(op, "x", x, "g", g)
    for name, v in (("scale", scale), ("shift", shift)):
        if v is None:
            continue
        if not (v.dim() == 1 and v.shape[0] == x.shape[1]):
            raise RuntimeError(
                f"{op}: {name} must be 1-D with one entry per channel ({x.shape[1]}), got shape "
                f"{_shape(v)}"
            )
        _check_float(op, name, v)
        if v.device != x.device:
            raise RuntimeError(
                f"{op}: {name} must be on the device of x ({x.device}), got {v.device}; move it "
                f"with .to(device)"
            )


def affine_sq_norms_reference(
    x: torch.Tensor,
    g: torch.Tensor,
    scale: torch.Tensor | None,
    shift: torch.Tensor | None,
    weight: bool,
    bias: bool,
) -> torch.Tensor:
    """Per-example squared gradient norm of a per-channel affine ``y = w[c] xhat + b[c]``.

    ``x``, ``g = dL/dy`` ``[B, C, S]``; ``xhat = x * scale[c] + shift[c]``
    (``scale`` None means 1, ``shift`` None means 0). Example ``b``'s weight
    gradient is ``sum_s g xhat`` per channel, its bias gradient ``sum_s g``;
    returns ``[B]``, the sum over channels of the squares of the requested ones.
    """
    _check_affine(x, g, scale, shift)
    acc = grad_norm_output_dtype(x.dtype)
    with torch.no_grad():
        g = g.to(acc)
        out = torch.zeros(g.shape[0], dtype=acc, device=g.device)
        if weight:
            xhat = x.to(acc)
            if scale is not None:
                xhat = xhat * scale.to(acc)[:, None]
            if shift is not None:
                xhat = xhat + shift.to(acc)[:, None]
            out = out + (g * xhat).sum(2).square().sum(1)
        if bias:
            out = out + g.sum(2).square().sum(1)
        return out


# -------------------------------------------------------------------------- embedding


def _check_embedding(indices, g, num_embeddings, padding_idx) -> None:
    op = "reuse::embedding_sq_norms"
    if indices.dim() != 2:
        raise RuntimeError(
            f"{op}: indices must be 2-D [batch, positions], got {indices.dim()}-D with shape "
            f"{_shape(indices)}; view a [batch] input as indices.unsqueeze(1)"
        )
    if indices.dtype not in _INDEX_DTYPES:
        raise RuntimeError(
            f"{op}: indices must be int64 or int32, got {_dtype(indices.dtype)}; convert with "
            f"indices.long()"
        )
    if g.dim() != 3:
        raise RuntimeError(
            f"{op}: g (the gradient of the embedding's output) must be 3-D [batch, positions, "
            f"embedding_dim], got {g.dim()}-D with shape {_shape(g)}"
        )
    if g.shape[:2] != indices.shape:
        raise RuntimeError(
            f"{op}: indices has shape {_shape(indices)} but g has shape {_shape(g)}; the first "
            f"two dimensions must match"
        )
    _check_float(op, "g", g)
    if indices.device != g.device:
        raise RuntimeError(
            f"{op}: indices and g must be on the same device, got {indices.device} and "
            f"{g.device}; move one with .to(device)"
        )
    if num_embeddings < 1:
        raise RuntimeError(f"{op}: num_embeddings must be >= 1, got {num_embeddings}")
    if not -1 <= padding_idx < num_embeddings:
        raise RuntimeError(
            f"{op}: padding_idx must be in [0, {num_embeddings}) or -1 for none, got "
            f"{padding_idx}; pass the module's padding_idx (None -> -1)"
        )
    if indices.numel() > 0:
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= num_embeddings:
            raise RuntimeError(
                f"{op}: indices must be in [0, {num_embeddings}), got values in [{lo}, {hi}]"
            )


def embedding_sq_norms_reference(
    indices: torch.Tensor, g: torch.Tensor, num_embeddings: int, padding_idx: int
) -> torch.Tensor:
    """Per-example squared gradient norm of an embedding table.

    ``indices`` ``[B, T]``, ``g = dL/dy`` ``[B, T, D]``. Example ``b``'s
    gradient row of id ``v`` is ``sum_{t: indices[b, t] = v} g[b, t]``; the row
    of ``padding_idx`` (when ``>= 0``) gets no gradient. Returns ``[B]``, the
    sum over ids of the rows' squared norms.
    """
    num_embeddings, padding_idx = int(num_embeddings), int(padding_idx)
    _check_embedding(indices, g, num_embeddings, padding_idx)
    acc = grad_norm_output_dtype(g.dtype)
    with torch.no_grad():
        B, T, D = g.shape
        g = g.to(acc)
        ids = indices.long()
        keep = ids != padding_idx if padding_idx >= 0 else torch.ones_like(ids, dtype=torch.bool)
        # One row per distinct (example, id): key = b * V + id.
        rows = torch.arange(B, device=ids.device)[:, None] * num_embeddings + ids
        keys, inverse = torch.unique(rows[keep], return_inverse=True)
        sums = torch.zeros(keys.numel(), D, dtype=acc, device=g.device)
        sums.index_add_(0, inverse, g[keep])
        out = torch.zeros(B, dtype=acc, device=g.device)
        out.index_add_(0, keys // num_embeddings, sums.square().sum(1))
        return out
