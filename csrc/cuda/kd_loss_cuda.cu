// CUDA kernels of the knowledge-distillation loss family:
// reuse::kd_loss_fwd, kd_loss_bwd, kd_loss_topk_fwd, kd_loss_topk_bwd.
//
// Same quantities as csrc/kd_loss_cpu.cpp (see its header comment). The
// forward gives each row to one warp (C <= kWarpMaxClasses) or one block; every
// thread reads its columns once and keeps an online state, relative to its
// running maxima M (student) and N (teacher logits):
//   z_T = sum exp((s - M) / T), z_1 = sum exp(s - M), d = sum (s - M),
//   z_t = sum e, w = sum e ((t - N) - (s - M)), e = exp((t - N) / T)   (teacher logits)
//   P = sum p, X = sum p (s - M), H = sum p log p                     (teacher probabilities)
// rescaled when a maximum grows, and merged across threads by warp shuffles
// (and shared memory across the warps of a block). The row's first thread
// writes its loss, statistics and problem flags; a second one-block kernel
// sums the row losses in a fixed order (deterministic) and ORs the flags,
// which the host reads (one small copy, so one synchronisation per forward)
// to raise on bad input. The backward is one elementwise pass per row.
// Accumulation is in float for float32/float16/bfloat16 students, double for
// float64; the top-k teacher's O(k) per-row algebra is in double.

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../kd_loss.h"

namespace reuse {
namespace kd {
namespace {

constexpr int kWarpSize = 32;
constexpr int64_t kWarpMaxClasses = 1024;
constexpr int kWarpKernelThreads = 256;  // 8 rows per block
constexpr int kBlockKernelThreads = 512;
constexpr int kReduceThreads = 1024;

// Which teacher the forward / backward kernels read.
constexpr int kKindLogits = 0;
constexpr int kKindProbs = 1;
constexpr int kKindTopk = 2;  // also used when alpha == 0 (no teacher read)

template <typename T>
__device__ __forceinline__ T dev_exp(T x);
template <>
__device__ __forceinline__ float dev_exp<float>(float x) { return expf(x); }
template <>
__device__ __forceinline__ double dev_exp<double>(double x) { return exp(x); }

template <typename T>
__device__ __forceinline__ T dev_log(T x);
template <>
__device__ __forceinline__ float dev_log<float>(float x) { return logf(x); }
template <>
__device__ __forceinline__ double dev_log<double>(double x) { return log(x); }

template <typename T>
__device__ __forceinline__ T neg_inf() { return -std::numeric_limits<T>::infinity(); }

// Online state of one thread (or a merged group) over some columns of a row.
template <typename acc_t>
struct State {
  acc_t ms, z_t, z_1, sum_d;  // student
  acc_t mt, z_teacher, w;     // teacher logits
  acc_t mass, x, h;           // teacher probabilities
  int cnt;                    // columns seen
  int bad;                    // RowFlag bits

  __device__ __forceinline__ static State empty() {
    State s;
    s.ms = neg_inf<acc_t>();
    s.mt = neg_inf<acc_t>();
    s.z_t = s.z_1 = s.sum_d = s.z_teacher = s.w = s.mass = s.x = s.h = acc_t(0);
    s.cnt = 0;
    s.bad = 0;
    return s;
  }

  // Adds column value v of the student and u of the teacher.
  template <int kKind>
  __device__ __forceinline__ void add(acc_t v, acc_t u, acc_t inv_t, bool need_kl, bool need_ce) {
    if (!isfinite(v)) {
      bad |= kFlagStudentNonFinite;
      return;
    }
    if (kKind != kKindTopk && need_kl) {
      if (!isfinite(u)) {
        bad |= kFlagTeacherNonFinite;
        return;
      }
      if (kKind == kKindProbs && u < acc_t(0)) {
        bad |= kFlagTeacherNegative;
        return;
      }
    }
    if (v > ms) {
      if (cnt > 0) {
        const acc_t delta = v - ms;
        z_t *= dev_exp(-delta * inv_t);
        z_1 *= dev_exp(-delta);
        sum_d -= static_cast<acc_t>(cnt) * delta;
        w += z_teacher * delta;
        x -= mass * delta;
      }
      ms = v;
    }
    const acc_t ds = v - ms;
    if (need_kl) {
      z_t += dev_exp(ds * inv_t);
      sum_d += ds;
    }
    if (need_ce) {
      z_1 += dev_exp(ds);
    }
    if (kKind == kKindLogits && need_kl) {
      if (u > mt) {
        if (cnt > 0) {
          const acc_t delta = u - mt;
          const acc_t scale = dev_exp(-delta * inv_t);
          w = scale * (w - z_teacher * delta);
          z_teacher *= scale;
        }
        mt = u;
      }
      const acc_t dt = u - mt;
      const acc_t e = dev_exp(dt * inv_t);
      z_teacher += e;
      w += e * (dt - ds);
    } else if (kKind == kKindProbs && need_kl) {
      mass += u;
      x += u * ds;
      h += u > acc_t(0) ? u * dev_log(u) : acc_t(0);
    }
    ++cnt;
  }

