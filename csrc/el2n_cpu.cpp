// CPU kernels of the EL2N op family: reuse::el2n.
//
// For row i with logits x, label y and m = max_j x_j, let e_j = exp(x_j - m),
//   r = sum_{j != y} e_j,   q = sum_{j != y} e_j^2,   s = r + e_y.
// Then p = e / s and
//   || p - onehot(y) ||^2 = sum_{j != y} p_j^2 + (1 - p_y)^2 = (q + r^2) / s^2,
// so the score is sqrt(q + r^2) / s. Every term is a sum of non-negative
// numbers, so rows whose score is near zero (confident, correct predictions)
// keep full relative precision instead of losing it to the cancellation in
// sum_j p_j^2 - 2 p_y + 1.
//
// Each row takes two passes: a max, then the sums above. A row is at most a
// few hundred KiB, so the second pass reads from cache. Float rows use a
// polynomial exp written so the compiler vectorises the loop; on x86-64 with
// GCC the row function is also cloned for AVX2 and selected at load time.
// Non-finite logits propagate: a NaN or +inf anywhere in a row, or a row that
// is entirely -inf, gives NaN (as softmax does); -inf entries next to finite
// ones contribute probability 0.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "el2n.h"

namespace reuse {
namespace {

// Independent accumulators per loop step; a multiple of every SIMD width.
constexpr int64_t kLanes = 16;
// Float partial sums are folded into double every kBlock columns (a multiple
// of kLanes), bounding float rounding error by the block, not the row, length.
constexpr int64_t kBlock = 1024;

// exp(x) for finite or -inf x <= 0, with a relative error of a few float ulps.
// exp(x) = 2^n * exp(t) with n = round(x / ln 2), t = x - n ln 2, |t| <= ln(2)/2.
// Arguments below -87 (where the result leaves the normal float range) give 0.
// Branch-free so that loops calling it vectorise; NaN is not handled here.
__attribute__((always_inline)) inline float exp_nonpositive(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693145751953125f;  // 16 significant bits: n * kLn2Hi is exact
  constexpr float kLn2Lo = 1.428606765330187e-06f;
  constexpr float kRoundingShift = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  constexpr float kLowest = -87.0f;
  const float xc = std::max(x, kLowest);
  const float shifted = xc * kLog2e + kRoundingShift;
  const float n = shifted - kRoundingShift;
  const uint32_t n_bits =
      std::bit_cast<uint32_t>(shifted) - std::bit_cast<uint32_t>(kRoundingShift);
  const float t = (xc - n * kLn2Hi) - n * kLn2Lo;
  // Taylor polynomial of degree 7; truncation error below 6e-9 on |t| <= 0.35.
  float p = 1.0f / 5040.0f;
  p = p * t + 1.0f / 720.0f;
  p = p * t + 1.0f / 120.0f;
  p = p * t + 1.0f / 24.0f;
  p = p * t + 1.0f / 6.0f;
  p = p * t + 0.5f;
  p = p * t + 1.0f;
  p = p * t + 1.0f;
  const float two_to_n = std::bit_cast<float>((n_bits + 127u) << 23);
  const float in_range = static_cast<float>(x >= kLowest);  // 0 or 1, no branch
  return p * two_to_n * in_range;
}

// The loops below work in steps of kLanes logits. A row's last C % kLanes
// logits are copied into a padded step-sized buffer, so there is no scalar tail.

// Pass 1 step: running max per lane, and z += 0 * v, which turns NaN exactly
// when a logit is NaN or infinite.
__attribute__((always_inline)) inline void max_step(const float* v, float* m_lane, float* z_lane) {
  for (int64_t k = 0; k < kLanes; ++k) {
    m_lane[k] = std::max(m_lane[k], v[k]);
    z_lane[k] += v[k] * 0.0f;
  }
}

// Pass 2 step: adds e = exp(v - m) and e^2 for the logits whose column
// j0 + k is not the label y.
__attribute__((always_inline)) inline void exp_step(
    const float* v, int64_t j0, int64_t y, float m, float* r_lane, float* q_lane) {
  // The label's lane within this step, or -1 / kLanes when outside it; kept in
  // 32 bits so the compare vectorises on every x86-64 level.
  const int32_t label_lane = static_cast<int32_t>(std::clamp<int64_t>(y - j0, -1, kLanes));
  for (int32_t k = 0; k < static_cast<int32_t>(kLanes); ++k) {
    const float not_label = static_cast<float>(k != label_lane);
    const float e = exp_nonpositive(v[k] - m) * not_label;
    r_lane[k] += e;
    q_lane[k] += e * e;
  }
}

// Adds the lane sums into the double totals and clears the lanes.
__attribute__((always_inline)) inline void fold_lanes(float* r_lane, float* q_lane, double& r, double& q) {
  float r_sum = 0.0f;
  float q_sum = 0.0f;
  for (int64_t k = 0; k < kLanes; ++k) {
    r_sum += r_lane[k];
    q_sum += q_lane[k];
    r_lane[k] = 0.0f;
    q_lane[k] = 0.0f;
  }
  r += r_sum;
  q += q_sum;
}

// Score of one row computed with std::exp in double precision. Handles
// non-finite logits exactly like softmax does: NaN or +inf in the row, or a
// row of only -inf, gives NaN; -inf next to finite logits has probability 0.
template <typename T>
double el2n_row_scalar(const T* x, int64_t C, int64_t y) {
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < C; ++j) {
    const double v = static_cast<double>(x[j]);
    m = v > m ? v : m;
  }
  double r_lane[4] = {};
  double q_lane[4] = {};
  for (int64_t j = 0; j < C; ++j) {
    const double e = j == y ? 0.0 : std::exp(static_cast<double>(x[j]) - m);
    r_lane[j & 3] += e;
    q_lane[j & 3] += e * e;
  }
  const double r = (r_lane[0] + r_lane[1]) + (r_lane[2] + r_lane[3]);
  const double q = (q_lane[0] + q_lane[1]) + (q_lane[2] + q_lane[3]);
  const double s = r + std::exp(static_cast<double>(x[y]) - m);
  return std::sqrt(q + r * r) / s;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define REUSE_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define REUSE_CPU_CLONES
#endif

// Score of one float row of length C >= 1 with label 0 <= y < C.
REUSE_CPU_CLONES float el2n_row_f32(const float* x, int64_t C, int64_t y) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const int64_t C_steps = C - C % kLanes;  // columns covered by whole steps
  float tail[kLanes];

