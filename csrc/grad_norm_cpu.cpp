// CPU kernels of the per-example gradient-norm family (GraNd):
// reuse::linear_sq_norms, conv_sq_norms, affine_sq_norms, embedding_sq_norms.
//
// Each op gets a layer's input activations and the gradient of the (summed)
// loss with respect to the layer's output, and returns for every example b the
// squared L2 norm of b's own gradient with respect to the layer's weight (and
// bias). None of them forms the batched weight gradient; examples are
// independent, so every op runs in parallel over examples (at::parallel_for;
// examples handed out dynamically, see parallel_examples), each thread with
// its own small, cache-resident buffers.
//
// Weight gradients of linear layers over sequences and of convolutions
// ----------------------------------------------------------------------
// Per example (and per group) the weight gradient is W = G^T A, a sum over K
// positions of outer products of output gradients g_k (Dout) and input
// vectors a_k (Din; for a convolution the unfolded patch, Cin/groups * kernel
// taps). ||W||_F^2 is computed the cheapest of these ways (multiply-adds per
// example, chosen per call from the shapes):
//
//   materialised   W, then the sum of its squares           K * Din * Dout
//   ghost norm     sum_{k,l} (a_k . a_l)(g_k . g_l)          K^2 * (Din + Dout)
//   shifted ghost  (stride-1 convolutions) the ghost norm with the patch
//                  Gram matrix built from the Gram matrix XX of the padded
//                  input grid (Pq positions, Cin channels): a_k . a_l =
//                  sum over taps t of XX[k + t][l + t]       Pq^2 Cin + K^2 (Cout + taps)
//   Winograd       (3x3, stride 1, dilation 1) W materialised with
//                  F(3x3, 2x2) minimal filtering over 2x2 output tiles:
//                  16 products per tile instead of 36         4 K Cin Cout + transforms
//
// All run on one micro-kernel, `panel_tile` below: an outer-product GEMM tile
// C[n][o] = sum_k B[n][k] * P[k][o] that keeps 6 rows n x 2 vectors o (12
// accumulators) in registers, broadcasting B entries (B is read through one
// pointer per row, with any stride between its k entries, so no packing) and
// loading P rows as vectors. The tile's epilogue either squares and sums the
// finished tile (materialised: W is never stored), stores it (a Gram matrix),
// or dots it with a stored tile (the ghost product of two Gram matrices).
//
// Convolutions do not unfold their input for the materialised path. With the
// output gradient laid out over a grid of row pitch Wp >= Wo (columns >= Wo
// zero), the input patch entry of tap (kh, kw) at output position k = h*Wp + w
// is one fixed offset from k in a padded copy of the input channel with the
// same row pitch: each of the Cin * kh * kw rows of B is then a plain pointer
// into that copy (offset by the tap), and one pass over the positions reads
// every input value straight from an L1/L2-resident buffer. Strides s > 1 are
// handled by splitting the input into its s*s phases (x[r::s, c::s]); dilation
// and padding only change the offsets. Zero padding is the zeros around each
// phase; rows of different phases never meet because their zero borders are at
// least as wide as the reads that cross them. The cost of the pitch is
// Wp / Wo extra positions (3% for a 3x3 convolution on 32x32, 12.5% on 8x8).
// The output gradient is transposed into the P panel ([positions][Cout],
// 8x8 register transposes). The ghost path unfolds (im2col, per example); both
// ghost forms win when the spatial output is small relative to the channels
// (the 8x8 stage of CIFAR ResNets: 2.8x fewer multiply-adds; short 1-D signals).
// Winograd works channels-last (input and gradient transposed to positions x
// channels) so its transforms run on vectors of channels, in blocks of tiles
// whose transforms stay in L1 while the 16 products accumulate them.
//
// Measured on ResNet-20 shapes (one core of an AMD EPYC, AVX2, float32, batch
// 128): the materialised form runs at 60-70 GFLOP/s, 80-90% of the core's
// peak; a dot-product (inner-product) tile over the same shifted rows, which
// needs horizontal sums per tile, reached 25-55 GFLOP/s. Winograd takes the
// 32x32 and 16x16 stages (1.2-1.3x faster than materialised there: the
// transforms and the short products eat part of the 2.25x), the shifted ghost
// the 8x8 stage (2.2x faster), materialised the strided and 3-channel
// convolutions. Over the 19 convolutions of ResNet-20 the norms take about
// 0.5x the time of oneDNN's batched weight-gradient kernels
// (at::convolution_backward, weight only) on the same shapes. Buffers are
// zeroed once per thread: only data positions are rewritten per example, so
// all padding stays zero.
//
// Accumulation: float32 for float32, float16 and bfloat16 inputs (the latter
// two widened while being copied into the buffers), float64 for float64; the
// squares of each 12-accumulator tile are added into a double total. The
// result is float64 for float64 inputs and float32 otherwise. Hot loops are
// built for x86-64-v3 (AVX2/FMA) and the baseline (target_clones), chosen at
// load time.
//
// Normalisation layers (affine_sq_norms) and embeddings are memory-bound sums
// over positions; see their functions.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "grad_norm.h"

namespace reuse {
namespace {

#define GN_INLINE __attribute__((always_inline)) inline

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GN_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define GN_CPU_CLONES
#endif

// ------------------------------------------------------------------ small helpers

// 64-byte aligned, zero-initialised scratch array.
template <typename T>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(int64_t n) { reset(n); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { release(); }
  void reset(int64_t n) {
    release();
    n_ = std::max<int64_t>(n, 1);
    p_ = static_cast<T*>(::operator new[](n_ * sizeof(T), std::align_val_t{64}));
    std::memset(static_cast<void*>(p_), 0, n_ * sizeof(T));
  }
  T* data() { return p_; }
  const T* data() const { return p_; }
  T& operator[](int64_t i) { return p_[i]; }

 private:
  void release() {
    if (p_ != nullptr) {
      ::operator delete[](p_, std::align_val_t{64});
      p_ = nullptr;
    }
  }
  T* p_ = nullptr;
  int64_t n_ = 0;
};

int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) {
    --q;
  }
  return q;
}

int64_t round_up(int64_t a, int64_t m) { return (a + m - 1) / m * m; }

// Runs worker(take) on up to at::get_num_threads() threads (fewer when n /
// min_per_thread is smaller). Each worker sets up its own buffers once, then
// calls take(b0, b1) for the next chunk [b0, b1) of at most `chunk` examples
// until it returns false. Chunks are handed out dynamically (an atomic
// counter) rather than split evenly up front, so a thread that loses its core
// for a while (a shared machine) does not hold up the others; the results do
// not depend on which thread computes which example.
template <typename Worker>
void parallel_examples(int64_t n, int64_t chunk, int64_t min_per_thread, const Worker& worker) {
  std::atomic<int64_t> next{0};
  auto take = [&](int64_t& b0, int64_t& b1) -> bool {
    b0 = next.fetch_add(chunk, std::memory_order_relaxed);
    if (b0 >= n) {
      return false;
    }
    b1 = std::min(n, b0 + chunk);
    return true;
  };
  const int64_t threads = std::min<int64_t>(
      at::get_num_threads(), std::max<int64_t>(1, n / std::max<int64_t>(min_per_thread, 1)));
  if (threads <= 1 || at::in_parallel_region()) {
    worker(take);
    return;
  }
  at::parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      worker(take);
    }
  });
}

// Accumulation type: float for float / float16 / bfloat16, double for double.
template <typename scalar_t>
using acc_type_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

template <typename T>
struct Simd;
template <>
struct Simd<float> {
  typedef float V __attribute__((vector_size(32)));
  static constexpr int L = 8;
};
template <>
struct Simd<double> {
  typedef double V __attribute__((vector_size(32)));
  static constexpr int L = 4;
};

