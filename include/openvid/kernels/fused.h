#pragma once
// The DiT block's memory-bound work as fused kernels (kernels/norm.cu, rope.cu, residual.cu): each reads
// its inputs once and writes its outputs once, bf16 in and out, fp32 arithmetic. Tensors are [B, L, D]
// rows (B samples, L tokens, D features) unless said otherwise, contiguous, 16-byte aligned, D a multiple
// of 8. A "row vector" argument (shift, scale, gate) is [B, D] with a batch stride (a chunk of the adaLN
// modulation's output). bf16 buffers are passed as their raw 16-bit words.
#include <cstdint>

#include "openvid/kernels/launch.h"

namespace ov::kernels {

using bf16_t = uint16_t;  // the bits of a bfloat16
constexpr int64_t kVecElements = 8;  // elements per 16-byte access: D (and head_dim / 2) must be multiples

struct RowVector {
  const bf16_t* data;
  int64_t batch_stride;  // elements between sample b and b + 1
};

// ---- modulated RMSNorm: out = x * rstd * w * (1 + scale[b]) + shift[b], rstd = 1 / sqrt(mean(x^2) + eps)
// weight may be null (no learnable weight). rstd: [B * L] fp32, saved for backward.
void mod_rms_norm_forward(const bf16_t* x, const bf16_t* weight, RowVector shift, RowVector scale, bf16_t* out, float* rstd,
                          int64_t B, int64_t L, int64_t D, float eps, Stream stream);
// dx = rstd * (u - n * mean(u * n)) with n = x * rstd and u = g * (1 + scale[b]) * w.
void mod_rms_norm_backward_dx(const bf16_t* g, const bf16_t* x, const float* rstd, const bf16_t* weight, RowVector scale, bf16_t* dx,
                              int64_t B, int64_t L, int64_t D, Stream stream);

// ---- column sums over the tokens of each sample, deterministic (partial sums per chunk of rows, then a
// second pass): sum_a[b, d] = sum_l a[b, l, d]; sum_ac[b, d] = sum_l a[b, l, d] * c[b, l, d] * row_scale[b, l].
// Either output may be null (then c and row_scale are not read; row_scale may be null for 1).
// workspace: column_sums_workspace(B, L, D) floats.
int64_t column_sums_workspace(int64_t B, int64_t L, int64_t D);
void column_sums(const bf16_t* a, const bf16_t* c, const float* row_scale, float* sum_a, float* sum_ac, float* workspace, int64_t B,
                 int64_t L, int64_t D, Stream stream);

// ---- gated residual: out = x + y * gate[b]; backward dy = g * gate[b] (dx = g; dgate = column_sums(g, y)).
void gated_residual_forward(const bf16_t* x, const bf16_t* y, RowVector gate, bf16_t* out, int64_t B, int64_t L, int64_t D,
                            Stream stream);
void gated_residual_backward_dy(const bf16_t* g, RowVector gate, bf16_t* dy, int64_t B, int64_t L, int64_t D, Stream stream);

// ---- the heads of a qkv projection, with RoPE and the value residual.
// qkv [B, L, 3, H, Dh] -> q, k, v [B, L, H, Dh]: q and k rotated (rotate-half, cos/sin [L, Dh/2] fp32); with
// v0 (block 0's values, [B, L, H, Dh]) v = lam * v_raw + (1 - lam) * v0, lam a 1-element bf16 on the device,
// and v_raw is written too (the value residual's backward needs it).
void rope_split_forward(const bf16_t* qkv, const float* cos, const float* sin, const bf16_t* v0, const bf16_t* lam, bf16_t* q,
                        bf16_t* k, bf16_t* v, bf16_t* v_raw, int64_t B, int64_t L, int64_t H, int64_t Dh, Stream stream);

// Element strides of a [B, L, H, Dh] gradient (Dh contiguous).
struct HeadStrides {
  int64_t b, l, h;
};
// Backward: dq, dk, dv -> dqkv [B, L, 3, H, Dh]. With v0: dv0 [B, L, H, Dh] = (1 - lam) dv, and one partial
// sum of dv * (v_raw - v0) per CUDA block into dlam_partials (rope_split_blocks(...) floats; the caller sums).
int64_t rope_split_blocks(int64_t B, int64_t L, int64_t H, int64_t Dh);
void rope_split_backward(const bf16_t* dq, HeadStrides sq, const bf16_t* dk, HeadStrides sk, const bf16_t* dv, HeadStrides sv,
                         const float* cos, const float* sin, const bf16_t* v_raw, const bf16_t* v0, const bf16_t* lam, bf16_t* dqkv,
                         bf16_t* dv0, float* dlam_partials, int64_t B, int64_t L, int64_t H, int64_t Dh, Stream stream);

}  // namespace ov::kernels