  // Pass 1: row max m; z is NaN when some logit is not finite.
  float m_lane[kLanes];
  float z_lane[kLanes] = {};
  for (int64_t k = 0; k < kLanes; ++k) {
    m_lane[k] = kNegInf;
  }
  for (int64_t j = 0; j < C_steps; j += kLanes) {
    max_step(x + j, m_lane, z_lane);
  }
  if (C_steps < C) {
    // Padding repeats x[0], which changes neither the max nor z.
    for (int64_t k = 0; k < kLanes; ++k) {
      tail[k] = C_steps + k < C ? x[C_steps + k] : x[0];
    }
    max_step(tail, m_lane, z_lane);
  }
  float m = m_lane[0];
  float z = z_lane[0];
  for (int64_t k = 1; k < kLanes; ++k) {
    m = std::max(m, m_lane[k]);
    z += z_lane[k];
  }
  if (z != 0.0f) {  // a non-finite logit: rare, take the exact scalar path
    return static_cast<float>(el2n_row_scalar(x, C, y));
  }

  // Pass 2: r and q over the columns other than y, folded into double every
  // kBlock columns.
  double r = 0.0;
  double q = 0.0;
  float r_lane[kLanes] = {};
  float q_lane[kLanes] = {};
  for (int64_t block = 0; block < C_steps; block += kBlock) {
    const int64_t block_end = std::min(C_steps, block + kBlock);
    for (int64_t j = block; j < block_end; j += kLanes) {
      exp_step(x + j, j, y, m, r_lane, q_lane);
    }
    fold_lanes(r_lane, q_lane, r, q);
  }
  if (C_steps < C) {
    // Padding with -inf contributes exp(-inf) = 0.
    for (int64_t k = 0; k < kLanes; ++k) {
      tail[k] = C_steps + k < C ? x[C_steps + k] : kNegInf;
    }
    exp_step(tail, C_steps, y, m, r_lane, q_lane);
    fold_lanes(r_lane, q_lane, r, q);
  }
  const double s = r + exp_nonpositive(x[y] - m);
  return static_cast<float>(std::sqrt(q + r * r) / s);
}

template <typename index_t>
void check_target_range(const at::Tensor& targets, int64_t num_classes) {
  const index_t* t = targets.const_data_ptr<index_t>();
  const int64_t n = targets.numel();
  int64_t lo = t[0];
  int64_t hi = t[0];
  for (int64_t i = 1; i < n; ++i) {
    lo = std::min<int64_t>(lo, t[i]);
    hi = std::max<int64_t>(hi, t[i]);
  }
  el2n_check_target_range(lo, hi, num_classes);
}

template <typename scalar_t, typename index_t, typename out_t>
void el2n_cpu_impl(const at::Tensor& logits, const at::Tensor& targets, at::Tensor& out) {
  const int64_t B = logits.size(0);
  const int64_t C = logits.size(1);
  const scalar_t* x = logits.const_data_ptr<scalar_t>();
  const index_t* t = targets.const_data_ptr<index_t>();
  out_t* o = out.mutable_data_ptr<out_t>();
  // Aim for at least ~32k logits per task so small batches stay on one thread.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / C);
  at::parallel_for(0, B, grain, [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<scalar_t, double>) {
      for (int64_t i = begin; i < end; ++i) {
        o[i] = el2n_row_scalar(x + i * C, C, static_cast<int64_t>(t[i]));
      }
    } else if constexpr (std::is_same_v<scalar_t, float>) {
      for (int64_t i = begin; i < end; ++i) {
        o[i] = el2n_row_f32(x + i * C, C, static_cast<int64_t>(t[i]));
      }
    } else {
      // float16 / bfloat16: widen each row into a float buffer (exact), then
      // run the float kernel.
      std::vector<float> row(static_cast<size_t>(C));
      for (int64_t i = begin; i < end; ++i) {
        const scalar_t* xi = x + i * C;
        for (int64_t j = 0; j < C; ++j) {
          row[j] = static_cast<float>(xi[j]);
        }
        o[i] = el2n_row_f32(row.data(), C, static_cast<int64_t>(t[i]));
      }
    }
  });
}

at::Tensor el2n_cpu(const at::Tensor& logits_in, const at::Tensor& targets_in) {
  el2n_check_args(logits_in, targets_in);
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor targets = targets_in.contiguous();
  const int64_t B = logits.size(0);
  const int64_t C = logits.size(1);
  at::Tensor out = at::empty({B}, logits.options().dtype(el2n_out_dtype(logits.scalar_type())));
  if (B == 0) {
    return out;
  }
  AT_DISPATCH_INDEX_TYPES(targets.scalar_type(), "reuse::el2n targets", [&] {
    check_target_range<index_t>(targets, C);
  });
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, logits.scalar_type(), "reuse::el2n", [&] {
        AT_DISPATCH_INDEX_TYPES(targets.scalar_type(), "reuse::el2n targets", [&] {
          if constexpr (std::is_same_v<scalar_t, double>) {
            el2n_cpu_impl<scalar_t, index_t, double>(logits, targets, out);
          } else {
            el2n_cpu_impl<scalar_t, index_t, float>(logits, targets, out);
          }
        });
      });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(reuse, CPU, m) {
  m.impl("el2n", &el2n_cpu);
}

}  // namespace reuse
