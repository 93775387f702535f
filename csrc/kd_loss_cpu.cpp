// CPU kernels of the knowledge-distillation loss family:
// reuse::kd_loss_fwd, kd_loss_bwd, kd_loss_topk_fwd, kd_loss_topk_bwd.
//
// Row i, student logits s, temperature T, weight a, label y:
//   loss_i = a T^2 KL(p || q) + (1 - a) CE(s, y),   q = softmax(s / T)
// With M = max_j s_j, Z_T = sum_j exp((s_j - M) / T), Z_1 = sum_j exp(s_j - M):
//   log q_j = (s_j - M) / T - log Z_T,   CE = log Z_1 - (s_y - M).
// Teacher logits t (p = softmax(t / T)), with N = max_j t_j, e_j = exp((t_j - N) / T),
// Z_t = sum_j e_j and W = sum_j e_j ((t_j - N) - (s_j - M)):
//   KL = sum_j p_j (log p_j - log q_j) = W / (T Z_t) + log Z_T - log Z_t.
// Teacher probabilities p (or the top-k teacher's p, see below), with
// P = sum_j p_j (about 1), X = sum_j p_j (s_j - M) and H = sum_j p_j log p_j:
//   KL = H - X / T + P log Z_T.
// Top-k teacher (values v_k at indices, logsumexp L): kept class j has logit v_j,
// every one of the R = C - k others the logit r = L + log(rest / R), rest =
// 1 - sum_k exp(v_k - L); with p_r their common probability, X = p_r sum_j (s_j - M)
// + sum_kept (p_j - p_r)(s_idx_j - M), so the student pass only adds
// sum_j (s_j - M) and the teacher part costs O(k) per row.
//
// Gradient: d loss / d s_j = g / B [a T (q_j - p_j) + (1 - a)(softmax(s)_j - [j = y])]
// (for teacher probabilities q_j P - p_j: the derivative of the loss as computed).
//
// The forward reads each row once, in blocks of kBlock columns that stay in
// L1: a pass over the block finds its max (and whether every value is
// finite), then a second pass adds the block's exponentials relative to the
// running max; the double-precision row sums are rescaled when the running
// max grows. It saves (M, log Z_T, log Z_1, N, log Z_t[, log p_r]) per row, so
// the backward is one pass: read s and t, write the gradient. Rows of at most
// kSmallC columns are instead taken kGroup at a time, transposed, so that
// vector lanes run over rows.
// Float32, float16 and bfloat16 inputs are computed in float (with double row
// sums); float64 students in double. Per-row losses are summed in row order,
// so the result does not depend on the thread count.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "kd_loss.h"
#include "kd_loss_simd.h"

