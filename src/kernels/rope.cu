// The heads of the qkv projection with RoPE and the value residual (include/openvid/kernels/fused.h).
// One thread per (token, q/k/v, head, 8-wide chunk of the first half of the head): it reads the chunk and
// its partner in the second half (rotate-half pairs element i with i + Dh/2) and writes both.
#include <cuda_bf16.h>

#include "openvid/kernels/cuda_check.h"
#include "openvid/kernels/fused.h"
#include "vec.cuh"

namespace ov::kernels {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kThreads = 256;

struct Item {
  int64_t token, part, head, chunk;  // token = b * L + l
};

__device__ __forceinline__ Item item_of(int64_t n, int64_t H, int64_t chunks) {
  Item it;
  it.chunk = n % chunks;
  it.head = (n / chunks) % H;
  it.part = (n / (chunks * H)) % 3;
  it.token = n / (chunks * H * 3);
  return it;
}

__device__ __forceinline__ float lambda_of(const bf16_t* lam) { return __bfloat162float(*reinterpret_cast<const bf16*>(lam)); }

__global__ void __launch_bounds__(kThreads)
    rope_forward_kernel(const bf16_t* __restrict__ qkv_, const float* __restrict__ cos_t, const float* __restrict__ sin_t,
                        const bf16_t* __restrict__ v0_, const bf16_t* __restrict__ lam_, bf16_t* __restrict__ q_,
                        bf16_t* __restrict__ k_, bf16_t* __restrict__ v_, bf16_t* __restrict__ v_raw_, int64_t items, int64_t L,
                        int64_t H, int64_t Dh) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (n >= items) return;
  const int64_t r = Dh / 2, chunks = r / kVec;
  const Item it = item_of(n, H, chunks);
  const int64_t c = it.chunk * kVec;
  const bf16* in = reinterpret_cast<const bf16*>(qkv_) + ((it.token * 3 + it.part) * H + it.head) * Dh;
  float x1[kVec], x2[kVec];
  load8(in + c, x1);
  load8(in + r + c, x2);
  const int64_t out_at = (it.token * H + it.head) * Dh;
  if (it.part < 2) {
    const int64_t l = it.token % L;
    float cs[kVec], sn[kVec];
    load8(cos_t + l * r + c, cs);
    load8(sin_t + l * r + c, sn);
    float y1[kVec], y2[kVec];
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      y1[i] = x1[i] * cs[i] + x2[i] * sn[i];
      y2[i] = -x1[i] * sn[i] + x2[i] * cs[i];
    }
    bf16* out = reinterpret_cast<bf16*>(it.part == 0 ? q_ : k_) + out_at;
    store8(out + c, y1);
    store8(out + r + c, y2);
    return;
  }
  bf16* out = reinterpret_cast<bf16*>(v_) + out_at;
  if (v0_ == nullptr) {
    store8(out + c, x1);
    store8(out + r + c, x2);
    return;
  }
  bf16* raw = reinterpret_cast<bf16*>(v_raw_) + out_at;
  store8(raw + c, x1);
  store8(raw + r + c, x2);
  const float lam = lambda_of(lam_);
  const bf16* v0 = reinterpret_cast<const bf16*>(v0_) + out_at;
  float a1[kVec], a2[kVec];
  load8(v0 + c, a1);
  load8(v0 + r + c, a2);
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    x1[i] = lam * x1[i] + (1.f - lam) * a1[i];
    x2[i] = lam * x2[i] + (1.f - lam) * a2[i];
  }
  store8(out + c, x1);
  store8(out + r + c, x2);
}

