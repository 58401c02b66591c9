#pragma once
// The DiT block's operations between its matrix products, each in two implementations that compute the
// same function: the ATen composition (the CPU path, and the reference the GPU path is tested against)
// and, for bf16 CUDA tensors, fused kernels (kernels/fused.h) inside autograd functions that save only
// what their backward needs. The fused path is taken whenever the build has the kernels and the tensors
// fit them (CUDA, bf16, contiguous rows, D a multiple of 8, head_dim a multiple of 16); setting
// OPENVID_FUSED_KERNELS=0 in the environment forces the ATen path (to compare, or to rule the kernels out).
#include <ATen/core/Tensor.h>

#include <utility>

namespace ov::model::ops {

// False when OPENVID_FUSED_KERNELS=0 or the build has no kernels.
bool fused_kernels_enabled();

// RMSNorm(x; eps 1e-6) [* weight] * (1 + scale) + shift, in at least fp32, cast to out_dtype. x [B, L, D];
// shift, scale [B, 1, D]; weight [D] or undefined.
at::Tensor modulated_rms_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& shift, const at::Tensor& scale,
                              at::ScalarType out_dtype);

// The norm of the first junction of a block, whose input also feeds the residual that follows: returns
// (x, modulated_rms_norm(x, ...) in x's dtype), and the residual must use the x returned. Fused, x's two
// gradients (through the residual and through the norm) are summed inside the norm's backward pass
// instead of by autograd in a pass of their own.
std::pair<at::Tensor, at::Tensor> norm_keeping_input(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& shift,
                                                     const at::Tensor& scale);

// x + y * gate: x, y [B, L, D]; gate [B, 1, D].
at::Tensor gated_residual(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate);

// Both at one junction of the residual stream: x_new = x + y * gate and h = modulated_rms_norm(x_new, ...) in
// x's dtype. Fused, the backward reads each tensor once: 6 [B, L, D] passes instead of 14.
std::pair<at::Tensor, at::Tensor> residual_then_norm(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate, const at::Tensor& weight,
                                                     const at::Tensor& shift, const at::Tensor& scale);

// The heads of a self-attention projection qkv [B, L, 3 * heads * head_dim] (features split as (3, heads,
// head_dim)): q and k rotated by RoPE (cos, sin [L, head_dim / 2] fp32), v mixed with block 0's values v0
// as lambda * v + (1 - lambda) * v0 when v0 is defined. q, k, v come back as [B, heads, L, head_dim].
struct Heads {
  at::Tensor q, k, v;
};
Heads attention_heads(const at::Tensor& qkv, int64_t heads, int64_t head_dim, const at::Tensor& cos, const at::Tensor& sin,
                      const at::Tensor& v0, const at::Tensor& lambda);

// The MLP: fc2(GELU(fc1(x))) with the exact (erf) GELU; weights and biases in x's dtype. The fused path
// saves x and fc1's output only (GELU's output is the largest activation of the block: 4x the width) and
// recomputes GELU's output in place over fc1's, in the backward pass that makes fc1's gradients.
at::Tensor gelu_mlp(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2);

// The ATen compositions themselves (what the functions above compute on CPUs), for tests of the fused path.
namespace reference {
at::Tensor modulated_rms_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& shift, const at::Tensor& scale,
                              at::ScalarType out_dtype);
at::Tensor gated_residual(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate);
std::pair<at::Tensor, at::Tensor> residual_then_norm(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate, const at::Tensor& weight,
                                                     const at::Tensor& shift, const at::Tensor& scale);
Heads attention_heads(const at::Tensor& qkv, int64_t heads, int64_t head_dim, const at::Tensor& cos, const at::Tensor& sin,
                      const at::Tensor& v0, const at::Tensor& lambda);
at::Tensor gelu_mlp(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2);
}  // namespace reference

}  // namespace ov::model::ops
