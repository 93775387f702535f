// Shared argument checks and dtype rules of the per-example gradient-norm ops
// (GraNd): reuse::linear_sq_norms, conv_sq_norms, affine_sq_norms,
// embedding_sq_norms. Included by csrc/grad_norm_cpu.cpp and
// csrc/cuda/grad_norm_cuda.cu, so everything here is `inline`.
//
// Every check names the op, the argument, what was passed and the fix. The
// pure-PyTorch references (reuse/ops/grad_norm_reference.py) raise the same
// messages in the same order, so both backends fail alike.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <optional>

namespace reuse {

// Result dtype (and accumulation dtype) of every op of the family: float64 for
// float64 inputs, float32 otherwise (float16 / bfloat16 inputs are widened
// exactly and accumulated in float32).
inline c10::ScalarType grad_norm_out_dtype(c10::ScalarType input_dtype) {
  return input_dtype == c10::kDouble ? c10::kDouble : c10::kFloat;
}

inline bool grad_norm_is_float(c10::ScalarType dt) {
  return dt == c10::kFloat || dt == c10::kDouble || dt == c10::kHalf || dt == c10::kBFloat16;
}

// `t` must be float32, float64, float16 or bfloat16.
inline void grad_norm_check_float(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(
      grad_norm_is_float(t.scalar_type()), op, ": ", name,
      " must be float32, float64, float16 or bfloat16, got ", t.scalar_type(),
      "; convert with .float()");
}

// Activations and output gradients: same dtype and device.
inline void grad_norm_check_pair(
    const char* op, const char* a_name, const at::Tensor& a, const char* g_name, const at::Tensor& g) {
  grad_norm_check_float(op, a_name, a);
  grad_norm_check_float(op, g_name, g);
  TORCH_CHECK(
      a.scalar_type() == g.scalar_type(), op, ": ", a_name, " and ", g_name,
      " must have the same dtype, got ", a.scalar_type(), " and ", g.scalar_type(),
      "; convert one with .to(other.dtype)");
  TORCH_CHECK(
      a.device() == g.device(), op, ": ", a_name, " and ", g_name,
      " must be on the same device, got ", a.device(), " and ", g.device(),
      "; move one with .to(device)");
}

// ---------------------------------------------------------------------------- linear

// a [B, Din] with g [B, Dout], or a [B, T, Din] with g [B, T, Dout].
inline void linear_sq_norms_check(const at::Tensor& a, const at::Tensor& g) {
  constexpr const char* op = "reuse::linear_sq_norms";
  TORCH_CHECK(
      a.dim() == 2 || a.dim() == 3, op,
      ": a (the layer's input) must be 2-D [batch, in_features] or 3-D [batch, positions, "
      "in_features], got ", a.dim(), "-D with shape ", a.sizes(),
      "; flatten the dimensions between batch and features, e.g. a.reshape(B, -1, a.shape[-1])");
  TORCH_CHECK(
      g.dim() == a.dim(), op, ": g (the gradient of the layer's output) must have as many "
      "dimensions as a (", a.dim(), "), got ", g.dim(), "-D with shape ", g.sizes());
  TORCH_CHECK(
      g.size(0) == a.size(0), op, ": a has batch size ", a.size(0), " but g has ",
      g.size(0), "; they must match");
  TORCH_CHECK(
      a.dim() == 2 || g.size(1) == a.size(1), op, ": a has ", a.size(1),
      " positions (dim 1) but g has ", g.size(1), "; they must match");
  grad_norm_check_pair(op, "a", a, "g", g);
}

// ------------------------------------------------------------------------------ conv

// Geometry of a convolution with 1 or 2 spatial dimensions, 1-D stored as 2-D
// with a height of 1 (kernel 1, stride 1, padding 0, dilation 1 along it).
struct ConvGeometry {
  int64_t spatial_dims = 0;  // 1 or 2
  int64_t batch = 0;
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  int64_t groups = 1;
  int64_t in_size[2] = {1, 1};   // H, W
  int64_t out_size[2] = {1, 1};  // Ho, Wo
  int64_t kernel[2] = {1, 1};
  int64_t stride[2] = {1, 1};
  int64_t padding[2] = {0, 0};
  int64_t dilation[2] = {1, 1};
};

// x [B, Cin, *spatial] (1 or 2 spatial dims), g [B, Cout, *out_spatial]; the
// int lists have one entry per spatial dim. Returns the checked geometry.
inline ConvGeometry conv_sq_norms_check(
    const at::Tensor& x, const at::Tensor& g, c10::IntArrayRef kernel_size, c10::IntArrayRef stride,
    c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups) {
  constexpr const char* op = "reuse::conv_sq_norms";
  TORCH_CHECK(
      x.dim() == 3 || x.dim() == 4, op,
      ": x (the layer's input) must be 3-D [batch, channels, length] or 4-D [batch, channels, "
      "height, width], got ", x.dim(), "-D with shape ", x.sizes(),
      "; only 1-D and 2-D convolutions are supported, and unbatched inputs need x.unsqueeze(0)");
  const int64_t nd = x.dim() - 2;
  TORCH_CHECK(
      g.dim() == x.dim(), op, ": g (the gradient of the layer's output) must have as many "
      "dimensions as x (", x.dim(), "), got ", g.dim(), "-D with shape ", g.sizes());
  TORCH_CHECK(
      g.size(0) == x.size(0), op, ": x has batch size ", x.size(0), " but g has ", g.size(0),
      "; they must match");
  auto check_list = [&](const char* name, c10::IntArrayRef v, int64_t min_value) {
    TORCH_CHECK(
        static_cast<int64_t>(v.size()) == nd, op, ": ", name, " must have one entry per spatial "
        "dimension (", nd, "), got ", v, "; pass the module's own values, e.g. conv.", name);
    for (const int64_t e : v) {
      TORCH_CHECK(
          e >= min_value, op, ": ", name, " entries must be >= ", min_value, ", got ", v);
    }
  };
  check_list("kernel_size", kernel_size, 1);
  check_list("stride", stride, 1);
  check_list("padding", padding, 0);
  check_list("dilation", dilation, 1);
  TORCH_CHECK(groups >= 1, op, ": groups must be >= 1, got ", groups);
  TORCH_CHECK(
      x.size(1) % groups == 0 && g.size(1) % groups == 0, op, ": the input channels (",
      x.size(1), ") and output channels (", g.size(1), ") must both be divisible by groups (",
      groups, ")");
  ConvGeometry geo;
  geo.spatial_dims = nd;
  geo.batch = x.size(0);
  geo.in_channels = x.size(1);
  geo.out_channels = g.size(1);
  geo.groups = groups;
  const int64_t off = 2 - nd;  // 1-D: index 1 of the 2-D geometry
  for (int64_t d = 0; d < nd; ++d) {
    const int64_t in = x.size(2 + d);
    const int64_t span = dilation[d] * (kernel_size[d] - 1) + 1;
    const int64_t padded = in + 2 * padding[d];
    TORCH_CHECK(
        padded >= span, op, ": the padded input (size ", padded, " along spatial dim ", d,
        ") is smaller than the dilated kernel (", span, "); the convolution has no output");
    const int64_t out = (padded - span) / stride[d] + 1;
    TORCH_CHECK(
        g.size(2 + d) == out, op, ": g has size ", g.size(2 + d), " along spatial dim ", d,
        " but a convolution of x (shape ", x.sizes(), ") with kernel_size ", kernel_size,
        ", stride ", stride, ", padding ", padding, ", dilation ", dilation, " gives ", out,
        "; pass the module's own geometry (padding='same' converted to ints, other "
        "padding modes applied to x first)");
    geo.in_size[off + d] = in;
    geo.out_size[off + d] = out;
    geo.kernel[off + d] = kernel_size[d];
    geo.stride[off + d] = stride[d];
    geo.padding[off + d] = padding[d];
    geo.dilation[off + d] = dilation[d];
  }
  grad_norm_check_pair(op, "x", x, "g", g);
  return geo;
}

// ---------------------------------------------------------------------------- affine

// x, g [B, C, S]; scale, shift optional [C] floating tensors on x's device.
inline void affine_sq_norms_check(
    const at::Tensor& x, const at::Tensor& g, const std::optional<at::Tensor>& scale,
    const std::optional<at::Tensor>& shift) {
  constexpr const char* op = "reuse::affine_sq_norms";
  TORCH_CHECK(
      x.dim() == 3, op, ": x (the normalisation layer's input, or its normalised input) must "
      "be 3-D [batch, channels, positions], got ", x.dim(), "-D with shape ", x.sizes(),
      "; view it as x.reshape(B, C, -1)");
  TORCH_CHECK(
      g.sizes() == x.sizes(), op, ": g (the gradient of the layer's output) must have the "
      "shape of x ", x.sizes(), ", got ", g.sizes());
  grad_norm_check_pair(op, "x", x, "g", g);
  auto check_vec = [&](const char* name, const std::optional<at::Tensor>& v) {
    if (!v.has_value()) {
      return;
    }
    TORCH_CHECK(
        v->dim() == 1 && v->size(0) == x.size(1), op, ": ", name, " must be 1-D with one "
        "entry per channel (", x.size(1), "), got shape ", v->sizes());
    grad_norm_check_float(op, name, *v);
    TORCH_CHECK(
        v->device() == x.device(), op, ": ", name, " must be on the device of x (", x.device(),
        "), got ", v->device(), "; move it with .to(device)");
  };
  check_vec("scale", scale);
  check_vec("shift", shift);
}

// ------------------------------------------------------------------------- embedding

// indices [B, T] int64/int32, g [B, T, D]; 0 <= padding_idx < num_embeddings or -1.
inline void embedding_sq_norms_check(
    const at::Tensor& indices, const at::Tensor& g, int64_t num_embeddings, int64_t padding_idx) {
  constexpr const char* op = "reuse::embedding_sq_norms";
  TORCH_CHECK(
      indices.dim() == 2, op, ": indices must be 2-D [batch, positions], got ", indices.dim(),
      "-D with shape ", indices.sizes(), "; view a [batch] input as indices.unsqueeze(1)");
  const auto it = indices.scalar_type();
  TORCH_CHECK(
      it == c10::kLong || it == c10::kInt, op, ": indices must be int64 or int32, got ", it,
      "; convert with indices.long()");
  TORCH_CHECK(
      g.dim() == 3, op, ": g (the gradient of the embedding's output) must be 3-D [batch, "
      "positions, embedding_dim], got ", g.dim(), "-D with shape ", g.sizes());
  TORCH_CHECK(
      g.size(0) == indices.size(0) && g.size(1) == indices.size(1), op, ": indices has shape ",
      indices.sizes(), " but g has shape ", g.sizes(), "; the first two dimensions must match");
  grad_norm_check_float(op, "g", g);
  TORCH_CHECK(
      indices.device() == g.device(), op, ": indices and g must be on the same device, got ",
      indices.device(), " and ", g.device(), "; move one with .to(device)");
  TORCH_CHECK(num_embeddings >= 1, op, ": num_embeddings must be >= 1, got ", num_embeddings);
  TORCH_CHECK(
      padding_idx >= -1 && padding_idx < num_embeddings, op, ": padding_idx must be in [0, ",
      num_embeddings, ") or -1 for none, got ", padding_idx,
      "; pass the module's padding_idx (None -> -1)");
}

// Message for an id outside [0, num_embeddings), given the smallest and largest id.
inline void embedding_sq_norms_check_range(int64_t min_id, int64_t max_id, int64_t num_embeddings) {
  TORCH_CHECK(
      min_id >= 0 && max_id < num_embeddings, "reuse::embedding_sq_norms: indices must be in [0, ",
      num_embeddings, "), got values in [", min_id, ", ", max_id, "]");
}

}  // namespace reuse

// Short names used by the kernels; the arguments are those of the functions above.
#define GN_CHECK_LINEAR(...) ::reuse::linear_sq_norms_check(__VA_ARGS__)
#define GN_CHECK_CONV(...) ::reuse::conv_sq_norms_check(__VA_ARGS__)
#define GN_CHECK_AFFINE(...) ::reuse::affine_sq_norms_check(__VA_ARGS__)
#define GN_CHECK_EMBEDDING(...) ::reuse::embedding_sq_norms_check(__VA_ARGS__)
#define GN_CHECK_EMBEDDING_RANGE(...) ::reuse::embedding_sq_norms_check_range(__VA_ARGS__)