template <typename T>
GN_INLINE typename Simd<T>::V vload(const T* p) {
  typename Simd<T>::V v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
GN_INLINE void vstore(T* p, typename Simd<T>::V v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

// A shuffle of lane 0 to every lane: inside a target_clones function GCC 12
// turns it into one vbroadcastss/sd from memory, whereas an initializer list
// {s, s, ...} or a loop compiles to a chain of vinsertps.
GN_INLINE Simd<float>::V vbroadcast(float s) {
  typedef int32_t I __attribute__((vector_size(32)));
  return __builtin_shuffle(Simd<float>::V{s}, I{0, 0, 0, 0, 0, 0, 0, 0});
}
GN_INLINE Simd<double>::V vbroadcast(double s) {
  typedef int64_t I __attribute__((vector_size(32)));
  return __builtin_shuffle(Simd<double>::V{s}, I{0, 0, 0, 0});
}

template <typename T>
GN_INLINE double vsum_double(typename Simd<T>::V v) {
  double s = 0.0;
#pragma GCC unroll 8
  for (int i = 0; i < Simd<T>::L; ++i) {
    s += static_cast<double>(v[i]);
  }
  return s;
}

// ------------------------------------------------------------------ panel kernel
//
// C[n][o] = sum_{k < K} B[n][k * bs] * P[k][o] for NR rows n and MV vectors of
// Simd<T>::L columns o. B rows are pointers (already offset to k = 0), P is
// row-major with leading dimension ldp (its first column being o = 0 of the
// tile). The epilogue:
//   kSumSq: returns sum over the tile of C^2 (C is not stored);
//   kStore: C is written to c (leading dimension ldc);
//   kAdd:   C is added to c;
//   kDot:   returns sum over the tile of C * c.
enum Epilogue : int { kSumSq = 0, kStore = 1, kAdd = 2, kDot = 3 };

template <typename T, int MV, int NR>
GN_INLINE double panel_tile(
    const T* const* b, int64_t bs, const T* p, int64_t ldp, int64_t K, int epi, T* c, int64_t ldc) {
  using V = typename Simd<T>::V;
  constexpr int L = Simd<T>::L;
  V acc[NR][MV];
#pragma GCC unroll 16
  for (int n = 0; n < NR; ++n) {
#pragma GCC unroll 4
    for (int m = 0; m < MV; ++m) {
      acc[n][m] = V{};
    }
  }
  const T* bp[NR];
#pragma GCC unroll 16
  for (int n = 0; n < NR; ++n) {
    bp[n] = b[n];
  }
  int64_t bi = 0;
  for (int64_t k = 0; k < K; ++k, p += ldp, bi += bs) {
    V pv[MV];
#pragma GCC unroll 4
    for (int m = 0; m < MV; ++m) {
      pv[m] = vload<T>(p + m * L);
    }
#pragma GCC unroll 16
    for (int n = 0; n < NR; ++n) {
      const V bv = vbroadcast(bp[n][bi]);
#pragma GCC unroll 4
      for (int m = 0; m < MV; ++m) {
        acc[n][m] += bv * pv[m];
      }
    }
  }
  if (epi == kSumSq || epi == kDot) {
    V s = V{};
#pragma GCC unroll 16
    for (int n = 0; n < NR; ++n) {
#pragma GCC unroll 4
      for (int m = 0; m < MV; ++m) {
        s += acc[n][m] * (epi == kSumSq ? acc[n][m] : vload<T>(c + n * ldc + m * L));
      }
    }
    return vsum_double<T>(s);
  }
#pragma GCC unroll 16
  for (int n = 0; n < NR; ++n) {
#pragma GCC unroll 4
    for (int m = 0; m < MV; ++m) {
      T* cp = c + n * ldc + m * L;
      vstore<T>(cp, epi == kAdd ? vload<T>(cp) + acc[n][m] : acc[n][m]);
    }
  }
  return 0.0;
}

// Tiles of NR_MAX rows and MV vectors, with a narrower tile for the last rows.
template <typename T, int MV, int NR_MAX>
GN_INLINE double panel_rows(
    int64_t N, const T* const* b, int64_t bs, const T* p, int64_t ldp, int64_t K, int epi, T* c,
    int64_t ldc) {
  double total = 0.0;
  int64_t n = 0;
  for (; n + NR_MAX <= N; n += NR_MAX) {
    total += panel_tile<T, MV, NR_MAX>(b + n, bs, p, ldp, K, epi, c + n * ldc, ldc);
  }
  const int64_t rest = N - n;
  if (rest == 0) {
    return total;
  }
  T* cn = c + n * ldc;
  const T* const* bn = b + n;
  switch (rest) {
#define GN_TILE_CASE(R)                                                          \
  case R:                                                                        \
    if constexpr (R < NR_MAX) {                                                  \
      total += panel_tile<T, MV, R>(bn, bs, p, ldp, K, epi, cn, ldc);            \
    }                                                                            \
    break;
    GN_TILE_CASE(1)
    GN_TILE_CASE(2)
    GN_TILE_CASE(3)
    GN_TILE_CASE(4)
    GN_TILE_CASE(5)
    GN_TILE_CASE(6)
    GN_TILE_CASE(7)
    GN_TILE_CASE(8)
    GN_TILE_CASE(9)
    GN_TILE_CASE(10)
    GN_TILE_CASE(11)
#undef GN_TILE_CASE
    default:
      break;
  }
  return total;
}

// C[n][o] = sum_k B[n][k * bs] * P[k][o] over N rows and V vectors of columns.
// 2 vectors x 6 rows per tile (12 accumulators); a single column vector gets
// 12 rows per tile instead.
template <typename T>
GN_INLINE double panel_product_impl(
    int64_t N, int64_t V, int64_t K, const T* const* b, int64_t bs, const T* p, int64_t ldp, int epi,
    T* c, int64_t ldc) {
  constexpr int L = Simd<T>::L;
  double total = 0.0;
  if (V == 1) {
    return panel_rows<T, 1, 12>(N, b, bs, p, ldp, K, epi, c, ldc);
  }
  int64_t v = 0;
  for (; v + 2 <= V; v += 2) {
    total += panel_rows<T, 2, 6>(N, b, bs, p + v * L, ldp, K, epi, c + v * L, ldc);
  }
  if (v < V) {
    total += panel_rows<T, 1, 6>(N, b, bs, p + v * L, ldp, K, epi, c + v * L, ldc);
  }
  return total;
}

GN_CPU_CLONES double panel_product_f32(
    int64_t N, int64_t V, int64_t K, const float* const* b, int64_t bs, const float* p, int64_t ldp,
    int epi, float* c, int64_t ldc) {
  return panel_product_impl<float>(N, V, K, b, bs, p, ldp, epi, c, ldc);
}

GN_CPU_CLONES double panel_product_f64(
    int64_t N, int64_t V, int64_t K, const double* const* b, int64_t bs, const double* p,
    int64_t ldp, int epi, double* c, int64_t ldc) {
  return panel_product_impl<double>(N, V, K, b, bs, p, ldp, epi, c, ldc);
}

// Positions per block of the reduction: the panel rows of one block
// (kBlockK x 2 vectors, 128 KiB in float) stay in L2 while the row tiles sweep
// over them.
constexpr int64_t kBlockK = 2048;

// Sum over tiles of the epilogue (see Epilogue) of C = B P, with C of N rows
// and ldc >= V * L columns. For kSumSq / kDot with K > kBlockK the reduction is
// split into blocks accumulated in `scratch` (N * ldc entries, which the caller
// provides in that case; contents are overwritten).
template <typename T>
double panel_product(
    int64_t N, int64_t V, int64_t K, const T* const* b, int64_t bs, const T* p, int64_t ldp, int epi,
    T* c, int64_t ldc, T* scratch, std::vector<const T*>& shifted) {
  auto run = [&](int64_t k0, int64_t kn, int e, T* out) -> double {
    const T* const* bb = b;
    if (k0 != 0) {
      shifted.resize(N);
      for (int64_t n = 0; n < N; ++n) {
        shifted[n] = b[n] + k0 * bs;
      }
      bb = shifted.data();
    }
    if constexpr (std::is_same_v<T, float>) {
      return panel_product_f32(N, V, kn, bb, bs, p + k0 * ldp, ldp, e, out, ldc);
    } else {
      return panel_product_f64(N, V, kn, bb, bs, p + k0 * ldp, ldp, e, out, ldc);
    }
  };
  if (K <= kBlockK || epi == kStore || epi == kAdd) {
    if (K > kBlockK && epi == kStore) {
      // Store the first block, add the rest.
      run(0, kBlockK, kStore, c);
      for (int64_t k0 = kBlockK; k0 < K; k0 += kBlockK) {
        run(k0, std::min(kBlockK, K - k0), kAdd, c);
      }
      return 0.0;
    }
    if (K > kBlockK) {
      for (int64_t k0 = 0; k0 < K; k0 += kBlockK) {
        run(k0, std::min(kBlockK, K - k0), kAdd, c);
      }
      return 0.0;
    }
    return run(0, K, epi, c);
  }
  TORCH_CHECK(scratch != nullptr, "reuse: internal error, panel_product needs scratch space");
  run(0, kBlockK, kStore, scratch);
  for (int64_t k0 = kBlockK; k0 < K; k0 += kBlockK) {
    run(k0, std::min(kBlockK, K - k0), kAdd, scratch);
  }
  constexpr int L = Simd<T>::L;
  double total = 0.0;
  for (int64_t n = 0; n < N; ++n) {
    const T* s = scratch + n * ldc;
    const T* o = c + n * ldc;
    for (int64_t j = 0; j < V * L; ++j) {
      total += static_cast<double>(s[j]) * static_cast<double>(epi == kSumSq ? s[j] : o[j]);
    }
  }
  return total;
}

// Element conversion into the accumulation type.
template <typename T, typename S>
GN_INLINE T to_acc(S v) {
  return static_cast<T>(static_cast<float>(v));
}
template <>
GN_INLINE double to_acc<double, double>(double v) {
  return v;
}
template <>
GN_INLINE float to_acc<float, float>(float v) {
  return v;
}

// Sum of squares of n values, accumulated in 8 lanes of T, folded into double.
template <typename T, typename S>
GN_INLINE double sum_squares(const S* x, int64_t n, int64_t stride = 1) {
  double total = 0.0;
  int64_t i = 0;
  constexpr int64_t kFold = 4096;
  while (i < n) {
    const int64_t end = std::min(n, i + kFold);
    T lanes[8] = {};
    if (stride == 1) {
      for (; i + 8 <= end; i += 8) {
#pragma GCC unroll 8
        for (int j = 0; j < 8; ++j) {
          const T v = to_acc<T>(x[i + j]);
          lanes[j] += v * v;
        }
      }
    }
    for (; i < end; ++i) {
      const T v = to_acc<T>(x[i * stride]);
      lanes[0] += v * v;
    }
    for (int j = 0; j < 8; ++j) {
      total += static_cast<double>(lanes[j]);
    }
  }
  return total;
}

// ============================================================================
// Ghost norm: sum_{k,l} (X1^T X1)[k][l] (X2^T X2)[k][l] for X1 [D1][Pp] and
// X2 [D2][Pp] (features by positions, position-contiguous, columns >= P zero).
// Gram matrices are P x Pp; the second one is stored, the first one dotted
// with it tile by tile.

template <typename T>
struct GhostWork {
  Buffer<T> gram;     // [P][Pp]
  Buffer<T> scratch;  // [P][Pp], only for feature counts above kBlockK
  std::vector<const T*> rows;
  std::vector<const T*> shifted;
  int64_t P = 0;
  int64_t Pp = 0;

  void init(int64_t P_, int64_t max_features) {
    P = P_;
    Pp = round_up(std::max<int64_t>(P_, 1), Simd<T>::L);
    gram.reset(P * Pp);
    if (max_features > kBlockK) {
      scratch.reset(P * Pp);
    }
    rows.resize(P);
  }

  double run(const T* x1, int64_t d1, const T* x2, int64_t d2) {
    if (P == 0) {
      return 0.0;
    }
    const int64_t V = Pp / Simd<T>::L;
    for (int64_t k = 0; k < P; ++k) {
      rows[k] = x2 + k;
    }
    panel_product<T>(P, V, d2, rows.data(), Pp, x2, Pp, kStore, gram.data(), Pp, nullptr, shifted);
    if (d2 == 0) {
      std::memset(static_cast<void*>(gram.data()), 0, sizeof(T) * P * Pp);
    }
    for (int64_t k = 0; k < P; ++k) {
      rows[k] = x1 + k;
    }
    if (d1 == 0) {
      return 0.0;
    }
    return panel_product<T>(
        P, V, d1, rows.data(), Pp, x1, Pp, kDot, gram.data(), Pp, scratch.data(), shifted);
  }
};

// ============================================================================
// reuse::linear_sq_norms

template <typename scalar_t>
void linear_rows_impl(const at::Tensor& a, const at::Tensor& g, bool bias, at::Tensor& out) {
  using T = acc_type_t<scalar_t>;
  const int64_t B = a.size(0);
  const int64_t Din = a.size(1);
  const int64_t Dout = g.size(1);
  const scalar_t* ap = a.const_data_ptr<scalar_t>();
  const scalar_t* gp = g.const_data_ptr<scalar_t>();
  const int64_t lda = a.stride(0);
  const int64_t ldg = g.stride(0);
  T* o = out.mutable_data_ptr<T>();
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(Din + Dout, 1));
  parallel_examples(B, grain, grain, [&](const auto& take) {
    int64_t b0, b1;
    while (take(b0, b1)) {
      for (int64_t b = b0; b < b1; ++b) {
        const double sa = sum_squares<T>(ap + b * lda, Din);
        const double sg = sum_squares<T>(gp + b * ldg, Dout);
        o[b] = static_cast<T>(sa * sg + (bias ? sg : 0.0));
      }
    }
  });
}

// Choose the ghost norm when its multiply-adds are fewer.
bool prefer_ghost(int64_t K, int64_t Din, int64_t Dout, int64_t materialise_cost) {
  const double ghost = static_cast<double>(K) * static_cast<double>(K) *
      static_cast<double>(Din + Dout) + static_cast<double>(K) * static_cast<double>(Din + Dout);
  return ghost < static_cast<double>(materialise_cost);
}

template <typename scalar_t>
void linear_seq_impl(const at::Tensor& a, const at::Tensor& g, bool bias, at::Tensor& out) {
  using T = acc_type_t<scalar_t>;
  constexpr int64_t L = Simd<T>::L;
  const int64_t B = a.size(0);
  const int64_t K = a.size(1);  // positions
  const int64_t Din = a.size(2);
  const int64_t Dout = g.size(2);
  const scalar_t* ap = a.const_data_ptr<scalar_t>();
  const scalar_t* gp = g.const_data_ptr<scalar_t>();
  T* o = out.mutable_data_ptr<T>();
  // Materialised: the wider of the two (after padding to whole vectors) is the panel.
  const bool panel_is_g = round_up(Dout, L) * Din <= round_up(Din, L) * Dout;
  const int64_t Dp = panel_is_g ? Dout : Din;  // panel features
  const int64_t Dr = panel_is_g ? Din : Dout;  // row features
  const int64_t Dpp = round_up(std::max<int64_t>(Dp, 1), L);
  const bool ghost = prefer_ghost(K, Din, Dout, K * Dr * Dpp);
  parallel_examples(B, 1, 1, [&](const auto& take) {
    std::vector<const T*> rows;
    std::vector<const T*> shifted;
    Buffer<T> bias_acc(Dout);
    // Ghost: transposed copies [features][positions] and the Gram matrices.
    GhostWork<T> work;
    Buffer<T> at_buf, gt_buf;
    // Materialised: panel [K][Dpp] (the panel features, zero-padded) and row
    // features [K][Dr] read through Dr pointers with stride Dr; copies only
    // when the input cannot be read in place.
    const bool direct_panel = std::is_same_v<scalar_t, T> && Dpp == Dp;
    Buffer<T> panel, rowbuf, scratch;
    if (ghost) {
      work.init(K, std::max(Din, Dout));
      at_buf.reset(Din * work.Pp);
      gt_buf.reset(Dout * work.Pp);
    } else {
      panel.reset(direct_panel ? 1 : K * Dpp);
      rowbuf.reset(std::is_same_v<scalar_t, T> ? 1 : K * Dr);
      scratch.reset(K > kBlockK ? Dr * Dpp : 1);
      rows.resize(Dr);
    }
    int64_t b0, b1;
    while (take(b0, b1)) {
      for (int64_t b = b0; b < b1; ++b) {
        const scalar_t* ab = ap + b * K * Din;
        const scalar_t* gb = gp + b * K * Dout;
        double total;
        if (ghost) {
          const int64_t Pp = work.Pp;
          for (int64_t k = 0; k < K; ++k) {
            for (int64_t d = 0; d < Din; ++d) {
              at_buf[d * Pp + k] = to_acc<T>(ab[k * Din + d]);
            }
            for (int64_t d = 0; d < Dout; ++d) {
              gt_buf[d * Pp + k] = to_acc<T>(gb[k * Dout + d]);
            }
          }
          total = work.run(at_buf.data(), Din, gt_buf.data(), Dout);
        } else {
          const scalar_t* pb = panel_is_g ? gb : ab;
          const scalar_t* rb = panel_is_g ? ab : gb;
          const T* P;
          const T* R;
          if constexpr (std::is_same_v<scalar_t, T>) {
            R = rb;
            if (direct_panel) {
              P = pb;
            } else {
              for (int64_t k = 0; k < K; ++k) {
                std::memcpy(panel.data() + k * Dpp, pb + k * Dp, sizeof(T) * Dp);
              }
              P = panel.data();
            }
          } else {
            for (int64_t k = 0; k < K; ++k) {
              for (int64_t d = 0; d < Dp; ++d) {
                panel[k * Dpp + d] = to_acc<T>(pb[k * Dp + d]);
              }
              for (int64_t d = 0; d < Dr; ++d) {
                rowbuf[k * Dr + d] = to_acc<T>(rb[k * Dr + d]);
              }
            }
            P = panel.data();
            R = rowbuf.data();
          }
          for (int64_t d = 0; d < Dr; ++d) {
            rows[d] = R + d;
          }
          total = panel_product<T>(
              Dr, Dpp / L, K, rows.data(), Dr, P, Dpp, kSumSq, scratch.data(), Dpp, scratch.data(), shifted);
        }
        if (bias) {
          T* sb = bias_acc.data();
          std::fill(sb, sb + Dout, T(0));
          for (int64_t k = 0; k < K; ++k) {
            const scalar_t* row = gb + k * Dout;
            for (int64_t d = 0; d < Dout; ++d) {
              sb[d] += to_acc<T>(row[d]);
            }
          }
          total += sum_squares<T>(sb, Dout);
        }
        o[b] = static_cast<T>(total);
      }
    }
  });
}

at::Tensor linear_sq_norms_cpu(const at::Tensor& a_in, const at::Tensor& g_in, bool bias) {
  linear_sq_norms_check(a_in, g_in);
  const int64_t B = a_in.size(0);
  at::Tensor out = at::empty({B}, a_in.options().dtype(grad_norm_out_dtype(a_in.scalar_type())));
  if (B == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a_in.scalar_type(), "reuse::linear_sq_norms", [&] {
    if (a_in.dim() == 2) {
      // Rows need unit stride only.
      const at::Tensor a = a_in.stride(1) == 1 || a_in.size(1) <= 1 ? a_in : a_in.contiguous();
      const at::Tensor g = g_in.stride(1) == 1 || g_in.size(1) <= 1 ? g_in : g_in.contiguous();
      linear_rows_impl<scalar_t>(a, g, bias, out);
    } else if (a_in.size(1) == 1) {
      linear_rows_impl<scalar_t>(a_in.select(1, 0).contiguous(), g_in.select(1, 0).contiguous(), bias, out);
    } else {
      linear_seq_impl<scalar_t>(a_in.contiguous(), g_in.contiguous(), bias, out);
    }
  });
  return out;
}

// ============================================================================
// reuse::conv_sq_norms

// Geometry of the shifted-phase layout of one input channel (see the top of
// the file), for a 2-D convolution (1-D has height 1).
struct ConvPlan {
  ConvGeometry geo;
  int64_t cin_g = 0, cout_g = 0;
  int64_t kh = 1, kw = 1;
  // Per tap along each dim: phase r and row/column shift q.
  std::vector<int64_t> rh, qh, rw, qw;
  int64_t qh_min = 0, qh_max = 0, qw_min = 0, qw_max = 0;
  std::vector<int64_t> nvh, nvw;  // valid rows / columns of each phase
  int64_t Wp = 0;                 // row pitch
  int64_t lead = 0;               // zeros before the first row
  int64_t rows = 0;               // rows per phase
  int64_t phase_size = 0;
  int64_t channel_size = 0;       // all phases of one channel
  int64_t K = 0;                  // positions of the reduction: Ho * Wp
  int64_t P = 0;                  // output positions Ho * Wo
  int64_t N = 0;                  // cin_g * kh * kw
  // Stride 1 only: the padded input grid of the shifted ghost norm.
  int64_t Hq = 0, Wq = 0, Pq = 0;
  // 3x3, stride 1, dilation 1 only: tiles of 2x2 outputs for Winograd F(3x3, 2x2).
  int64_t Th = 0, Tw = 0, T = 0;
  enum Mode { kMaterialise, kGhost, kShiftGhost, kWinograd } mode = kMaterialise;

  explicit ConvPlan(const ConvGeometry& g, int64_t simd_lanes) : geo(g) {
    cin_g = g.in_channels / g.groups;
    cout_g = g.out_channels / g.groups;
    kh = g.kernel[0];
    kw = g.kernel[1];
    auto taps = [](int64_t k, int64_t s, int64_t p, int64_t d, std::vector<int64_t>& r,
                   std::vector<int64_t>& q, int64_t& qmin, int64_t& qmax) {
      r.resize(k);
      q.resize(k);
      qmin = std::numeric_limits<int64_t>::max();
      qmax = std::numeric_limits<int64_t>::min();
      for (int64_t t = 0; t < k; ++t) {
        const int64_t v = t * d - p;
        q[t] = floor_div(v, s);
        r[t] = v - q[t] * s;
        qmin = std::min(qmin, q[t]);
        qmax = std::max(qmax, q[t]);
      }
    };
    taps(kh, g.stride[0], g.padding[0], g.dilation[0], rh, qh, qh_min, qh_max);
    taps(kw, g.stride[1], g.padding[1], g.dilation[1], rw, qw, qw_min, qw_max);
    const int64_t sh = g.stride[0], sw = g.stride[1];
    nvh.resize(sh);
    nvw.resize(sw);
    int64_t nvw_max = 0;
    for (int64_t r = 0; r < sh; ++r) {
      nvh[r] = std::max<int64_t>(0, (g.in_size[0] - r + sh - 1) / sh);
    }
    for (int64_t r = 0; r < sw; ++r) {
      nvw[r] = std::max<int64_t>(0, (g.in_size[1] - r + sw - 1) / sw);
      nvw_max = std::max(nvw_max, nvw[r]);
    }
    const int64_t Ho = g.out_size[0], Wo = g.out_size[1];
    // Output rows fit (Wp >= Wo); reads right of a row stay in it (Wp >=
    // Wo + qw_max); reads left of a row land in the previous row's zero tail
    // (Wp + qw_min >= nvw); the data fits (Wp >= nvw).
    Wp = std::max({Wo, Wo + qw_max, nvw_max - std::min<int64_t>(qw_min, 0), nvw_max, int64_t{1}});
    lead = std::max<int64_t>(0, -qw_min);
    rows = Ho + qh_max - qh_min;
    phase_size = round_up(lead + rows * Wp + std::max<int64_t>(qw_max, 0) + 1, 16);
    channel_size = phase_size * sh * sw;
    K = Ho * Wp;
    P = Ho * Wo;
    N = cin_g * kh * kw;
    // Multiply-adds per example and group of each method (see the top of the
    // file); the cheapest wins.
    const double materialise = static_cast<double>(K) * N * round_up(std::max<int64_t>(cout_g, 1), simd_lanes);
    const double ghost = static_cast<double>(P) * P * (N + cout_g) + static_cast<double>(P) * (N + cout_g);
    double shift_ghost = std::numeric_limits<double>::infinity();
    if (g.stride[0] == 1 && g.stride[1] == 1) {
      Hq = Ho + (kh - 1) * g.dilation[0];  // = H + 2 * padding
      Wq = Wo + (kw - 1) * g.dilation[1];
      Pq = Hq * Wq;
      shift_ghost = static_cast<double>(Pq) * Pq * cin_g + static_cast<double>(P) * P * (cout_g + kh * kw) +
          static_cast<double>(Pq) * cin_g;
    }
    double winograd = std::numeric_limits<double>::infinity();
    if (g.spatial_dims == 2 && kh == 3 && kw == 3 && g.stride[0] == 1 && g.stride[1] == 1 &&
        g.dilation[0] == 1 && g.dilation[1] == 1) {
      Th = (Ho + 1) / 2;
      Tw = (Wo + 1) / 2;
      T = Th * Tw;
      const double cip = round_up(std::max<int64_t>(cin_g, 1), simd_lanes);
      const double cop = round_up(std::max<int64_t>(cout_g, 1), simd_lanes);
      // 16 products of [Cin x tiles] x [tiles x Cout], plus the transforms
      // (about 64 multiply-add equivalents per tile and channel) and the
      // output transform.
      winograd = 16.0 * T * cip * cop + 64.0 * T * (cip + cop) + 32.0 * cip * cop;
    }
    const double best = std::min({materialise, ghost, shift_ghost, winograd});
    if (winograd == best) {
      mode = kWinograd;
    } else if (shift_ghost == best) {
      mode = kShiftGhost;
    } else if (ghost == best && ghost < materialise) {
      mode = kGhost;
    }
  }

  // Offset, within one channel's block, of the B row of tap (th, tw).
  int64_t tap_offset(int64_t th, int64_t tw) const {
    return (rh[th] * geo.stride[1] + rw[tw]) * phase_size + lead + (qh[th] - qh_min) * Wp + qw[tw];
  }
};

// Copies channel c of one example (x_c: [H][W], contiguous) into its phases.
template <typename T, typename scalar_t>
GN_INLINE void fill_phases(const ConvPlan& pl, const scalar_t* x_c, T* dst_c) {
  const ConvGeometry& g = pl.geo;
  const int64_t sh = g.stride[0], sw = g.stride[1];
  const int64_t W = g.in_size[1];
  const int64_t Ho = g.out_size[0];
  for (int64_t r_h = 0; r_h < sh; ++r_h) {
    const int64_t rho_begin = std::max<int64_t>(0, pl.qh_min);
    const int64_t rho_end = std::min(pl.nvh[r_h], Ho + pl.qh_max);
    for (int64_t rho = rho_begin; rho < rho_end; ++rho) {
      const scalar_t* src = x_c + (rho * sh + r_h) * W;
      for (int64_t r_w = 0; r_w < sw; ++r_w) {
        T* dst = dst_c + (r_h * sw + r_w) * pl.phase_size + pl.lead + (rho - pl.qh_min) * pl.Wp;
        const int64_t n = pl.nvw[r_w];
        if (sw == 1) {
          if constexpr (std::is_same_v<T, scalar_t>) {
            std::memcpy(dst, src, sizeof(T) * n);
          } else {
            for (int64_t j = 0; j < n; ++j) {
              dst[j] = to_acc<T>(src[j]);
            }
          }
        } else {
          for (int64_t j = 0; j < n; ++j) {
            dst[j] = to_acc<T>(src[j * sw + r_w]);
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------- transposes
//
// dst[j * ldd + c] = src[c * lds + j] for j < n positions and c < C channels
// (src: one contiguous row of positions per channel). Blocks of L x L are
// transposed in registers (the unpack / shuffle / 128-bit permute sequence of
// an AVX 8x8 transpose, written with __builtin_shuffle); the edges go element
// by element.

GN_INLINE void transpose_block(Simd<float>::V r[8]) {
  typedef int32_t I __attribute__((vector_size(32)));
  using V = Simd<float>::V;
  V t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shuffle(r[i], r[i + 1], I{0, 8, 1, 9, 4, 12, 5, 13});
    t[i + 1] = __builtin_shuffle(r[i], r[i + 1], I{2, 10, 3, 11, 6, 14, 7, 15});
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = __builtin_shuffle(t[i], t[i + 2], I{0, 1, 8, 9, 4, 5, 12, 13});
    u[i + 1] = __builtin_shuffle(t[i], t[i + 2], I{2, 3, 10, 11, 6, 7, 14, 15});
    u[i + 2] = __builtin_shuffle(t[i + 1], t[i + 3], I{0, 1, 8, 9, 4, 5, 12, 13});
    u[i + 3] = __builtin_shuffle(t[i + 1], t[i + 3], I{2, 3, 10, 11, 6, 7, 14, 15});
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = __builtin_shuffle(u[i], u[i + 4], I{0, 1, 2, 3, 8, 9, 10, 11});
    r[i + 4] = __builtin_shuffle(u[i], u[i + 4], I{4, 5, 6, 7, 12, 13, 14, 15});
  }
}

GN_INLINE void transpose_block(Simd<double>::V r[4]) {
  typedef int64_t I __attribute__((vector_size(32)));
  using V = Simd<double>::V;
  const V t0 = __builtin_shuffle(r[0], r[1], I{0, 4, 2, 6});
  const V t1 = __builtin_shuffle(r[0], r[1], I{1, 5, 3, 7});
  const V t2 = __builtin_shuffle(r[2], r[3], I{0, 4, 2, 6});
  const V t3 = __builtin_shuffle(r[2], r[3], I{1, 5, 3, 7});
  r[0] = __builtin_shuffle(t0, t2, I{0, 1, 4, 5});
  r[1] = __builtin_shuffle(t1, t3, I{0, 1, 4, 5});
  r[2] = __builtin_shuffle(t0, t2, I{2, 3, 6, 7});
  r[3] = __builtin_shuffle(t1, t3, I{2, 3, 6, 7});
}

template <typename T>
GN_INLINE void transpose_impl(const T* src, int64_t lds, int64_t C, int64_t n, T* dst, int64_t ldd) {
  using V = typename Simd<T>::V;
  constexpr int64_t L = Simd<T>::L;
  const int64_t C_full = C - C % L;
  const int64_t n_full = n - n % L;
  for (int64_t j = 0; j < n_full; j += L) {
    for (int64_t c = 0; c < C_full; c += L) {
      V r[L];
      for (int64_t i = 0; i < L; ++i) {
        r[i] = vload<T>(src + (c + i) * lds + j);
      }
      transpose_block(r);
      for (int64_t i = 0; i < L; ++i) {
        vstore<T>(dst + (j + i) * ldd + c, r[i]);
      }
    }
    for (int64_t c = C_full; c < C; ++c) {
      for (int64_t i = 0; i < L; ++i) {
        dst[(j + i) * ldd + c] = src[c * lds + j + i];
      }
    }
  }
  for (int64_t j = n_full; j < n; ++j) {
    for (int64_t c = 0; c < C; ++c) {
      dst[j * ldd + c] = src[c * lds + j];
    }
  }
}

GN_CPU_CLONES void transpose_f32(const float* src, int64_t lds, int64_t C, int64_t n, float* dst, int64_t ldd) {
  transpose_impl<float>(src, lds, C, n, dst, ldd);
}

GN_CPU_CLONES void transpose_f64(const double* src, int64_t lds, int64_t C, int64_t n, double* dst, int64_t ldd) {
  transpose_impl<double>(src, lds, C, n, dst, ldd);
}

template <typename T, typename scalar_t>
GN_INLINE void transpose(const scalar_t* src, int64_t lds, int64_t C, int64_t n, T* dst, int64_t ldd) {
  if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<T, float>) {
    transpose_f32(src, lds, C, n, dst, ldd);
  } else if constexpr (std::is_same_v<scalar_t, double>) {
    transpose_f64(src, lds, C, n, dst, ldd);
  } else {
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t j = 0; j < n; ++j) {
        dst[j * ldd + c] = to_acc<T>(src[c * lds + j]);
      }
    }
  }
}

// Writes the output gradient of one group's channels (g_first + o * Ho*Wo,
// contiguous) transposed into gt [Ho * Wp][Cp]: gt[h*Wp + w][o] = g[o][h][w].
template <typename T, typename scalar_t>
GN_INLINE void fill_grad_panel(const ConvPlan& pl, const scalar_t* g_first, T* gt, int64_t Cp) {
  const int64_t Ho = pl.geo.out_size[0], Wo = pl.geo.out_size[1];
  const int64_t HW = Ho * Wo;
  if (pl.Wp == Wo) {
    transpose<T>(g_first, HW, pl.cout_g, HW, gt, Cp);
    return;
  }
  for (int64_t h = 0; h < Ho; ++h) {
    transpose<T>(g_first + h * Wo, HW, pl.cout_g, Wo, gt + h * pl.Wp * Cp, Cp);
  }
}

// Unfolds one group of one example into u [N][Pp]: u[(c, th, tw)][h*Wo + w] =
// x[c][h*sh - ph + th*dh][w*sw - pw + tw*dw], zero outside. Out-of-range
// entries are never written (the buffer starts zeroed and the set of written
// entries is the same for every example).
template <typename T, typename scalar_t>
GN_INLINE void unfold_group(const ConvPlan& pl, const scalar_t* x_first, T* u, int64_t Pp) {
  const ConvGeometry& g = pl.geo;
  const int64_t H = g.in_size[0], W = g.in_size[1];
  const int64_t Ho = g.out_size[0], Wo = g.out_size[1];
  const int64_t sh = g.stride[0], sw = g.stride[1];
  for (int64_t c = 0; c < pl.cin_g; ++c) {
    const scalar_t* xc = x_first + c * H * W;
    for (int64_t th = 0; th < pl.kh; ++th) {
      for (int64_t tw = 0; tw < pl.kw; ++tw) {
        T* row = u + ((c * pl.kh + th) * pl.kw + tw) * Pp;
        const int64_t oh = th * g.dilation[0] - g.padding[0];
        const int64_t ow = tw * g.dilation[1] - g.padding[1];
        // w range with 0 <= w*sw + ow < W.
        const int64_t w_begin = std::max<int64_t>(0, (-ow + sw - 1) / sw);
        const int64_t w_end = std::min<int64_t>(Wo, ow >= W ? 0 : (W - 1 - ow) / sw + 1);
        for (int64_t h = 0; h < Ho; ++h) {
          const int64_t ih = h * sh + oh;
          if (ih < 0 || ih >= H) {
            continue;
          }
          const scalar_t* src = xc + ih * W + ow;
          T* dst = row + h * Wo;
          for (int64_t w = w_begin; w < w_end; ++w) {
            dst[w] = to_acc<T>(src[w * sw]);
          }
        }
      }
    }
  }
}

// sum over taps (th, tw) and output positions q = (h, w), q' = (h', w') of
// GG[q][q'] * XX[(h + th dh) * Wq + w + tw dw][(h' + th dh) * Wq + w' + tw dw]:
// rows of w' are contiguous in both, so the inner loop is a dot product of Wo.
template <typename T>
GN_INLINE double shifted_gram_dot_impl(
    int64_t Ho, int64_t Wo, int64_t Wq, int64_t kh, int64_t kw, int64_t dh, int64_t dw, const T* gg, int64_t ldg,
    const T* xx, int64_t ldx) {
  using V = typename Simd<T>::V;
  constexpr int64_t L = Simd<T>::L;
  double total = 0.0;
  for (int64_t th = 0; th < kh; ++th) {
    for (int64_t tw = 0; tw < kw; ++tw) {
      const int64_t off = th * dh * Wq + tw * dw;
      for (int64_t h = 0; h < Ho; ++h) {
        V acc = V{};
        T tail = T(0);
        for (int64_t w = 0; w < Wo; ++w) {
          const T* grow = gg + (h * Wo + w) * ldg;
          const T* xrow = xx + (h * Wq + w + off) * ldx + off;
          for (int64_t h2 = 0; h2 < Ho; ++h2) {
            const T* gp2 = grow + h2 * Wo;
            const T* xp2 = xrow + h2 * Wq;
            int64_t w2 = 0;
            for (; w2 + L <= Wo; w2 += L) {
              acc += vload<T>(gp2 + w2) * vload<T>(xp2 + w2);
            }
            for (; w2 < Wo; ++w2) {
              tail += gp2[w2] * xp2[w2];
            }
          }
        }
        total += vsum_double<T>(acc) + static_cast<double>(tail);
      }
    }
  }
  return total;
}

GN_CPU_CLONES double shifted_gram_dot_f32(
    int64_t Ho, int64_t Wo, int64_t Wq, int64_t kh, int64_t kw, int64_t dh, int64_t dw, const float* gg, int64_t ldg,
    const float* xx, int64_t ldx) {
  return shifted_gram_dot_impl<float>(Ho, Wo, Wq, kh, kw, dh, dw, gg, ldg, xx, ldx);
}

GN_CPU_CLONES double shifted_gram_dot_f64(
    int64_t Ho, int64_t Wo, int64_t Wq, int64_t kh, int64_t kw, int64_t dh, int64_t dw, const double* gg,
    int64_t ldg, const double* xx, int64_t ldx) {
  return shifted_gram_dot_impl<double>(Ho, Wo, Wq, kh, kw, dh, dw, gg, ldg, xx, ldx);
}

template <typename T>
double shifted_gram_dot(const ConvPlan& pl, const T* gg, int64_t ldg, const T* xx, int64_t ldx) {
  const ConvGeometry& g = pl.geo;
  if constexpr (std::is_same_v<T, float>) {
    return shifted_gram_dot_f32(g.out_size[0], g.out_size[1], pl.Wq, pl.kh, pl.kw, g.dilation[0], g.dilation[1], gg,
                                ldg, xx, ldx);
  } else {
    return shifted_gram_dot_f64(g.out_size[0], g.out_size[1], pl.Wq, pl.kh, pl.kw, g.dilation[0], g.dilation[1], gg,
                                ldg, xx, ldx);
  }
}

// ---------------------------------------------------------------- Winograd
//
// For a 3x3 convolution with stride 1 and dilation 1, example b's weight
// gradient W[o][i][u][v] = sum_{h,w} g[o][h][w] x[i][h + u][w + v] (x on the
// zero-padded grid) is a correlation of a large "filter" g with x giving a 3x3
// result. Split the output positions into 2x2 tiles; each tile contributes a
// 3x3 correlation of its 2x2 gradient tile with the 4x4 input tile under it,
// which Winograd's minimal filtering F(3x3, 2x2) computes with 16 products
// instead of 36:
//
//   W = A^T [ sum over tiles (G g_t G^T) * (B^T x_t B) ] A      (* elementwise)
//
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 -1 0 1]   G = [1 0; .5 .5; .5 -.5; 0 1]
//   A^T = [1 1 1 0; 0 1 -1 0; 0 1 1 1]
//
// The sum over tiles is 16 products [Cin x tiles] x [tiles x Cout] (one per
// transformed position), 2.25x fewer multiply-adds than materialising W
// directly; the transforms only add and halve, so float32 keeps its accuracy.
// Inputs and gradients are first transposed channels-last (grid position x
// channels), so every transform works on vectors of 8 channels.

// Xt[e][t - t0][i] (e = 4 * xi + eta) for the tiles t0 <= t < t1 (tile t =
// (a, b) = (t / Tw, t % Tw)): x tile rows r, columns c at
// xg[(2a + r) * ldr + (2b + c) * Cp + i].
template <typename T>
GN_INLINE void winograd_x_impl(
    const T* xg, int64_t t0, int64_t t1, int64_t Tw, int64_t ldr, int64_t Cp, T* xt, int64_t lde) {
  using V = typename Simd<T>::V;
  constexpr int64_t L = Simd<T>::L;
  for (int64_t tt = t0; tt < t1; ++tt) {
    const int64_t a = tt / Tw, b = tt % Tw, t = tt - t0;
    {
      for (int64_t i = 0; i < Cp; i += L) {
        const T* base = xg + (2 * a) * ldr + (2 * b) * Cp + i;
        V d[4][4];
        for (int r = 0; r < 4; ++r) {
          for (int c = 0; c < 4; ++c) {
            d[r][c] = vload<T>(base + r * ldr + c * Cp);
          }
        }
        // Rows: B^T d.
        V e[4][4];
        for (int c = 0; c < 4; ++c) {
          e[0][c] = d[0][c] - d[2][c];
          e[1][c] = d[1][c] + d[2][c];
          e[2][c] = d[2][c] - d[1][c];
          e[3][c] = d[3][c] - d[1][c];
        }
        // Columns: (B^T d) B.
        T* out = xt + t * Cp + i;
        for (int r = 0; r < 4; ++r) {
          vstore<T>(out + (4 * r + 0) * lde, e[r][0] - e[r][2]);
          vstore<T>(out + (4 * r + 1) * lde, e[r][1] + e[r][2]);
          vstore<T>(out + (4 * r + 2) * lde, e[r][2] - e[r][1]);
          vstore<T>(out + (4 * r + 3) * lde, e[r][3] - e[r][1]);
        }
      }
    }
  }
}

// Gt[e][t - t0][o]: gradient tile rows r, columns c at gg[(2a + r) * ldr + (2b + c) * Cp + o].
template <typename T>
GN_INLINE void winograd_g_impl(
    const T* gg, int64_t t0, int64_t t1, int64_t Tw, int64_t ldr, int64_t Cp, T* gt, int64_t lde) {
  using V = typename Simd<T>::V;
  constexpr int64_t L = Simd<T>::L;
  const V half = vbroadcast(T(0.5));
  for (int64_t tt = t0; tt < t1; ++tt) {
    const int64_t a = tt / Tw, b = tt % Tw, t = tt - t0;
    {
      for (int64_t o = 0; o < Cp; o += L) {
        const T* base = gg + (2 * a) * ldr + (2 * b) * Cp + o;
        const V g00 = vload<T>(base), g01 = vload<T>(base + Cp);
        const V g10 = vload<T>(base + ldr), g11 = vload<T>(base + ldr + Cp);
        // Rows: G g (4 x 2).
        V e[4][2];
        e[0][0] = g00;
        e[0][1] = g01;
        e[1][0] = (g00 + g10) * half;
        e[1][1] = (g01 + g11) * half;
        e[2][0] = (g00 - g10) * half;
        e[2][1] = (g01 - g11) * half;
        e[3][0] = g10;
        e[3][1] = g11;
        // Columns: (G g) G^T (4 x 4).
        T* out = gt + t * Cp + o;
        for (int r = 0; r < 4; ++r) {
          vstore<T>(out + (4 * r + 0) * lde, e[r][0]);
          vstore<T>(out + (4 * r + 1) * lde, (e[r][0] + e[r][1]) * half);
          vstore<T>(out + (4 * r + 2) * lde, (e[r][0] - e[r][1]) * half);
          vstore<T>(out + (4 * r + 3) * lde, e[r][1]);
        }
      }
    }
  }
}

// sum over i < N and the Cp output channels of ||A^T M[.][i][o] A||^2, with
// M[e][i][o] at m[e * lde + i * Cp + o] (columns beyond Cout are zero).
template <typename T>
GN_INLINE double winograd_out_impl(const T* m, int64_t N, int64_t Cp, int64_t lde) {
  using V = typename Simd<T>::V;
  constexpr int64_t L = Simd<T>::L;
  double total = 0.0;
  for (int64_t i = 0; i < N; ++i) {
    V acc = V{};
    for (int64_t o = 0; o < Cp; o += L) {
      const T* base = m + i * Cp + o;
      V mm[4][4];
      for (int r = 0; r < 4; ++r) {
        for (int c = 0; c < 4; ++c) {
          mm[r][c] = vload<T>(base + (4 * r + c) * lde);
        }
      }
      // Rows: A^T M (3 x 4).
      V e[3][4];
      for (int c = 0; c < 4; ++c) {
        e[0][c] = mm[0][c] + mm[1][c] + mm[2][c];
        e[1][c] = mm[1][c] - mm[2][c];
        e[2][c] = mm[1][c] + mm[2][c] + mm[3][c];
      }
      // Columns: (A^T M) A (3 x 3), squared.
      for (int r = 0; r < 3; ++r) {
        const V w0 = e[r][0] + e[r][1] + e[r][2];
        const V w1 = e[r][1] - e[r][2];
        const V w2 = e[r][1] + e[r][2] + e[r][3];
        acc += w0 * w0 + w1 * w1 + w2 * w2;
      }
    }
    total += vsum_double<T>(acc);
  }
  return total;
}

GN_CPU_CLONES void winograd_x_f32(
    const float* xg, int64_t t0, int64_t t1, int64_t Tw, int64_t ldr, int64_t Cp, float* xt, int64_t lde) {
  winograd_x_impl<float>(xg, t0, t1, Tw, ldr, Cp, xt, lde);
}
GN_CPU_CLONES void winograd_x_f64(
    const double* xg, int64_t t0, int64_t t1, int64_t Tw, int64_t ldr, int64_t Cp, double* xt, int64_t lde) {
  winograd_x_impl<double>(xg, t0, t1, Tw, ldr, Cp, xt, lde);
}
GN_CPU_CLONES void winograd_g_f32(
    const float* gg, int64_t t0, int64_t t1, int64_t Tw, int64_t ldr, int64_t Cp, float* gt, int64_t lde) {
  winograd_g_impl<float>(gg, t0, t1, Tw, ldr, Cp, gt, lde);
}
GN_CPU_CLONES void winograd_g_f64(
    const double* gg, int64_t t0, int64_t t1, int64_t Tw, int64_t ldr, int64_t Cp, double* gt, int64_t lde) {
  winograd_g_impl<double>(gg, t0, t1, Tw, ldr, Cp, gt, lde);
}
GN_CPU_CLONES double winograd_out_f32(const float* m, int64_t N, int64_t Cp, int64_t lde) {
  return winograd_out_impl<float>(m, N, Cp, lde);
}
GN_CPU_CLONES double winograd_out_f64(const double* m, int64_t N, int64_t Cp, int64_t lde) {
  return winograd_out_impl<double>(m, N, Cp, lde);
}

template <typename T>
struct Winograd {
  static void x(const T* xg, int64_t t0, int64_t t1, int64_t Tw, int64_t ldr, int64_t Cp, T* xt, int64_t lde) {
    if constexpr (std::is_same_v<T, float>) {
      winograd_x_f32(xg, t0, t1, Tw, ldr, Cp, xt, lde);
    } else {
      winograd_x_f64(xg, t0, t1, Tw, ldr, Cp, xt, lde);
    }
  }
  static void g(const T* gg, int64_t t0, int64_t t1, int64_t Tw, int64_t ldr, int64_t Cp, T* gt, int64_t lde) {
    if constexpr (std::is_same_v<T, float>) {
      winograd_g_f32(gg, t0, t1, Tw, ldr, Cp, gt, lde);
    } else {
      winograd_g_f64(gg, t0, t1, Tw, ldr, Cp, gt, lde);
    }
  }
  static double out(const T* m, int64_t N, int64_t Cp, int64_t lde) {
    if constexpr (std::is_same_v<T, float>) {
      return winograd_out_f32(m, N, Cp, lde);
    } else {
      return winograd_out_f64(m, N, Cp, lde);
    }
  }
};

template <typename scalar_t>
void conv_impl(const ConvPlan& pl, const at::Tensor& x, const at::Tensor& g, bool bias, at::Tensor& out) {
  using T = acc_type_t<scalar_t>;
  constexpr int64_t L = Simd<T>::L;
  const ConvGeometry& geo = pl.geo;
  const int64_t B = geo.batch;
  const int64_t Cin = geo.in_channels, Cout = geo.out_channels, G = geo.groups;
  const int64_t HWin = geo.in_size[0] * geo.in_size[1];
  const int64_t P = pl.P;
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* gp = g.const_data_ptr<scalar_t>();
  T* o = out.mutable_data_ptr<T>();
  // Adds the bias term (the squared norm of g summed over positions) and stores.
  auto finish = [&](int64_t b, double total) {
    if (bias) {
      for (int64_t c = 0; c < Cout; ++c) {
        const scalar_t* row = gp + (b * Cout + c) * P;
        T lanes[8] = {};
        int64_t j = 0;
        for (; j + 8 <= P; j += 8) {
#pragma GCC unroll 8
          for (int l = 0; l < 8; ++l) {
            lanes[l] += to_acc<T>(row[j + l]);
          }
        }
        double sum = 0.0;
        for (; j < P; ++j) {
          sum += static_cast<double>(to_acc<T>(row[j]));
        }
        for (int l = 0; l < 8; ++l) {
          sum += static_cast<double>(lanes[l]);
        }
        total += sum * sum;
      }
    }
    o[b] = static_cast<T>(total);
  };
  parallel_examples(B, 1, 1, [&](const auto& take) {
    std::vector<const T*> rows(pl.mode == ConvPlan::kMaterialise ? pl.N : 0);
    std::vector<const T*> shifted;
    if (pl.mode == ConvPlan::kWinograd) {
      // Channels-last copies: the padded input grid xg [(2 Th + 2) x (2 Tw + 2)]
      // positions x Cip channels and the output gradient gg [2 Th x 2 Tw] x Cp
      // (zero borders and odd edges stay zero); their transforms xt [16][T][Cip]
      // and gt [16][T][Cp]; the 16 products m [16][cin_g][Cp].
      const int64_t Cip = round_up(std::max<int64_t>(pl.cin_g, 1), L);
      const int64_t Cp = round_up(std::max<int64_t>(pl.cout_g, 1), L);
      const int64_t H = geo.in_size[0], W = geo.in_size[1];
      const int64_t Ho = geo.out_size[0], Wo = geo.out_size[1];
      const int64_t ph = geo.padding[0], pw = geo.padding[1];
      const int64_t Gw = 2 * pl.Tw + 2;
      const int64_t ldx = Gw * Cip;             // grid row of xg
      const int64_t ldg = 2 * pl.Tw * Cp;       // grid row of gg
      // Tiles go in blocks whose transforms (16 x kTiles x channels) stay in
      // L1/L2 while the 16 products accumulate them into m.
      constexpr int64_t kBlockBytes = 32768;
      const int64_t TB = std::min<int64_t>(
          pl.T, std::clamp<int64_t>(kBlockBytes / (16 * (Cip + Cp) * static_cast<int64_t>(sizeof(T))), 4, 256));
      const int64_t ex = TB * Cip, eg = TB * Cp, em = pl.cin_g * Cp;
      Buffer<T> xg((2 * pl.Th + 2) * ldx);
      Buffer<T> gg(2 * pl.Th * ldg);
      Buffer<T> xt(16 * ex);
      Buffer<T> gt(16 * eg);
      Buffer<T> m(16 * em);
      std::vector<const T*> xrows(pl.cin_g);
      for (int64_t b0, b1; take(b0, b1);) for (int64_t b = b0; b < b1; ++b) {
        double total = 0.0;
        for (int64_t grp = 0; grp < G; ++grp) {
          const scalar_t* xsrc = xp + (b * Cin + grp * pl.cin_g) * HWin;
          for (int64_t h = 0; h < H; ++h) {
            // Only the rows and columns the tiles read (the grid may be smaller
            // than the padded input when the output does not reach its end).
            const int64_t r = h + ph;
            if (r >= 2 * pl.Th + 2) {
              break;
            }
            const int64_t wn = std::min<int64_t>(W, Gw - pw);
            if (wn > 0) {
              transpose<T>(xsrc + h * W, H * W, pl.cin_g, wn, xg.data() + r * ldx + pw * Cip, Cip);
            }
          }
          const scalar_t* gsrc = gp + (b * Cout + grp * pl.cout_g) * P;
          for (int64_t h = 0; h < Ho; ++h) {
            transpose<T>(gsrc + h * Wo, P, pl.cout_g, Wo, gg.data() + h * ldg, Cp);
          }
          for (int64_t t0 = 0; t0 < pl.T; t0 += TB) {
            const int64_t t1 = std::min(pl.T, t0 + TB);
            Winograd<T>::x(xg.data(), t0, t1, pl.Tw, ldx, Cip, xt.data(), ex);
            Winograd<T>::g(gg.data(), t0, t1, pl.Tw, ldg, Cp, gt.data(), eg);
            for (int64_t e = 0; e < 16; ++e) {
              for (int64_t i = 0; i < pl.cin_g; ++i) {
                xrows[i] = xt.data() + e * ex + i;
              }
              panel_product<T>(pl.cin_g, Cp / L, t1 - t0, xrows.data(), Cip, gt.data() + e * eg, Cp,
                               t0 == 0 ? kStore : kAdd, m.data() + e * em, Cp, nullptr, shifted);
            }
          }
          total += Winograd<T>::out(m.data(), pl.cin_g, Cp, em);
        }
        finish(b, total);
      }
    } else if (pl.mode == ConvPlan::kShiftGhost) {
      // Gram matrices of the zero-padded input grid over input channels (XX,
      // Pq x Pq) and of the output gradient over output channels (GG, P x P);
      // ||W||^2 = sum over taps t of sum_{q,q'} GG[q][q'] XX[q + t][q' + t].
      const int64_t Pqp = round_up(pl.Pq, L);
      const int64_t Pp = round_up(P, L);
      const int64_t H = geo.in_size[0], W = geo.in_size[1];
      const int64_t ph = geo.padding[0], pw = geo.padding[1];
      Buffer<T> xq(pl.cin_g * Pqp);
      Buffer<T> gq(pl.cout_g * Pp);
      Buffer<T> xx(pl.Pq * Pqp);
      Buffer<T> gg(P * Pp);
      std::vector<const T*> xrows(pl.Pq), grows(P);
      for (int64_t r = 0; r < pl.Pq; ++r) {
        xrows[r] = xq.data() + r;
      }
      for (int64_t q = 0; q < P; ++q) {
        grows[q] = gq.data() + q;
      }
      for (int64_t b0, b1; take(b0, b1);) for (int64_t b = b0; b < b1; ++b) {
        double total = 0.0;
        for (int64_t grp = 0; grp < G; ++grp) {
          const scalar_t* xsrc = xp + (b * Cin + grp * pl.cin_g) * HWin;
          for (int64_t c = 0; c < pl.cin_g; ++c) {
            for (int64_t h = 0; h < H; ++h) {
              T* dst = xq.data() + c * Pqp + (h + ph) * pl.Wq + pw;
              const scalar_t* src = xsrc + (c * H + h) * W;
              for (int64_t w = 0; w < W; ++w) {
                dst[w] = to_acc<T>(src[w]);
              }
            }
          }
          const scalar_t* gsrc = gp + (b * Cout + grp * pl.cout_g) * P;
          for (int64_t c = 0; c < pl.cout_g; ++c) {
            for (int64_t j = 0; j < P; ++j) {
              gq[c * Pp + j] = to_acc<T>(gsrc[c * P + j]);
            }
          }
          panel_product<T>(pl.Pq, Pqp / L, pl.cin_g, xrows.data(), Pqp, xq.data(), Pqp, kStore, xx.data(), Pqp,
                           nullptr, shifted);
          panel_product<T>(P, Pp / L, pl.cout_g, grows.data(), Pp, gq.data(), Pp, kStore, gg.data(), Pp, nullptr,
                           shifted);
          total += shifted_gram_dot<T>(pl, gg.data(), Pp, xx.data(), Pqp);
        }
        finish(b, total);
      }
    } else if (pl.mode == ConvPlan::kGhost) {
      GhostWork<T> work;
      work.init(P, std::max(pl.N, pl.cout_g));
      const int64_t Pp = work.Pp;
      Buffer<T> u(pl.N * Pp);
      Buffer<T> gg(pl.cout_g * Pp);
      for (int64_t b0, b1; take(b0, b1);) for (int64_t b = b0; b < b1; ++b) {
        double total = 0.0;
        for (int64_t grp = 0; grp < G; ++grp) {
          unfold_group<T>(pl, xp + (b * Cin + grp * pl.cin_g) * HWin, u.data(), Pp);
          const scalar_t* gsrc = gp + (b * Cout + grp * pl.cout_g) * P;
          for (int64_t c = 0; c < pl.cout_g; ++c) {
            for (int64_t j = 0; j < P; ++j) {
              gg[c * Pp + j] = to_acc<T>(gsrc[c * P + j]);
            }
          }
          total += work.run(u.data(), pl.N, gg.data(), pl.cout_g);
        }
        finish(b, total);
      }
    } else {
      const int64_t Cp = round_up(std::max<int64_t>(pl.cout_g, 1), L);
      Buffer<T> xbuf(pl.cin_g * pl.channel_size);
      Buffer<T> gt(pl.K * Cp);
      Buffer<T> scratch(pl.K > kBlockK ? pl.N * Cp : 1);
      for (int64_t c = 0; c < pl.cin_g; ++c) {
        for (int64_t th = 0; th < pl.kh; ++th) {
          for (int64_t tw = 0; tw < pl.kw; ++tw) {
            rows[(c * pl.kh + th) * pl.kw + tw] = xbuf.data() + c * pl.channel_size + pl.tap_offset(th, tw);
          }
        }
      }
      for (int64_t b0, b1; take(b0, b1);) for (int64_t b = b0; b < b1; ++b) {
        double total = 0.0;
        for (int64_t grp = 0; grp < G; ++grp) {
          const scalar_t* xsrc = xp + (b * Cin + grp * pl.cin_g) * HWin;
          for (int64_t c = 0; c < pl.cin_g; ++c) {
            fill_phases<T>(pl, xsrc + c * HWin, xbuf.data() + c * pl.channel_size);
          }
          fill_grad_panel<T>(pl, gp + (b * Cout + grp * pl.cout_g) * P, gt.data(), Cp);
          total += panel_product<T>(
              pl.N, Cp / L, pl.K, rows.data(), 1, gt.data(), Cp, kSumSq, scratch.data(), Cp,
              scratch.data(), shifted);
        }
        finish(b, total);
      }
    }
  });
}

at::Tensor conv_sq_norms_cpu(
    const at::Tensor& x_in, const at::Tensor& g_in, at::IntArrayRef kernel_size, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, bool bias) {
  const ConvGeometry geo = conv_sq_norms_check(x_in, g_in, kernel_size, stride, padding, dilation, groups);
  at::Tensor out = at::empty({geo.batch}, x_in.options().dtype(grad_norm_out_dtype(x_in.scalar_type())));
  if (geo.batch == 0) {
    return out;
  }
  const at::Tensor x = x_in.contiguous();
  const at::Tensor g = g_in.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "reuse::conv_sq_norms", [&] {
    using T = acc_type_t<scalar_t>;
    const ConvPlan plan(geo, Simd<T>::L);
    conv_impl<scalar_t>(plan, x, g, bias, out);
  });
  return out;
}

// ============================================================================
// reuse::affine_sq_norms
//
// Per (b, c): s_gx = sum_s g * xhat with xhat = x * scale[c] + shift[c] (x
// itself without scale and shift; computed per element, so no cancellation
// between a scaled sum and a shifted one), s_g = sum_s g. out[b] = sum_c
// [weight] s_gx^2 + [bias] s_g^2. Two layouts are read in place: positions
// contiguous ([B, C, S] as BatchNorm / GroupNorm give it: one row per (b, c))
// and channels contiguous ([B, S, C] transposed, as LayerNorm over the last
// dimension gives it: per b, rows of C channels added into per-channel sums).
// Anything else is made contiguous first.

// One (b, c) row of S positions: sw = sum g * (x * sc + sh), sb = sum g (x
// is not read without `weight`). Two vectors per step; the lanes are folded
// into double every kFoldRow positions.
constexpr int64_t kFoldRow = 4096;

template <typename T>
GN_INLINE void affine_row_impl(
    const T* g, const T* x, int64_t S, T sc, T sh, bool weight, double& sw, double& sb) {
  using V = typename Simd<T>::V;
  constexpr int64_t L = Simd<T>::L;
  const V vsc = vbroadcast(sc);
  const V vsh = vbroadcast(sh);
  double w = 0.0, b = 0.0;
  int64_t s = 0;
  while (s + 2 * L <= S) {
    const int64_t end = std::min(S - S % (2 * L), s + kFoldRow);
    V aw0 = V{}, aw1 = V{}, ab0 = V{}, ab1 = V{};
    if (weight) {
      for (; s < end; s += 2 * L) {
        const V g0 = vload<T>(g + s), g1 = vload<T>(g + s + L);
        aw0 += g0 * (vload<T>(x + s) * vsc + vsh);
        aw1 += g1 * (vload<T>(x + s + L) * vsc + vsh);
        ab0 += g0;
        ab1 += g1;
      }
    } else {
      for (; s < end; s += 2 * L) {
        ab0 += vload<T>(g + s);
        ab1 += vload<T>(g + s + L);
      }
    }
    w += vsum_double<T>(aw0 + aw1);
    b += vsum_double<T>(ab0 + ab1);
  }
  for (; s < S; ++s) {
    if (weight) {
      w += static_cast<double>(g[s] * (x[s] * sc + sh));
    }
    b += static_cast<double>(g[s]);
  }
  sw = w;
  sb = b;
}

GN_CPU_CLONES void affine_row_f32(
    const float* g, const float* x, int64_t S, float sc, float sh, bool weight, double& sw, double& sb) {
  affine_row_impl<float>(g, x, S, sc, sh, weight, sw, sb);
}

GN_CPU_CLONES void affine_row_f64(
    const double* g, const double* x, int64_t S, double sc, double sh, bool weight, double& sw, double& sb) {
  affine_row_impl<double>(g, x, S, sc, sh, weight, sw, sb);
}

// One position of all C channels (unit stride): aw[c] += g[c] * (x[c] *
// sc[c] + sh[c]), ab[c] += g[c].
template <typename T>
GN_INLINE void affine_cols_impl(
    const T* g, const T* x, int64_t C, const T* sc, const T* sh, bool weight, T* aw, T* ab) {
  using V = typename Simd<T>::V;
  constexpr int64_t L = Simd<T>::L;
  int64_t c = 0;
  for (; c + L <= C; c += L) {
    const V gv = vload<T>(g + c);
    if (weight) {
      vstore<T>(aw + c, vload<T>(aw + c) + gv * (vload<T>(x + c) * vload<T>(sc + c) + vload<T>(sh + c)));
    }
    vstore<T>(ab + c, vload<T>(ab + c) + gv);
  }
  for (; c < C; ++c) {
    if (weight) {
      aw[c] += g[c] * (x[c] * sc[c] + sh[c]);
    }
    ab[c] += g[c];
  }
}

GN_CPU_CLONES void affine_cols_f32(
    const float* g, const float* x, int64_t C, const float* sc, const float* sh, bool weight, float* aw, float* ab) {
  affine_cols_impl<float>(g, x, C, sc, sh, weight, aw, ab);
}

GN_CPU_CLONES void affine_cols_f64(
    const double* g, const double* x, int64_t C, const double* sc, const double* sh, bool weight, double* aw,
    double* ab) {
  affine_cols_impl<double>(g, x, C, sc, sh, weight, aw, ab);
}

// Row of n values at stride `stride` as T: the data itself when it already is
// unit-stride T, else a converted copy in `buf`.
template <typename T, typename scalar_t>
GN_INLINE const T* as_row(const scalar_t* p, int64_t n, int64_t stride, T* buf) {
  if constexpr (std::is_same_v<T, scalar_t>) {
    if (stride == 1) {
      return p;
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    buf[i] = to_acc<T>(p[i * stride]);
  }
  return buf;
}

template <typename scalar_t>
void affine_impl(
    const at::Tensor& x, const at::Tensor& g, const double* scale, const double* shift, bool weight,
    bool bias, at::Tensor& out) {
  using T = acc_type_t<scalar_t>;
  const int64_t B = g.size(0), C = g.size(1), S = g.size(2);
  const scalar_t* xp = weight ? x.const_data_ptr<scalar_t>() : nullptr;
  const scalar_t* gp = g.const_data_ptr<scalar_t>();
  const int64_t xsb = weight ? x.stride(0) : 0, xsc = weight ? x.stride(1) : 0, xss = weight ? x.stride(2) : 0;
  const int64_t gsb = g.stride(0), gsc = g.stride(1), gss = g.stride(2);
  T* o = out.mutable_data_ptr<T>();
  const bool s_unit = S <= 1 || (gss == 1 && (!weight || xss == 1));
  std::vector<T> sc(C), sh(C);
  for (int64_t c = 0; c < C; ++c) {
    sc[c] = scale != nullptr ? static_cast<T>(scale[c]) : T(1);
    sh[c] = shift != nullptr ? static_cast<T>(shift[c]) : T(0);
  }
  auto row = [&](const T* gr, const T* xr, int64_t n, T s_c, T s_h, double& w, double& b) {
    if constexpr (std::is_same_v<T, float>) {
      affine_row_f32(gr, xr, n, s_c, s_h, weight, w, b);
    } else {
      affine_row_f64(gr, xr, n, s_c, s_h, weight, w, b);
    }
  };
  auto cols = [&](const T* gr, const T* xr, T* aw, T* ab) {
    if constexpr (std::is_same_v<T, float>) {
      affine_cols_f32(gr, xr, C, sc.data(), sh.data(), weight, aw, ab);
    } else {
      affine_cols_f64(gr, xr, C, sc.data(), sh.data(), weight, aw, ab);
    }
  };
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(C * S, 1));
  parallel_examples(B, grain, grain, [&](const auto& take) {
    // Conversion buffers (half precision or strided rows) and, for the
    // channels-contiguous layout, per-channel partial sums folded into double
    // every kFoldCols positions.
    constexpr int64_t kFoldCols = 256;
    const int64_t rowlen = s_unit ? S : C;
    std::vector<T> gbuf(rowlen), xbuf(weight ? rowlen : 0);
    std::vector<T> aw(s_unit ? 0 : C), ab(s_unit ? 0 : C);
    std::vector<double> dw(s_unit ? 0 : C), db(s_unit ? 0 : C);
    for (int64_t b0, b1; take(b0, b1);) for (int64_t b = b0; b < b1; ++b) {
      double total = 0.0;
      if (s_unit) {
        for (int64_t c = 0; c < C; ++c) {
          const T* gr = as_row<T>(gp + b * gsb + c * gsc, S, 1, gbuf.data());
          const T* xr = weight ? as_row<T>(xp + b * xsb + c * xsc, S, 1, xbuf.data()) : nullptr;
          double w = 0.0, s_b = 0.0;
          row(gr, xr, S, sc[c], sh[c], w, s_b);
          total += (weight ? w * w : 0.0) + (bias ? s_b * s_b : 0.0);
        }
      } else {
        std::fill(dw.begin(), dw.end(), 0.0);
        std::fill(db.begin(), db.end(), 0.0);
        for (int64_t s0 = 0; s0 < S; s0 += kFoldCols) {
          std::fill(aw.begin(), aw.end(), T(0));
          std::fill(ab.begin(), ab.end(), T(0));
          for (int64_t s = s0; s < std::min(S, s0 + kFoldCols); ++s) {
            const T* gr = as_row<T>(gp + b * gsb + s * gss, C, gsc, gbuf.data());
            const T* xr = weight ? as_row<T>(xp + b * xsb + s * xss, C, xsc, xbuf.data()) : nullptr;
            cols(gr, xr, aw.data(), ab.data());
          }
          for (int64_t c = 0; c < C; ++c) {
            dw[c] += static_cast<double>(aw[c]);
            db[c] += static_cast<double>(ab[c]);
          }
        }
        for (int64_t c = 0; c < C; ++c) {
          total += (weight ? dw[c] * dw[c] : 0.0) + (bias ? db[c] * db[c] : 0.0);
        }
      }
      o[b] = static_cast<T>(total);
    }
  });
}

at::Tensor affine_sq_norms_cpu(
    const at::Tensor& x_in, const at::Tensor& g_in, const std::optional<at::Tensor>& scale,
    const std::optional<at::Tensor>& shift, bool weight, bool bias) {
  affine_sq_norms_check(x_in, g_in, scale, shift);
  const int64_t B = x_in.size(0);
  at::Tensor out = at::empty({B}, x_in.options().dtype(grad_norm_out_dtype(x_in.scalar_type())));
  if (B == 0) {
    return out;
  }
  if (!weight && !bias) {
    out.zero_();
    return out;
  }
  // Layouts read in place: positions contiguous or channels contiguous (for
  // every tensor read); anything else is copied.
  auto s_unit = [](const at::Tensor& t) { return t.size(2) <= 1 || t.stride(2) == 1; };
  auto c_unit = [](const at::Tensor& t) { return t.size(1) <= 1 || t.stride(1) == 1; };
  at::Tensor x = x_in;
  at::Tensor g = g_in;
  const bool all_s = s_unit(g) && (!weight || s_unit(x));
  const bool all_c = c_unit(g) && (!weight || c_unit(x));
  if (!all_s && !all_c) {
    g = g.contiguous();
    if (weight) {
      x = x.contiguous();
    }
  }
  // scale / shift as double [C].
  at::Tensor sc, sh;
  if (weight && scale.has_value()) {
    sc = scale->to(at::kDouble).contiguous();
  }
  if (weight && shift.has_value()) {
    sh = shift->to(at::kDouble).contiguous();
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "reuse::affine_sq_norms", [&] {
    affine_impl<scalar_t>(
        x, g, sc.defined() ? sc.const_data_ptr<double>() : nullptr,
        sh.defined() ? sh.const_data_ptr<double>() : nullptr, weight, bias, out);
  });
  return out;
}

// ============================================================================
// reuse::embedding_sq_norms
//
// Per example: the positions sorted by id, then per distinct id v !=
// padding_idx the rows of g at its positions are summed and the sum squared.

template <typename scalar_t, typename index_t>
void embedding_impl(
    const at::Tensor& indices, const at::Tensor& g, int64_t padding_idx, at::Tensor& out) {
  using T = acc_type_t<scalar_t>;
  const int64_t B = g.size(0), Tn = g.size(1), D = g.size(2);
  const index_t* ip = indices.const_data_ptr<index_t>();
  const scalar_t* gp = g.const_data_ptr<scalar_t>();
  T* o = out.mutable_data_ptr<T>();
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(Tn * D, 1));
  parallel_examples(B, grain, grain, [&](const auto& take) {
    std::vector<std::pair<int64_t, int64_t>> order(Tn);
    std::vector<T> sum(D);
    for (int64_t b0, b1; take(b0, b1);) for (int64_t b = b0; b < b1; ++b) {
      for (int64_t t = 0; t < Tn; ++t) {
        order[t] = {static_cast<int64_t>(ip[b * Tn + t]), t};
      }
      std::sort(order.begin(), order.end());
      double total = 0.0;
      const scalar_t* gb = gp + b * Tn * D;
      for (int64_t i = 0; i < Tn;) {
        int64_t j = i + 1;
        while (j < Tn && order[j].first == order[i].first) {
          ++j;
        }
        if (order[i].first != padding_idx) {
          if (j == i + 1) {
            total += sum_squares<T>(gb + order[i].second * D, D);
          } else {
            std::fill(sum.begin(), sum.end(), T(0));
            for (int64_t r = i; r < j; ++r) {
              const scalar_t* row = gb + order[r].second * D;
              for (int64_t d = 0; d < D; ++d) {
                sum[d] += to_acc<T>(row[d]);
              }
            }
            total += sum_squares<T>(sum.data(), D);
          }
        }
        i = j;
      }
      o[b] = static_cast<T>(total);
    }
  });
}

