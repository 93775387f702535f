// CUDA kernels of the per-example gradient-norm family (GraNd):
// reuse::linear_sq_norms, conv_sq_norms, affine_sq_norms, embedding_sq_norms.
//
// Same quantities as csrc/grad_norm_cpu.cpp and reuse/ops/grad_norm_reference.py: for
// each example b, the squared L2 norm of b's own gradient with respect to one layer's
// weight (and bias), from the layer's input and the gradient of the loss with respect
// to its output. No op forms the batched weight gradient [B, *weight.shape].
//
// * Linear, a [B, Din], g [B, Dout]: example b's weight gradient is the outer product
//   g_b a_b^T, so the norm is ||a_b||^2 ||g_b||^2 (+ ||g_b||^2 for the bias). One fused
//   kernel: a warp per example (a block when Din + Dout > kWarpMaxRow) sums both squares.
//   A sequence with T = 1 takes the same path.
// * Linear over a sequence, a [B, T, Din], g [B, T, Dout], and convolutions (input
//   unfolded per chunk of examples with at::im2col, 1-D as 2-D with H = 1; per group:
//   T output positions, Din = Cin/groups * prod(kernel), Dout = Cout/groups): the norm is
//   ||G_b^T A_b||_F^2 with A_b [T, Din], G_b [T, Dout], computed the cheaper of two ways
//   (multiply-adds per example and group):
//     ghost norm     sum_{t,s} (A A^T)_ts (G G^T)_ts     T^2 (Din + Dout)
//     materialised   ||G^T A||_F^2                        T Din Dout
//   The products go to cuBLAS through at::bmm with the output in the accumulation type
//   (float16 / bfloat16 inputs use bmm's out_dtype = float32: tensor cores, nothing
//   rounded to half); then one kernel reduces, per example, the elementwise product of
//   the two Gram matrices or the squares of the weight gradients (a block per example,
//   or per segment of one when there are too few examples to fill the GPU, with a
//   second small kernel summing the segments). Examples go in chunks whose unfolded
//   input and intermediates stay within kChunkBytes; an example whose intermediates
//   alone exceed that is tiled over rows of its Gram matrices or weight gradient, whose
//   contributions add up.
// * Sums over positions that are then squared: the affine weight and bias of a
//   normalisation layer (x, g [B, C, S]), and the bias of a sequence linear (g viewed
//   as [B, Dout, T]) or of a convolution (g viewed as [B, Cout, positions]). Any
//   strides: a group of L lanes (a power of two up to 32) reduces one (b, c) row, or
//   one segment of it when rows are too few to fill the GPU. With S the unit-stride
//   dimension the lanes of a group read consecutive positions; with C the unit-stride
//   dimension (the [B, T, D] layout of sequences, channels_last) L = 1 and neighbouring
//   threads read neighbouring channels. Other layouts are made contiguous first. A
//   second kernel (a warp per example) combines each row's segments, forms
//   scale[c] s_gx + shift[c] s_g and s_g, squares and sums over channels.
// * Embedding, indices [B, T], g [B, T, D]: sum over distinct ids v != padding_idx of
//   ||sum_{t: idx_t = v} g_t||^2. A block per example links every position to the next
//   one holding the same id (O(T^2) id comparisons, in shared memory when
//   T <= kEmbSharedMaxT, else in a global workspace), then a warp per first occurrence
//   sums its group's rows of g column by column and squares: every row of g is read once.
//
// Accumulation is in float for float32 / float16 / bfloat16 inputs, double for float64;
// float32 products follow torch's matmul precision setting (TF32 only where the user
// allowed it). No result is summed with atomics: every reduction here runs in a fixed
// order. Empty batches return an empty tensor without launching; empty sizes (T = 0,
// D = 0, ...) give zeros. Argument checks are the shared ones of csrc/grad_norm.h, so
// errors read as on the CPU; the embedding ids are range-checked with one small
// reduction and one synchronisation, as reuse::el2n checks its labels.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/aminmax.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/im2col.h>
#include <ATen/ops/stack.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

#include "../grad_norm.h"

namespace reuse {
namespace {

constexpr int kWarpSize = 32;
constexpr int kThreads = 256;
// Linear [B, Din] x [B, Dout]: a warp per example up to this many elements per example.
constexpr int64_t kWarpMaxRow = 4096;
// Unfolded inputs and Gram matrices / weight gradients of one chunk of examples.
constexpr int64_t kChunkBytes = int64_t{256} << 20;
// Embedding: ids (int64), links (int32) and first-occurrence flags (uint8) per position.
constexpr int64_t kEmbBytesPerPosition = 8 + 4 + 1;
constexpr int64_t kEmbSharedMaxT = (40 * 1024) / kEmbBytesPerPosition;

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  }
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); the result is valid in
// thread 0 only. `scratch` holds 32 values; each call needs its own.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  v = warp_sum(v);
  if (lane == 0) {
    scratch[warp] = v;
  }
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>(blockDim.x / kWarpSize) ? scratch[lane] : T(0);
    v = warp_sum(v);
  }
  return v;
}