namespace reuse {
namespace kd {
namespace {

using simd::kLanes;

// Columns per block; a multiple of kLanes. 1024 floats of student and teacher
// plus a gradient buffer is 12 KiB, well inside L1.
constexpr int64_t kBlock = 1024;
// Rows per parallel task: at least this many logits (about 0.1 ms of work),
// so that small batches stay on one thread (forking costs more than they
// take; on a busy machine a parallel region can also wait milliseconds for a
// descheduled worker).
constexpr int64_t kParallelGrain = int64_t{1} << 16;
constexpr float kInfF = std::numeric_limits<float>::infinity();
constexpr double kInfD = std::numeric_limits<double>::infinity();

// ----------------------------------------------------------------------------
// Block kernels on float columns; n is a multiple of kLanes. Tail blocks are
// padded with a copy of the block's first value (finite once checked) and
// the sums mask the padding out.

// Horizontal reductions of a kLanes-wide accumulator by repeated halving,
// which the compiler turns into a few vector operations.
template <int64_t kWidth>
REUSE_KD_INLINE float fold_sum(float* a) {
  if constexpr (kWidth == 1) {
    return a[0];
  } else {
    for (int64_t k = 0; k < kWidth / 2; ++k) {
      a[k] += a[k + kWidth / 2];
    }
    return fold_sum<kWidth / 2>(a);
  }
}
template <int64_t kWidth>
REUSE_KD_INLINE float fold_max(float* a) {
  if constexpr (kWidth == 1) {
    return a[0];
  } else {
    for (int64_t k = 0; k < kWidth / 2; ++k) {
      a[k] = std::max(a[k], a[k + kWidth / 2]);
    }
    return fold_max<kWidth / 2>(a);
  }
}

// Flags returned by block_range.
constexpr int kRangeStudentBad = 1;
constexpr int kRangeTeacherBad = 2;
constexpr int kRangeTeacherNegative = 4;

// Max of s[0, n) and, when t is given, of t[0, n) (and whether some t is
// negative); flags the arrays with a NaN or infinite value.
template <bool kTeacher>
REUSE_KD_INLINE int block_range_impl(const float* s, const float* t, int64_t n, float* out) {
  float s_hi[kLanes];
  float t_hi[kLanes];
  float t_lo[kLanes];
  float s_z[kLanes] = {};
  float t_z[kLanes] = {};
  for (int64_t k = 0; k < kLanes; ++k) {
    s_hi[k] = -kInfF;
    t_hi[k] = -kInfF;
    t_lo[k] = kInfF;
  }
  for (int64_t j = 0; j < n; j += kLanes) {
    for (int64_t k = 0; k < kLanes; ++k) {
      const float v = s[j + k];
      s_hi[k] = std::max(s_hi[k], v);
      s_z[k] += v * 0.0f;  // NaN exactly when v is NaN or infinite
      if constexpr (kTeacher) {
        const float u = t[j + k];
        t_hi[k] = std::max(t_hi[k], u);
        t_lo[k] = std::min(t_lo[k], u);
        t_z[k] += u * 0.0f;
      }
    }
  }
  int flags = 0;
  out[0] = fold_max<kLanes>(s_hi);
  flags |= fold_sum<kLanes>(s_z) == 0.0f ? 0 : kRangeStudentBad;
  if constexpr (kTeacher) {
    out[1] = fold_max<kLanes>(t_hi);
    for (int64_t k = 0; k < kLanes; ++k) {
      t_lo[k] = -t_lo[k];
    }
    out[2] = -fold_max<kLanes>(t_lo);
    flags |= fold_sum<kLanes>(t_z) == 0.0f ? 0 : kRangeTeacherBad;
    flags |= out[2] < 0.0f ? kRangeTeacherNegative : 0;
  }
  return flags;
}

// out = (max s, max t, min t); t may be nullptr.
REUSE_KD_CPU_CLONES int block_range(const float* s, const float* t, int64_t n, float* out) {
  return t != nullptr ? block_range_impl<true>(s, t, n, out) : block_range_impl<false>(s, t, n, out);
}

// What the forward sums over a block, with M / N the running student /
// teacher-logit maxima:
//   out[0] = sum exp((s - M) / T)                      (kNeedT: the KL term)
//   out[1] = sum exp(s - M)                            (kNeed1: the CE term)
//   out[2] = sum (s - M)                               (kNeedSum: top-k teacher)
//   teacher logits: out[3] = sum e, out[4] = sum e ((t - N) - (s - M)),  e = exp((t - N) / T)
//   teacher probabilities: out[3] = sum p, out[4] = sum p (s - M), out[5] = sum p log p
enum StudentMode : int {
  kNeedT = 1,
  kNeed1 = 2,
  kSameT1 = 4,    // T == 1: exp(s - M) is exp((s - M) / T)
  kNeedSum = 8,
};
enum BlockTeacher : int { kBlockNoTeacher = 0, kBlockLogits = 1, kBlockProbs = 2 };

struct BlockConsts {
  float ms, mt, inv_t;
};

// One step of kLanes columns at j of block_sums_impl; kMasked zeroes the
// columns at or beyond n_valid.
template <int kMode, int kTeacher, bool kMasked>
REUSE_KD_INLINE void block_sums_step(
    const float* s, const float* t, int64_t j, int32_t n_valid, const BlockConsts& c, float* a0,
    float* a1, float* a2, float* a3, float* a4, float* a5) {
  for (int64_t k = 0; k < kLanes; ++k) {
    const float mask = kMasked ? static_cast<float>(static_cast<int32_t>(j + k) < n_valid) : 1.0f;
    const float ds = s[j + k] - c.ms;
    float e_t = 0.0f;
    if constexpr ((kMode & kNeedT) != 0) {
      e_t = simd::exp_f(ds * c.inv_t) * mask;
      a0[k] += e_t;
    }
    if constexpr ((kMode & kNeed1) != 0) {
      if constexpr ((kMode & kSameT1) != 0) {
        a1[k] += e_t;
      } else {
        a1[k] += simd::exp_f(ds) * mask;
      }
    }
    if constexpr ((kMode & kNeedSum) != 0) {
      a2[k] += ds * mask;
    }
    if constexpr (kTeacher == kBlockLogits) {
      const float dt = t[j + k] - c.mt;
      const float e = simd::exp_f(dt * c.inv_t) * mask;
      a3[k] += e;
      a4[k] += e * (dt - ds);
    } else if constexpr (kTeacher == kBlockProbs) {
      const float p = t[j + k] * mask;
      a3[k] += p;
      a4[k] += p * ds;
      a5[k] += simd::xlogx_f(p);
    }
  }
}

// kMasked: the block's last step holds padding beyond n_valid.
template <int kMode, int kTeacher, bool kMasked>
REUSE_KD_INLINE void block_sums_impl(
    const float* s, const float* t, int64_t n, int32_t n_valid, const BlockConsts& c, float* out) {
  float a0[kLanes] = {};
  float a1[kLanes] = {};
  float a2[kLanes] = {};
  float a3[kLanes] = {};
  float a4[kLanes] = {};
  float a5[kLanes] = {};
  const int64_t n_full = kMasked ? n - kLanes : n;
  for (int64_t j = 0; j < n_full; j += kLanes) {
    block_sums_step<kMode, kTeacher, false>(s, t, j, n_valid, c, a0, a1, a2, a3, a4, a5);
  }
  if constexpr (kMasked) {
    block_sums_step<kMode, kTeacher, true>(s, t, n_full, n_valid, c, a0, a1, a2, a3, a4, a5);
  }
  out[0] = fold_sum<kLanes>(a0);
  out[1] = fold_sum<kLanes>(a1);
  out[2] = fold_sum<kLanes>(a2);
  out[3] = fold_sum<kLanes>(a3);
  out[4] = fold_sum<kLanes>(a4);
  out[5] = fold_sum<kLanes>(a5);
}

#define REUSE_KD_SUMS_CASE(teacher, mode)                                                  \
  case ((teacher) * 16 + (mode)) * 2:                                                      \
    return block_sums_impl<mode, teacher, false>(s, t, n, nv, c, out);                     \
  case ((teacher) * 16 + (mode)) * 2 + 1:                                                  \
    return block_sums_impl<mode, teacher, true>(s, t, n, nv, c, out);

// Sums of one block of n columns (a multiple of kLanes), the first n_valid
// of them real; see block_sums_impl.
REUSE_KD_CPU_CLONES void block_sums(
    const float* s, const float* t, int64_t n, int64_t n_valid, const BlockConsts& c, int teacher,
    int mode, float* out) {
  const int32_t nv = static_cast<int32_t>(n_valid);
  switch ((teacher * 16 + mode) * 2 + (n_valid < n ? 1 : 0)) {
    REUSE_KD_SUMS_CASE(kBlockNoTeacher, kNeed1)
    REUSE_KD_SUMS_CASE(kBlockNoTeacher, kNeedT | kNeedSum)
    REUSE_KD_SUMS_CASE(kBlockNoTeacher, kNeedT | kNeed1 | kNeedSum)
    REUSE_KD_SUMS_CASE(kBlockNoTeacher, kNeedT | kNeed1 | kSameT1 | kNeedSum)
    REUSE_KD_SUMS_CASE(kBlockLogits, kNeedT)
    REUSE_KD_SUMS_CASE(kBlockLogits, kNeedT | kNeed1)
    REUSE_KD_SUMS_CASE(kBlockLogits, kNeedT | kNeed1 | kSameT1)
    REUSE_KD_SUMS_CASE(kBlockProbs, kNeedT)
    REUSE_KD_SUMS_CASE(kBlockProbs, kNeedT | kNeed1)
    REUSE_KD_SUMS_CASE(kBlockProbs, kNeedT | kNeed1 | kSameT1)
    default:
      TORCH_CHECK(false, "reuse::kd_loss: internal error, block mode ", teacher, "/", mode);
  }
}
#undef REUSE_KD_SUMS_CASE

// Per-row constants of the backward.
struct BwdRow {
  float ms, inv_t, lz_t, lz_1;  // student: M, 1/T, log Z_T, log Z_1
  float mt, lz_teacher;         // teacher logits: N, log Z_t
  float p_const;                // top-k teacher: p of every non-kept class
  float mass;                   // teacher probabilities: sum p (q is scaled by it)
  float c_kl, c_ce;             // g a T / B and g (1 - a) / B
};

enum TeacherKind : int { kBwdLogits = 0, kBwdProbs = 1, kBwdConst = 2, kBwdNone = 3 };

// g_j = c_kl (q_j - p_j) + c_ce softmax(s)_j for j in [0, n); the label's
// -c_ce is added by the caller.
template <int kTeacher, int kMode>
REUSE_KD_INLINE void grad_block_impl(const float* s, const float* t, int64_t n, const BwdRow& r, float* g) {
  for (int64_t j = 0; j < n; j += kLanes) {
    for (int64_t k = 0; k < kLanes; ++k) {
      const float d = s[j + k] - r.ms;
      float out = 0.0f;
      float q = 0.0f;
      if constexpr ((kMode & kNeedT) != 0) {
        q = simd::exp_f(d * r.inv_t - r.lz_t);
        float p;
        float q_kl = q;
        if constexpr (kTeacher == kBwdLogits) {
          p = simd::exp_f((t[j + k] - r.mt) * r.inv_t - r.lz_teacher);
        } else if constexpr (kTeacher == kBwdProbs) {
          // d/ds of sum p log p - sum p log q is (q sum p - p) / T: the
          // loss as computed, also for rows whose sum is not exactly 1.
          q_kl = q * r.mass;
          p = t[j + k];
        } else {
          p = r.p_const;
        }
        out = r.c_kl * (q_kl - p);
      }
      if constexpr ((kMode & kNeed1) != 0) {
        const float sm = (kMode & kSameT1) != 0 ? q : simd::exp_f(d - r.lz_1);
        out += r.c_ce * sm;
      }
      g[j + k] = out;
    }
  }
}

#define REUSE_KD_GRAD_CASES(teacher)                                                           \
  case (teacher) * 8 + (kNeedT | kNeed1):                                                      \
    return grad_block_impl<teacher, kNeedT | kNeed1>(s, t, n, r, g);                            \
  case (teacher) * 8 + (kNeedT | kNeed1 | kSameT1):                                            \
    return grad_block_impl<teacher, kNeedT | kNeed1 | kSameT1>(s, t, n, r, g);                  \
  case (teacher) * 8 + kNeedT:                                                                 \
    return grad_block_impl<teacher, kNeedT>(s, t, n, r, g);

REUSE_KD_CPU_CLONES void grad_block(
    const float* s, const float* t, int64_t n, const BwdRow& r, int teacher, int mode, float* g) {
  switch (teacher * 8 + (mode & ~kNeedSum)) {
    REUSE_KD_GRAD_CASES(kBwdLogits)
    REUSE_KD_GRAD_CASES(kBwdProbs)
    REUSE_KD_GRAD_CASES(kBwdConst)
    case kBwdNone * 8 + kNeed1:
      return grad_block_impl<kBwdNone, kNeed1>(s, t, n, r, g);
    default:
      TORCH_CHECK(false, "reuse::kd_loss: internal error, gradient mode ", teacher, "/", mode);
  }
}
#undef REUSE_KD_GRAD_CASES

// ----------------------------------------------------------------------------
// Narrow rows (C <= kSmallC): kGroup rows at a time, transposed into a tile
// [column][row] so that the vector lanes run over rows. A row of 10 logits
// would otherwise fill 16 lanes and pay a horizontal reduction per sum.

constexpr int64_t kGroup = 8;
constexpr int64_t kSmallC = 16;

struct SmallTile {
  alignas(64) float s[kSmallC * kGroup];
  alignas(64) float t[kSmallC * kGroup];
  alignas(64) float g[kSmallC * kGroup];
};

// Outputs of small_sums, each [kGroup]: max s, sum exp((s - M) / T),
// sum exp(s - M), max t, sum e, sum e ((t - N) - (s - M)), sum p, sum p (s - M),
// sum p log p, and the range flags (kRange* bits, as floats).
enum SmallOut : int {
  kOutMs, kOutZt, kOutZ1, kOutMt, kOutZteacher, kOutW, kOutMass, kOutX, kOutH, kOutFlags, kSmallOuts
};

template <int kMode, int kTeacher>
REUSE_KD_INLINE void small_sums_impl(const float* s, const float* t, int64_t C, float inv_t, float* out) {
  float ms[kGroup];
  float mt[kGroup];
  float tmin[kGroup];
  float zs[kGroup] = {};
  float zc[kGroup] = {};
  for (int64_t r = 0; r < kGroup; ++r) {
    ms[r] = -kInfF;
    mt[r] = -kInfF;
    tmin[r] = kInfF;
  }
  for (int64_t j = 0; j < C; ++j) {
    for (int64_t r = 0; r < kGroup; ++r) {
      const float v = s[j * kGroup + r];
      ms[r] = std::max(ms[r], v);
      zs[r] += v * 0.0f;
      if constexpr (kTeacher != kBlockNoTeacher) {
        const float u = t[j * kGroup + r];
        mt[r] = std::max(mt[r], u);
        tmin[r] = std::min(tmin[r], u);
        zc[r] += u * 0.0f;
      }
    }
  }
  float a_t[kGroup] = {};
  float a_1[kGroup] = {};
  float a_z[kGroup] = {};
  float a_w[kGroup] = {};
  float a_h[kGroup] = {};
  for (int64_t j = 0; j < C; ++j) {
    for (int64_t r = 0; r < kGroup; ++r) {
      const float d = s[j * kGroup + r] - ms[r];
      float e_t = 0.0f;
      if constexpr ((kMode & kNeedT) != 0) {
        e_t = simd::exp_f(d * inv_t);
        a_t[r] += e_t;
      }
      if constexpr ((kMode & kNeed1) != 0) {
        a_1[r] += (kMode & kSameT1) != 0 ? e_t : simd::exp_f(d);
      }
      if constexpr (kTeacher == kBlockLogits) {
        const float dt = t[j * kGroup + r] - mt[r];
        const float e = simd::exp_f(dt * inv_t);
        a_z[r] += e;
        a_w[r] += e * (dt - d);
      } else if constexpr (kTeacher == kBlockProbs) {
        const float p = t[j * kGroup + r];
        a_z[r] += p;
        a_w[r] += p * d;
        a_h[r] += simd::xlogx_f(p);
      }
    }
  }
  for (int64_t r = 0; r < kGroup; ++r) {
    int flags = zs[r] == 0.0f ? 0 : kRangeStudentBad;
    if constexpr (kTeacher != kBlockNoTeacher) {
      flags |= zc[r] == 0.0f ? 0 : kRangeTeacherBad;
      flags |= tmin[r] < 0.0f ? kRangeTeacherNegative : 0;
    }
    out[kOutMs * kGroup + r] = ms[r];
    out[kOutZt * kGroup + r] = a_t[r];
    out[kOutZ1 * kGroup + r] = a_1[r];
    out[kOutMt * kGroup + r] = mt[r];
    out[kOutZteacher * kGroup + r] = kTeacher == kBlockLogits ? a_z[r] : 0.0f;
    out[kOutW * kGroup + r] = kTeacher == kBlockLogits ? a_w[r] : 0.0f;
    out[kOutMass * kGroup + r] = kTeacher == kBlockProbs ? a_z[r] : 0.0f;
    out[kOutX * kGroup + r] = kTeacher == kBlockProbs ? a_w[r] : 0.0f;
    out[kOutH * kGroup + r] = a_h[r];
    out[kOutFlags * kGroup + r] = static_cast<float>(flags);
  }
}

#define REUSE_KD_SMALL_CASE(teacher, mode) \
  case (teacher) * 16 + (mode):            \
    return small_sums_impl<mode, teacher>(s, t, C, inv_t, out);

// Forward sums of kGroup rows of C <= kSmallC columns, tiles [C][kGroup].
REUSE_KD_CPU_CLONES void small_sums(
    const float* s, const float* t, int64_t C, float inv_t, int teacher, int mode, float* out) {
  switch (teacher * 16 + (mode & ~kNeedSum)) {
    REUSE_KD_SMALL_CASE(kBlockNoTeacher, kNeed1)
    REUSE_KD_SMALL_CASE(kBlockLogits, kNeedT)
    REUSE_KD_SMALL_CASE(kBlockLogits, kNeedT | kNeed1)
    REUSE_KD_SMALL_CASE(kBlockLogits, kNeedT | kNeed1 | kSameT1)
    REUSE_KD_SMALL_CASE(kBlockProbs, kNeedT)
    REUSE_KD_SMALL_CASE(kBlockProbs, kNeedT | kNeed1)
    REUSE_KD_SMALL_CASE(kBlockProbs, kNeedT | kNeed1 | kSameT1)
    default:
      TORCH_CHECK(false, "reuse::kd_loss: internal error, small mode ", teacher, "/", mode);
  }
}
#undef REUSE_KD_SMALL_CASE

// Per-row constants of the small backward, each [kGroup].
struct SmallBwd {
  alignas(32) float ms[kGroup];
  alignas(32) float lz_t[kGroup];
  alignas(32) float lz_1[kGroup];
  alignas(32) float mt[kGroup];
  alignas(32) float lz_teacher[kGroup];  // teacher logits
  alignas(32) float mass[kGroup];        // teacher probabilities
  float inv_t, c_kl, c_ce;
};

template <int kMode, int kTeacher>
REUSE_KD_INLINE void small_grad_impl(const float* s, const float* t, int64_t C, const SmallBwd& b, float* g) {
  for (int64_t j = 0; j < C; ++j) {
    for (int64_t r = 0; r < kGroup; ++r) {
      const float d = s[j * kGroup + r] - b.ms[r];
      float out = 0.0f;
      float q = 0.0f;
      if constexpr ((kMode & kNeedT) != 0) {
        q = simd::exp_f(d * b.inv_t - b.lz_t[r]);
        float p;
        float q_kl = q;
        if constexpr (kTeacher == kBlockLogits) {
          p = simd::exp_f((t[j * kGroup + r] - b.mt[r]) * b.inv_t - b.lz_teacher[r]);
        } else {
          q_kl = q * b.mass[r];
          p = t[j * kGroup + r];
        }
        out = b.c_kl * (q_kl - p);
      }
      if constexpr ((kMode & kNeed1) != 0) {
        const float sm = (kMode & kSameT1) != 0 ? q : simd::exp_f(d - b.lz_1[r]);
        out += b.c_ce * sm;
      }
      g[j * kGroup + r] = out;
    }
  }
}

#define REUSE_KD_SMALL_CASE(teacher, mode) \
  case (teacher) * 16 + (mode):            \
    return small_grad_impl<mode, teacher>(s, t, C, b, g);

// Gradient tile [C][kGroup] of kGroup rows (the labels' -c_ce excluded).
REUSE_KD_CPU_CLONES void small_grad(
    const float* s, const float* t, int64_t C, const SmallBwd& b, int teacher, int mode, float* g) {
  switch (teacher * 16 + (mode & ~kNeedSum)) {
    REUSE_KD_SMALL_CASE(kBlockNoTeacher, kNeed1)
    REUSE_KD_SMALL_CASE(kBlockLogits, kNeedT)
    REUSE_KD_SMALL_CASE(kBlockLogits, kNeedT | kNeed1)
    REUSE_KD_SMALL_CASE(kBlockLogits, kNeedT | kNeed1 | kSameT1)
    REUSE_KD_SMALL_CASE(kBlockProbs, kNeedT)
    REUSE_KD_SMALL_CASE(kBlockProbs, kNeedT | kNeed1)
    REUSE_KD_SMALL_CASE(kBlockProbs, kNeedT | kNeed1 | kSameT1)
    default:
      TORCH_CHECK(false, "reuse::kd_loss: internal error, small mode ", teacher, "/", mode);
  }
}
#undef REUSE_KD_SMALL_CASE

// Copies `rows` rows of C columns into a tile [C][kGroup] as floats; the
// missing rows of a partial group repeat the first row.
template <typename scalar_t>
void load_tile(const scalar_t* src, int64_t rows, int64_t C, float* tile) {
  for (int64_t r = 0; r < kGroup; ++r) {
    const scalar_t* row = src + (r < rows ? r : 0) * C;
    for (int64_t j = 0; j < C; ++j) {
      tile[j * kGroup + r] = static_cast<float>(row[j]);
    }
  }
}

// Conversions between stored dtypes and float columns. float16 <-> float use
// the F16C instructions where the CPU has them (x86-64-v3 includes F16C).
REUSE_KD_INLINE void half_to_float_portable(const uint16_t* src, int64_t n, float* dst) {
  for (int64_t j = 0; j < n; ++j) {
    dst[j] = simd::half_to_float(src[j]);
  }
}
REUSE_KD_INLINE void float_to_half_portable(const float* src, int64_t n, uint16_t* dst) {
  for (int64_t j = 0; j < n; ++j) {
    dst[j] = simd::float_to_half(src[j]);
  }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target("default"))) void half_to_float_n(const uint16_t* src, int64_t n, float* dst) {
  half_to_float_portable(src, n, dst);
}
__attribute__((target("default"))) void float_to_half_n(const float* src, int64_t n, uint16_t* dst) {
  float_to_half_portable(src, n, dst);
}
__attribute__((target("arch=x86-64-v3"))) void half_to_float_n(const uint16_t* src, int64_t n, float* dst) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + j));
    _mm256_storeu_ps(dst + j, _mm256_cvtph_ps(h));
  }
  half_to_float_portable(src + j, n - j, dst + j);
}
__attribute__((target("arch=x86-64-v3"))) void float_to_half_n(const float* src, int64_t n, uint16_t* dst) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + j), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j), h);
  }
  float_to_half_portable(src + j, n - j, dst + j);
}
#else
void half_to_float_n(const uint16_t* src, int64_t n, float* dst) {
  half_to_float_portable(src, n, dst);
}
void float_to_half_n(const float* src, int64_t n, uint16_t* dst) {
  float_to_half_portable(src, n, dst);
}
#endif