  // Merges another state of the same row into this one.
  __device__ __forceinline__ void merge(const State& o, acc_t inv_t) {
    bad |= o.bad;
    if (o.cnt == 0) {
      return;
    }
    if (cnt == 0) {
      const int b = bad;
      *this = o;
      bad = b;
      return;
    }
    const acc_t m = ms > o.ms ? ms : o.ms;
    const acc_t n = mt > o.mt ? mt : o.mt;
    const acc_t da = ms - m;  // <= 0
    const acc_t db = o.ms - m;
    z_t = z_t * dev_exp(da * inv_t) + o.z_t * dev_exp(db * inv_t);
    z_1 = z_1 * dev_exp(da) + o.z_1 * dev_exp(db);
    sum_d = (sum_d + static_cast<acc_t>(cnt) * da) + (o.sum_d + static_cast<acc_t>(o.cnt) * db);
    x = (x + mass * da) + (o.x + o.mass * db);
    mass += o.mass;
    h += o.h;
    if (n != neg_inf<acc_t>()) {
      // w relative to (m, n): sc ((w - z (m_a - m)) - z (n - n_a)) per side.
      const acc_t ta = mt - n;
      const acc_t tb = o.mt - n;
      const acc_t sa = mt == neg_inf<acc_t>() ? acc_t(0) : dev_exp(ta * inv_t);
      const acc_t sb = o.mt == neg_inf<acc_t>() ? acc_t(0) : dev_exp(tb * inv_t);
      const acc_t wa = mt == neg_inf<acc_t>() ? acc_t(0) : sa * (w - z_teacher * da + z_teacher * ta);
      const acc_t wb = o.mt == neg_inf<acc_t>() ? acc_t(0) : sb * (o.w - o.z_teacher * db + o.z_teacher * tb);
      w = wa + wb;
      z_teacher = z_teacher * sa + o.z_teacher * sb;
    }
    ms = m;
    mt = n;
    cnt += o.cnt;
  }
};

template <typename acc_t>
__device__ __forceinline__ State<acc_t> shfl_xor(const State<acc_t>& s, int offset) {
  State<acc_t> o;
  o.ms = __shfl_xor_sync(0xffffffffu, s.ms, offset);
  o.z_t = __shfl_xor_sync(0xffffffffu, s.z_t, offset);
  o.z_1 = __shfl_xor_sync(0xffffffffu, s.z_1, offset);
  o.sum_d = __shfl_xor_sync(0xffffffffu, s.sum_d, offset);
  o.mt = __shfl_xor_sync(0xffffffffu, s.mt, offset);
  o.z_teacher = __shfl_xor_sync(0xffffffffu, s.z_teacher, offset);
  o.w = __shfl_xor_sync(0xffffffffu, s.w, offset);
  o.mass = __shfl_xor_sync(0xffffffffu, s.mass, offset);
  o.x = __shfl_xor_sync(0xffffffffu, s.x, offset);
  o.h = __shfl_xor_sync(0xffffffffu, s.h, offset);
  o.cnt = __shfl_xor_sync(0xffffffffu, s.cnt, offset);
  o.bad = __shfl_xor_sync(0xffffffffu, s.bad, offset);
  return o;
}

// After this every lane holds the merge of the warp's 32 states. The xor
// butterfly merges in the same order on every lane, so all lanes agree.
template <typename acc_t>
__device__ __forceinline__ void warp_merge(State<acc_t>& s, acc_t inv_t) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    s.merge(shfl_xor(s, offset), inv_t);
  }
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  }
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    const T o = __shfl_xor_sync(0xffffffffu, v, offset);
    v = o > v ? o : v;
  }
  return v;
}

__device__ __forceinline__ int warp_or(int v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    v |= __shfl_xor_sync(0xffffffffu, v, offset);
  }
  return v;
}

// Reductions over the threads of one row: a warp (kBlock = false) or the
// whole block (kBlock = true, blockDim.x a multiple of 32, <= 1024). Every
// thread of the group gets the result. `scratch` holds 32 values.
template <bool kBlock, typename T>
__device__ __forceinline__ T group_sum(T v, T* scratch) {
  v = warp_sum(v);
  if constexpr (kBlock) {
    const int lane = threadIdx.x % kWarpSize;
    const int warp = threadIdx.x / kWarpSize;
    __syncthreads();
    if (lane == 0) {
      scratch[warp] = v;
    }
    __syncthreads();
    v = lane < static_cast<int>(blockDim.x / kWarpSize) ? scratch[lane] : T(0);
    v = warp_sum(v);
  }
  return v;
}

template <bool kBlock, typename T>
__device__ __forceinline__ T group_max(T v, T* scratch) {
  v = warp_max(v);
  if constexpr (kBlock) {
    const int lane = threadIdx.x % kWarpSize;
    const int warp = threadIdx.x / kWarpSize;
    __syncthreads();
    if (lane == 0) {
      scratch[warp] = v;
    }
    __syncthreads();
    v = lane < static_cast<int>(blockDim.x / kWarpSize) ? scratch[lane] : neg_inf<T>();
    v = warp_max(v);
  }
  return v;
}