__device__ __forceinline__ int64_t min_i64(int64_t x, int64_t y) { return x < y ? x : y; }

// ---------------------------------------------------------------------------
// Linear, one row per example: out[b] = ||a_b||^2 ||g_b||^2 (+ ||g_b||^2).

// One warp per example; blockDim.x a multiple of 32. Rows have unit stride.
template <typename scalar_t, typename acc_t>
__global__ void linear_rows_warp_kernel(
    const scalar_t* __restrict__ a, int64_t lda, const scalar_t* __restrict__ g, int64_t ldg,
    int64_t B, int64_t Din, int64_t Dout, bool bias, acc_t* __restrict__ out) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t row =
      static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarpSize) + threadIdx.x / kWarpSize;
  if (row >= B) {
    return;  // uniform across the warp, so the full-mask shuffles below stay valid
  }
  const scalar_t* ar = a + row * lda;
  const scalar_t* gr = g + row * ldg;
  acc_t sa = acc_t(0);
  acc_t sg = acc_t(0);
  for (int64_t j = lane; j < Din; j += kWarpSize) {
    const acc_t v = static_cast<acc_t>(ar[j]);
    sa += v * v;
  }
  for (int64_t j = lane; j < Dout; j += kWarpSize) {
    const acc_t v = static_cast<acc_t>(gr[j]);
    sg += v * v;
  }
  sa = warp_sum(sa);
  sg = warp_sum(sg);
  if (lane == 0) {
    out[row] = sa * sg + (bias ? sg : acc_t(0));
  }
}

// One block per example.
template <typename scalar_t, typename acc_t>
__global__ void linear_rows_block_kernel(
    const scalar_t* __restrict__ a, int64_t lda, const scalar_t* __restrict__ g, int64_t ldg,
    int64_t Din, int64_t Dout, bool bias, acc_t* __restrict__ out) {
  __shared__ acc_t scratch_a[kWarpSize];
  __shared__ acc_t scratch_g[kWarpSize];
  const int64_t row = blockIdx.x;
  const scalar_t* ar = a + row * lda;
  const scalar_t* gr = g + row * ldg;
  acc_t sa = acc_t(0);
  acc_t sg = acc_t(0);
  for (int64_t j = threadIdx.x; j < Din; j += blockDim.x) {
    const acc_t v = static_cast<acc_t>(ar[j]);
    sa += v * v;
  }
  for (int64_t j = threadIdx.x; j < Dout; j += blockDim.x) {
    const acc_t v = static_cast<acc_t>(gr[j]);
    sg += v * v;
  }
  sa = block_sum(sa, scratch_a);
  sg = block_sum(sg, scratch_g);
  if (threadIdx.x == 0) {
    out[row] = sa * sg + (bias ? sg : acc_t(0));
  }
}

// ---------------------------------------------------------------------------
// Per-example reductions of the cuBLAS intermediates, x and y contiguous [rows, M]:
// dst[unit] (+)= sum over the unit's segment of x * y (kSquare: x * x), one block per
// unit = (row, split); a row's splits are consecutive units.
template <bool kSquare, typename acc_t>
__global__ void row_dot_kernel(
    const acc_t* __restrict__ x, const acc_t* __restrict__ y, int64_t M, int64_t seg,
    int64_t nsplit, bool accumulate, acc_t* __restrict__ dst) {
  __shared__ acc_t scratch[kWarpSize];
  const int64_t unit = blockIdx.x;
  const int64_t row = unit / nsplit;
  const int64_t begin = (unit - row * nsplit) * seg;
  const int64_t end = min_i64(M, begin + seg);
  const acc_t* xr = x + row * M;
  const acc_t* yr = kSquare ? xr : y + row * M;
  const int64_t step = blockDim.x;
  // Four independent partial sums keep four loads in flight per thread.
  acc_t s0 = acc_t(0);
  acc_t s1 = acc_t(0);
  acc_t s2 = acc_t(0);
  acc_t s3 = acc_t(0);
  int64_t m = begin + threadIdx.x;
  for (; m + 3 * step < end; m += 4 * step) {
    s0 += xr[m] * yr[m];
    s1 += xr[m + step] * yr[m + step];
    s2 += xr[m + 2 * step] * yr[m + 2 * step];
    s3 += xr[m + 3 * step] * yr[m + 3 * step];
  }
  for (; m < end; m += step) {
    s0 += xr[m] * yr[m];
  }
  const acc_t s = block_sum((s0 + s1) + (s2 + s3), scratch);
  if (threadIdx.x == 0) {
    dst[unit] = accumulate ? dst[unit] + s : s;
  }
}

