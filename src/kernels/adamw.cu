// Fused multi-segment AdamW (include/openvid/kernels/adamw.h). One CUDA block updates one chunk of
// kAdamChunk elements of one segment; each thread handles elements blockDim apart (coalesced), four at a
// time so that several independent loads are in flight. The arithmetic follows the ATen path of
// train/optimizer.cpp operation by operation (decay, lerp, addcmul, sqrt / bc2 + eps, addcdiv), in fp32.
#include <cuda_bf16.h>

#include "openvid/kernels/adamw.h"
#include "openvid/kernels/cuda_check.h"

namespace ov::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;

template <typename Grad>
__device__ __forceinline__ float load_grad(const void* g, int64_t i);
template <>
__device__ __forceinline__ float load_grad<float>(const void* g, int64_t i) {
  return static_cast<const float*>(g)[i];
}
template <>
__device__ __forceinline__ float load_grad<__nv_bfloat16>(const void* g, int64_t i) {
  return __bfloat162float(static_cast<const __nv_bfloat16*>(g)[i]);
}

template <typename Grad, CopyKind Copy>
__global__ void __launch_bounds__(kThreads) adamw_kernel(const AdamSegment* __restrict__ segments,
                                                         const int64_t* __restrict__ chunks, AdamConstants c,
                                                         const float* __restrict__ control,
                                                         const int64_t* __restrict__ steps) {
  if (control[0] == 0.f) return;  // a skipped step (non-finite gradients): nothing changes
  const float scale = control[1];
  const int64_t seg_index = chunks[2 * blockIdx.x], first = chunks[2 * blockIdx.x + 1];
  const AdamSegment seg = segments[seg_index];
  const int64_t end = min(first + kAdamChunk, seg.numel);

  const double t = static_cast<double>(*steps + 1);
  const double bc1 = 1.0 - pow(c.beta1, t);
  const float bc2_sqrt = static_cast<float>(sqrt(1.0 - pow(c.beta2, t)));
  const double lr_i = c.lr * seg.lr_mult;
  const float decay = static_cast<float>(1.0 - lr_i * seg.weight_decay);
  const float step_size = static_cast<float>(-lr_i / bc1);

  for (int64_t base = first + threadIdx.x; base < end; base += static_cast<int64_t>(kThreads) * kUnroll) {
    float p[kUnroll], g[kUnroll], m[kUnroll], v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = base + static_cast<int64_t>(u) * kThreads;
      if (i < end) {
        p[u] = seg.param[i];
        g[u] = load_grad<Grad>(seg.grad, i);
        m[u] = seg.exp_avg[i];
        v[u] = seg.exp_avg_sq[i];
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = base + static_cast<int64_t>(u) * kThreads;
      if (i >= end) continue;
      const float grad = g[u] * scale;
      float w = p[u];
      if (seg.weight_decay != 0.f) w *= decay;
      const float ma = m[u] + c.ema1_weight * (grad - m[u]);
      const float va = v[u] * c.beta2_f + c.ema2_weight * grad * grad;
      const float denom = sqrtf(va) / bc2_sqrt + c.eps;
      w = w + step_size * (ma / denom);
      seg.param[i] = w;
      seg.exp_avg[i] = ma;
      seg.exp_avg_sq[i] = va;
      if constexpr (Copy == CopyKind::kBFloat16) {
        if (seg.compute_copy != nullptr) static_cast<__nv_bfloat16*>(seg.compute_copy)[i] = __float2bfloat16_rn(w);
      } else if constexpr (Copy == CopyKind::kFloat) {
        if (seg.compute_copy != nullptr) static_cast<float*>(seg.compute_copy)[i] = w;
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
