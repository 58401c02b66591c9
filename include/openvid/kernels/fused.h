#pragma once
// The DiT block's memory-bound work as fused kernels (kernels/norm.cu, rope.cu, gelu.cu): each reads
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

// ---- the residual stream (kernels/norm.cu): at a junction x_new = x + y * gate (the gated residual, when y
// is given), then h = x_new * rstd * w * (1 + scale) + shift with rstd = 1 / sqrt(mean(x_new^2) + eps) (the
// modulated RMSNorm, when h is given; weight may be null). Either half alone is the plain operation.
// Rows of width D fit when residual_stream_fits(D) (D a multiple of 8, at most 8192).
bool residual_stream_fits(int64_t D);
void residual_norm_forward(const bf16_t* x, const bf16_t* y, RowVector gate, bf16_t* x_out, const bf16_t* weight, RowVector shift,
                           RowVector scale, bf16_t* h, float* rstd, int64_t B, int64_t L, int64_t D, float eps, Stream stream);
// Backward in one pass: t = g_x (gradient of x_new from downstream; null: 0) + the norm's input gradient
// (when g_h is given); dx = t (written when dx is given), dy = t * gate (when y is given). [B, D] sums over
// the tokens, each optional: dshift = sum g_h, dscale_n = sum g_h * x_new * rstd (times w and summed with
// (1 + scale) over samples, it gives dscale and dw), dgate = sum t * y; each summed in fp32 and written in
// fp32 or rounded once to bf16 (what the modulation's gradient is, saving a conversion launch per sum).
// Deterministic. workspace: residual_stream_workspace(B, L, D) floats.
struct ColumnSum {
  float* f32 = nullptr;    // at most one of the two
  bf16_t* bf16 = nullptr;
  bool wanted() const { return f32 != nullptr || bf16 != nullptr; }
};
int64_t residual_stream_workspace(int64_t B, int64_t L, int64_t D);
void residual_norm_backward(const bf16_t* g_x, const bf16_t* g_h, const bf16_t* x_new, const float* rstd, const bf16_t* weight,
                            RowVector scale, const bf16_t* y, RowVector gate, bf16_t* dx, bf16_t* dy, ColumnSum dshift,
                            ColumnSum dscale_n, ColumnSum dgate, float* workspace, int64_t B, int64_t L, int64_t D, Stream stream);

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

// ---- the MLP's GELU (kernels/gelu.cu), exact (erf) as ATen's, over n elements (a multiple of 8).
// Forward: h = GELU(a).
void gelu_forward(const bf16_t* a, bf16_t* h, int64_t n, Stream stream);
// Backward from the forward's input alone, in one pass over [rows, cols]: da (the gradient of GELU's output)
// becomes, in place, the gradient of its input, da * GELU'(a); a becomes GELU(a), the forward's output again
// (bit for bit), for the next linear's weight gradient; and db [cols] (fp32) = the column sums of the new da
// as stored, the bias gradient of the linear before the GELU. Deterministic.
// workspace: gelu_backward_workspace(rows, cols) floats. cols a multiple of 8.
int64_t gelu_backward_workspace(int64_t rows, int64_t cols);
void gelu_backward_recompute(bf16_t* da, bf16_t* a, float* db, float* workspace, int64_t rows, int64_t cols, Stream stream);

}  // namespace ov::kernels