// out[r] (+)= sum_{j < k} partial[r * k + j], in order; one warp per row.
template <typename acc_t>
__global__ void sum_partials_kernel(
    const acc_t* __restrict__ partial, int64_t rows, int64_t k, bool accumulate,
    acc_t* __restrict__ out) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t row =
      static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarpSize) + threadIdx.x / kWarpSize;
  if (row >= rows) {
    return;
  }
  acc_t s = acc_t(0);
  for (int64_t j = lane; j < k; j += kWarpSize) {
    s += partial[row * k + j];
  }
  s = warp_sum(s);
  if (lane == 0) {
    out[row] = accumulate ? out[row] + s : s;
  }
}

// ---------------------------------------------------------------------------
// Sums over positions of [B, C, S] views (affine weight and bias, sequence and
// convolution bias).

struct RowSumArgs {
  int64_t B, C, S;
  int64_t xsb, xsc, xss;  // strides of x (read only for the affine weight)
  int64_t gsb, gsc, gss;  // strides of g
  int64_t nseg;           // segments per (b, c) row
  int64_t seg_len;        // positions per segment (the last may be shorter)
  int lanes;              // lanes per (row, segment): a power of two, at most 32
};

// Unit u = seg * (B C) + b C + c is reduced by `lanes` consecutive lanes of one warp:
// partial[u] = sum_s g x (kNeedX), partial[units + u] = sum_s g over the segment.
// Lanes past the last unit still run the shuffles (full masks) and write nothing.
template <bool kNeedX, typename scalar_t, typename acc_t>
__global__ void row_sums_kernel(
    const scalar_t* __restrict__ x, const scalar_t* __restrict__ g, RowSumArgs p,
    acc_t* __restrict__ partial) {
  const int L = p.lanes;
  const int64_t rows = p.B * p.C;
  const int64_t units = rows * p.nseg;
  const int64_t gi = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / L;
  const int lane = static_cast<int>(threadIdx.x % L);
  acc_t sgx = acc_t(0);
  acc_t sg = acc_t(0);
  if (gi < units) {
    const int64_t row = gi % rows;
    const int64_t seg = gi / rows;
    const int64_t b = row / p.C;
    const int64_t c = row - b * p.C;
    const int64_t s0 = seg * p.seg_len;
    const int64_t s1 = min_i64(p.S, s0 + p.seg_len);
    const scalar_t* gr = g + b * p.gsb + c * p.gsc;
    const scalar_t* xr = kNeedX ? x + b * p.xsb + c * p.xsc : nullptr;
    for (int64_t s = s0 + lane; s < s1; s += L) {
      const acc_t gv = static_cast<acc_t>(gr[s * p.gss]);
      sg += gv;
      if constexpr (kNeedX) {
        sgx += gv * static_cast<acc_t>(xr[s * p.xss]);
      }
    }
  }
  for (int offset = L / 2; offset > 0; offset /= 2) {
    sg += __shfl_xor_sync(0xffffffffu, sg, offset);
    if constexpr (kNeedX) {
      sgx += __shfl_xor_sync(0xffffffffu, sgx, offset);
    }
  }
  if (gi < units && lane == 0) {
    if constexpr (kNeedX) {
      partial[gi] = sgx;
    }
    partial[units + gi] = sg;
  }
}

// One warp per example: per channel, the segments' sums in order, then
// out[b] (+)= sum_c [weight] (scale[c] s_gx + shift[c] s_g)^2 + [bias] s_g^2
// (scale = 1, shift = 0 where absent).
template <typename acc_t>
__global__ void row_sums_finish_kernel(
    const acc_t* __restrict__ partial, const acc_t* __restrict__ scale,
    const acc_t* __restrict__ shift, int64_t B, int64_t C, int64_t nseg, bool weight, bool bias,
    bool accumulate, acc_t* __restrict__ out) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t b =
      static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarpSize) + threadIdx.x / kWarpSize;
  if (b >= B) {
    return;
  }
  const int64_t rows = B * C;
  const int64_t units = rows * nseg;
  acc_t v = acc_t(0);
  for (int64_t c = lane; c < C; c += kWarpSize) {
    acc_t sgx = acc_t(0);
    acc_t sg = acc_t(0);
    for (int64_t seg = 0; seg < nseg; ++seg) {
      const int64_t u = seg * rows + b * C + c;
      if (weight) {
        sgx += partial[u];
      }
      sg += partial[units + u];
    }
    if (weight) {
      acc_t w = scale != nullptr ? scale[c] * sgx : sgx;
      if (shift != nullptr) {
        w += shift[c] * sg;
      }
      v += w * w;
    }
    if (bias) {
      v += sg * sg;
    }
  }
  v = warp_sum(v);
  if (lane == 0) {
    out[b] = accumulate ? out[b] + v : v;
  }
}

