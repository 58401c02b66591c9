// How much of the GELU kernels' time is the erf (run on the GPU machine; stand-alone, no LibTorch):
//   nvcc -std=c++17 -O3 -arch=sm_90 --expt-relaxed-constexpr -o /tmp/gelu_variants bench/gelu_variants.cu && /tmp/gelu_variants
// Times, on [16416 x 16384] bf16 (width 4096's MLP activations), a device-to-device copy (the memory rate)
// and the loops of openvid's GELU backward and forward (src/kernels/gelu.cu) with the normal CDF and density
// computed
//   V0 as the kernels do (erff, expf: ATen's arithmetic), V2 with __expf, V3 with normcdff,
//   V1 with no transcendental at all, V4 with __expf only (stand-ins: what a free erf would give).
// The outputs of V1 and V4 are wrong on purpose; only their times mean something. Then V0's backward in other
// launch shapes (rows in flight per thread, register cap, rows per block): the same arithmetic, other occupancy. The backward here reads
// its inputs from separate buffers (same traffic as in place, and every repetition sees the same data).
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "../src/kernels/vec.cuh"

using namespace ov::kernels;
using bf16 = __nv_bfloat16;

constexpr int kThreads = 256;
constexpr int64_t kRows = 64;
constexpr int kBatch = 4;
constexpr float kAlpha = 0.70710678118654752440f, kBeta = 0.39894228040143267794f;

template <int V>
__device__ __forceinline__ void cdf_and_slope(float x, float& cdf, float& slope) {
  if (V == 0) {
    cdf = 0.5f * (1.f + erff(x * kAlpha));
    slope = cdf + x * kBeta * expf(-0.5f * x * x);
  } else if (V == 1) {
    cdf = 0.5f + 0.1f * x;
    slope = cdf + x * 0.3f;
  } else if (V == 2) {
    cdf = 0.5f * (1.f + erff(x * kAlpha));
    slope = cdf + x * kBeta * __expf(-0.5f * x * x);
  } else if (V == 3) {
    cdf = normcdff(x);
    slope = cdf + x * kBeta * __expf(-0.5f * x * x);
  } else {
    cdf = 0.5f + 0.1f * x;
    slope = cdf + x * kBeta * __expf(-0.5f * x * x);
  }
}

// Batch: rows whose loads a thread issues before the first use; MinBlocks: __launch_bounds__'s minimum
// resident blocks per SM (a register cap: 65536 / (256 * MinBlocks)); Rows: rows per CUDA block (chunk).
template <int V, int Batch = kBatch, int MinBlocks = 1, int64_t Rows = kRows>
__global__ void __launch_bounds__(kThreads, MinBlocks) backward(const bf16* __restrict__ da_in, const bf16* __restrict__ a_in, bf16* __restrict__ da,
                                                     bf16* __restrict__ a, float* partials, int64_t rows, int64_t cols) {
  const int64_t col = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * kVec, chunk = blockIdx.y;
  if (col >= cols) return;
  float sum[kVec] = {};
  const int64_t end = min(rows, (chunk + 1) * Rows);
  for (int64_t r0 = chunk * Rows; r0 < end; r0 += Batch) {
    float g[Batch][kVec], x[Batch][kVec];
#pragma unroll
    for (int k = 0; k < Batch; ++k) {
      if (r0 + k >= end) continue;
      load8(da_in + (r0 + k) * cols + col, g[k]);
      load8(a_in + (r0 + k) * cols + col, x[k]);
    }
#pragma unroll
    for (int k = 0; k < Batch; ++k) {
      if (r0 + k >= end) continue;
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        float cdf, slope;
        cdf_and_slope<V>(x[k][i], cdf, slope);
        g[k][i] = __bfloat162float(__float2bfloat16_rn(g[k][i] * slope));
        sum[i] += g[k][i];
        x[k][i] *= cdf;
      }
      store8(da + (r0 + k) * cols + col, g[k]);
      store8(a + (r0 + k) * cols + col, x[k]);
    }
  }
  float* out = partials + chunk * cols + col;
  reinterpret_cast<float4*>(out)[0] = make_float4(sum[0], sum[1], sum[2], sum[3]);
  reinterpret_cast<float4*>(out)[1] = make_float4(sum[4], sum[5], sum[6], sum[7]);
}

template <int V>
__global__ void __launch_bounds__(kThreads) forward(const bf16* __restrict__ a, bf16* __restrict__ h, int64_t vectors) {
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kThreads * 2 + threadIdx.x;
  float v[2][kVec];
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    if (first + j * kThreads < vectors) load8(a + (first + j * kThreads) * kVec, v[j]);
  }
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int64_t at = first + j * kThreads;
    if (at >= vectors) continue;
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      float cdf, slope;
      cdf_and_slope<V>(v[j][i], cdf, slope);
      v[j][i] *= cdf;
    }
    store8(h + at * kVec, v[j]);
  }
}

__global__ void copy16(const uint4* a, uint4* b, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) b[i] = a[i];
}