REUSE_KD_CPU_CLONES void bf16_to_float_n(const uint16_t* src, int64_t n, float* dst) {
  for (int64_t j = 0; j < n; ++j) {
    dst[j] = simd::bf16_to_float(src[j]);
  }
}
REUSE_KD_CPU_CLONES void double_to_float_n(const double* src, int64_t n, float* dst) {
  for (int64_t j = 0; j < n; ++j) {
    dst[j] = static_cast<float>(src[j]);
  }
}
REUSE_KD_CPU_CLONES void float_to_bf16_n(const float* src, int64_t n, uint16_t* dst) {
  for (int64_t j = 0; j < n; ++j) {
    dst[j] = simd::float_to_bf16(src[j]);
  }
}

// Returns the block [0, n_valid) of `src` as floats, padded to n (a multiple
// of kLanes) with copies of its first value. Float blocks without padding are
// returned in place; everything else is converted into `buf`.
template <typename scalar_t>
const float* load_block(const scalar_t* src, int64_t n_valid, int64_t n, float* buf) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (n_valid == n) {
      return src;
    }
    std::memcpy(buf, src, static_cast<size_t>(n_valid) * sizeof(float));
  } else if constexpr (std::is_same_v<scalar_t, c10::Half>) {
    half_to_float_n(reinterpret_cast<const uint16_t*>(src), n_valid, buf);
  } else if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    bf16_to_float_n(reinterpret_cast<const uint16_t*>(src), n_valid, buf);
  } else {
    double_to_float_n(src, n_valid, buf);
  }
  for (int64_t j = n_valid; j < n; ++j) {
    buf[j] = buf[0];
  }
  return buf;
}

