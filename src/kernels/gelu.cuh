#pragma once
// GELU's arithmetic, shared by the GELU kernels (gelu.cu) and the float8 casts of GELU's output (float8.cu).
#include <cuda_bf16.h>

namespace ov::kernels {

constexpr float kAlpha = 0.70710678118654752440f;  // 1 / sqrt(2)
constexpr float kBeta = 0.39894228040143267794f;   // 1 / sqrt(2 pi)

// Phi(a), the standard normal CDF. GELU(a) = a * Phi(a) equals ATen's a * 0.5 * (1 + erf(a / sqrt(2))) to
// the bit (the halving is exact either way), so a recomputed output is the forward's.
__device__ __forceinline__ float normal_cdf(float a) { return 0.5f * (1.f + erff(a * kAlpha)); }

// GELU(a) as the forward kernel stores it (rounded to bf16 once), back in fp32.
__device__ __forceinline__ float gelu_as_stored(float a) { return __bfloat162float(__float2bfloat16_rn(a * normal_cdf(a))); }

}  // namespace ov::kernels
