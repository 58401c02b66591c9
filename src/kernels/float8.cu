// The float8 casts (include/openvid/kernels/float8.h).
//
// amax: a grid-stride pass of 16-byte loads; |x| compared as unsigned bit patterns (for non-negative floats
// their order is the numbers' order, and NaN's patterns lie above infinity's, so a NaN wins as ATen's max
// lets it), reduced in the warp, then one atomicMax per warp.
// cast: a CUDA block owns a 64 x 64 tile; each thread converts 2 vectors of 8 (one 16-byte load each), writes
// the row-major bytes directly (8-byte stores) and puts them in shared memory, from which the tile is written
// transposed in 16-byte rows.
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <algorithm>

#include "openvid/kernels/cuda_check.h"
#include "openvid/kernels/float8.h"
#include "gelu.cuh"
#include "vec.cuh"

namespace ov::kernels {
namespace {

constexpr int kAmaxThreads = 256;
constexpr int kTile = 64;
constexpr int kCastThreads = 256;
constexpr int kTilePitch = kTile + 16;  // shared-memory row pitch in bytes (16-byte aligned rows)

template <Float8Input kInput>
__device__ __forceinline__ float input_value(float x) {
  if constexpr (kInput == Float8Input::kGelu) return gelu_as_stored(x);
  return x;
}

template <Float8Input kInput>
__global__ void __launch_bounds__(kAmaxThreads) amax_kernel(const __nv_bfloat16* __restrict__ x, int64_t vectors, unsigned* __restrict__ amax) {
  unsigned best = 0;
  for (int64_t v = static_cast<int64_t>(blockIdx.x) * kAmaxThreads + threadIdx.x; v < vectors; v += static_cast<int64_t>(gridDim.x) * kAmaxThreads) {
    float f[kVec];
    load8(x + v * kVec, f);
#pragma unroll
    for (int i = 0; i < kVec; ++i) best = max(best, __float_as_uint(fabsf(input_value<kInput>(f[i]))));
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) best = max(best, __shfl_xor_sync(0xffffffffu, best, offset));
  if ((threadIdx.x & 31) == 0 && best != 0) atomicMax(amax, best);
}

__device__ __forceinline__ float scale_from(float amax) {
  return amax != amax ? amax : kE4m3Max / fmaxf(amax, kAmaxFloor);
}

template <Float8Input kInput>
__global__ void __launch_bounds__(kCastThreads) cast_kernel(const __nv_bfloat16* __restrict__ x, int64_t rows, int64_t cols,
                                                              const float* __restrict__ amax, fp8_t* __restrict__ out,
                                                              fp8_t* __restrict__ out_t, int64_t padded_rows, float* __restrict__ inv_scale) {
  __shared__ __align__(16) fp8_t tile[kTile][kTilePitch];
  const float s = scale_from(*amax);
  if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0) *inv_scale = 1.f / s;
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kTile, col0 = static_cast<int64_t>(blockIdx.x) * kTile;
  constexpr int kVectorsPerRow = kTile / kVec;  // 8
#pragma unroll
  for (int j = 0; j < kTile * kVectorsPerRow / kCastThreads; ++j) {
    const int item = threadIdx.x + j * kCastThreads;
    const int r = item / kVectorsPerRow, c = (item % kVectorsPerRow) * kVec;
    const int64_t row = row0 + r, col = col0 + c;
    uint2 packed = make_uint2(0, 0);  // rows past the end are zeros (the transposed copy's padding)
    if (row < rows && col < cols) {
      float f[kVec];
      load8(x + row * cols + col, f);
      fp8_t* b = reinterpret_cast<fp8_t*>(&packed);
#pragma unroll
      for (int i = 0; i < kVec; ++i) b[i] = __nv_cvt_float_to_fp8(input_value<kInput>(f[i]) * s, __NV_SATFINITE, __NV_E4M3);
      if (out != nullptr) *reinterpret_cast<uint2*>(out + row * cols + col) = packed;
    }
    *reinterpret_cast<uint2*>(&tile[r][c]) = packed;
  }
  if (out_t == nullptr) return;
  __syncthreads();
  // The transposed tile: kTile columns of x, each written as kTile / 16 16-byte pieces of rows.
  constexpr int kPieces = kTile / 16;
  for (int item = threadIdx.x; item < kTile * kPieces; item += kCastThreads) {
    const int c = item / kPieces, r = (item % kPieces) * 16;
    const int64_t col = col0 + c, row = row0 + r;
    if (col >= cols || row >= padded_rows) continue;
    alignas(16) fp8_t piece[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) piece[i] = tile[r + i][c];
    *reinterpret_cast<uint4*>(out_t + col * padded_rows + row) = *reinterpret_cast<const uint4*>(piece);
  }
}

}  // namespace

void float8_amax(const bf16_t* x, int64_t n, Float8Input input, float* amax, Stream stream) {
  OV_CUDA_CHECK(cudaMemsetAsync(amax, 0, sizeof(float), stream));
  const int64_t vectors = n / kVec;
  if (vectors == 0) return;
  int device = 0, sms = 0;
  OV_CUDA_CHECK(cudaGetDevice(&device));
  OV_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(blocks_for(vectors, kAmaxThreads), int64_t{sms} * 8));
  const auto* in = reinterpret_cast<const __nv_bfloat16*>(x);
  auto* out = reinterpret_cast<unsigned*>(amax);
  if (input == Float8Input::kGelu) {
    amax_kernel<Float8Input::kGelu><<<blocks, kAmaxThreads, 0, stream>>>(in, vectors, out);
  } else {
    amax_kernel<Float8Input::kAsIs><<<blocks, kAmaxThreads, 0, stream>>>(in, vectors, out);
  }
  OV_CUDA_CHECK_LAUNCH();
}

void float8_cast(const bf16_t* x, int64_t rows, int64_t cols, Float8Input input, const float* amax, fp8_t* out, fp8_t* out_t,
                 int64_t padded_rows, float* inv_scale, Stream stream) {
  const int64_t row_tiles = (std::max(rows, out_t != nullptr ? padded_rows : rows) + kTile - 1) / kTile;
  const dim3 grid(blocks_for(cols, kTile), static_cast<unsigned>(std::max<int64_t>(row_tiles, 1)));
  const auto* in = reinterpret_cast<const __nv_bfloat16*>(x);
  if (input == Float8Input::kGelu) {
    cast_kernel<Float8Input::kGelu><<<grid, kCastThreads, 0, stream>>>(in, rows, cols, amax, out, out_t, padded_rows, inv_scale);
  } else {
    cast_kernel<Float8Input::kAsIs><<<grid, kCastThreads, 0, stream>>>(in, rows, cols, amax, out, out_t, padded_rows, inv_scale);
  }
  OV_CUDA_CHECK_LAUNCH();
}

}  // namespace ov::kernels