template <typename scalar_t>
void store_block(const float* g, int64_t n, scalar_t* dst) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    std::memcpy(dst, g, static_cast<size_t>(n) * sizeof(float));
  } else if constexpr (std::is_same_v<scalar_t, c10::Half>) {
    float_to_half_n(g, n, reinterpret_cast<uint16_t*>(dst));
  } else if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    float_to_bf16_n(g, n, reinterpret_cast<uint16_t*>(dst));
  } else {
    for (int64_t j = 0; j < n; ++j) {
      dst[j] = static_cast<scalar_t>(g[j]);
    }
  }
}

// ----------------------------------------------------------------------------
// Row-level logic shared by the float and double paths.

struct Params {
  int64_t B;
  int64_t C;
  double T;
  double alpha;
  bool need_kl;  // alpha > 0: the teacher is read
  bool need_ce;  // alpha < 1: the targets are read
  int student_mode;
};

Params make_params(int64_t B, int64_t C, double T, double alpha, bool topk) {
  Params p{B, C, T, alpha, alpha > 0.0, alpha < 1.0, 0};
  if (p.need_kl) {
    p.student_mode |= kNeedT;
    if (topk) {
      p.student_mode |= kNeedSum;
    }
  }
  if (p.need_ce) {
    p.student_mode |= kNeed1;
    if (p.need_kl && T == 1.0) {
      p.student_mode |= kSameT1;
    }
  }
  return p;
}

// Sums of one row of the forward, relative to the row maxima ms (student)
// and mt (teacher logits).
struct RowSums {
  double ms = -kInfD, z_t = 0, z_1 = 0, sum_d = 0;    // student
  double mt = -kInfD, z_teacher = 0, w = 0;           // teacher logits
  double mass = 0, x = 0, h = 0;                      // teacher probabilities
  int32_t flags = 0;
};

// The top-k teacher of one row, from its values, indices and logsumexp.
struct TopkRow {
  double mt, lz_teacher, log_p_rest, p_rest;
  double h, x_kept, mass;  // sum p log p, sum_kept (p_j - p_r)(s_idx - M), sum p
};

