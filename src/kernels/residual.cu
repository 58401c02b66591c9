// The gated residual of the DiT block (include/openvid/kernels/fused.h): out = x + y * gate[b], and its
// backward dy = g * gate[b]. One thread per 8 elements.
#include <cuda_bf16.h>

#include "openvid/kernels/cuda_check.h"
#include "openvid/kernels/fused.h"
#include "vec.cuh"

namespace ov::kernels {
namespace {

using bf16 = __nv_bfloat16;

__global__ void gated_residual_kernel(const bf16_t* __restrict__ x_, const bf16_t* __restrict__ y_, RowVector gate,
                                      bf16_t* __restrict__ out_, int64_t vectors, int64_t L, int64_t D) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= vectors) return;
  const int64_t at = n * kVec, b = at / (L * D), d = at % D;
  float x[kVec], y[kVec], g[kVec];
  load8(reinterpret_cast<const bf16*>(y_) + at, y);
  load8(reinterpret_cast<const bf16*>(gate.data) + b * gate.batch_stride + d, g);
  if (x_ != nullptr) {
    load8(reinterpret_cast<const bf16*>(x_) + at, x);
#pragma unroll
    for (int i = 0; i < kVec; ++i) x[i] += y[i] * g[i];
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) x[i] = y[i] * g[i];
  }
  store8(reinterpret_cast<bf16*>(out_) + at, x);
}

void launch(const bf16_t* x, const bf16_t* y, RowVector gate, bf16_t* out, int64_t B, int64_t L, int64_t D, Stream stream) {
  const int64_t vectors = B * L * D / kVec;
  if (vectors == 0) return;
  gated_residual_kernel<<<blocks_for(vectors, 256), 256, 0, stream>>>(x, y, gate, out, vectors, L, D);
  OV_CUDA_CHECK_LAUNCH();
}

}  // namespace

void gated_residual_forward(const bf16_t* x, const bf16_t* y, RowVector gate, bf16_t* out, int64_t B, int64_t L, int64_t D,
                            Stream stream) {
  launch(x, y, gate, out, B, L, D, stream);
}

// dy = g * gate: the same kernel without the residual term.
void gated_residual_backward_dy(const bf16_t* g, RowVector gate, bf16_t* dy, int64_t B, int64_t L, int64_t D, Stream stream) {
  launch(nullptr, g, gate, dy, B, L, D, stream);
}

}  // namespace ov::kernels
