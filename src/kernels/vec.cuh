#pragma once
// 16-byte vectors of bf16 for the memory-bound kernels: 8 values per load and store, converted to and from
// fp32 in registers (all arithmetic is fp32; each output is rounded to bf16 once).
#include <cuda_bf16.h>

#include <cstdint>

namespace ov::kernels {

constexpr int kVec = 8;  // bf16 values per 16-byte access

// 8 bf16 values as their raw 16 bytes: one 16-byte access (a struct of four bfloat162 would be copied member by
// member, as four 4-byte accesses); also a load issued early (software pipelining) and converted at first use.
struct alignas(16) Raw8 {
  uint4 bits;
};
__device__ __forceinline__ Raw8 load_raw8(const __nv_bfloat16* p) { return {*reinterpret_cast<const uint4*>(p)}; }
__device__ __forceinline__ void unpack8(const Raw8& raw, float (&v)[kVec]) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw.bits);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    v[2 * i] = f.x;
    v[2 * i + 1] = f.y;
  }
}

__device__ __forceinline__ void load8(const __nv_bfloat16* p, float (&v)[kVec]) { unpack8(load_raw8(p), v); }

__device__ __forceinline__ unsigned pack_bf16x2(float a, float b) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<const unsigned*>(&h);
}

// __stwb (an ordinary write-back store): a plain uint4 assignment was split into four 4-byte stores.
__device__ __forceinline__ void store8(__nv_bfloat16* p, const float (&v)[kVec]) {
  __stwb(reinterpret_cast<uint4*>(p),
         make_uint4(pack_bf16x2(v[0], v[1]), pack_bf16x2(v[2], v[3]), pack_bf16x2(v[4], v[5]), pack_bf16x2(v[6], v[7])));
}

__device__ __forceinline__ void load8(const float* p, float (&v)[kVec]) {
  const float4 a = *reinterpret_cast<const float4*>(p), b = *reinterpret_cast<const float4*>(p + 4);
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

inline unsigned blocks_for(int64_t items, int per_block) { return static_cast<unsigned>((items + per_block - 1) / per_block); }

}  // namespace ov::kernels