template <typename s_t>
TopkRow topk_teacher_row(
    const s_t* s, const double* v, const int64_t* idx, int64_t k, double lse, double ms,
    const Params& prm, int32_t* flags) {
  TopkRow r{};
  const int64_t C = prm.C;
  double vmax = -kInfD;
  double kept = 0.0;
  bool finite = std::isfinite(lse);
  for (int64_t j = 0; j < k; ++j) {
    finite = finite && std::isfinite(v[j]);
    vmax = std::max(vmax, v[j]);
    kept += std::exp(v[j] - lse);
    if (idx[j] < 0 || idx[j] >= C) {
      *flags |= kFlagIndexRange;
    }
  }
  if (!finite) {
    *flags |= kFlagTeacherNonFinite;
  }
  if (kept > 1.0 + kMassTolerance) {
    *flags |= kFlagTeacherMass;
  }
  if (*flags != 0) {
    return r;
  }
  const double rest = 1.0 - kept;
  const int64_t n_rest = C - k;
  const bool has_rest = n_rest > 0 && rest > 0.0;
  const double r_logit = has_rest ? lse + std::log(rest / static_cast<double>(n_rest)) : -kInfD;
  const double mt = std::max(vmax, r_logit);
  const double inv_t = 1.0 / prm.T;
  double z = has_rest ? static_cast<double>(n_rest) * std::exp((r_logit - mt) * inv_t) : 0.0;
  for (int64_t j = 0; j < k; ++j) {
    z += std::exp((v[j] - mt) * inv_t);
  }
  const double lz = std::log(z);
  r.mt = mt;
  r.lz_teacher = lz;
  r.log_p_rest = has_rest ? (r_logit - mt) * inv_t - lz : -kInfD;
  r.p_rest = has_rest ? std::exp(r.log_p_rest) : 0.0;
  r.mass = static_cast<double>(n_rest) * r.p_rest;
  r.h = has_rest ? r.mass * r.log_p_rest : 0.0;
  for (int64_t j = 0; j < k; ++j) {
    const double log_p = (v[j] - mt) * inv_t - lz;
    const double p = std::exp(log_p);
    r.mass += p;
    r.h += p > 0.0 ? p * log_p : 0.0;
    r.x_kept += (p - r.p_rest) * (static_cast<double>(s[idx[j]]) - ms);
  }
  return r;
}

// Finishes one row: its loss, statistics and flags.
template <typename s_t, typename acc_t>
double finish_row(
    const RowSums& rs, const TopkRow* topk, const s_t* s, int64_t y, const Params& prm, bool probs,
    acc_t* stats, int64_t n_stats) {
  const double lz_t = std::log(rs.z_t);
  const double lz_1 = std::log(rs.z_1);
  double loss = 0.0;
  double mt = 0.0;
  double lz_teacher = 0.0;
  if (prm.need_kl) {
    double kl;
    if (topk != nullptr) {
      const double x = topk->p_rest * rs.sum_d + topk->x_kept;
      kl = topk->h - x / prm.T + topk->mass * lz_t;
      mt = topk->mt;
      lz_teacher = topk->lz_teacher;
    } else if (probs) {
      kl = rs.h - rs.x / prm.T + rs.mass * lz_t;
    } else {
      lz_teacher = std::log(rs.z_teacher);
      mt = rs.mt;
      kl = rs.w / (prm.T * rs.z_teacher) + lz_t - lz_teacher;
    }
    loss += prm.alpha * prm.T * prm.T * kl;
  }
  if (prm.need_ce) {
    loss += (1.0 - prm.alpha) * (lz_1 - (static_cast<double>(s[y]) - rs.ms));
  }
  stats[kStatMaxS] = static_cast<acc_t>(rs.ms);
  stats[kStatLogZsT] = static_cast<acc_t>(prm.need_kl ? lz_t : 0.0);
  stats[kStatLogZs1] = static_cast<acc_t>(prm.need_ce ? lz_1 : 0.0);
  stats[kStatMaxT] = static_cast<acc_t>(probs ? rs.mass : mt);  // kStatMass for probabilities
  stats[kStatLogZt] = static_cast<acc_t>(lz_teacher);
  if (n_stats > kStatLogPRest) {
    stats[kStatLogPRest] = static_cast<acc_t>(topk != nullptr ? topk->log_p_rest : 0.0);
  }
  return loss;
}

// Forward state of one thread: block buffers and the top-k row buffers.
struct FwdScratch {
  alignas(64) float s_buf[kBlock];
  alignas(64) float t_buf[kBlock];
  SmallTile tile;
};

// Student (and dense teacher) pass over one row in the float path.
// t = nullptr for the top-k teacher and when alpha == 0.
template <typename s_t, typename t_t>
RowSums row_sums_float(
    const s_t* s, const t_t* t, bool probs, const Params& prm, FwdScratch& buf) {
  RowSums rs;
  const int64_t C = prm.C;
  const double inv_t_d = 1.0 / prm.T;
  const int teacher = t == nullptr ? kBlockNoTeacher : probs ? kBlockProbs : kBlockLogits;
  BlockConsts c{-kInfF, -kInfF, static_cast<float>(inv_t_d)};
  int64_t seen = 0;
  for (int64_t b0 = 0; b0 < C; b0 += kBlock) {
    const int64_t n_valid = std::min(kBlock, C - b0);
    const int64_t n = (n_valid + kLanes - 1) / kLanes * kLanes;
    const float* sb = load_block(s + b0, n_valid, n, buf.s_buf);
    const float* tb = t != nullptr ? load_block(t + b0, n_valid, n, buf.t_buf) : nullptr;
    float range[3];
    const int bad = block_range(sb, tb, n, range);
    if (bad != 0) {
      rs.flags |= (bad & kRangeStudentBad)     ? kFlagStudentNonFinite
                  : (bad & kRangeTeacherBad)   ? kFlagTeacherNonFinite
                  : probs                      ? kFlagTeacherNegative
                                               : 0;
      if (rs.flags != 0) {
        return rs;
      }
    }
    // Move the sums to the new maxima.
    if (range[0] > c.ms) {
      if (seen > 0) {
        const double delta = static_cast<double>(range[0]) - c.ms;
        rs.z_t *= std::exp(-delta * inv_t_d);
        rs.z_1 *= std::exp(-delta);
        rs.sum_d -= static_cast<double>(seen) * delta;
        rs.w += rs.z_teacher * delta;  // every (s - M) shrinks by delta
        rs.x -= rs.mass * delta;
      }
      c.ms = range[0];
    }
    if (teacher == kBlockLogits && range[1] > c.mt) {
      if (seen > 0) {
        const double delta = static_cast<double>(range[1]) - c.mt;
        const double scale = std::exp(-delta * inv_t_d);
        rs.w = scale * (rs.w - rs.z_teacher * delta);
        rs.z_teacher *= scale;
      }
      c.mt = range[1];
    }
    float out[6];
    block_sums(sb, tb, n, n_valid, c, teacher, prm.student_mode, out);
    rs.z_t += out[0];
    rs.z_1 += out[1];
    rs.sum_d += out[2];
    if (teacher == kBlockLogits) {
      rs.z_teacher += out[3];
      rs.w += out[4];
    } else if (teacher == kBlockProbs) {
      rs.mass += out[3];
      rs.x += out[4];
      rs.h += out[5];
    }
    seen += n_valid;
  }
  rs.ms = c.ms;
  rs.mt = c.mt;
  return rs;
}

