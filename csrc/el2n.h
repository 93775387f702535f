// Shared argument checking and dtype rules for reuse::el2n (CPU and CUDA).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

namespace reuse {

// Output dtype: float64 for float64 logits, float32 for every other dtype.
inline c10::ScalarType el2n_out_dtype(c10::ScalarType logits_dtype) {
  return logits_dtype == c10::kDouble ? c10::kDouble : c10::kFloat;
}

// Checks everything that can be checked without reading tensor data.
inline void el2n_check_args(const at::Tensor& logits, const at::Tensor& targets) {
  TORCH_CHECK(
      logits.dim() == 2,
      "reuse::el2n: logits must be a 2-D tensor [batch, classes], got ",
      logits.dim(), "-D with shape ", logits.sizes(),
      "; flatten leading dimensions first, e.g. logits.reshape(-1, logits.shape[-1])");
  TORCH_CHECK(
      logits.size(1) >= 1,
      "reuse::el2n: logits must have at least one class column, got shape ", logits.sizes());
  const auto dt = logits.scalar_type();
  TORCH_CHECK(
      dt == c10::kFloat || dt == c10::kDouble || dt == c10::kHalf || dt == c10::kBFloat16,
      "reuse::el2n: logits must be float32, float64, float16 or bfloat16, got ", dt,
      "; convert with logits.float()");
  TORCH_CHECK(
      targets.dim() == 1,
      "reuse::el2n: targets must be a 1-D tensor of class indices [batch], got ",
      targets.dim(), "-D with shape ", targets.sizes(),
      "; pass class indices, not one-hot or soft labels");
  const auto tt = targets.scalar_type();
  TORCH_CHECK(
      tt == c10::kLong || tt == c10::kInt,
      "reuse::el2n: targets must be int64 or int32 class indices, got ", tt,
      "; convert with targets.long()");
  TORCH_CHECK(
      targets.size(0) == logits.size(0),
      "reuse::el2n: targets has ", targets.size(0), " entries but logits has ",
      logits.size(0), " rows; they must match");
  TORCH_CHECK(
      targets.device() == logits.device(),
      "reuse::el2n: logits and targets must be on the same device, got logits on ",
      logits.device(), " and targets on ", targets.device(), "; move one with .to(device)");
}

// Message for a class index outside [0, C).
inline void el2n_check_target_range(int64_t min_target, int64_t max_target, int64_t num_classes) {
  TORCH_CHECK(
      min_target >= 0 && max_target < num_classes,
      "reuse::el2n: targets must be class indices in [0, ", num_classes,
      "), got values in [", min_target, ", ", max_target,
      "]; check the label mapping or the number of logit columns");
}

}  // namespace reuse
