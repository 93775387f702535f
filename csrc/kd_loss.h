// Shared argument checks, constants and error reporting for the knowledge
// distillation loss ops (reuse::kd_loss_fwd/bwd, reuse::kd_loss_topk_fwd/bwd),
// used by the CPU (kd_loss_cpu.cpp) and CUDA (cuda/kd_loss_cuda.cu) kernels.
//
// Loss (Hinton et al. 2015), per row i with student logits s, teacher
// distribution p and label y, at temperature T and weight alpha:
//   loss_i = alpha * T^2 * KL(p || softmax(s / T)) + (1 - alpha) * CE(s, y)
// and the ops return mean_i loss_i.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <string>

namespace reuse {
namespace kd {

// `kind` argument of kd_loss_fwd / kd_loss_bwd.
constexpr int64_t kTeacherLogits = 0;  // teacher [B, C] logits; p = softmax(t / T)
constexpr int64_t kTeacherProbs = 1;   // teacher [B, C] probabilities at temperature T

// Columns of row_stats, the per-row statistics saved by the forward for the
// backward. Every log-normaliser is relative to the row's max, so that large
// logits keep their precision: log_z_s_t = log sum_j exp((s_j - max_s) / T).
constexpr int64_t kStatMaxS = 0;     // max_j s_j
constexpr int64_t kStatLogZsT = 1;   // log sum_j exp((s_j - max_s) / T)
constexpr int64_t kStatLogZs1 = 2;   // log sum_j exp(s_j - max_s)
constexpr int64_t kStatMaxT = 3;     // max_j t_j (teacher logits / the top-k teacher's full logits)
constexpr int64_t kStatMass = 3;     // teacher probabilities: sum_j p_j (the gradient is q sum p - p)
constexpr int64_t kStatLogZt = 4;    // log sum_j exp((t_j - max_t) / T)
constexpr int64_t kStatLogPRest = 5; // top-k only: log of each non-kept class's probability at T
constexpr int64_t kDenseStats = 5;
constexpr int64_t kTopkStats = 6;

// Teacher probabilities (kind = probs) and the kept mass of a top-k teacher
// may differ from 1 by rounding; beyond this they are rejected.
constexpr double kMassTolerance = 1e-2;

// Per-row problem flags, set by the forward kernels and reported after them.
enum RowFlag : int32_t {
  kFlagStudentNonFinite = 1,
  kFlagTeacherNonFinite = 2,
  kFlagTargetRange = 4,
  kFlagTeacherNegative = 8,
  kFlagTeacherMass = 16,
  kFlagIndexRange = 32,
};

// Loss and row_stats dtype: float64 for float64 students, float32 otherwise.
inline c10::ScalarType acc_dtype(c10::ScalarType student_dtype) {
  return student_dtype == c10::kDouble ? c10::kDouble : c10::kFloat;
}

inline bool is_float_dtype(c10::ScalarType dt) {
  return dt == c10::kFloat || dt == c10::kDouble || dt == c10::kHalf || dt == c10::kBFloat16;
}

inline void check_scalars(double temperature, double alpha) {
  TORCH_CHECK(
      std::isfinite(temperature) && temperature > 0.0,
      "reuse::kd_loss: temperature must be a finite number > 0, got ", temperature);
  TORCH_CHECK(
      std::isfinite(alpha) && alpha >= 0.0 && alpha <= 1.0,
      "reuse::kd_loss: alpha must be in [0, 1], got ", alpha);
}

inline void check_student_targets(const at::Tensor& s, const at::Tensor& y) {
  TORCH_CHECK(
      s.dim() == 2,
      "reuse::kd_loss: student_logits must be a 2-D tensor [batch, classes], got ", s.dim(),
      "-D with shape ", s.sizes(), "; flatten leading dimensions first, e.g. x.reshape(-1, x.shape[-1])");
  TORCH_CHECK(
      s.size(1) >= 1,
      "reuse::kd_loss: student_logits must have at least one class column, got shape ", s.sizes());
  TORCH_CHECK(
      is_float_dtype(s.scalar_type()),
      "reuse::kd_loss: student_logits must be float32, float64, float16 or bfloat16, got ",
      s.scalar_type());
  TORCH_CHECK(
      y.dim() == 1,
      "reuse::kd_loss: targets must be a 1-D tensor of class indices [batch], got ", y.dim(),
      "-D with shape ", y.sizes());
  TORCH_CHECK(
      y.scalar_type() == c10::kLong || y.scalar_type() == c10::kInt,
      "reuse::kd_loss: targets must be int64 or int32 class indices, got ", y.scalar_type(),
      "; convert with targets.long()");
  TORCH_CHECK(
      y.size(0) == s.size(0),
      "reuse::kd_loss: targets has ", y.size(0), " entries but student_logits has ", s.size(0),
      " rows; they must match");
  TORCH_CHECK(
      y.device() == s.device(),
      "reuse::kd_loss: targets must be on the device of student_logits (", s.device(),
      "), got ", y.device());
}

inline void check_dense_teacher(const at::Tensor& s, const at::Tensor& t, int64_t kind) {
  TORCH_CHECK(
      kind == kTeacherLogits || kind == kTeacherProbs,
      "reuse::kd_loss: kind must be 0 (teacher logits) or 1 (teacher probabilities), got ", kind);
  TORCH_CHECK(
      t.sizes() == s.sizes(),
      "reuse::kd_loss: teacher must have the shape of student_logits ", s.sizes(), ", got ",
      t.sizes());
  TORCH_CHECK(
      is_float_dtype(t.scalar_type()),
      "reuse::kd_loss: teacher must be float16, bfloat16, float32 or float64, got ", t.scalar_type());
  TORCH_CHECK(
      t.device() == s.device(),
      "reuse::kd_loss: teacher must be on the device of student_logits (", s.device(), "), got ",
      t.device());
}

inline void check_topk_teacher(
    const at::Tensor& s, const at::Tensor& values, const at::Tensor& indices, const at::Tensor* lse) {
  const int64_t B = s.size(0);
  const int64_t C = s.size(1);
  TORCH_CHECK(
      values.dim() == 2 && values.size(0) == B && values.size(1) <= C,
      "reuse::kd_loss: top-k teacher values must be [batch, k] with batch = ", B, " and k <= ", C,
      " classes, got shape ", values.sizes());
  TORCH_CHECK(
      is_float_dtype(values.scalar_type()),
      "reuse::kd_loss: top-k teacher values must be float16, bfloat16, float32 or float64, got ",
      values.scalar_type());
  TORCH_CHECK(
      indices.sizes() == values.sizes(),
      "reuse::kd_loss: top-k teacher indices must have the shape of the values ", values.sizes(),
      ", got ", indices.sizes());
  const auto it = indices.scalar_type();
  TORCH_CHECK(
      it == c10::kShort || it == c10::kInt || it == c10::kLong,
      "reuse::kd_loss: top-k teacher indices must be int16, int32 or int64, got ", it);
  TORCH_CHECK(
      values.device() == s.device() && indices.device() == s.device(),
      "reuse::kd_loss: top-k teacher values and indices must be on the device of student_logits (",
      s.device(), "), got ", values.device(), " and ", indices.device());
  if (lse != nullptr) {
    TORCH_CHECK(
        lse->dim() == 1 && lse->size(0) == B,
        "reuse::kd_loss: top-k teacher logsumexp must be [batch] with batch = ", B, ", got shape ",
        lse->sizes());
    TORCH_CHECK(
        lse->scalar_type() == c10::kFloat || lse->scalar_type() == c10::kDouble,
        "reuse::kd_loss: top-k teacher logsumexp must be float32 or float64, got ",
        lse->scalar_type());
    TORCH_CHECK(
        lse->device() == s.device(),
        "reuse::kd_loss: top-k teacher logsumexp must be on the device of student_logits (",
        s.device(), "), got ", lse->device());
  }
}

inline void check_backward_args(
    const at::Tensor& grad, const at::Tensor& s, const at::Tensor& row_stats, int64_t n_stats) {
  TORCH_CHECK(
      grad.numel() == 1,
      "reuse::kd_loss backward: grad must be a scalar (the loss is a mean), got shape ", grad.sizes());
  TORCH_CHECK(
      grad.device() == s.device() && row_stats.device() == s.device(),
      "reuse::kd_loss backward: grad and row_stats must be on the device of student_logits");
  TORCH_CHECK(
      row_stats.dim() == 2 && row_stats.size(0) == s.size(0) && row_stats.size(1) == n_stats,
      "reuse::kd_loss backward: row_stats must be [", s.size(0), ", ", n_stats, "], got ",
      row_stats.sizes());
  TORCH_CHECK(
      row_stats.scalar_type() == acc_dtype(s.scalar_type()),
      "reuse::kd_loss backward: row_stats must be ", acc_dtype(s.scalar_type()), ", got ",
      row_stats.scalar_type());
}

// Raises for the first problem found in the per-row flags (flags[i] for row i,
// as filled by a forward kernel). `any` is the OR of all flags.
inline void raise_row_flags(const int32_t* flags, int64_t B, int32_t any, int64_t C) {
  if (any == 0) {
    return;
  }
  auto first_row = [&](int32_t bit) -> int64_t {
    for (int64_t i = 0; i < B; ++i) {
      if (flags[i] & bit) {
        return i;
      }
    }
    return -1;
  };
  TORCH_CHECK(
      !(any & kFlagStudentNonFinite),
      "reuse::kd_loss: student_logits has a non-finite value (NaN or +-inf) in row ",
      first_row(kFlagStudentNonFinite), "; the student has diverged or its input is bad");
  TORCH_CHECK(
      !(any & kFlagTeacherNonFinite),
      "reuse::kd_loss: teacher has a non-finite value (NaN or +-inf) in row ",
      first_row(kFlagTeacherNonFinite), "; check the teacher logits / logit cache");
  TORCH_CHECK(
      !(any & kFlagTargetRange),
      "reuse::kd_loss: targets must be class indices in [0, ", C, "); row ",
      first_row(kFlagTargetRange), " is out of range");
  TORCH_CHECK(
      !(any & kFlagTeacherNegative),
      "reuse::kd_loss: teacher probabilities must be >= 0; row ", first_row(kFlagTeacherNegative),
      " has a negative entry (pass logits with teacher_kind=\"logits\")");
  TORCH_CHECK(
      !(any & kFlagTeacherMass),
      "reuse::kd_loss: teacher probabilities must sum to 1 per row (within ", kMassTolerance,
      "); row ", first_row(kFlagTeacherMass),
      " does not (for a top-k teacher: the kept classes' mass exp(values - logsumexp) exceeds 1)");
  TORCH_CHECK(
      !(any & kFlagIndexRange),
      "reuse::kd_loss: top-k teacher indices must be class indices in [0, ", C, "); row ",
      first_row(kFlagIndexRange), " is out of range");
}

}  // namespace kd
}  // namespace reuse