// The same sums in double precision, two plain passes (float64 students).
template <typename t_t>
RowSums row_sums_double(const double* s, const t_t* t, bool probs, const Params& prm) {
  RowSums rs;
  const int64_t C = prm.C;
  const double inv_t = 1.0 / prm.T;
  double ms = -kInfD;
  double mt = -kInfD;
  bool s_finite = true;
  bool t_finite = true;
  bool t_negative = false;
  for (int64_t j = 0; j < C; ++j) {
    s_finite = s_finite && std::isfinite(s[j]);
    ms = std::max(ms, s[j]);
    if (t != nullptr) {
      const double tj = static_cast<double>(t[j]);
      t_finite = t_finite && std::isfinite(tj);
      t_negative = t_negative || tj < 0.0;
      mt = std::max(mt, tj);
    }
  }
  if (!s_finite) {
    rs.flags |= kFlagStudentNonFinite;
    return rs;
  }
  if (!t_finite) {
    rs.flags |= kFlagTeacherNonFinite;
    return rs;
  }
  if (probs && t_negative) {
    rs.flags |= kFlagTeacherNegative;
    return rs;
  }
  for (int64_t j = 0; j < C; ++j) {
    const double d = s[j] - ms;
    if (prm.need_kl) {
      rs.z_t += std::exp(d * inv_t);
      rs.sum_d += d;
    }
    if (prm.need_ce) {
      rs.z_1 += std::exp(d);
    }
    if (t != nullptr) {
      const double tj = static_cast<double>(t[j]);
      if (probs) {
        rs.mass += tj;
        rs.x += tj * d;
        rs.h += tj > 0.0 ? tj * std::log(tj) : 0.0;
      } else {
        const double e = std::exp((tj - mt) * inv_t);
        rs.z_teacher += e;
        rs.w += e * ((tj - mt) - d);
      }
    }
  }
  rs.ms = ms;
  rs.mt = mt;
  return rs;
}

// Forward over all rows. For the top-k teacher t is nullptr and values /
// indices / lse describe it (values in double, indices in int64).
// The top-k teacher in the layout the kernels read: values as double,
// indices as int64, lse as double, contiguous [B, k] / [B]. Null pointers
// when alpha == 0 (the teacher is not read).
struct TopkView {
  const double* values;
  const int64_t* indices;
  const double* lse;
  int64_t k;
};

// Forward over all rows: a dense teacher t (nullptr when alpha == 0 or for
// the top-k teacher) or the top-k teacher `topk` (nullptr for dense ones).
template <typename s_t, typename t_t, typename acc_t>
void forward_rows(
    const at::Tensor& s_tensor, const t_t* t, bool probs, const TopkView* topk,
    const at::Tensor& y_tensor, const Params& prm, at::Tensor& row_stats,
    std::vector<double>& row_loss, std::vector<int32_t>& row_flags) {
  const int64_t C = prm.C;
  const s_t* s = s_tensor.const_data_ptr<s_t>();
  const bool y_long = y_tensor.scalar_type() == c10::kLong;
  const int64_t* y64 = y_long ? y_tensor.const_data_ptr<int64_t>() : nullptr;
  const int32_t* y32 = y_long ? nullptr : y_tensor.const_data_ptr<int32_t>();
  acc_t* stats = row_stats.mutable_data_ptr<acc_t>();
  const int64_t n_stats = row_stats.size(1);
  const int64_t grain = std::max<int64_t>(1, kParallelGrain / C);
  // Narrow rows in the float path go through the transposed small kernels.
  const bool small = !std::is_same_v<s_t, double> && topk == nullptr && C <= kSmallC;
  const int teacher = !prm.need_kl ? kBlockNoTeacher : probs ? kBlockProbs : kBlockLogits;
  at::parallel_for(0, prm.B, grain, [&](int64_t begin, int64_t end) {
    FwdScratch buf;
    alignas(64) float small_out[kSmallOuts * kGroup];
    for (int64_t i = begin; i < end; ++i) {
      const s_t* si = s + i * C;
      const t_t* ti = (prm.need_kl && t != nullptr) ? t + i * C : nullptr;
      if (small && (i - begin) % kGroup == 0) {
        const int64_t rows = std::min(kGroup, end - i);
        load_tile(si, rows, C, buf.tile.s);
        if (ti != nullptr) {
          load_tile(ti, rows, C, buf.tile.t);
        }
        small_sums(buf.tile.s, buf.tile.t, C, static_cast<float>(1.0 / prm.T), teacher, prm.student_mode,
                   small_out);
      }
      int64_t yi = 0;
      int32_t flags = 0;
      if (prm.need_ce) {
        yi = y_long ? y64[i] : static_cast<int64_t>(y32[i]);
        if (yi < 0 || yi >= C) {
          flags |= kFlagTargetRange;
        }
      }
      // The row is read even with a bad label, so that every problem of
      // the row is flagged and reported in the order of raise_row_flags.
      RowSums rs;
      if constexpr (std::is_same_v<s_t, double>) {
        rs = row_sums_double(si, ti, probs, prm);
      } else if (small) {
        const int64_t r = (i - begin) % kGroup;
        const int bad = static_cast<int>(small_out[kOutFlags * kGroup + r]);
        rs.flags = (bad & kRangeStudentBad)                             ? kFlagStudentNonFinite
                   : (bad & kRangeTeacherBad) && prm.need_kl            ? kFlagTeacherNonFinite
                   : (bad & kRangeTeacherNegative) && probs && prm.need_kl ? kFlagTeacherNegative
                                                                          : 0;
        rs.ms = small_out[kOutMs * kGroup + r];
        rs.z_t = small_out[kOutZt * kGroup + r];
        rs.z_1 = small_out[kOutZ1 * kGroup + r];
        rs.mt = small_out[kOutMt * kGroup + r];
        rs.z_teacher = small_out[kOutZteacher * kGroup + r];
        rs.w = small_out[kOutW * kGroup + r];
        rs.mass = small_out[kOutMass * kGroup + r];
        rs.x = small_out[kOutX * kGroup + r];
        rs.h = small_out[kOutH * kGroup + r];
      } else {
        rs = row_sums_float(si, ti, probs, prm, buf);
      }
      flags |= rs.flags;
      if (flags == 0 && probs && prm.need_kl && std::abs(rs.mass - 1.0) > kMassTolerance) {
        flags |= kFlagTeacherMass;
      }
      TopkRow tk{};
      if (flags == 0 && topk != nullptr && prm.need_kl) {
        const int64_t k = topk->k;
        tk = topk_teacher_row(
            si, topk->values + i * k, topk->indices + i * k, k, topk->lse[i], rs.ms, prm, &flags);
      }
      row_flags[i] = flags;
      if (flags != 0) {
        row_loss[i] = std::numeric_limits<double>::quiet_NaN();
        continue;
      }
      row_loss[i] = finish_row<s_t, acc_t>(
          rs, topk != nullptr ? &tk : nullptr, si, yi, prm, probs, stats + i * n_stats, n_stats);
    }
  });
}

// Mean of the row losses (row order, so independent of threads) and the
// error for the first flagged row.
at::Tensor reduce_rows(
    const std::vector<double>& row_loss, const std::vector<int32_t>& row_flags, int64_t C,
    const at::TensorOptions& options) {
  const int64_t B = static_cast<int64_t>(row_loss.size());
  int32_t any = 0;
  double sum = 0.0;
  for (int64_t i = 0; i < B; ++i) {
    any |= row_flags[i];
    sum += row_loss[i];
  }
  raise_row_flags(row_flags.data(), B, any, C);
  const double mean = B > 0 ? sum / static_cast<double>(B) : std::numeric_limits<double>::quiet_NaN();
  return at::full({}, mean, options);
}

// ----------------------------------------------------------------------------
// Backward over all rows.

