// The MLP's GELU backward fused with its bias gradient (include/openvid/kernels/fused.h).
//
// A CUDA block owns kGeluRows rows and kGeluThreads * 8 columns of [rows, cols]; each thread 8 columns
// (16-byte accesses), its column sums in registers across the rows. Blocks write their sums as partials
// [chunks, cols]; the second pass adds the chunks in order, so the result is deterministic.
#include <cuda_bf16.h>

#include "openvid/kernels/cuda_check.h"
#include "openvid/kernels/fused.h"
#include "vec.cuh"

namespace ov::kernels {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kGeluThreads = 256;
constexpr int64_t kGeluRows = 64;
constexpr int kFinalThreads = 256;

int64_t row_chunks(int64_t rows) { return (rows + kGeluRows - 1) / kGeluRows; }

// d/da of the exact GELU a * Phi(a), as ATen computes it: Phi(a) + a * phi(a).
__device__ __forceinline__ float gelu_grad(float a) {
  constexpr float kAlpha = 0.70710678118654752440f;         // 1 / sqrt(2)
  constexpr float kBeta = 0.39894228040143267794f;          // 1 / sqrt(2 pi)
  const float cdf = 0.5f * (1.f + erff(a * kAlpha));
  return cdf + a * kBeta * expf(-0.5f * a * a);
}

__global__ void __launch_bounds__(kGeluThreads)
    gelu_backward_kernel(bf16_t* __restrict__ da_, const bf16_t* __restrict__ a_, float* __restrict__ partials, int64_t rows,
                         int64_t cols) {
  const int64_t col = (static_cast<int64_t>(blockIdx.x) * kGeluThreads + threadIdx.x) * kVec;
  const int64_t chunk = blockIdx.y;
  if (col >= cols) return;
  float sum[kVec] = {};
  const int64_t end = min(rows, (chunk + 1) * kGeluRows);
#pragma unroll 4
  for (int64_t r = chunk * kGeluRows; r < end; ++r) {
    bf16* da = reinterpret_cast<bf16*>(da_) + r * cols + col;
    float g[kVec], a[kVec];
    load8(da, g);
    load8(reinterpret_cast<const bf16*>(a_) + r * cols + col, a);
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      g[i] = __bfloat162float(__float2bfloat16_rn(g[i] * gelu_grad(a[i])));  // summed as stored
      sum[i] += g[i];
    }
    store8(da, g);
  }
  float* out = partials + chunk * cols + col;
  reinterpret_cast<float4*>(out)[0] = make_float4(sum[0], sum[1], sum[2], sum[3]);
  reinterpret_cast<float4*>(out)[1] = make_float4(sum[4], sum[5], sum[6], sum[7]);
}

__global__ void __launch_bounds__(kFinalThreads) column_sum_kernel(const float* __restrict__ partials, float* __restrict__ out, int64_t chunks,
                                                                   int64_t cols) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kFinalThreads + threadIdx.x;
  if (c >= cols) return;
  float s = 0.f;
  for (int64_t k = 0; k < chunks; ++k) s += partials[k * cols + c];  // coalesced across the threads of a block
  out[c] = s;
}

}  // namespace

int64_t gelu_backward_workspace(int64_t rows, int64_t cols) { return row_chunks(rows) * cols; }

void gelu_backward_bias(bf16_t* da, const bf16_t* a, float* db, float* workspace, int64_t rows, int64_t cols, Stream stream) {
  if (cols == 0) return;
  const int64_t chunks = row_chunks(rows);
  if (rows > 0) {
    const dim3 grid(blocks_for(cols, kGeluThreads * kVec), static_cast<unsigned>(chunks));
    gelu_backward_kernel<<<grid, kGeluThreads, 0, stream>>>(da, a, workspace, rows, cols);
    OV_CUDA_CHECK_LAUNCH();
  }
  column_sum_kernel<<<blocks_for(cols, kFinalThreads), kFinalThreads, 0, stream>>>(workspace, db, rows > 0 ? chunks : 0, cols);
  OV_CUDA_CHECK_LAUNCH();
}

}  // namespace ov::kernels