template <bool kBlock>
__device__ __forceinline__ int group_or(int v, int* scratch) {
  v = warp_or(v);
  if constexpr (kBlock) {
    const int lane = threadIdx.x % kWarpSize;
    const int warp = threadIdx.x / kWarpSize;
    __syncthreads();
    if (lane == 0) {
      scratch[warp] = v;
    }
    __syncthreads();
    v = lane < static_cast<int>(blockDim.x / kWarpSize) ? scratch[lane] : 0;
    v = warp_or(v);
  }
  return v;
}

struct FwdArgs {
  int64_t B, C, k;
  double T, alpha;
  bool need_kl, need_ce;
  int64_t n_stats;
};

// The top-k teacher of one row, computed by the row's threads together.
struct TopkRow {
  double mt, lz_teacher, log_p_rest, p_rest, h, x_kept, mass;
  int bad;
};

template <bool kBlock, typename scalar_t>
__device__ TopkRow topk_teacher_row(
    const scalar_t* s, const double* v, const int64_t* idx, double lse, double ms,
    const FwdArgs& a, int tid, int nthreads, double* dscratch, int* iscratch) {
  TopkRow r{};
  const int64_t k = a.k;
  const int64_t C = a.C;
  double vmax = neg_inf<double>();
  double kept = 0.0;
  int bad = isfinite(lse) ? 0 : kFlagTeacherNonFinite;
  for (int64_t j = tid; j < k; j += nthreads) {
    const double vj = v[j];
    if (!isfinite(vj)) {
      bad |= kFlagTeacherNonFinite;
    }
    vmax = vj > vmax ? vj : vmax;
    kept += exp(vj - lse);
    if (idx[j] < 0 || idx[j] >= C) {
      bad |= kFlagIndexRange;
    }
  }
  vmax = group_max<kBlock>(vmax, dscratch);
  kept = group_sum<kBlock>(kept, dscratch);
  bad = group_or<kBlock>(bad, iscratch);
  if (bad == 0 && kept > 1.0 + kMassTolerance) {
    bad |= kFlagTeacherMass;
  }
  r.bad = bad;
  if (bad != 0) {
    return r;
  }
  const double rest = 1.0 - kept;
  const int64_t n_rest = C - k;
  const bool has_rest = n_rest > 0 && rest > 0.0;
  const double r_logit = has_rest ? lse + log(rest / static_cast<double>(n_rest)) : neg_inf<double>();
  const double mt = vmax > r_logit ? vmax : r_logit;
  const double inv_t = 1.0 / a.T;
  double z = 0.0;
  for (int64_t j = tid; j < k; j += nthreads) {
    z += exp((v[j] - mt) * inv_t);
  }
  z = group_sum<kBlock>(z, dscratch);
  if (has_rest) {
    z += static_cast<double>(n_rest) * exp((r_logit - mt) * inv_t);
  }
  const double lz = log(z);
  r.mt = mt;
  r.lz_teacher = lz;
  r.log_p_rest = has_rest ? (r_logit - mt) * inv_t - lz : neg_inf<double>();
  r.p_rest = has_rest ? exp(r.log_p_rest) : 0.0;
  double h = 0.0;
  double x = 0.0;
  double mass = 0.0;
  for (int64_t j = tid; j < k; j += nthreads) {
    const double log_p = (v[j] - mt) * inv_t - lz;
    const double p = exp(log_p);
    mass += p;
    h += p > 0.0 ? p * log_p : 0.0;
    x += (p - r.p_rest) * (static_cast<double>(s[idx[j]]) - ms);
  }
  r.h = group_sum<kBlock>(h, dscratch) + (has_rest ? static_cast<double>(n_rest) * r.p_rest * r.log_p_rest : 0.0);
  r.x_kept = group_sum<kBlock>(x, dscratch);
  r.mass = group_sum<kBlock>(mass, dscratch) + static_cast<double>(n_rest) * r.p_rest;
  return r;
}