// ---------------------------------------------------------------------------
// Embedding: one block per example.

template <typename scalar_t, typename acc_t>
__global__ void embedding_kernel(
    const int64_t* __restrict__ indices, const scalar_t* __restrict__ g, int64_t T, int64_t D,
    int64_t gsb, int64_t gst, int64_t gsd, int64_t padding_idx, bool use_shared,
    int32_t* __restrict__ ws_next, uint8_t* __restrict__ ws_follower, acc_t* __restrict__ out) {
  extern __shared__ __align__(8) unsigned char emb_smem[];
  __shared__ acc_t scratch[kWarpSize];
  const int64_t b = blockIdx.x;
  const int tid = threadIdx.x;
  const int nthreads = blockDim.x;
  const int64_t* ids = indices + b * T;
  int32_t* next;       // next[t]: the next position after t with the same id, T if none
  uint8_t* follower;   // follower[t]: some earlier position has t's id
  if (use_shared) {
    int64_t* s_ids = reinterpret_cast<int64_t*>(emb_smem);
    next = reinterpret_cast<int32_t*>(s_ids + T);
    follower = reinterpret_cast<uint8_t*>(next + T);
    for (int64_t t = tid; t < T; t += nthreads) {
      s_ids[t] = ids[t];
    }
    ids = s_ids;
  } else {
    next = ws_next + b * T;
    follower = ws_follower + b * T;
  }
  for (int64_t t = tid; t < T; t += nthreads) {
    follower[t] = 0;
  }
  __syncthreads();
  // Padding positions link nowhere and are never linked to.
  for (int64_t t = tid; t < T; t += nthreads) {
    const int64_t v = ids[t];
    int64_t n = T;
    if (v != padding_idx) {
      for (int64_t s = t + 1; s < T; ++s) {
        if (ids[s] == v) {
          n = s;
          break;
        }
      }
    }
    next[t] = static_cast<int32_t>(n);
    if (n < T) {
      follower[n] = 1;  // a position has at most one predecessor: no two writers
    }
  }
  __syncthreads();
  // A warp per first occurrence: ||sum of its group's rows||^2, column by column.
  const int lane = tid % kWarpSize;
  const int warp = tid / kWarpSize;
  const int nwarps = nthreads / kWarpSize;
  const scalar_t* gb = g + b * gsb;
  acc_t acc = acc_t(0);
  for (int64_t t = warp; t < T; t += nwarps) {
    if (follower[t] != 0 || ids[t] == padding_idx) {
      continue;  // uniform across the warp
    }
    for (int64_t d = lane; d < D; d += kWarpSize) {
      acc_t v = acc_t(0);
      for (int64_t s = t; s < T; s = next[s]) {
        v += static_cast<acc_t>(gb[s * gst + d * gsd]);
      }
      acc += v * v;
    }
  }
  acc = block_sum(acc, scratch);
  if (tid == 0) {
    out[b] = acc;
  }
}

// ---------------------------------------------------------------------------
// Host side.

int sm_count() {
  return at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
}

unsigned int grid_1d(int64_t blocks, const char* op) {
  TORCH_CHECK(
      blocks <= std::numeric_limits<int32_t>::max(), op, ": the input is too large for one launch (",
      blocks, " blocks); split the batch");
  return static_cast<unsigned int>(blocks);
}

int64_t ceil_div(int64_t x, int64_t y) { return (x + y - 1) / y; }

// Smallest power of two >= n, capped at 32.
int lanes_for(int64_t n) {
  int l = 1;
  while (l < kWarpSize && l < n) {
    l *= 2;
  }
  return l;
}

// Ghost norm (T^2 (Din + Dout) multiply-adds) when cheaper than materialising the
// weight gradient (T Din Dout).
bool prefer_ghost(int64_t T, int64_t Din, int64_t Dout) {
  return T * (Din + Dout) < Din * Dout;
}

// x @ y in the accumulation type: float32 output for float16 / bfloat16 inputs.
at::Tensor bmm_acc(const at::Tensor& x, const at::Tensor& y) {
  const auto dt = x.scalar_type();
  if (dt == at::kHalf || dt == at::kBFloat16) {
    return at::bmm(x, y, at::kFloat);
  }
  return at::bmm(x, y);
}

void zero_rows(void* out, int64_t bytes) {
  if (bytes > 0) {
    C10_CUDA_CHECK(cudaMemsetAsync(out, 0, static_cast<size_t>(bytes), at::cuda::getCurrentCUDAStream()));
  }
}