__global__ void __launch_bounds__(kThreads)
    rope_backward_kernel(const bf16_t* __restrict__ dq_, HeadStrides sq, const bf16_t* __restrict__ dk_, HeadStrides sk,
                         const bf16_t* __restrict__ dv_, HeadStrides sv, const float* __restrict__ cos_t,
                         const float* __restrict__ sin_t, const bf16_t* __restrict__ v_raw_, const bf16_t* __restrict__ v0_,
                         const bf16_t* __restrict__ lam_, bf16_t* __restrict__ dqkv_, bf16_t* __restrict__ dv0_,
                         float* __restrict__ dlam_partials, int64_t items, int64_t L, int64_t H, int64_t Dh) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  float dlam = 0.f;
  if (n < items) {
    const int64_t r = Dh / 2, chunks = r / kVec;
    const Item it = item_of(n, H, chunks);
    const int64_t c = it.chunk * kVec, b = it.token / L, l = it.token % L;
    const HeadStrides s = it.part == 0 ? sq : it.part == 1 ? sk : sv;
    const bf16* grad = reinterpret_cast<const bf16*>(it.part == 0 ? dq_ : it.part == 1 ? dk_ : dv_) + b * s.b + l * s.l + it.head * s.h;
    float g1[kVec], g2[kVec];
    load8(grad + c, g1);
    load8(grad + r + c, g2);
    bf16* out = reinterpret_cast<bf16*>(dqkv_) + ((it.token * 3 + it.part) * H + it.head) * Dh;
    if (it.part < 2) {
      float cs[kVec], sn[kVec], d1[kVec], d2[kVec];
      load8(cos_t + l * r + c, cs);
      load8(sin_t + l * r + c, sn);
#pragma unroll
      for (int i = 0; i < kVec; ++i) {  // the transpose of [[c, s], [-s, c]]
        d1[i] = g1[i] * cs[i] - g2[i] * sn[i];
        d2[i] = g1[i] * sn[i] + g2[i] * cs[i];
      }
      store8(out + c, d1);
      store8(out + r + c, d2);
    } else if (v0_ == nullptr) {
      store8(out + c, g1);
      store8(out + r + c, g2);
    } else {
      const float lam = lambda_of(lam_);
      const int64_t at = (it.token * H + it.head) * Dh;
      const bf16* raw = reinterpret_cast<const bf16*>(v_raw_) + at;
      const bf16* v0 = reinterpret_cast<const bf16*>(v0_) + at;
      float r1[kVec], r2[kVec], a1[kVec], a2[kVec], o1[kVec], o2[kVec];
      load8(raw + c, r1);
      load8(raw + r + c, r2);
      load8(v0 + c, a1);
      load8(v0 + r + c, a2);
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        dlam += g1[i] * (r1[i] - a1[i]) + g2[i] * (r2[i] - a2[i]);
        o1[i] = lam * g1[i];
        o2[i] = lam * g2[i];
        a1[i] = (1.f - lam) * g1[i];
        a2[i] = (1.f - lam) * g2[i];
      }
      store8(out + c, o1);
      store8(out + r + c, o2);
      bf16* dv0 = reinterpret_cast<bf16*>(dv0_) + at;
      store8(dv0 + c, a1);
      store8(dv0 + r + c, a2);
    }
  }
  if (dlam_partials == nullptr) return;
  // The block's partial sum of the lambda gradient, in a fixed order.
  __shared__ float warp_sums[kThreads / 32];
  dlam = warp_sum(dlam);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = dlam;
  __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0.f;
    for (int w = 0; w < kThreads / 32; ++w) s += warp_sums[w];
    dlam_partials[blockIdx.x] = s;
  }
}

int64_t items_of(int64_t B, int64_t L, int64_t H, int64_t Dh) { return B * L * 3 * H * (Dh / 2 / kVec); }

}  // namespace

int64_t rope_split_blocks(int64_t B, int64_t L, int64_t H, int64_t Dh) { return blocks_for(items_of(B, L, H, Dh), kThreads); }

void rope_split_forward(const bf16_t* qkv, const float* cos, const float* sin, const bf16_t* v0, const bf16_t* lam, bf16_t* q, bf16_t* k,
                        bf16_t* v, bf16_t* v_raw, int64_t B, int64_t L, int64_t H, int64_t Dh, Stream stream) {
  const int64_t items = items_of(B, L, H, Dh);
  if (items == 0) return;
  rope_forward_kernel<<<blocks_for(items, kThreads), kThreads, 0, stream>>>(qkv, cos, sin, v0, lam, q, k, v, v_raw, items, L, H, Dh);
  OV_CUDA_CHECK_LAUNCH();
}

void rope_split_backward(const bf16_t* dq, HeadStrides sq, const bf16_t* dk, HeadStrides sk, const bf16_t* dv, HeadStrides sv,
                         const float* cos, const float* sin, const bf16_t* v_raw, const bf16_t* v0, const bf16_t* lam, bf16_t* dqkv,
                         bf16_t* dv0, float* dlam_partials, int64_t B, int64_t L, int64_t H, int64_t Dh, Stream stream) {
  const int64_t items = items_of(B, L, H, Dh);
  if (items == 0) return;
  rope_backward_kernel<<<blocks_for(items, kThreads), kThreads, 0, stream>>>(dq, sq, dk, sk, dv, sv, cos, sin, v_raw, v0, lam, dqkv,
                                                                             dv0, dlam_partials, items, L, H, Dh);
  OV_CUDA_CHECK_LAUNCH();
}

}  // namespace ov::kernels
