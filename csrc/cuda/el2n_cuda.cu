// CUDA kernels of the EL2N op family: reuse::el2n.
//
// Same quantities as csrc/el2n_cpu.cpp: with m = max_j x_j, e_j = exp(x_j - m),
// r = sum_{j != y} e_j, q = sum_{j != y} e_j^2, the score is sqrt(q + r^2) / (r + e_y).
// Each thread reads its share of a row once, keeping an online state
// (m, r, q) that is rescaled when its running max grows; states are merged by
// warp shuffles (and shared memory across the warps of a block).
//
// Rows with C <= kWarpMaxClasses get one warp each; longer rows get a block.
// Accumulation is in float for float32/float16/bfloat16 logits, double for
// float64. Non-finite logits propagate as in softmax (see el2n_cpu.cpp).

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/aminmax.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/stack.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>

#include "../el2n.h"

namespace reuse {
namespace {

constexpr int kWarpSize = 32;
constexpr int64_t kWarpMaxClasses = 1024;
constexpr int kWarpKernelThreads = 256;  // 8 rows per block
constexpr int kBlockKernelThreads = 512;

__device__ __forceinline__ float exp_acc(float v) { return expf(v); }
__device__ __forceinline__ double exp_acc(double v) { return exp(v); }

// Online state over a subset of one row's entries: m is the max over the
// entries seen (the label's included), r and q sum exp(x - m) and its square
// over the entries seen other than the label's.
template <typename acc_t>
struct RowState {
  acc_t m;
  acc_t r;
  acc_t q;

  __device__ __forceinline__ static RowState empty() {
    return {-std::numeric_limits<acc_t>::infinity(), acc_t(0), acc_t(0)};
  }

  __device__ __forceinline__ void add(acc_t v, bool is_label) {
    if (v > m) {
      // Rescale to the new max; exp(-inf) = 0 covers the first finite entry.
      const acc_t c = exp_acc(m - v);
      r *= c;
      q *= c * c;
      m = v;
    }
    if (!is_label) {
      // -inf contributes 0; the test also avoids exp(-inf - (-inf)) = NaN.
      const acc_t e = v == -std::numeric_limits<acc_t>::infinity() ? acc_t(0) : exp_acc(v - m);
      r += e;
      q += e * e;
    }
  }

  __device__ __forceinline__ void merge(const RowState& o) {
    const acc_t m_new = o.m > m ? o.m : m;
    const acc_t neg_inf = -std::numeric_limits<acc_t>::infinity();
    // A state that saw only -inf (or nothing) has r = q = 0 and weight 0.
    const acc_t c_self = m == neg_inf ? acc_t(0) : exp_acc(m - m_new);
    const acc_t c_other = o.m == neg_inf ? acc_t(0) : exp_acc(o.m - m_new);
    r = r * c_self + o.r * c_other;
    q = q * c_self * c_self + o.q * c_other * c_other;
    m = m_new;
  }
};

// After this every lane of the warp holds the merged state of all 32 lanes.
template <typename acc_t>
__device__ __forceinline__ void warp_merge(RowState<acc_t>& s) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    RowState<acc_t> o;
    o.m = __shfl_xor_sync(0xffffffffu, s.m, offset);
    o.r = __shfl_xor_sync(0xffffffffu, s.r, offset);
    o.q = __shfl_xor_sync(0xffffffffu, s.q, offset);
    s.merge(o);
  }
}

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t finish_row(const RowState<acc_t>& s, const scalar_t* x, int64_t y) {
  // e_y is NaN when the row max is +inf or the row is all -inf, as in softmax.
  const acc_t e_y = exp_acc(static_cast<acc_t>(x[y]) - s.m);
  return sqrt(s.q + s.r * s.r) / (s.r + e_y);
}