template <typename scalar_t, typename acc_t>
void launch_linear_rows(const at::Tensor& a_in, const at::Tensor& g_in, bool bias, acc_t* out, const char* op) {
  // Rows need unit stride along features (a size-1 feature dimension has any stride).
  const at::Tensor a = (a_in.size(1) <= 1 || a_in.stride(1) == 1) ? a_in : a_in.contiguous();
  const at::Tensor g = (g_in.size(1) <= 1 || g_in.stride(1) == 1) ? g_in : g_in.contiguous();
  const int64_t B = a.size(0);
  const int64_t Din = a.size(1);
  const int64_t Dout = g.size(1);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const scalar_t* ap = a.const_data_ptr<scalar_t>();
  const scalar_t* gp = g.const_data_ptr<scalar_t>();
  if (Din + Dout <= kWarpMaxRow) {
    constexpr int64_t rows_per_block = kThreads / kWarpSize;
    linear_rows_warp_kernel<scalar_t, acc_t><<<grid_1d(ceil_div(B, rows_per_block), op), kThreads, 0, stream>>>(
        ap, a.stride(0), gp, g.stride(0), B, Din, Dout, bias, out);
  } else {
    linear_rows_block_kernel<scalar_t, acc_t><<<grid_1d(B, op), kThreads, 0, stream>>>(
        ap, a.stride(0), gp, g.stride(0), Din, Dout, bias, out);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// out[r] (+)= sum_m x[r, m] y[r, m] for r < rows (y == nullptr: x[r, m]^2); x and y
// contiguous [rows, M] in acc_t.
template <typename acc_t>
void reduce_rows(const at::Tensor& x, const at::Tensor* y, int64_t rows, int64_t M, bool accumulate, acc_t* out, const char* op) {
  if (rows == 0) {
    return;
  }
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  // Split rows into segments when there are too few rows to give each SM 8 blocks,
  // keeping at least 16 elements per thread.
  const int64_t target_blocks = static_cast<int64_t>(sm_count()) * 8;
  int64_t nsplit = 1;
  if (rows < target_blocks) {
    nsplit = std::min(ceil_div(target_blocks, rows), std::max<int64_t>(1, M / (kThreads * 16)));
  }
  const int64_t seg = std::max<int64_t>(1, ceil_div(M, nsplit));
  nsplit = std::max<int64_t>(1, ceil_div(M, seg));
  const acc_t* xp = x.const_data_ptr<acc_t>();
  const acc_t* yp = y != nullptr ? y->const_data_ptr<acc_t>() : xp;
  const unsigned int grid = grid_1d(rows * nsplit, op);
  if (nsplit == 1) {
    if (y == nullptr) {
      row_dot_kernel<true, acc_t><<<grid, kThreads, 0, stream>>>(xp, yp, M, seg, 1, accumulate, out);
    } else {
      row_dot_kernel<false, acc_t><<<grid, kThreads, 0, stream>>>(xp, yp, M, seg, 1, accumulate, out);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  at::Tensor partial = at::empty({rows * nsplit}, x.options());
  acc_t* pp = partial.mutable_data_ptr<acc_t>();
  if (y == nullptr) {
    row_dot_kernel<true, acc_t><<<grid, kThreads, 0, stream>>>(xp, yp, M, seg, nsplit, false, pp);
  } else {
    row_dot_kernel<false, acc_t><<<grid, kThreads, 0, stream>>>(xp, yp, M, seg, nsplit, false, pp);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  constexpr int64_t rows_per_block = kThreads / kWarpSize;
  sum_partials_kernel<acc_t><<<grid_1d(ceil_div(rows, rows_per_block), op), kThreads, 0, stream>>>(
      pp, rows, nsplit, accumulate, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// For n examples of `groups` matrix pairs each, P [n * groups, T, Din] and
// Q [n * groups, T, Dout] (any strides, the groups of an example consecutive):
// out[i] (+)= sum over example i's groups of ||Q^T P||_F^2.
template <typename acc_t>
void weight_terms(const at::Tensor& P, const at::Tensor& Q, int64_t n, int64_t groups, bool ghost, bool accumulate, acc_t* out, const char* op) {
  const int64_t T = P.size(1);
  const int64_t Din = P.size(2);
  const int64_t Dout = Q.size(2);
  if (n == 0) {
    return;
  }
  if (T == 0 || Din == 0 || Dout == 0) {
    if (!accumulate) {
      zero_rows(out, n * static_cast<int64_t>(sizeof(acc_t)));
    }
    return;
  }
  // Rows of the per-(example, group) intermediate: the Gram matrices [T, T] (two of
  // them) or the weight gradient [Dout, Din]; tiles of rows bound its memory.
  const int64_t rows_total = ghost ? T : Dout;
  const int64_t row_bytes = n * groups * (ghost ? 2 * T : Din) * static_cast<int64_t>(sizeof(acc_t));
  const int64_t tile = std::clamp<int64_t>(kChunkBytes / std::max<int64_t>(row_bytes, 1), 1, rows_total);
  const at::Tensor Pt = P.transpose(1, 2);  // [n groups, Din, T]
  const at::Tensor Qt = Q.transpose(1, 2);  // [n groups, Dout, T]
  for (int64_t r0 = 0; r0 < rows_total; r0 += tile) {
    const int64_t len = std::min(tile, rows_total - r0);
    const bool acc_flag = accumulate || r0 > 0;
    if (ghost) {
      const at::Tensor ga = bmm_acc(P.narrow(1, r0, len), Pt).contiguous();  // [n groups, len, T]
      const at::Tensor gg = bmm_acc(Q.narrow(1, r0, len), Qt).contiguous();
      reduce_rows<acc_t>(ga, &gg, n, groups * len * T, acc_flag, out, op);
    } else {
      const at::Tensor w = bmm_acc(Qt.narrow(1, r0, len), P).contiguous();  // [n groups, len, Din]
      reduce_rows<acc_t>(w, nullptr, n, groups * len * Din, acc_flag, out, op);
    }
  }
}

// Sums over positions of [B, C, S] views x, g (any strides; x read only when `weight`):
// out[b] (+)= sum_c [weight] (scale[c] s_gx + shift[c] s_g)^2 + [bias] s_g^2 with
// s_gx = sum_s g x, s_g = sum_s g; scale / shift: acc_t device arrays [C] or nullptr.
template <typename scalar_t, typename acc_t>
void row_sum_terms(const at::Tensor& x_in, const at::Tensor& g_in, const acc_t* scale, const acc_t* shift, bool weight, bool bias, bool accumulate, acc_t* out, const char* op) {
  const int64_t B = g_in.size(0);
  const int64_t C = g_in.size(1);
  const int64_t S = g_in.size(2);
  if (B == 0) {
    return;
  }
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  constexpr int64_t rows_per_block = kThreads / kWarpSize;
  if (!weight && !bias) {
    if (!accumulate) {
      zero_rows(out, B * static_cast<int64_t>(sizeof(acc_t)));
    }
    return;
  }
  auto s_unit = [](const at::Tensor& t) { return t.size(2) <= 1 || t.stride(2) == 1; };
  auto c_unit = [](const at::Tensor& t) { return t.size(1) <= 1 || t.stride(1) == 1; };
  at::Tensor g = g_in;
  at::Tensor x = weight ? x_in : at::Tensor();
  int lanes;
  if (S <= 1) {
    lanes = 1;
  } else if (s_unit(g) && (!weight || s_unit(x))) {
    lanes = lanes_for(S);
  } else if (c_unit(g) && (!weight || c_unit(x))) {
    lanes = 1;
  } else {
    g = g.contiguous();
    if (weight) {
      x = x.contiguous();
    }
    lanes = lanes_for(S);
  }
  const int64_t rows = B * C;
  int64_t nseg = 1;
  const int64_t target_groups = static_cast<int64_t>(sm_count()) * 2048 / lanes;
  if (rows > 0 && rows < target_groups) {
    const int64_t min_seg = std::max<int64_t>(64, 8 * static_cast<int64_t>(lanes));
    nseg = std::min(ceil_div(target_groups, rows), std::max<int64_t>(1, S / min_seg));
  }
  const int64_t seg_len = std::max<int64_t>(1, ceil_div(S, nseg));
  nseg = std::max<int64_t>(1, ceil_div(S, seg_len));
  const int64_t units = rows * nseg;
  at::Tensor partial = at::empty({std::max<int64_t>(2 * units, 1)}, g.options().dtype(std::is_same_v<acc_t, double> ? at::kDouble : at::kFloat));
  acc_t* pp = partial.mutable_data_ptr<acc_t>();
  if (units > 0) {
    RowSumArgs p{};
    p.B = B;
    p.C = C;
    p.S = S;
    if (weight) {
      p.xsb = x.stride(0);
      p.xsc = x.stride(1);
      p.xss = x.stride(2);
    }
    p.gsb = g.stride(0);
    p.gsc = g.stride(1);
    p.gss = g.stride(2);
    p.nseg = nseg;
    p.seg_len = seg_len;
    p.lanes = lanes;
    const unsigned int grid = grid_1d(ceil_div(units * lanes, kThreads), op);
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    if (weight) {
      row_sums_kernel<true, scalar_t, acc_t><<<grid, kThreads, 0, stream>>>(x.const_data_ptr<scalar_t>(), gp, p, pp);
    } else {
      row_sums_kernel<false, scalar_t, acc_t><<<grid, kThreads, 0, stream>>>(nullptr, gp, p, pp);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  row_sums_finish_kernel<acc_t><<<grid_1d(ceil_div(B, rows_per_block), op), kThreads, 0, stream>>>(
      pp, scale, shift, B, C, nseg, weight, bias, accumulate, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

#define REUSE_GN_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

// ---------------------------------------------------------------------------
// Operators.

at::Tensor linear_sq_norms_cuda(const at::Tensor& a, const at::Tensor& g, bool bias) {
  constexpr const char* op = "reuse::linear_sq_norms";
  linear_sq_norms_check(a, g);
  const c10::cuda::CUDAGuard device_guard(a.device());
  const int64_t B = a.size(0);
  at::Tensor out = at::empty({B}, a.options().dtype(grad_norm_out_dtype(a.scalar_type())));
  if (B == 0) {
    return out;
  }
  REUSE_GN_DISPATCH(a.scalar_type(), "reuse::linear_sq_norms", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    acc_t* o = out.mutable_data_ptr<acc_t>();
    if (a.dim() == 2) {
      launch_linear_rows<scalar_t, acc_t>(a, g, bias, o, op);
      return;
    }
    const int64_t T = a.size(1);
    const int64_t Din = a.size(2);
    const int64_t Dout = g.size(2);
    if (T == 1) {
      launch_linear_rows<scalar_t, acc_t>(a.select(1, 0), g.select(1, 0), bias, o, op);
      return;
    }
    const bool ghost = prefer_ghost(T, Din, Dout);
    const int64_t per_example = (ghost ? 2 * T * T : Din * Dout) * static_cast<int64_t>(sizeof(acc_t));
    const int64_t chunk = std::clamp<int64_t>(kChunkBytes / std::max<int64_t>(per_example, 1), 1, B);
    for (int64_t b0 = 0; b0 < B; b0 += chunk) {
      const int64_t n = std::min(chunk, B - b0);
      weight_terms<acc_t>(a.narrow(0, b0, n), g.narrow(0, b0, n), n, 1, ghost, false, o + b0, op);
    }
    if (bias) {
      // ||sum_t g_bt||^2: g as [B, Dout, T].
      row_sum_terms<scalar_t, acc_t>(at::Tensor(), g.transpose(1, 2), nullptr, nullptr, false, true, true, o, op);
    }
  });
  return out;
}

at::Tensor conv_sq_norms_cuda(
    const at::Tensor& x, const at::Tensor& g, at::IntArrayRef kernel_size, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, bool bias) {
  constexpr const char* op = "reuse::conv_sq_norms";
  // The 2-D geometry (1-D as H = 1: kernel 1, stride 1, padding 0 along it).
  const ConvGeometry geo = conv_sq_norms_check(x, g, kernel_size, stride, padding, dilation, groups);
  const c10::cuda::CUDAGuard device_guard(x.device());
  const int64_t B = x.size(0);
  at::Tensor out = at::empty({B}, x.options().dtype(grad_norm_out_dtype(x.scalar_type())));
  if (B == 0) {
    return out;
  }
  const at::Tensor x4 = geo.spatial_dims == 1 ? x.unsqueeze(2) : x;
  const std::vector<int64_t> ks{geo.kernel[0], geo.kernel[1]};
  const std::vector<int64_t> st{geo.stride[0], geo.stride[1]};
  const std::vector<int64_t> pd{geo.padding[0], geo.padding[1]};
  const std::vector<int64_t> dl{geo.dilation[0], geo.dilation[1]};
  const int64_t Cin = geo.in_channels;
  const int64_t Cout = geo.out_channels;
  const int64_t K = ks[0] * ks[1];
  const int64_t Din = Cin / groups * K;
  const int64_t Dout = Cout / groups;
  const int64_t T = geo.out_size[0] * geo.out_size[1];
  const bool pointwise = K == 1 && st[0] == 1 && st[1] == 1 && pd[0] == 0 && pd[1] == 0;
  REUSE_GN_DISPATCH(x.scalar_type(), "reuse::conv_sq_norms", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    acc_t* o = out.mutable_data_ptr<acc_t>();
    if (T == 0 || Din == 0 || Dout == 0) {
      zero_rows(o, B * static_cast<int64_t>(sizeof(acc_t)));
    } else {
      const bool ghost = prefer_ghost(T, Din, Dout);
      const int64_t elem = static_cast<int64_t>(x.element_size());
      const int64_t per_example = (Cin * K + Cout) * T * elem +
          groups * (ghost ? 2 * T * T : Dout * Din) * static_cast<int64_t>(sizeof(acc_t));
      const int64_t chunk = std::clamp<int64_t>(kChunkBytes / std::max<int64_t>(per_example, 1), 1, B);
      for (int64_t b0 = 0; b0 < B; b0 += chunk) {
        const int64_t n = std::min(chunk, B - b0);
        const at::Tensor xc = x4.narrow(0, b0, n);
        // [n, Cin K, T], rows channel-major, so group j holds rows [j Din, (j + 1) Din).
        const at::Tensor u = pointwise ? xc.reshape({n, Cin, T}) : at::im2col(xc, ks, dl, pd, st);
        const at::Tensor ug = u.reshape({n * groups, Din, T});
        const at::Tensor gg = g.narrow(0, b0, n).reshape({n * groups, Dout, T});
        weight_terms<acc_t>(ug.transpose(1, 2), gg.transpose(1, 2), n, groups, ghost, false, o + b0, op);
      }
    }
    if (bias) {
      row_sum_terms<scalar_t, acc_t>(at::Tensor(), g.reshape({B, Cout, T}), nullptr, nullptr, false, true, true, o, op);
    }
  });
  return out;
}

at::Tensor affine_sq_norms_cuda(
    const at::Tensor& x, const at::Tensor& g, const std::optional<at::Tensor>& scale,
    const std::optional<at::Tensor>& shift, bool weight, bool bias) {
  constexpr const char* op = "reuse::affine_sq_norms";
  affine_sq_norms_check(x, g, scale, shift);
  const c10::cuda::CUDAGuard device_guard(x.device());
  const int64_t B = x.size(0);
  const auto acc = grad_norm_out_dtype(x.scalar_type());
  at::Tensor out = at::empty({B}, x.options().dtype(acc));
  if (B == 0) {
    return out;
  }
  // [C] each: small, so converted outright.
  const at::Tensor sc = weight && scale.has_value() ? scale->to(acc).contiguous() : at::Tensor();
  const at::Tensor sh = weight && shift.has_value() ? shift->to(acc).contiguous() : at::Tensor();
  REUSE_GN_DISPATCH(x.scalar_type(), "reuse::affine_sq_norms", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    row_sum_terms<scalar_t, acc_t>(
        x, g, sc.defined() ? sc.const_data_ptr<acc_t>() : nullptr,
        sh.defined() ? sh.const_data_ptr<acc_t>() : nullptr, weight, bias, false,
        out.mutable_data_ptr<acc_t>(), op);
  });
  return out;
}

at::Tensor embedding_sq_norms_cuda(
    const at::Tensor& indices, const at::Tensor& g, int64_t num_embeddings, int64_t padding_idx) {
  constexpr const char* op = "reuse::embedding_sq_norms";
  embedding_sq_norms_check(indices, g, num_embeddings, padding_idx);
  const c10::cuda::CUDAGuard device_guard(g.device());
  const int64_t B = g.size(0);
  const int64_t T = g.size(1);
  const int64_t D = g.size(2);
  at::Tensor out = at::empty({B}, g.options().dtype(grad_norm_out_dtype(g.scalar_type())));
  if (B == 0) {
    return out;
  }
  const at::Tensor idx = indices.to(at::kLong).contiguous();
  if (T > 0) {
    // Validate ids before launching: one small reduction and one sync.
    const auto [i_min, i_max] = at::aminmax(idx);
    const at::Tensor bounds = at::stack({i_min, i_max}).cpu();
    const int64_t* bd = bounds.const_data_ptr<int64_t>();
    embedding_sq_norms_check_range(bd[0], bd[1], num_embeddings);
  }
  if (T == 0 || D == 0) {
    out.zero_();
    return out;
  }
  TORCH_CHECK(
      T < std::numeric_limits<int32_t>::max(), op, ": sequences of ", T,
      " positions are too long; split them");
  const bool use_shared = T <= kEmbSharedMaxT;
  at::Tensor ws_next;
  at::Tensor ws_follower;
  if (!use_shared) {
    ws_next = at::empty({B * T}, idx.options().dtype(at::kInt));
    ws_follower = at::empty({B * T}, idx.options().dtype(at::kByte));
  }
  const size_t smem = use_shared ? static_cast<size_t>(T * kEmbBytesPerPosition) : 0;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  REUSE_GN_DISPATCH(g.scalar_type(), "reuse::embedding_sq_norms", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    embedding_kernel<scalar_t, acc_t><<<grid_1d(B, op), kThreads, smem, stream>>>(
        idx.const_data_ptr<int64_t>(), g.const_data_ptr<scalar_t>(), T, D, g.stride(0),
        g.stride(1), g.stride(2), padding_idx, use_shared,
        use_shared ? nullptr : ws_next.mutable_data_ptr<int32_t>(),
        use_shared ? nullptr : ws_follower.mutable_data_ptr<uint8_t>(),
        out.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(reuse, CUDA, m) {
  m.impl("linear_sq_norms", &linear_sq_norms_cuda);
  m.impl("conv_sq_norms", &conv_sq_norms_cuda);
  m.impl("affine_sq_norms", &affine_sq_norms_cuda);
  m.impl("embedding_sq_norms", &embedding_sq_norms_cuda);
}

}  // namespace reuse