// One row of the forward, run by a group of `nthreads` threads (a warp or a
// block) with rank `tid`; every thread of the group must call it.
template <bool kBlock, int kKind, typename scalar_t, typename teacher_t, typename acc_t>
__device__ void forward_row(
    int64_t row, const scalar_t* __restrict__ s_all, const teacher_t* __restrict__ t_all,
    const double* __restrict__ topk_v, const int64_t* __restrict__ topk_i,
    const double* __restrict__ topk_lse, const int64_t* __restrict__ targets,
    const FwdArgs& a, acc_t* __restrict__ row_loss, int32_t* __restrict__ row_flags,
    acc_t* __restrict__ stats, int tid, int nthreads, State<acc_t>* state_scratch,
    double* dscratch, int* iscratch) {
  const int64_t C = a.C;
  const scalar_t* s = s_all + row * C;
  const teacher_t* t = (kKind != kKindTopk && a.need_kl) ? t_all + row * C : nullptr;
  const acc_t inv_t = static_cast<acc_t>(1.0 / a.T);
  State<acc_t> st = State<acc_t>::empty();
  for (int64_t j = tid; j < C; j += nthreads) {
    const acc_t v = static_cast<acc_t>(s[j]);
    const acc_t u = t != nullptr ? static_cast<acc_t>(t[j]) : acc_t(0);
    st.add<kKind>(v, u, inv_t, a.need_kl, a.need_ce);
  }
  warp_merge(st, inv_t);
  if constexpr (kBlock) {
    const int lane = threadIdx.x % kWarpSize;
    const int warp = threadIdx.x / kWarpSize;
    __syncthreads();
    if (lane == 0) {
      state_scratch[warp] = st;
    }
    __syncthreads();
    st = lane < nthreads / kWarpSize ? state_scratch[lane] : State<acc_t>::empty();
    warp_merge(st, inv_t);
  }
  int flags = st.bad;
  int64_t y = 0;
  if (a.need_ce) {
    y = targets[row];
    if (y < 0 || y >= C) {
      flags |= kFlagTargetRange;
    }
  }
  if (flags == 0 && kKind == kKindProbs && a.need_kl) {
    const double mass = static_cast<double>(st.mass);
    if (mass - 1.0 > kMassTolerance || 1.0 - mass > kMassTolerance) {
      flags |= kFlagTeacherMass;
    }
  }
  TopkRow tk{};
  if constexpr (kKind == kKindTopk) {
    // Uniform across the group: flags came from merged (identical) states.
    if (flags == 0 && a.need_kl) {
      tk = topk_teacher_row<kBlock>(
          s, topk_v + row * a.k, topk_i + row * a.k, topk_lse[row], static_cast<double>(st.ms), a,
          tid, nthreads, dscratch, iscratch);
      flags |= tk.bad;
    }
  }
  if (tid != 0) {
    return;
  }
  row_flags[row] = flags;
  acc_t* rs = stats + row * a.n_stats;
  if (flags != 0) {
    row_loss[row] = acc_t(0);
    return;
  }
  const double T = a.T;
  const double lz_t = log(static_cast<double>(st.z_t));
  const double lz_1 = log(static_cast<double>(st.z_1));
  double loss = 0.0;
  double mt = 0.0;
  double lz_teacher = 0.0;
  if (a.need_kl) {
    double kl;
    if constexpr (kKind == kKindTopk) {
      const double x = tk.p_rest * static_cast<double>(st.sum_d) + tk.x_kept;
      kl = tk.h - x / T + tk.mass * lz_t;
      mt = tk.mt;
      lz_teacher = tk.lz_teacher;
    } else if constexpr (kKind == kKindProbs) {
      kl = static_cast<double>(st.h) - static_cast<double>(st.x) / T + static_cast<double>(st.mass) * lz_t;
    } else {
      lz_teacher = log(static_cast<double>(st.z_teacher));
      mt = static_cast<double>(st.mt);
      kl = static_cast<double>(st.w) / (T * static_cast<double>(st.z_teacher)) + lz_t - lz_teacher;
    }
    loss += a.alpha * T * T * kl;
  }
  if (a.need_ce) {
    loss += (1.0 - a.alpha) * (lz_1 - (static_cast<double>(s[y]) - static_cast<double>(st.ms)));
  }
  row_loss[row] = static_cast<acc_t>(loss);
  rs[kStatMaxS] = st.ms;
  rs[kStatLogZsT] = static_cast<acc_t>(a.need_kl ? lz_t : 0.0);
  rs[kStatLogZs1] = static_cast<acc_t>(a.need_ce ? lz_1 : 0.0);
  rs[kStatMaxT] = kKind == kKindProbs ? st.mass : static_cast<acc_t>(mt);  // kStatMass for probabilities
  rs[kStatLogZt] = static_cast<acc_t>(lz_teacher);
  if (a.n_stats > kStatLogPRest) {
    rs[kStatLogPRest] = static_cast<acc_t>(kKind == kKindTopk && a.need_kl ? tk.log_p_rest : 0.0);
  }
}

template <int kKind, typename scalar_t, typename teacher_t, typename acc_t>
__global__ void forward_warp_kernel(
    const scalar_t* __restrict__ s, const teacher_t* __restrict__ t, const double* __restrict__ topk_v,
    const int64_t* __restrict__ topk_i, const double* __restrict__ topk_lse,
    const int64_t* __restrict__ targets, FwdArgs a, acc_t* __restrict__ row_loss,
    int32_t* __restrict__ row_flags, acc_t* __restrict__ stats) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarpSize) + threadIdx.x / kWarpSize;
  if (row >= a.B) {
    return;  // uniform across the warp
  }
  forward_row<false, kKind, scalar_t, teacher_t, acc_t>(
      row, s, t, topk_v, topk_i, topk_lse, targets, a, row_loss, row_flags, stats,
      static_cast<int>(threadIdx.x % kWarpSize), kWarpSize, nullptr, nullptr, nullptr);
}

template <int kKind, typename scalar_t, typename teacher_t, typename acc_t>
__global__ void forward_block_kernel(
    const scalar_t* __restrict__ s, const teacher_t* __restrict__ t, const double* __restrict__ topk_v,
    const int64_t* __restrict__ topk_i, const double* __restrict__ topk_lse,
    const int64_t* __restrict__ targets, FwdArgs a, acc_t* __restrict__ row_loss,
    int32_t* __restrict__ row_flags, acc_t* __restrict__ stats) {
  __shared__ State<acc_t> state_scratch[kWarpSize];
  __shared__ double dscratch[kWarpSize];
  __shared__ int iscratch[kWarpSize];
  forward_row<true, kKind, scalar_t, teacher_t, acc_t>(
      static_cast<int64_t>(blockIdx.x), s, t, topk_v, topk_i, topk_lse, targets, a, row_loss, row_flags,
      stats, static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x), state_scratch, dscratch,
      iscratch);
}

