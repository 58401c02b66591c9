// The MLP's GELU (include/openvid/kernels/fused.h): the forward, and a backward that recomputes the
// forward's output from its input in the same pass as the input gradient and the bias gradient.
//
// Backward layout: a CUDA block owns kGeluRows rows and kGeluThreads * 8 columns of [rows, cols]; each thread
// 8 columns (16-byte accesses), kGeluBatch rows' loads issued before the first use, its column sums in
// registers across the rows. Blocks write their sums as partials [chunks, cols]; the second pass adds the
// chunks in order, so the result is deterministic.
#include <cuda_bf16.h>

#include "openvid/kernels/cuda_check.h"
#include "openvid/kernels/fused.h"
#include "gelu.cuh"
#include "vec.cuh"

namespace ov::kernels {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kGeluThreads = 256;
constexpr int64_t kGeluRows = 64;
constexpr int kGeluBatch = 2;  // rows in flight per thread: 2 x 2 16-byte loads before the first use
// At most 64 registers, so 4 blocks (32 warps) share an SM and hide each other's erf and load latency:
// 0.61 ms on [16416 x 16384] against 1.09 with 4 rows in flight at 126 registers, 2 blocks an SM
// (bench/gelu_variants.cu on an H200).
constexpr int kGeluMinBlocks = 4;
constexpr int kForwardVectors = 2;  // 16-byte vectors per thread in the forward
constexpr int kFinalThreads = 256;

int64_t row_chunks(int64_t rows) { return (rows + kGeluRows - 1) / kGeluRows; }

__global__ void __launch_bounds__(kGeluThreads) gelu_forward_kernel(const bf16* __restrict__ a, bf16* __restrict__ h, int64_t vectors) {
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kGeluThreads * kForwardVectors + threadIdx.x;
  float v[kForwardVectors][kVec];
#pragma unroll
  for (int j = 0; j < kForwardVectors; ++j) {
    const int64_t at = first + j * kGeluThreads;
    if (at < vectors) load8(a + at * kVec, v[j]);
  }
#pragma unroll
  for (int j = 0; j < kForwardVectors; ++j) {
    const int64_t at = first + j * kGeluThreads;
    if (at >= vectors) continue;
#pragma unroll
    for (int i = 0; i < kVec; ++i) v[j][i] *= normal_cdf(v[j][i]);
    store8(h + at * kVec, v[j]);
  }
}

// da <- da * GELU'(a) (GELU'(a) = Phi(a) + a * phi(a), as ATen computes it), a <- GELU(a), column partials
// of the new da as stored.
__global__ void __launch_bounds__(kGeluThreads, kGeluMinBlocks)
    gelu_backward_kernel(bf16_t* __restrict__ da_, bf16_t* __restrict__ a_, float* __restrict__ partials, int64_t rows, int64_t cols) {
  const int64_t col = (static_cast<int64_t>(blockIdx.x) * kGeluThreads + threadIdx.x) * kVec;
  const int64_t chunk = blockIdx.y;
  if (col >= cols) return;
  bf16* const da = reinterpret_cast<bf16*>(da_) + col;
  bf16* const a = reinterpret_cast<bf16*>(a_) + col;
  float sum[kVec] = {};
  const int64_t end = min(rows, (chunk + 1) * kGeluRows);
  for (int64_t r0 = chunk * kGeluRows; r0 < end; r0 += kGeluBatch) {
    float g[kGeluBatch][kVec], x[kGeluBatch][kVec];
#pragma unroll
    for (int k = 0; k < kGeluBatch; ++k) {
      if (r0 + k >= end) continue;
      load8(da + (r0 + k) * cols, g[k]);
      load8(a + (r0 + k) * cols, x[k]);
    }
#pragma unroll
    for (int k = 0; k < kGeluBatch; ++k) {
      if (r0 + k >= end) continue;
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        const float cdf = normal_cdf(x[k][i]);
        const float grad = cdf + x[k][i] * kBeta * expf(-0.5f * x[k][i] * x[k][i]);
        g[k][i] = __bfloat162float(__float2bfloat16_rn(g[k][i] * grad));  // summed as stored
        sum[i] += g[k][i];
        x[k][i] *= cdf;
      }
      store8(da + (r0 + k) * cols, g[k]);
      store8(a + (r0 + k) * cols, x[k]);
    }
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

void gelu_forward(const bf16_t* a, bf16_t* h, int64_t n, Stream stream) {
  const int64_t vectors = n / kVec;
  if (vectors == 0) return;
  gelu_forward_kernel<<<blocks_for(vectors, kGeluThreads * kForwardVectors), kGeluThreads, 0, stream>>>(reinterpret_cast<const bf16*>(a),
                                                                                                        reinterpret_cast<bf16*>(h), vectors);
  OV_CUDA_CHECK_LAUNCH();
}

int64_t gelu_backward_workspace(int64_t rows, int64_t cols) { return row_chunks(rows) * cols; }

void gelu_backward_recompute(bf16_t* da, bf16_t* a, float* db, float* workspace, int64_t rows, int64_t cols, Stream stream) {
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