// One warp per row; blockDim.x is a multiple of 32.
template <typename scalar_t, typename acc_t>
__global__ void el2n_warp_per_row_kernel(
    const scalar_t* __restrict__ logits,
    const int64_t* __restrict__ targets,
    acc_t* __restrict__ out,
    int64_t B,
    int64_t C) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t row =
      static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarpSize) + threadIdx.x / kWarpSize;
  if (row >= B) {
    return;  // uniform across the warp, so the full-mask shuffles below stay valid
  }
  const scalar_t* x = logits + row * C;
  const int64_t y = targets[row];
  RowState<acc_t> s = RowState<acc_t>::empty();
  for (int64_t j = lane; j < C; j += kWarpSize) {
    s.add(static_cast<acc_t>(x[j]), j == y);
  }
  warp_merge(s);
  if (lane == 0) {
    out[row] = finish_row(s, x, y);
  }
}

// One block per row; blockDim.x is a multiple of 32 and at most 1024.
template <typename scalar_t, typename acc_t>
__global__ void el2n_block_per_row_kernel(
    const scalar_t* __restrict__ logits,
    const int64_t* __restrict__ targets,
    acc_t* __restrict__ out,
    int64_t C) {
  __shared__ acc_t shared_m[kWarpSize];
  __shared__ acc_t shared_r[kWarpSize];
  __shared__ acc_t shared_q[kWarpSize];

  const int64_t row = blockIdx.x;
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int num_warps = blockDim.x / kWarpSize;
  const scalar_t* x = logits + row * C;
  const int64_t y = targets[row];

  RowState<acc_t> s = RowState<acc_t>::empty();
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
    s.add(static_cast<acc_t>(x[j]), j == y);
  }
  warp_merge(s);
  if (lane == 0) {
    shared_m[warp] = s.m;
    shared_r[warp] = s.r;
    shared_q[warp] = s.q;
  }
  __syncthreads();
  if (warp == 0) {
    s = RowState<acc_t>::empty();
    if (lane < num_warps) {
      s = {shared_m[lane], shared_r[lane], shared_q[lane]};
    }
    warp_merge(s);
    if (lane == 0) {
      out[row] = finish_row(s, x, y);
    }
  }
}

at::Tensor el2n_cuda(const at::Tensor& logits_in, const at::Tensor& targets_in) {
  el2n_check_args(logits_in, targets_in);
  const c10::cuda::CUDAGuard device_guard(logits_in.device());
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor targets = targets_in.to(at::kLong).contiguous();
  const int64_t B = logits.size(0);
  const int64_t C = logits.size(1);
  at::Tensor out = at::empty({B}, logits.options().dtype(el2n_out_dtype(logits.scalar_type())));
  if (B == 0) {
    return out;
  }

  // Validate labels before launching: one small reduction and one sync.
  const auto [t_min, t_max] = at::aminmax(targets);
  const at::Tensor bounds = at::stack({t_min, t_max}).cpu();
  const int64_t* b = bounds.const_data_ptr<int64_t>();
  el2n_check_target_range(b[0], b[1], C);

  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "reuse::el2n", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* x = logits.const_data_ptr<scalar_t>();
    const int64_t* t = targets.const_data_ptr<int64_t>();
    acc_t* o = out.mutable_data_ptr<acc_t>();
    if (C <= kWarpMaxClasses) {
      constexpr int64_t rows_per_block = kWarpKernelThreads / kWarpSize;
      const int64_t blocks = (B + rows_per_block - 1) / rows_per_block;
      TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "reuse::el2n: batch of ", B, " rows is too large for one launch; split it");
      el2n_warp_per_row_kernel<scalar_t, acc_t>
          <<<static_cast<unsigned int>(blocks), kWarpKernelThreads, 0, stream>>>(x, t, o, B, C);
    } else {
      TORCH_CHECK(B <= std::numeric_limits<int32_t>::max(), "reuse::el2n: batch of ", B, " rows is too large for one launch; split it");
      el2n_block_per_row_kernel<scalar_t, acc_t>
          <<<static_cast<unsigned int>(B), kBlockKernelThreads, 0, stream>>>(x, t, o, C);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(reuse, CUDA, m) {
  m.impl("el2n", &el2n_cuda);
}

}  // namespace reuse