// Sums the row losses in a fixed order (per thread strided, then a fixed
// tree), writes the mean, and ORs the row flags.
template <typename acc_t>
__global__ void reduce_kernel(
    const acc_t* __restrict__ row_loss, const int32_t* __restrict__ row_flags, int64_t B,
    acc_t* __restrict__ loss, int32_t* __restrict__ any_flag) {
  __shared__ double sums[kReduceThreads];
  __shared__ int ors[kReduceThreads];
  double acc = 0.0;
  int f = 0;
  for (int64_t i = threadIdx.x; i < B; i += blockDim.x) {
    acc += static_cast<double>(row_loss[i]);
    f |= row_flags[i];
  }
  sums[threadIdx.x] = acc;
  ors[threadIdx.x] = f;
  __syncthreads();
  for (int width = blockDim.x / 2; width > 0; width /= 2) {
    if (static_cast<int>(threadIdx.x) < width) {
      sums[threadIdx.x] += sums[threadIdx.x + width];
      ors[threadIdx.x] |= ors[threadIdx.x + width];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    *loss = B > 0 ? static_cast<acc_t>(sums[0] / static_cast<double>(B))
                  : static_cast<acc_t>(std::numeric_limits<double>::quiet_NaN());
    *any_flag = ors[0];
  }
}

// ---------------------------------------------------------------------------
// Backward.

struct BwdArgs {
  int64_t B, C, k;
  double T, alpha;
  bool need_kl, need_ce;
  int64_t n_stats;
};

template <int kKind, typename scalar_t, typename teacher_t, typename acc_t>
__device__ void backward_row(
    int64_t row, const acc_t* __restrict__ grad_loss, const scalar_t* __restrict__ s_all,
    const teacher_t* __restrict__ t_all, const double* __restrict__ topk_v,
    const int64_t* __restrict__ topk_i, const int64_t* __restrict__ targets,
    const acc_t* __restrict__ stats, const BwdArgs& a, scalar_t* __restrict__ grad_all, int tid,
    int nthreads) {
  const int64_t C = a.C;
  const scalar_t* s = s_all + row * C;
  const teacher_t* t = (kKind != kKindTopk && a.need_kl) ? t_all + row * C : nullptr;
  scalar_t* g = grad_all + row * C;
  const acc_t* st = stats + row * a.n_stats;
  const acc_t gl = *grad_loss;
  const acc_t c_kl = a.need_kl ? gl * static_cast<acc_t>(a.alpha * a.T / static_cast<double>(a.B)) : acc_t(0);
  const acc_t c_ce = a.need_ce ? gl * static_cast<acc_t>((1.0 - a.alpha) / static_cast<double>(a.B)) : acc_t(0);
  const acc_t inv_t = static_cast<acc_t>(1.0 / a.T);
  const acc_t ms = st[kStatMaxS];
  const acc_t lz_t = st[kStatLogZsT];
  const acc_t lz_1 = st[kStatLogZs1];
  const acc_t mt = st[kStatMaxT];
  const acc_t lz_teacher = st[kStatLogZt];
  acc_t p_rest = acc_t(0);
  if constexpr (kKind == kKindTopk) {
    if (a.need_kl) {
      p_rest = dev_exp(st[kStatLogPRest]);
    }
  }
  const int64_t y = a.need_ce ? targets[row] : -1;
  // Teacher probabilities: d/ds of sum p log p - sum p log q is (q sum p - p) / T.
  const acc_t q_scale = kKind == kKindProbs ? st[kStatMass] : acc_t(1);
  auto grad_at = [&](int64_t j, acc_t p) -> acc_t {
    const acc_t d = static_cast<acc_t>(s[j]) - ms;
    acc_t out = acc_t(0);
    if (a.need_kl) {
      out += c_kl * (dev_exp(d * inv_t - lz_t) * q_scale - p);
    }
    if (a.need_ce) {
      out += c_ce * (dev_exp(d - lz_1) - (j == y ? acc_t(1) : acc_t(0)));
    }
    return out;
  };
  for (int64_t j = tid; j < C; j += nthreads) {
    acc_t p = p_rest;
    if constexpr (kKind == kKindLogits) {
      if (a.need_kl) {
        p = dev_exp((static_cast<acc_t>(t[j]) - mt) * inv_t - lz_teacher);
      }
    } else if constexpr (kKind == kKindProbs) {
      if (a.need_kl) {
        p = static_cast<acc_t>(t[j]);
      }
    }
    g[j] = static_cast<scalar_t>(grad_at(j, p));
  }
  if constexpr (kKind == kKindTopk) {
    if (a.need_kl && a.k > 0) {
      // The kept classes: rewrite their entries with their own p, after the
      // group's dense writes; one thread, so repeated indices cannot race.
      if (nthreads > kWarpSize) {
        __syncthreads();
      } else {
        __syncwarp();
      }
      if (tid == 0) {
        const double* v = topk_v + row * a.k;
        const int64_t* idx = topk_i + row * a.k;
        for (int64_t j = 0; j < a.k; ++j) {
          const int64_t c = idx[j];
          if (c >= 0 && c < C) {
            const acc_t p = static_cast<acc_t>(
                exp((v[j] - static_cast<double>(mt)) / a.T - static_cast<double>(lz_teacher)));
            g[c] = static_cast<scalar_t>(grad_at(c, p));
          }
        }
      }
    }
  }
}

template <int kKind, typename scalar_t, typename teacher_t, typename acc_t>
__global__ void backward_warp_kernel(
    const acc_t* __restrict__ grad_loss, const scalar_t* __restrict__ s, const teacher_t* __restrict__ t,
    const double* __restrict__ topk_v, const int64_t* __restrict__ topk_i,
    const int64_t* __restrict__ targets, const acc_t* __restrict__ stats, BwdArgs a,
    scalar_t* __restrict__ grad) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarpSize) + threadIdx.x / kWarpSize;
  if (row >= a.B) {
    return;
  }
  backward_row<kKind, scalar_t, teacher_t, acc_t>(
      row, grad_loss, s, t, topk_v, topk_i, targets, stats, a, grad,
      static_cast<int>(threadIdx.x % kWarpSize), kWarpSize);
}

