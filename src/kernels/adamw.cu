// Fused multi-segment AdamW (include/openvid/kernels/adamw.h). One CUDA block updates one chunk of
// kAdamChunk elements of one segment, 16-byte accesses throughout. The arithmetic follows the ATen path of
// train/optimizer.cpp operation by operation (decay, lerp, addcmul, sqrt / bc2 + eps, addcdiv), in fp32.
#include <cuda_bf16.h>

#include "openvid/kernels/adamw.h"
#include "openvid/kernels/cuda_check.h"

namespace ov::kernels {
namespace {

constexpr int kThreads = 256;

// Four consecutive gradients (16-byte fp32 or 8-byte bf16 loads).
template <typename Grad>
__device__ __forceinline__ float4 load_grad4(const void* g, int64_t i);
template <>
__device__ __forceinline__ float4 load_grad4<float>(const void* g, int64_t i) {
  return *reinterpret_cast<const float4*>(static_cast<const float*>(g) + i);
}
template <>
__device__ __forceinline__ float4 load_grad4<__nv_bfloat16>(const void* g, int64_t i) {
  const uint2 raw = *reinterpret_cast<const uint2*>(static_cast<const __nv_bfloat16*>(g) + i);
  const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
  const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
  return make_float4(a.x, a.y, b.x, b.y);
}
template <typename Grad>
__device__ __forceinline__ float load_grad1(const void* g, int64_t i);
template <>
__device__ __forceinline__ float load_grad1<float>(const void* g, int64_t i) {
  return static_cast<const float*>(g)[i];
}
template <>
__device__ __forceinline__ float load_grad1<__nv_bfloat16>(const void* g, int64_t i) {
  return __bfloat162float(static_cast<const __nv_bfloat16*>(g)[i]);
}

// The step's per-element update.
struct Update {
  float ema1_weight, beta2, ema2_weight, eps, scale, decay, step_size, bc2_sqrt;
  bool decays;
  __device__ __forceinline__ void operator()(float& p, float g, float& m, float& v) const {
    const float grad = g * scale;
    float w = p;
    if (decays) w *= decay;
    m = m + ema1_weight * (grad - m);
    v = v * beta2 + ema2_weight * grad * grad;
    p = w + step_size * (m / (sqrtf(v) / bc2_sqrt + eps));
  }
};

template <CopyKind Copy>
__device__ __forceinline__ void store_copy4(void* copy, int64_t i, const float4& w) {
  if constexpr (Copy == CopyKind::kBFloat16) {
    const __nv_bfloat162 a = __floats2bfloat162_rn(w.x, w.y), b = __floats2bfloat162_rn(w.z, w.w);
    uint2 raw;
    raw.x = *reinterpret_cast<const unsigned*>(&a);
    raw.y = *reinterpret_cast<const unsigned*>(&b);
    *reinterpret_cast<uint2*>(static_cast<__nv_bfloat16*>(copy) + i) = raw;
  } else if constexpr (Copy == CopyKind::kFloat) {
    *reinterpret_cast<float4*>(static_cast<float*>(copy) + i) = w;
  }
}

template <CopyKind Copy>
__device__ __forceinline__ void store_copy1(void* copy, int64_t i, float w) {
  if constexpr (Copy == CopyKind::kBFloat16) static_cast<__nv_bfloat16*>(copy)[i] = __float2bfloat16_rn(w);
  else if constexpr (Copy == CopyKind::kFloat) static_cast<float*>(copy)[i] = w;
}

// Each thread updates groups of 4 consecutive elements (16-byte accesses: segments start 128-element
// aligned and chunks 8192 apart), kThreads * 4 apart; a segment's last, partial group goes element by element.
template <typename Grad, CopyKind Copy>
__global__ void __launch_bounds__(kThreads) adamw_kernel(const AdamSegment* __restrict__ segments,
                                                         const int64_t* __restrict__ chunks, AdamConstants c,
                                                         const float* __restrict__ control,
                                                         const int64_t* __restrict__ steps) {
  if (control[0] == 0.f) return;  // a skipped step (non-finite gradients): nothing changes
  const int64_t seg_index = chunks[2 * blockIdx.x], first = chunks[2 * blockIdx.x + 1];
  const AdamSegment seg = segments[seg_index];
  const int64_t end = min(first + kAdamChunk, seg.numel);
  const double t = static_cast<double>(*steps + 1);
  const double lr_i = c.lr * seg.lr_mult;
  const Update up{c.ema1_weight,
                  c.beta2_f,
                  c.ema2_weight,
                  c.eps,
                  control[1],
                  static_cast<float>(1.0 - lr_i * seg.weight_decay),
                  static_cast<float>(-lr_i / (1.0 - pow(c.beta1, t))),
                  static_cast<float>(sqrt(1.0 - pow(c.beta2, t))),
                  seg.weight_decay != 0.0};
  const bool copy = Copy != CopyKind::kNone && seg.compute_copy != nullptr;
  for (int64_t i = first + 4 * static_cast<int64_t>(threadIdx.x); i < end; i += 4 * kThreads) {
    if (i + 4 <= end) {
      float4 p = *reinterpret_cast<const float4*>(seg.param + i);
      float4 m = *reinterpret_cast<const float4*>(seg.exp_avg + i);
      float4 v = *reinterpret_cast<const float4*>(seg.exp_avg_sq + i);
      const float4 g = load_grad4<Grad>(seg.grad, i);
      up(p.x, g.x, m.x, v.x);
      up(p.y, g.y, m.y, v.y);
      up(p.z, g.z, m.z, v.z);
      up(p.w, g.w, m.w, v.w);
      *reinterpret_cast<float4*>(seg.param + i) = p;
      *reinterpret_cast<float4*>(seg.exp_avg + i) = m;
      *reinterpret_cast<float4*>(seg.exp_avg_sq + i) = v;
      if (copy) store_copy4<Copy>(seg.compute_copy, i, p);
    } else {
      for (int64_t k = i; k < end; ++k) {
        up(seg.param[k], load_grad1<Grad>(seg.grad, k), seg.exp_avg[k], seg.exp_avg_sq[k]);
        if (copy) store_copy1<Copy>(seg.compute_copy, k, seg.param[k]);
      }
    }
  }
}

template <typename Grad>
void launch(const AdamSegment* segments, const int64_t* chunks, int64_t num_chunks, CopyKind copy, const AdamConstants& c,
            const float* control, const int64_t* steps, Stream stream) {
  const dim3 grid(static_cast<unsigned>(num_chunks)), block(kThreads);
  switch (copy) {
    case CopyKind::kNone:
      adamw_kernel<Grad, CopyKind::kNone><<<grid, block, 0, stream>>>(segments, chunks, c, control, steps);
      break;
    case CopyKind::kFloat:
      adamw_kernel<Grad, CopyKind::kFloat><<<grid, block, 0, stream>>>(segments, chunks, c, control, steps);
      break;
    case CopyKind::kBFloat16:
      adamw_kernel<Grad, CopyKind::kBFloat16><<<grid, block, 0, stream>>>(segments, chunks, c, control, steps);
      break;
  }
  OV_CUDA_CHECK_LAUNCH();
}

}  // namespace

void fused_adamw(const AdamSegment* segments, const int64_t* chunks, int64_t num_chunks, CopyKind grad, CopyKind copy,
                 const AdamConstants& c, const float* control, const int64_t* steps, Stream stream) {
  if (num_chunks == 0) return;
  if (grad == CopyKind::kBFloat16) launch<__nv_bfloat16>(segments, chunks, num_chunks, copy, c, control, steps, stream);
  else launch<float>(segments, chunks, num_chunks, copy, c, control, steps, stream);
}

}  // namespace ov::kernels
