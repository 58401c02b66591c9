// Modulated RMSNorm and the deterministic column sums (include/openvid/kernels/fused.h). One warp per row:
// a first pass reduces the row (its sum of squares, or the backward's dot product), a second pass re-reads
// the row (from L1/L2: a row is at most a few KB) and writes the output, 8 bf16 per 16-byte access.
#include <cuda_bf16.h>

#include "openvid/kernels/cuda_check.h"
#include "openvid/kernels/fused.h"
#include "vec.cuh"

namespace ov::kernels {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kWarpsPerBlock = 8;

__device__ __forceinline__ const bf16* as_bf16(const bf16_t* p) { return reinterpret_cast<const bf16*>(p); }
__device__ __forceinline__ bf16* as_bf16(bf16_t* p) { return reinterpret_cast<bf16*>(p); }

__global__ void __launch_bounds__(32 * kWarpsPerBlock)
    norm_forward_kernel(const bf16_t* __restrict__ x_, const bf16_t* __restrict__ w_, RowVector shift, RowVector scale,
                        bf16_t* __restrict__ out_, float* __restrict__ rstd, int64_t rows, int64_t L, int64_t D, float eps) {
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (row >= rows) return;
  const int64_t b = row / L;
  const bf16* x = as_bf16(x_) + row * D;
  float ss = 0.f;
  for (int64_t c = lane * kVec; c < D; c += 32 * kVec) {
    float v[kVec];
    load8(x + c, v);
#pragma unroll
    for (int i = 0; i < kVec; ++i) ss += v[i] * v[i];
  }
  ss = warp_sum(ss);
  const float r = rsqrtf(ss / static_cast<float>(D) + eps);
  if (lane == 0) rstd[row] = r;
  const bf16* sh = as_bf16(shift.data) + b * shift.batch_stride;
  const bf16* sc = as_bf16(scale.data) + b * scale.batch_stride;
  bf16* out = as_bf16(out_) + row * D;
  for (int64_t c = lane * kVec; c < D; c += 32 * kVec) {
    float v[kVec], s[kVec], t[kVec], w[kVec];
    load8(x + c, v);
    load8(sc + c, s);
    load8(sh + c, t);
    if (w_ != nullptr) load8(as_bf16(w_) + c, w);
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      float n = v[i] * r;
      if (w_ != nullptr) n *= w[i];
      v[i] = n * (1.f + s[i]) + t[i];
    }
    store8(out + c, v);
  }
}

__global__ void __launch_bounds__(32 * kWarpsPerBlock)
    norm_backward_dx_kernel(const bf16_t* __restrict__ g_, const bf16_t* __restrict__ x_, const float* __restrict__ rstd,
                            const bf16_t* __restrict__ w_, RowVector scale, bf16_t* __restrict__ dx_, int64_t rows, int64_t L,
                            int64_t D) {
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (row >= rows) return;
  const int64_t b = row / L;
  const bf16* x = as_bf16(x_) + row * D;
  const bf16* g = as_bf16(g_) + row * D;
  const bf16* sc = as_bf16(scale.data) + b * scale.batch_stride;
  const float r = rstd[row];
  // u = g (1 + scale) w, n = x r: dx = r (u - n mean(u n)).
  auto load_u_n = [&](int64_t c, float (&u)[kVec], float (&n)[kVec]) {
    float s[kVec], w[kVec];
    load8(g + c, u);
    load8(x + c, n);
    load8(sc + c, s);
    if (w_ != nullptr) load8(as_bf16(w_) + c, w);
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      u[i] *= 1.f + s[i];
      if (w_ != nullptr) u[i] *= w[i];
      n[i] *= r;
    }
  };
  float dot = 0.f;
  for (int64_t c = lane * kVec; c < D; c += 32 * kVec) {
    float u[kVec], n[kVec];
    load_u_n(c, u, n);
#pragma unroll
    for (int i = 0; i < kVec; ++i) dot += u[i] * n[i];
  }
  const float mean = warp_sum(dot) / static_cast<float>(D);
  bf16* dx = as_bf16(dx_) + row * D;
  for (int64_t c = lane * kVec; c < D; c += 32 * kVec) {
    float u[kVec], n[kVec];
    load_u_n(c, u, n);
#pragma unroll
    for (int i = 0; i < kVec; ++i) u[i] = r * (u[i] - n[i] * mean);
    store8(dx + c, u);
  }
}

// Column sums, pass 1: block (32, kRowLanes) covers 32 * kVec columns of one chunk of rows of one sample;
// each thread sums 8 columns over the chunk's rows ty, ty + kRowLanes, ...; the row lanes are then summed
// in shared memory and written as the chunk's partial sums.
constexpr int kRowLanes = 8;
constexpr int64_t kRowsPerChunk = 64;

int64_t chunks_of(int64_t L) { return (L + kRowsPerChunk - 1) / kRowsPerChunk; }