// Values in [-3, 3), from a hash of the index.
__global__ void fill(bf16* p, int64_t n, unsigned seed) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  unsigned h = static_cast<unsigned>(i) * 2654435761u ^ seed;
  h ^= h >> 13;
  h *= 0x5bd1e995u;
  h ^= h >> 15;
  p[i] = __float2bfloat16(((h & 0xffff) / 65536.f - 0.5f) * 6.f);
}

// Median milliseconds of 20 launches after 5 (CUDA events).
template <class F>
float median_ms(F launch) {
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<float> times;
  for (int i = 0; i < 25; ++i) {
    cudaEventRecord(start);
    launch();
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    if (i >= 5) times.push_back(ms);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

int main() {
  const int64_t rows = 16416, cols = 16384, n = rows * cols, vectors = n / kVec, chunks = (rows + kRows - 1) / kRows;
  bf16 *da, *a, *da_in, *a_in;
  float* partials;
  cudaMalloc(&da, n * 2);
  cudaMalloc(&a, n * 2);
  cudaMalloc(&da_in, n * 2);
  cudaMalloc(&a_in, n * 2);
  cudaMalloc(&partials, (rows + 31) / 32 * cols * 4);  // enough for the smallest rows-per-block shape (32)
  fill<<<(n + 255) / 256, 256>>>(da_in, n, 1);
  fill<<<(n + 255) / 256, 256>>>(a_in, n, 2);
  const dim3 grid(cols / (kThreads * kVec), chunks);
  const unsigned forward_blocks = (vectors + 2 * kThreads - 1) / (2 * kThreads);
  const double bytes = 2.0 * n;  // one [rows, cols] bf16 tensor
  const float copy = median_ms([&] { copy16<<<(vectors + 255) / 256, 256>>>(reinterpret_cast<const uint4*>(a_in), reinterpret_cast<uint4*>(a), vectors); });
  std::printf("copy of %.1f MB: %.3f ms = %.2f TB/s\n", bytes / 1e6, copy, 2 * bytes / copy / 1e9);
  auto report = [&](const char* what, int v, float ms, double moved) { std::printf("%s V%d %.3f ms %.2f TB/s\n", what, v, ms, moved / ms / 1e9); };
  report("backward", 0, median_ms([&] { backward<0><<<grid, kThreads>>>(da_in, a_in, da, a, partials, rows, cols); }), 4 * bytes);
  report("backward", 1, median_ms([&] { backward<1><<<grid, kThreads>>>(da_in, a_in, da, a, partials, rows, cols); }), 4 * bytes);
  report("backward", 2, median_ms([&] { backward<2><<<grid, kThreads>>>(da_in, a_in, da, a, partials, rows, cols); }), 4 * bytes);
  report("backward", 3, median_ms([&] { backward<3><<<grid, kThreads>>>(da_in, a_in, da, a, partials, rows, cols); }), 4 * bytes);
  report("backward", 4, median_ms([&] { backward<4><<<grid, kThreads>>>(da_in, a_in, da, a, partials, rows, cols); }), 4 * bytes);
  // Launch shapes of V0 (the kernel's arithmetic): rows in flight, register cap, rows per block.
  auto shape = [&](const char* name, auto kernel, int64_t rows_per_block) {
    const dim3 g(cols / (kThreads * kVec), static_cast<unsigned>((rows + rows_per_block - 1) / rows_per_block));
    const float ms = median_ms([&] { kernel<<<g, kThreads>>>(da_in, a_in, da, a, partials, rows, cols); });
    std::printf("backward V0 %s %.3f ms %.2f TB/s\n", name, ms, 4 * bytes / ms / 1e9);
  };
  shape("batch 4, min blocks 1, rows 64 (the kernel's)", backward<0, 4, 1, 64>, 64);
  shape("batch 4, min blocks 2, rows 64", backward<0, 4, 2, 64>, 64);
  shape("batch 2, min blocks 3, rows 64", backward<0, 2, 3, 64>, 64);
  shape("batch 2, min blocks 4, rows 64", backward<0, 2, 4, 64>, 64);
  shape("batch 1, min blocks 4, rows 64", backward<0, 1, 4, 64>, 64);
  shape("batch 2, min blocks 4, rows 32", backward<0, 2, 4, 32>, 32);
  shape("batch 2, min blocks 4, rows 128", backward<0, 2, 4, 128>, 128);
  shape("batch 4, min blocks 3, rows 64", backward<0, 4, 3, 64>, 64);
  report("forward", 0, median_ms([&] { forward<0><<<forward_blocks, kThreads>>>(a_in, a, vectors); }), 2 * bytes);
  report("forward", 1, median_ms([&] { forward<1><<<forward_blocks, kThreads>>>(a_in, a, vectors); }), 2 * bytes);
  report("forward", 3, median_ms([&] { forward<3><<<forward_blocks, kThreads>>>(a_in, a, vectors); }), 2 * bytes);
  const cudaError_t err = cudaDeviceSynchronize();
  std::printf("%s\n", cudaGetErrorString(err));
  return err == cudaSuccess ? 0 : 1;
}