template <typename s_t, typename t_t, typename acc_t>
void backward_rows(
    const at::Tensor& s_tensor, const t_t* t, bool probs, const TopkView* topk_view,
    const at::Tensor& y_tensor, const at::Tensor& row_stats, double g, const Params& prm,
    at::Tensor& grad) {
  const int64_t C = prm.C;
  const s_t* s = s_tensor.const_data_ptr<s_t>();
  s_t* gout = grad.mutable_data_ptr<s_t>();
  const bool y_long = y_tensor.scalar_type() == c10::kLong;
  const int64_t* y64 = y_long ? y_tensor.const_data_ptr<int64_t>() : nullptr;
  const int32_t* y32 = y_long ? nullptr : y_tensor.const_data_ptr<int32_t>();
  const acc_t* stats = row_stats.const_data_ptr<acc_t>();
  const int64_t n_stats = row_stats.size(1);
  const bool topk = topk_view != nullptr;
  const int64_t k = topk && prm.need_kl ? topk_view->k : 0;
  const double* topk_values = topk && prm.need_kl ? topk_view->values : nullptr;
  const int64_t* topk_indices = topk && prm.need_kl ? topk_view->indices : nullptr;
  const double c_kl = prm.need_kl ? g * prm.alpha * prm.T / static_cast<double>(prm.B) : 0.0;
  const double c_ce = prm.need_ce ? g * (1.0 - prm.alpha) / static_cast<double>(prm.B) : 0.0;
  const double inv_t = 1.0 / prm.T;
  const int teacher = !prm.need_kl ? kBwdNone : topk ? kBwdConst : probs ? kBwdProbs : kBwdLogits;
  const int mode = prm.student_mode & ~kNeedSum;
  const int64_t grain = std::max<int64_t>(1, kParallelGrain / C);

  const bool small = !std::is_same_v<s_t, double> && !topk && C <= kSmallC;
  const int small_teacher = !prm.need_kl ? kBlockNoTeacher : probs ? kBlockProbs : kBlockLogits;

  at::parallel_for(0, prm.B, grain, [&](int64_t begin, int64_t end) {
    FwdScratch buf;
    alignas(64) float g_buf[kBlock];
    std::vector<double> p_kept(static_cast<size_t>(topk ? k : 0));
    if (small) {
      // Narrow rows: kGroup rows at a time through the transposed tile.
      SmallBwd b;
      b.inv_t = static_cast<float>(inv_t);
      b.c_kl = static_cast<float>(c_kl);
      b.c_ce = static_cast<float>(c_ce);
      for (int64_t i0 = begin; i0 < end; i0 += kGroup) {
        const int64_t rows = std::min(kGroup, end - i0);
        for (int64_t r = 0; r < kGroup; ++r) {
          const acc_t* st = stats + (i0 + (r < rows ? r : 0)) * n_stats;
          b.ms[r] = static_cast<float>(st[kStatMaxS]);
          b.lz_t[r] = static_cast<float>(st[kStatLogZsT]);
          b.lz_1[r] = static_cast<float>(st[kStatLogZs1]);
          b.mt[r] = static_cast<float>(st[kStatMaxT]);
          b.mass[r] = static_cast<float>(st[kStatMass]);
          b.lz_teacher[r] = static_cast<float>(st[kStatLogZt]);
        }
        load_tile(s + i0 * C, rows, C, buf.tile.s);
        if (prm.need_kl) {
          load_tile(t + i0 * C, rows, C, buf.tile.t);
        }
        small_grad(buf.tile.s, buf.tile.t, C, b, small_teacher, mode, buf.tile.g);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t i = i0 + r;
          if (prm.need_ce) {
            const int64_t yi = y_long ? y64[i] : static_cast<int64_t>(y32[i]);
            if (yi >= 0 && yi < C) {
              buf.tile.g[yi * kGroup + r] -= b.c_ce;
            }
          }
          s_t* gi = gout + i * C;
          for (int64_t j = 0; j < C; ++j) {
            gi[j] = static_cast<s_t>(buf.tile.g[j * kGroup + r]);
          }
        }
      }
      return;
    }
    for (int64_t i = begin; i < end; ++i) {
      const s_t* si = s + i * C;
      const t_t* ti = (prm.need_kl && t != nullptr) ? t + i * C : nullptr;
      s_t* gi = gout + i * C;
      const acc_t* st = stats + i * n_stats;
      int64_t yi = -1;
      if (prm.need_ce) {
        yi = y_long ? y64[i] : static_cast<int64_t>(y32[i]);
      }
      const double ms = static_cast<double>(st[kStatMaxS]);
      const double lz_t = static_cast<double>(st[kStatLogZsT]);
      const double lz_1 = static_cast<double>(st[kStatLogZs1]);
      const double mt = static_cast<double>(st[kStatMaxT]);
      const double lz_teacher = static_cast<double>(st[kStatLogZt]);
      double p_rest = 0.0;
      const double* vi = topk_values != nullptr ? topk_values + i * k : nullptr;
      const int64_t* ii = topk_indices != nullptr ? topk_indices + i * k : nullptr;
      if (topk && prm.need_kl) {
        p_rest = std::exp(static_cast<double>(st[kStatLogPRest]));
        for (int64_t j = 0; j < k; ++j) {
          p_kept[j] = std::exp((vi[j] - mt) * inv_t - lz_teacher);
        }
      }

      if constexpr (std::is_same_v<s_t, double>) {
        for (int64_t j = 0; j < C; ++j) {
          const double d = si[j] - ms;
          double out = 0.0;
          if (prm.need_kl) {
            const double q = std::exp(d * inv_t - lz_t);
            double p;
            double qq = q;
            if (topk) {
              p = p_rest;
            } else if (probs) {
              qq = q * mt;  // kStatMass: sum p
              p = static_cast<double>(ti[j]);
            } else {
              p = std::exp((static_cast<double>(ti[j]) - mt) * inv_t - lz_teacher);
            }
            out += c_kl * (qq - p);
          }
          if (prm.need_ce) {
            out += c_ce * std::exp(d - lz_1);
          }
          gi[j] = out;
        }
        if (yi >= 0 && yi < C) {
          gi[yi] -= c_ce;
        }
        if (topk && prm.need_kl) {
          for (int64_t j = 0; j < k; ++j) {
            if (ii[j] >= 0 && ii[j] < C) {
              gi[ii[j]] += c_kl * (p_rest - p_kept[j]);
            }
          }
        }
      } else {
        BwdRow r;
        r.ms = static_cast<float>(ms);
        r.inv_t = static_cast<float>(inv_t);
        r.lz_t = static_cast<float>(lz_t);
        r.lz_1 = static_cast<float>(lz_1);
        r.mt = static_cast<float>(mt);
        r.lz_teacher = static_cast<float>(lz_teacher);
        r.p_const = static_cast<float>(p_rest);
        r.mass = static_cast<float>(mt);  // kStatMass for probabilities
        r.c_kl = static_cast<float>(c_kl);
        r.c_ce = static_cast<float>(c_ce);
        for (int64_t b0 = 0; b0 < C; b0 += kBlock) {
          const int64_t n_valid = std::min(kBlock, C - b0);
          const int64_t n = (n_valid + kLanes - 1) / kLanes * kLanes;
          const float* sb = load_block(si + b0, n_valid, n, buf.s_buf);
          const float* tb = ti != nullptr ? load_block(ti + b0, n_valid, n, buf.t_buf) : nullptr;
          // Float rows of whole blocks are written in place; the rest goes
          // through g_buf and is converted.
          float* gb = g_buf;
          if constexpr (std::is_same_v<s_t, float>) {
            if (n_valid == n) {
              gb = gi + b0;
            }
          }
          grad_block(sb, tb, n, r, teacher, mode, gb);
          if (yi >= b0 && yi < b0 + n_valid) {
            gb[yi - b0] -= r.c_ce;
          }
          if (topk && prm.need_kl) {
            for (int64_t j = 0; j < k; ++j) {
              const int64_t c = ii[j];
              if (c >= b0 && c < b0 + n_valid) {
                gb[c - b0] += static_cast<float>(c_kl * (p_rest - p_kept[j]));
              }
            }
          }
          if (gb == g_buf) {
            store_block(g_buf, n_valid, gi + b0);
          }
        }
      }
    }
  });
}

// The gradient: a fresh [B, C] tensor. A large one is written once, in order,
// right away, so on Linux it is advised to use transparent huge pages: its
// first-touch page faults otherwise cost as much as computing it. (This only
// applies to the untouched pages of this new buffer; see docs/ops.md.)
at::Tensor new_gradient(int64_t B, int64_t C, const at::TensorOptions& options) {
  at::Tensor grad = at::empty({B, C}, options);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(grad.data_ptr());
  const uintptr_t end = begin + static_cast<uintptr_t>(grad.nbytes());
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t last = end & ~(kHuge - 1);
  if (grad.nbytes() >= (size_t{8} << 20) && last > first) {
    // Advice only: failure (e.g. THP disabled) changes nothing.
    (void)madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
  }
#endif
  return grad;
}