template <int kKind, typename scalar_t, typename teacher_t, typename acc_t>
__global__ void backward_block_kernel(
    const acc_t* __restrict__ grad_loss, const scalar_t* __restrict__ s, const teacher_t* __restrict__ t,
    const double* __restrict__ topk_v, const int64_t* __restrict__ topk_i,
    const int64_t* __restrict__ targets, const acc_t* __restrict__ stats, BwdArgs a,
    scalar_t* __restrict__ grad) {
  backward_row<kKind, scalar_t, teacher_t, acc_t>(
      static_cast<int64_t>(blockIdx.x), grad_loss, s, t, topk_v, topk_i, targets, stats, a, grad,
      static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x));
}

// ---------------------------------------------------------------------------
// Host side.

unsigned int grid_for(int64_t B, int64_t C) {
  const int64_t blocks = C <= kWarpMaxClasses
      ? (B + kWarpKernelThreads / kWarpSize - 1) / (kWarpKernelThreads / kWarpSize)
      : B;
  TORCH_CHECK(
      blocks <= std::numeric_limits<int32_t>::max(), "reuse::kd_loss: batch of ", B,
      " rows is too large for one launch; split it");
  return static_cast<unsigned int>(blocks);
}

// Launches the forward for one kind, reduces, checks the flags.
template <int kKind, typename scalar_t, typename teacher_t, typename acc_t>
at::Tensor launch_forward(
    const at::Tensor& s, const teacher_t* t, const double* topk_v, const int64_t* topk_i,
    const double* topk_lse, const int64_t* y, const FwdArgs& a, at::Tensor& row_stats) {
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const auto acc = row_stats.scalar_type();
  at::Tensor row_loss = at::empty({a.B}, s.options().dtype(acc));
  at::Tensor row_flags = at::empty({a.B}, s.options().dtype(at::kInt));
  at::Tensor loss = at::empty({}, s.options().dtype(acc));
  at::Tensor any_flag = at::empty({}, s.options().dtype(at::kInt));
  const scalar_t* sp = s.const_data_ptr<scalar_t>();
  if (a.B > 0) {
    const unsigned int grid = grid_for(a.B, a.C);
    if (a.C <= kWarpMaxClasses) {
      forward_warp_kernel<kKind, scalar_t, teacher_t, acc_t><<<grid, kWarpKernelThreads, 0, stream>>>(
          sp, t, topk_v, topk_i, topk_lse, y, a, row_loss.mutable_data_ptr<acc_t>(),
          row_flags.mutable_data_ptr<int32_t>(), row_stats.mutable_data_ptr<acc_t>());
    } else {
      forward_block_kernel<kKind, scalar_t, teacher_t, acc_t><<<grid, kBlockKernelThreads, 0, stream>>>(
          sp, t, topk_v, topk_i, topk_lse, y, a, row_loss.mutable_data_ptr<acc_t>(),
          row_flags.mutable_data_ptr<int32_t>(), row_stats.mutable_data_ptr<acc_t>());
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  reduce_kernel<acc_t><<<1, kReduceThreads, 0, stream>>>(
      row_loss.const_data_ptr<acc_t>(), row_flags.const_data_ptr<int32_t>(), a.B,
      loss.mutable_data_ptr<acc_t>(), any_flag.mutable_data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  // The one synchronisation of the op: invalid input must raise here.
  const int32_t any = any_flag.item<int32_t>();
  if (any != 0) {
    const at::Tensor flags_cpu = row_flags.cpu();
    raise_row_flags(flags_cpu.const_data_ptr<int32_t>(), a.B, any, a.C);
  }
  return loss;
}

template <int kKind, typename scalar_t, typename teacher_t, typename acc_t>
void launch_backward(
    const at::Tensor& grad_loss, const at::Tensor& s, const teacher_t* t, const double* topk_v,
    const int64_t* topk_i, const int64_t* y, const at::Tensor& row_stats, const BwdArgs& a,
    at::Tensor& grad) {
  if (a.B == 0) {
    return;
  }
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const unsigned int grid = grid_for(a.B, a.C);
  const acc_t* gl = grad_loss.const_data_ptr<acc_t>();
  const scalar_t* sp = s.const_data_ptr<scalar_t>();
  const acc_t* st = row_stats.const_data_ptr<acc_t>();
  scalar_t* gp = grad.mutable_data_ptr<scalar_t>();
  if (a.C <= kWarpMaxClasses) {
    backward_warp_kernel<kKind, scalar_t, teacher_t, acc_t><<<grid, kWarpKernelThreads, 0, stream>>>(
        gl, sp, t, topk_v, topk_i, y, st, a, gp);
  } else {
    backward_block_kernel<kKind, scalar_t, teacher_t, acc_t><<<grid, kBlockKernelThreads, 0, stream>>>(
        gl, sp, t, topk_v, topk_i, y, st, a, gp);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

#define REUSE_KD_DISPATCH_FLOAT(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

std::tuple<at::Tensor, at::Tensor> kd_loss_fwd_cuda(
    const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& targets,
    double temperature, double alpha, int64_t kind) {
  check_scalars(temperature, alpha);
  check_student_targets(student, targets);
  check_dense_teacher(student, teacher, kind);
  const c10::cuda::CUDAGuard device_guard(student.device());
  const at::Tensor s = student.contiguous();
  const at::Tensor y = targets.to(at::kLong).contiguous();
  const int64_t B = s.size(0);
  const int64_t C = s.size(1);
  const FwdArgs a{B, C, 0, temperature, alpha, alpha > 0.0, alpha < 1.0, kDenseStats};
  const at::Tensor t = a.need_kl ? teacher.contiguous() : teacher;
  at::Tensor row_stats = at::zeros({B, kDenseStats}, s.options().dtype(acc_dtype(s.scalar_type())));
  at::Tensor loss;
  REUSE_KD_DISPATCH_FLOAT(s.scalar_type(), "reuse::kd_loss_fwd", [&] {
    using s_t = scalar_t;
    using acc_t = std::conditional_t<std::is_same_v<s_t, double>, double, float>;
    REUSE_KD_DISPATCH_FLOAT(t.scalar_type(), "reuse::kd_loss_fwd teacher", [&] {
      using t_t = scalar_t;
      const t_t* tp = a.need_kl ? t.const_data_ptr<t_t>() : nullptr;
      const int64_t* yp = y.const_data_ptr<int64_t>();
      if (!a.need_kl) {
        loss = launch_forward<kKindTopk, s_t, t_t, acc_t>(s, tp, nullptr, nullptr, nullptr, yp, a, row_stats);
      } else if (kind == kTeacherProbs) {
        loss = launch_forward<kKindProbs, s_t, t_t, acc_t>(s, tp, nullptr, nullptr, nullptr, yp, a, row_stats);
      } else {
        loss = launch_forward<kKindLogits, s_t, t_t, acc_t>(s, tp, nullptr, nullptr, nullptr, yp, a, row_stats);
      }
    });
  });
  return {loss, row_stats};
}

at::Tensor kd_loss_bwd_cuda(
    const at::Tensor& grad_loss, const at::Tensor& student, const at::Tensor& teacher,
    const at::Tensor& targets, const at::Tensor& row_stats_in, double temperature, double alpha,
    int64_t kind) {
  check_scalars(temperature, alpha);
  check_student_targets(student, targets);
  check_dense_teacher(student, teacher, kind);
  check_backward_args(grad_loss, student, row_stats_in, kDenseStats);
  const c10::cuda::CUDAGuard device_guard(student.device());
  const at::Tensor s = student.contiguous();
  const at::Tensor y = targets.to(at::kLong).contiguous();
  const at::Tensor row_stats = row_stats_in.contiguous();
  const auto acc = acc_dtype(s.scalar_type());
  const at::Tensor gl = grad_loss.reshape({}).to(acc).contiguous();
  const int64_t B = s.size(0);
  const int64_t C = s.size(1);
  const BwdArgs a{B, C, 0, temperature, alpha, alpha > 0.0, alpha < 1.0, kDenseStats};
  const at::Tensor t = a.need_kl ? teacher.contiguous() : teacher;
  at::Tensor grad = at::empty({B, C}, s.options());
  REUSE_KD_DISPATCH_FLOAT(s.scalar_type(), "reuse::kd_loss_bwd", [&] {
    using s_t = scalar_t;
    using acc_t = std::conditional_t<std::is_same_v<s_t, double>, double, float>;
    REUSE_KD_DISPATCH_FLOAT(t.scalar_type(), "reuse::kd_loss_bwd teacher", [&] {
      using t_t = scalar_t;
      const t_t* tp = a.need_kl ? t.const_data_ptr<t_t>() : nullptr;
      const int64_t* yp = y.const_data_ptr<int64_t>();
      if (!a.need_kl) {
        launch_backward<kKindTopk, s_t, t_t, acc_t>(gl, s, tp, nullptr, nullptr, yp, row_stats, a, grad);
      } else if (kind == kTeacherProbs) {
        launch_backward<kKindProbs, s_t, t_t, acc_t>(gl, s, tp, nullptr, nullptr, yp, row_stats, a, grad);
      } else {
        launch_backward<kKindLogits, s_t, t_t, acc_t>(gl, s, tp, nullptr, nullptr, yp, row_stats, a, grad);
      }
    });
  });
  return grad;
}

std::tuple<at::Tensor, at::Tensor> kd_loss_topk_fwd_cuda(
    const at::Tensor& student, const at::Tensor& values, const at::Tensor& indices,
    const at::Tensor& lse, const at::Tensor& targets, double temperature, double alpha) {
  check_scalars(temperature, alpha);
  check_student_targets(student, targets);
  check_topk_teacher(student, values, indices, &lse);
  const c10::cuda::CUDAGuard device_guard(student.device());
  const at::Tensor s = student.contiguous();
  const at::Tensor y = targets.to(at::kLong).contiguous();
  const int64_t B = s.size(0);
  const int64_t C = s.size(1);
  const int64_t k = values.size(1);
  const FwdArgs a{B, C, k, temperature, alpha, alpha > 0.0, alpha < 1.0, kTopkStats};
  // [B, k] and [B]: small next to the logits, so convert them outright.
  const at::Tensor v = a.need_kl ? values.to(at::kDouble).contiguous() : values;
  const at::Tensor ix = a.need_kl ? indices.to(at::kLong).contiguous() : indices;
  const at::Tensor l = a.need_kl ? lse.to(at::kDouble).contiguous() : lse;
  at::Tensor row_stats = at::zeros({B, kTopkStats}, s.options().dtype(acc_dtype(s.scalar_type())));
  at::Tensor loss;
  REUSE_KD_DISPATCH_FLOAT(s.scalar_type(), "reuse::kd_loss_topk_fwd", [&] {
    using s_t = scalar_t;
    using acc_t = std::conditional_t<std::is_same_v<s_t, double>, double, float>;
    const double* vp = a.need_kl ? v.const_data_ptr<double>() : nullptr;
    const int64_t* ip = a.need_kl ? ix.const_data_ptr<int64_t>() : nullptr;
    const double* lp = a.need_kl ? l.const_data_ptr<double>() : nullptr;
    loss = launch_forward<kKindTopk, s_t, float, acc_t>(
        s, nullptr, vp, ip, lp, y.const_data_ptr<int64_t>(), a, row_stats);
  });
  return {loss, row_stats};
}

at::Tensor kd_loss_topk_bwd_cuda(
    const at::Tensor& grad_loss, const at::Tensor& student, const at::Tensor& values,
    const at::Tensor& indices, const at::Tensor& targets, const at::Tensor& row_stats_in,
    double temperature, double alpha) {
  check_scalars(temperature, alpha);
  check_student_targets(student, targets);
  check_topk_teacher(student, values, indices, nullptr);
  check_backward_args(grad_loss, student, row_stats_in, kTopkStats);
  const c10::cuda::CUDAGuard device_guard(student.device());
  const at::Tensor s = student.contiguous();
  const at::Tensor y = targets.to(at::kLong).contiguous();
  const at::Tensor row_stats = row_stats_in.contiguous();
  const auto acc = acc_dtype(s.scalar_type());
  const at::Tensor gl = grad_loss.reshape({}).to(acc).contiguous();
  const int64_t B = s.size(0);
  const int64_t C = s.size(1);
  const int64_t k = values.size(1);
  const BwdArgs a{B, C, k, temperature, alpha, alpha > 0.0, alpha < 1.0, kTopkStats};
  const at::Tensor v = a.need_kl ? values.to(at::kDouble).contiguous() : values;
  const at::Tensor ix = a.need_kl ? indices.to(at::kLong).contiguous() : indices;
  at::Tensor grad = at::empty({B, C}, s.options());
  REUSE_KD_DISPATCH_FLOAT(s.scalar_type(), "reuse::kd_loss_topk_bwd", [&] {
    using s_t = scalar_t;
    using acc_t = std::conditional_t<std::is_same_v<s_t, double>, double, float>;
    const double* vp = a.need_kl ? v.const_data_ptr<double>() : nullptr;
    const int64_t* ip = a.need_kl ? ix.const_data_ptr<int64_t>() : nullptr;
    launch_backward<kKindTopk, s_t, float, acc_t>(
        gl, s, nullptr, vp, ip, y.const_data_ptr<int64_t>(), row_stats, a, grad);
  });
  return grad;
}

}  // namespace
}  // namespace kd

TORCH_LIBRARY_IMPL(reuse, CUDA, m) {
  m.impl("kd_loss_fwd", &kd::kd_loss_fwd_cuda);
  m.impl("kd_loss_bwd", &kd::kd_loss_bwd_cuda);
  m.impl("kd_loss_topk_fwd", &kd::kd_loss_topk_fwd_cuda);
  m.impl("kd_loss_topk_bwd", &kd::kd_loss_topk_bwd_cuda);
}

}  // namespace reuse