at::Tensor embedding_sq_norms_cpu(
    const at::Tensor& indices_in, const at::Tensor& g_in, int64_t num_embeddings, int64_t padding_idx) {
  embedding_sq_norms_check(indices_in, g_in, num_embeddings, padding_idx);
  const int64_t B = g_in.size(0);
  at::Tensor out = at::empty({B}, g_in.options().dtype(grad_norm_out_dtype(g_in.scalar_type())));
  if (B == 0) {
    return out;
  }
  const at::Tensor indices = indices_in.contiguous();
  const at::Tensor g = g_in.contiguous();
  AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "reuse::embedding_sq_norms indices", [&] {
    const index_t* ip = indices.const_data_ptr<index_t>();
    const int64_t n = indices.numel();
    if (n > 0) {
      int64_t lo = ip[0], hi = ip[0];
      for (int64_t i = 1; i < n; ++i) {
        lo = std::min<int64_t>(lo, ip[i]);
        hi = std::max<int64_t>(hi, ip[i]);
      }
      embedding_sq_norms_check_range(lo, hi, num_embeddings);
    }
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "reuse::embedding_sq_norms", [&] {
      embedding_impl<scalar_t, index_t>(indices, g, padding_idx, out);
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(reuse, CPU, m) {
  m.impl("linear_sq_norms", &linear_sq_norms_cpu);
  m.impl("conv_sq_norms", &conv_sq_norms_cpu);
  m.impl("affine_sq_norms", &affine_sq_norms_cpu);
  m.impl("embedding_sq_norms", &embedding_sq_norms_cpu);
}

}  // namespace reuse