// ----------------------------------------------------------------------------
// Operators.

std::tuple<at::Tensor, at::Tensor> kd_loss_fwd_cpu(
    const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& targets,
    double temperature, double alpha, int64_t kind) {
  check_scalars(temperature, alpha);
  check_student_targets(student, targets);
  check_dense_teacher(student, teacher, kind);
  const at::Tensor s = student.contiguous();
  const at::Tensor y = targets.contiguous();
  const bool probs = kind == kTeacherProbs;
  const int64_t B = s.size(0);
  const int64_t C = s.size(1);
  const Params prm = make_params(B, C, temperature, alpha, false);
  // The teacher is not read when alpha == 0; skip its copy too.
  const at::Tensor t = prm.need_kl ? teacher.contiguous() : teacher;
  const auto acc = acc_dtype(s.scalar_type());
  at::Tensor row_stats = at::zeros({B, kDenseStats}, s.options().dtype(acc));
  std::vector<double> row_loss(static_cast<size_t>(B));
  std::vector<int32_t> row_flags(static_cast<size_t>(B));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "reuse::kd_loss_fwd", [&] {
    using s_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "reuse::kd_loss_fwd teacher", [&] {
      using t_t = scalar_t;
      using acc_t = std::conditional_t<std::is_same_v<s_t, double>, double, float>;
      const t_t* tp = prm.need_kl ? t.const_data_ptr<t_t>() : nullptr;
      forward_rows<s_t, t_t, acc_t>(s, tp, probs, nullptr, y, prm, row_stats, row_loss, row_flags);
    });
  });
  at::Tensor loss = reduce_rows(row_loss, row_flags, C, s.options().dtype(acc));
  return {loss, row_stats};
}

at::Tensor kd_loss_bwd_cpu(
    const at::Tensor& grad_loss, const at::Tensor& student, const at::Tensor& teacher,
    const at::Tensor& targets, const at::Tensor& row_stats_in, double temperature, double alpha,
    int64_t kind) {
  check_scalars(temperature, alpha);
  check_student_targets(student, targets);
  check_dense_teacher(student, teacher, kind);
  check_backward_args(grad_loss, student, row_stats_in, kDenseStats);
  const at::Tensor s = student.contiguous();
  const at::Tensor y = targets.contiguous();
  const at::Tensor row_stats = row_stats_in.contiguous();
  const int64_t B = s.size(0);
  const int64_t C = s.size(1);
  const Params prm = make_params(B, C, temperature, alpha, false);
  const at::Tensor t = prm.need_kl ? teacher.contiguous() : teacher;
  at::Tensor grad = new_gradient(B, C, s.options());
  if (B == 0) {
    return grad;
  }
  const double g = grad_loss.item<double>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "reuse::kd_loss_bwd", [&] {
    using s_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "reuse::kd_loss_bwd teacher", [&] {
      using t_t = scalar_t;
      using acc_t = std::conditional_t<std::is_same_v<s_t, double>, double, float>;
      const t_t* tp = prm.need_kl ? t.const_data_ptr<t_t>() : nullptr;
      backward_rows<s_t, t_t, acc_t>(s, tp, kind == kTeacherProbs, nullptr, y, row_stats, g, prm, grad);
    });
  });
  return grad;
}

// The top-k teacher in the layout the kernels read: values as double,
// indices as int64, contiguous. These are [B, k] with k << C, so the copies
// are small next to the logits.
struct TopkInputs {
  at::Tensor values, indices, lse;
};

TopkInputs topk_inputs(const at::Tensor& values, const at::Tensor& indices, const at::Tensor* lse) {
  TopkInputs in;
  in.values = values.to(at::kDouble).contiguous();
  in.indices = indices.to(at::kLong).contiguous();
  if (lse != nullptr) {
    in.lse = lse->to(at::kDouble).contiguous();
  }
  return in;
}

std::tuple<at::Tensor, at::Tensor> kd_loss_topk_fwd_cpu(
    const at::Tensor& student, const at::Tensor& values, const at::Tensor& indices,
    const at::Tensor& lse, const at::Tensor& targets, double temperature, double alpha) {
  check_scalars(temperature, alpha);
  check_student_targets(student, targets);
  check_topk_teacher(student, values, indices, &lse);
  const at::Tensor s = student.contiguous();
  const at::Tensor y = targets.contiguous();
  const int64_t B = s.size(0);
  const int64_t C = s.size(1);
  const int64_t k = values.size(1);
  const Params prm = make_params(B, C, temperature, alpha, true);
  const auto acc = acc_dtype(s.scalar_type());
  at::Tensor row_stats = at::zeros({B, kTopkStats}, s.options().dtype(acc));
  std::vector<double> row_loss(static_cast<size_t>(B));
  std::vector<int32_t> row_flags(static_cast<size_t>(B));
  TopkInputs in;
  if (prm.need_kl) {
    in = topk_inputs(values, indices, &lse);
  }
  TopkView view{nullptr, nullptr, nullptr, k};
  if (prm.need_kl) {
    view = {in.values.const_data_ptr<double>(), in.indices.const_data_ptr<int64_t>(),
            in.lse.const_data_ptr<double>(), k};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "reuse::kd_loss_topk_fwd", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    forward_rows<scalar_t, float, acc_t>(s, nullptr, false, &view, y, prm, row_stats, row_loss, row_flags);
  });
  at::Tensor loss = reduce_rows(row_loss, row_flags, C, s.options().dtype(acc));
  return {loss, row_stats};
}

at::Tensor kd_loss_topk_bwd_cpu(
    const at::Tensor& grad_loss, const at::Tensor& student, const at::Tensor& values,
    const at::Tensor& indices, const at::Tensor& targets, const at::Tensor& row_stats_in,
    double temperature, double alpha) {
  check_scalars(temperature, alpha);
  check_student_targets(student, targets);
  check_topk_teacher(student, values, indices, nullptr);
  check_backward_args(grad_loss, student, row_stats_in, kTopkStats);
  const at::Tensor s = student.contiguous();
  const at::Tensor y = targets.contiguous();
  const at::Tensor row_stats = row_stats_in.contiguous();
  const int64_t B = s.size(0);
  const int64_t C = s.size(1);
  const int64_t k = values.size(1);
  const Params prm = make_params(B, C, temperature, alpha, true);
  at::Tensor grad = new_gradient(B, C, s.options());
  if (B == 0) {
    return grad;
  }
  const double g = grad_loss.item<double>();
  TopkInputs in;
  if (prm.need_kl) {
    in = topk_inputs(values, indices, nullptr);
  }
  TopkView view{nullptr, nullptr, nullptr, k};
  if (prm.need_kl) {
    view = {in.values.const_data_ptr<double>(), in.indices.const_data_ptr<int64_t>(), nullptr, k};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "reuse::kd_loss_topk_bwd", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    backward_rows<scalar_t, float, acc_t>(s, nullptr, false, &view, y, row_stats, g, prm, grad);
  });
  return grad;
}

}  // namespace
}  // namespace kd

TORCH_LIBRARY_IMPL(reuse, CPU, m) {
  m.impl("kd_loss_fwd", &kd::kd_loss_fwd_cpu);
  m.impl("kd_loss_bwd", &kd::kd_loss_bwd_cpu);
  m.impl("kd_loss_topk_fwd", &kd::kd_loss_topk_fwd_cpu);
  m.impl("kd_loss_topk_bwd", &kd::kd_loss_topk_bwd_cpu);
}

}  // namespace reuse
