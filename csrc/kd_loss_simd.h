// Branch-free scalar helpers that GCC and Clang vectorise inside loops: exp,
// log and float16 / bfloat16 conversions on float lanes. CPU only.
//
// Every helper is always_inline, so a loop calling it is compiled for the
// instruction set of the enclosing function; combined with
// REUSE_KD_CPU_CLONES (a GCC target_clones attribute on x86-64) a hot loop is
// built for both x86-64-v3 (AVX2/FMA) and the baseline, and the dynamic loader
// picks one per machine.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define REUSE_KD_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define REUSE_KD_CPU_CLONES
#endif

#define REUSE_KD_INLINE __attribute__((always_inline)) inline

namespace reuse {
namespace kd {
namespace simd {

// Independent accumulators per loop step; a multiple of every SIMD width.
constexpr int64_t kLanes = 16;

// exp(x) for x <= 88 (not NaN), with a relative error below 2.2e-7 (under two
// float ulps). exp(x) = 2^n exp(r) with n = round(x / ln 2) and
// r = x - n ln 2 in [-ln(2)/2, ln(2)/2]; exp(r) by a degree-5 polynomial fitted
// for minimal relative error on that interval (fit error 6e-8).
// Arguments are clamped below at -86.5 (n >= -125, so every result is a
// normal float): exp(x) for x < -86.5, -inf included, gives 2.7e-38, not 0.
// Callers mask lanes that must contribute exactly 0.
REUSE_KD_INLINE float exp_f(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693145751953125f;  // few significant bits: n * kLn2Hi is exact
  constexpr float kLn2Lo = 1.428606765330187e-06f;
  constexpr float kShift = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float xc = std::max(x, -86.5f);
  const float shifted = xc * kLog2e + kShift;
  const float n = shifted - kShift;
  const float r = (xc - n * kLn2Hi) - n * kLn2Lo;
  float p = 0x1.0ed978p-7f;
  p = p * r + 0x1.575d9cp-5f;
  p = p * r + 0x1.555c72p-3f;
  p = p * r + 0x1.fffd34p-2f;
  p = p * r + 0x1.fffff4p-1f;
  p = p * r + 1.0f;
  // The low bits of `shifted` hold n + 2^22 + 2^23; rebias them to n + 127.
  const uint32_t biased = std::bit_cast<uint32_t>(shifted) + (127u - std::bit_cast<uint32_t>(kShift));
  return p * std::bit_cast<float>(biased << 23);
}

// x * log(x) for finite x >= 0, with 0 * log(0) = 0; arguments below the
// smallest normal float (1.2e-38, where x log x < 1e-36) also give 0.
// log(x) = e ln 2 + log(m) with x = m 2^e, m in [sqrt(1/2), sqrt(2)), and
// log(m) = 2 atanh(z), z = (m - 1) / (m + 1), |z| <= 0.172, by its series to z^9
// (relative truncation error < 1e-9).
REUSE_KD_INLINE float xlogx_f(float x) {
  constexpr float kMinNormal = std::numeric_limits<float>::min();
  constexpr float kLn2Hi = 0.693145751953125f;
  constexpr float kLn2Lo = 1.428606765330187e-06f;
  const float xc = std::max(x, kMinNormal);
  const uint32_t bits = std::bit_cast<uint32_t>(xc);
  // Offsetting by the bits of sqrt(1/2) puts m in [sqrt(1/2), sqrt(2)).
  const uint32_t offset = bits - 0x3f3504f3u;
  const int32_t e = static_cast<int32_t>(offset) >> 23;
  const float m = std::bit_cast<float>((offset & 0x007fffffu) + 0x3f3504f3u);
  const float z = (m - 1.0f) / (m + 1.0f);
  const float z2 = z * z;
  float q = 1.0f / 9.0f;
  q = q * z2 + 1.0f / 7.0f;
  q = q * z2 + 1.0f / 5.0f;
  q = q * z2 + 1.0f / 3.0f;
  q = q * z2 + 1.0f;
  const float ef = static_cast<float>(e);
  const float log_x = ef * kLn2Hi + (ef * kLn2Lo + 2.0f * z * q);
  const float keep = static_cast<float>(x >= kMinNormal);
  return x * log_x * keep;
}

// IEEE float16 bits to float, exact for every input (subnormals, inf, NaN).
REUSE_KD_INLINE float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t em = static_cast<uint32_t>(h & 0x7fffu) << 13;  // exponent and mantissa in float position
  const uint32_t exp = em & 0x0f800000u;
  const uint32_t normal = em + ((127u - 15u) << 23);
  // Inf / NaN: the exponent field becomes all ones.
  const uint32_t special = em | 0x7f800000u;
  // Subnormal half: m * 2^-24 = float(2^-14 + m * 2^-24) - 2^-14, both exact.
  const float sub = std::bit_cast<float>(em + (113u << 23)) - std::bit_cast<float>(113u << 23);
  const uint32_t sub_bits = std::bit_cast<uint32_t>(sub);
  uint32_t out = exp == 0x0f800000u ? special : normal;
  out = exp == 0 ? sub_bits : out;
  return std::bit_cast<float>(out | sign);
}

// float to IEEE float16 bits, rounding to nearest even; overflow gives inf,
// NaN stays NaN.
REUSE_KD_INLINE uint16_t float_to_half(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  const uint32_t sign = bits & 0x80000000u;
  const uint32_t a = bits ^ sign;  // |f| bits
  // |f| >= 65520 rounds to inf (and inf / NaN stay so).
  const uint32_t big = a > 0x7f800000u ? 0x7e00u : 0x7c00u;
  // |f| < 2^-14: subnormal half. Adding 0.5 lets the FPU round the mantissa
  // (to nearest even) at the 2^-24 position.
  const float sub_f = std::bit_cast<float>(a) + 0.5f;
  const uint32_t sub = std::bit_cast<uint32_t>(sub_f) - std::bit_cast<uint32_t>(0.5f);
  // Normal: rebias the exponent and round the 13 dropped bits to nearest even.
  const uint32_t odd = (a >> 13) & 1u;
  const uint32_t normal = (a + ((15u - 127u) << 23) + 0xfffu + odd) >> 13;
  uint32_t out = a >= 0x477ff000u ? big : normal;  // 0x477ff000 = 65520
  out = a < 0x38800000u ? sub : out;               // 0x38800000 = 2^-14
  return static_cast<uint16_t>(out | (sign >> 16));
}

REUSE_KD_INLINE float bf16_to_float(uint16_t h) {
  return std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
}

// float to bfloat16 bits, rounding to nearest even; NaN stays NaN.
REUSE_KD_INLINE uint16_t float_to_bf16(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const bool nan = (bits & 0x7fffffffu) > 0x7f800000u;
  return static_cast<uint16_t>(nan ? ((bits >> 16) | 0x40u) : rounded);
}

}  // namespace simd
}  // namespace kd
}  // namespace reuse