__global__ void __launch_bounds__(32 * kRowLanes)
    column_partial_kernel(const bf16_t* __restrict__ a_, const bf16_t* __restrict__ c_, const float* __restrict__ row_scale,
                          float* __restrict__ part_a, float* __restrict__ part_ac, int64_t L, int64_t D, int64_t chunks) {
  const int64_t b = blockIdx.z, chunk = blockIdx.y;
  const int64_t col = (static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x) * kVec;
  float sa[kVec] = {}, sac[kVec] = {};
  if (col < D) {
    const int64_t end = min(L, (chunk + 1) * kRowsPerChunk);
    for (int64_t l = chunk * kRowsPerChunk + threadIdx.y; l < end; l += kRowLanes) {
      const int64_t at = (b * L + l) * D + col;
      float a[kVec];
      load8(as_bf16(a_) + at, a);
#pragma unroll
      for (int i = 0; i < kVec; ++i) sa[i] += a[i];
      if (part_ac != nullptr) {
        float c[kVec];
        load8(as_bf16(c_) + at, c);
        const float rs = row_scale != nullptr ? row_scale[b * L + l] : 1.f;
#pragma unroll
        for (int i = 0; i < kVec; ++i) sac[i] += a[i] * c[i] * rs;
      }
    }
  }
  __shared__ float shared[2][kRowLanes][32 * kVec + 1];
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    shared[0][threadIdx.y][threadIdx.x * kVec + i] = sa[i];
    shared[1][threadIdx.y][threadIdx.x * kVec + i] = sac[i];
  }
  __syncthreads();
  // Thread (x, y) finishes columns y * 32 + x of the tile, in order of the row lanes: deterministic.
  for (int64_t t = threadIdx.y * 32 + threadIdx.x; t < 32 * kVec; t += 32 * kRowLanes) {
    const int64_t out_col = static_cast<int64_t>(blockIdx.x) * 32 * kVec + t;
    if (out_col >= D) continue;
    float s0 = 0.f, s1 = 0.f;
    for (int y = 0; y < kRowLanes; ++y) {
      s0 += shared[0][y][t];
      s1 += shared[1][y][t];
    }
    const int64_t at = (b * chunks + chunk) * D + out_col;
    if (part_a != nullptr) part_a[at] = s0;
    if (part_ac != nullptr) part_ac[at] = s1;
  }
}

// Column sums, pass 2: one thread per (b, d) adds its chunks in order.
__global__ void column_final_kernel(const float* __restrict__ part, float* __restrict__ out, int64_t B, int64_t D, int64_t chunks) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= B * D) return;
  const int64_t b = n / D, d = n % D;
  float s = 0.f;
  for (int64_t k = 0; k < chunks; ++k) s += part[(b * chunks + k) * D + d];
  out[n] = s;
}

}  // namespace

void mod_rms_norm_forward(const bf16_t* x, const bf16_t* weight, RowVector shift, RowVector scale, bf16_t* out, float* rstd, int64_t B,
                          int64_t L, int64_t D, float eps, Stream stream) {
  const int64_t rows = B * L;
  if (rows == 0) return;
  norm_forward_kernel<<<blocks_for(rows, kWarpsPerBlock), 32 * kWarpsPerBlock, 0, stream>>>(x, weight, shift, scale, out, rstd, rows,
                                                                                             L, D, eps);
  OV_CUDA_CHECK_LAUNCH();
}

void mod_rms_norm_backward_dx(const bf16_t* g, const bf16_t* x, const float* rstd, const bf16_t* weight, RowVector scale, bf16_t* dx,
                              int64_t B, int64_t L, int64_t D, Stream stream) {
  const int64_t rows = B * L;
  if (rows == 0) return;
  norm_backward_dx_kernel<<<blocks_for(rows, kWarpsPerBlock), 32 * kWarpsPerBlock, 0, stream>>>(g, x, rstd, weight, scale, dx, rows,
                                                                                                 L, D);
  OV_CUDA_CHECK_LAUNCH();
}

int64_t column_sums_workspace(int64_t B, int64_t L, int64_t D) { return 2 * B * chunks_of(L) * D; }

void column_sums(const bf16_t* a, const bf16_t* c, const float* row_scale, float* sum_a, float* sum_ac, float* workspace, int64_t B,
                 int64_t L, int64_t D, Stream stream) {
  if (B * D == 0) return;
  const int64_t chunks = chunks_of(L);
  float* part_a = sum_a != nullptr ? workspace : nullptr;
  float* part_ac = sum_ac != nullptr ? workspace + B * chunks * D : nullptr;
  if (L > 0) {
    const dim3 grid(blocks_for(D, 32 * kVec), static_cast<unsigned>(chunks), static_cast<unsigned>(B)), block(32, kRowLanes);
    column_partial_kernel<<<grid, block, 0, stream>>>(a, c, row_scale, part_a, part_ac, L, D, chunks);
    OV_CUDA_CHECK_LAUNCH();
  }
  for (auto [part, out] : {std::pair{part_a, sum_a}, std::pair{part_ac, sum_ac}}) {
    if (out == nullptr) continue;
    column_final_kernel<<<blocks_for(B * D, 256), 256, 0, stream>>>(part, out, B, D, L > 0 ? chunks : 0);
    OV_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace ov::kernels
