#include "openvid/model/block_ops.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstdlib>
#include <cstring>

#include "openvid/kernels/fused.h"
#include "openvid/kernels/stream.h"
#include "openvid/model/gradient_slots.h"
#include "openvid/model/linear.h"
#include "openvid/model/rope.h"

namespace ov::model::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using kernels::bf16_t;

constexpr double kNormEps = 1e-6;

// ---- the fused path ----------------------------------------------------------------------------------------

const bf16_t* bits(const at::Tensor& t) { return t.defined() ? static_cast<const bf16_t*>(t.data_ptr()) : nullptr; }
bf16_t* mutable_bits(const at::Tensor& t) { return static_cast<bf16_t*>(t.data_ptr()); }
bool aligned16(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

// [B, 1, D] rows of the modulation (chunks of one linear's output): contiguous rows at a batch stride.
bool fits_rows(const at::Tensor& r, int64_t B, int64_t D) {
  return r.is_cuda() && r.scalar_type() == at::kBFloat16 && r.dim() == 3 && r.size(0) == B && r.size(1) == 1 && r.size(2) == D &&
         r.stride(2) == 1 && r.stride(0) % kernels::kVecElements == 0 && aligned16(r);
}
kernels::RowVector row_vector(const at::Tensor& r) { return {bits(r), r.stride(0)}; }

// x [B, L, D] bf16 on CUDA with D a multiple of 8 (after .contiguous()).
bool fits_activations(const at::Tensor& x) {
  return fused_kernels_enabled() && x.is_cuda() && x.scalar_type() == at::kBFloat16 && x.dim() == 3 &&
         x.size(2) % kernels::kVecElements == 0;
}

kernels::Stream stream_of(const at::Tensor& t) { return kernels::current_stream(t.device()); }

at::Tensor contiguous_aligned(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  return aligned16(c) ? c : c.clone();  // a fresh allocation is aligned
}

// One junction of the residual stream, in the kernels' terms: the residual half (y, gate) and/or the norm
// half (weight, shift, scale) of x_new = x + y * gate; h = norm(x_new).
struct Junction {
  bool residual, norm;
};

// Runs the forward of `j` and saves what its backward needs. Inputs: x, then y and gate when residual,
// then weight (may be undefined), shift, scale when norm. Outputs: x_new when residual, then h when norm.
variable_list junction_forward(AutogradContext* ctx, Junction j, const at::Tensor& x_in, const at::Tensor& y_in, const at::Tensor& gate,
                               const at::Tensor& weight, const at::Tensor& shift, const at::Tensor& scale) {
  const at::Tensor x = contiguous_aligned(x_in);
  const at::Tensor y = j.residual ? contiguous_aligned(y_in) : at::Tensor();
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2);
  const at::Tensor x_new = j.residual ? at::empty_like(x) : x;
  const at::Tensor h = j.norm ? at::empty_like(x) : at::Tensor();
  const at::Tensor rstd = j.norm ? at::empty({B * L}, x.options().dtype(at::kFloat)) : at::Tensor();
  const kernels::RowVector none{nullptr, 0};
  kernels::residual_norm_forward(bits(x), bits(y), j.residual ? row_vector(gate) : none, j.residual ? mutable_bits(x_new) : nullptr,
                                 bits(weight), j.norm ? row_vector(shift) : none, j.norm ? row_vector(scale) : none,
                                 j.norm ? mutable_bits(h) : nullptr, j.norm ? rstd.data_ptr<float>() : nullptr, B, L, D,
                                 static_cast<float>(kNormEps), stream_of(x));
  ctx->save_for_backward({x_new, y, gate, weight, scale, rstd});
  ctx->saved_data["residual"] = j.residual;
  ctx->saved_data["norm"] = j.norm;
  variable_list out;
  if (j.residual) out.push_back(x_new);
  if (j.norm) out.push_back(h);
  return out;
}

// Gradients of (x, y, gate, weight, shift, scale) from those of the outputs (g_x for x_new, g_h for h).
variable_list junction_backward(AutogradContext* ctx, const at::Tensor& g_x_in, const at::Tensor& g_h_in) {
  const variable_list saved = ctx->get_saved_variables();
  const at::Tensor &x_new = saved[0], &y = saved[1], &gate = saved[2], &w = saved[3], &scale = saved[4], &rstd = saved[5];
  const Junction j{ctx->saved_data["residual"].toBool(), ctx->saved_data["norm"].toBool()};
  const at::Tensor g_x = g_x_in.defined() ? contiguous_aligned(g_x_in) : at::Tensor();
  const at::Tensor g_h = j.norm && g_h_in.defined() ? contiguous_aligned(g_h_in) : at::Tensor();
  const int64_t B = x_new.size(0), L = x_new.size(1), D = x_new.size(2);
  const at::TensorOptions fp32 = x_new.options().dtype(at::kFloat);
  // With the norm's gradient the input gradient is new; without it, it is the downstream gradient itself.
  const bool write_dx = g_h.defined() || !g_x.defined();
  at::Tensor dx = write_dx ? at::empty_like(x_new) : g_x;
  at::Tensor dy = j.residual ? at::empty_like(x_new) : at::Tensor();
  // The modulation's gradients come out of the kernels in its dtype (bf16, see fits_rows); dscale_n stays fp32
  // when a norm weight still multiplies it (and gives the weight's gradient).
  const at::TensorOptions row = x_new.options();
  const at::Tensor dshift = g_h.defined() ? at::empty({B, 1, D}, row) : at::Tensor();
  const at::Tensor dscale_n = g_h.defined() ? at::empty({B, 1, D}, w.defined() ? fp32 : row) : at::Tensor();
  const at::Tensor dgate = j.residual ? at::empty({B, 1, D}, row) : at::Tensor();
  at::Tensor workspace = at::empty({kernels::residual_stream_workspace(B, L, D)}, fp32);
  auto sum_out = [](const at::Tensor& t) {
    if (!t.defined()) return kernels::ColumnSum{};
    if (t.scalar_type() == at::kFloat) return kernels::ColumnSum{t.data_ptr<float>(), nullptr};
    return kernels::ColumnSum{nullptr, mutable_bits(t)};
  };
  kernels::residual_norm_backward(bits(g_x), bits(g_h), bits(x_new), rstd.defined() ? rstd.data_ptr<float>() : nullptr, bits(w),
                                  j.norm ? row_vector(scale) : kernels::RowVector{nullptr, 0}, bits(y),
                                  j.residual ? row_vector(gate) : kernels::RowVector{nullptr, 0}, write_dx ? mutable_bits(dx) : nullptr,
                                  j.residual ? mutable_bits(dy) : nullptr, sum_out(dshift), sum_out(dscale_n), sum_out(dgate),
                                  workspace.data_ptr<float>(), B, L, D, stream_of(x_new));
  variable_list grads{dx};
  if (j.residual) {
    grads.push_back(dy);
    grads.push_back(dgate);
  }
  if (j.norm) {
    const bool any = g_h.defined();
    grads.push_back(w.defined() && any ? ((1 + scale.to(at::kFloat)) * dscale_n).sum(at::IntArrayRef{0, 1}).to(w.scalar_type()) : at::Tensor());
    grads.push_back(dshift);
    grads.push_back(any && w.defined() ? (dscale_n * w.to(at::kFloat)).to(scale.scalar_type()) : dscale_n);
  }
  return grads;
}

class ModulatedRmsNorm : public torch::autograd::Function<ModulatedRmsNorm> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const std::optional<at::Tensor>& weight, const at::Tensor& shift,
                               const at::Tensor& scale) {
    return junction_forward(ctx, {false, true}, x, at::Tensor(), at::Tensor(), weight.value_or(at::Tensor()), shift, scale);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) { return junction_backward(ctx, at::Tensor(), grads[0]); }
};

// The norm alone, with its input passed through as a second output: the gradient arriving at that output
// is added to the norm's input gradient in the same kernel pass.
class NormKeepingInput : public torch::autograd::Function<NormKeepingInput> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const std::optional<at::Tensor>& weight, const at::Tensor& shift,
                               const at::Tensor& scale) {
    const variable_list h = junction_forward(ctx, {false, true}, x, at::Tensor(), at::Tensor(), weight.value_or(at::Tensor()), shift, scale);
    return {x, h[0]};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) { return junction_backward(ctx, grads[0], grads[1]); }
};

class GatedResidual : public torch::autograd::Function<GatedResidual> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate) {
    return junction_forward(ctx, {true, false}, x, y, gate, at::Tensor(), at::Tensor(), at::Tensor());
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) { return junction_backward(ctx, grads[0], at::Tensor()); }
};

class ResidualNorm : public torch::autograd::Function<ResidualNorm> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate,
                               const std::optional<at::Tensor>& weight, const at::Tensor& shift, const at::Tensor& scale) {
    return junction_forward(ctx, {true, true}, x, y, gate, weight.value_or(at::Tensor()), shift, scale);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) { return junction_backward(ctx, grads[0], grads[1]); }
};

// qkv [B, L, 3D] -> q, k, v [B, L, H, Dh] (the caller transposes them to [B, H, L, Dh]).
class AttentionHeads : public torch::autograd::Function<AttentionHeads> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& qkv_in, const at::Tensor& cos, const at::Tensor& sin,
                               const std::optional<at::Tensor>& v0_blhd, const std::optional<at::Tensor>& lambda, int64_t heads,
                               int64_t head_dim) {
    const at::Tensor qkv = contiguous_aligned(qkv_in);
    const int64_t B = qkv.size(0), L = qkv.size(1);
    const std::vector<int64_t> shape{B, L, heads, head_dim};
    at::Tensor q = at::empty(shape, qkv.options()), k = at::empty(shape, qkv.options()), v = at::empty(shape, qkv.options());
    const at::Tensor v0 = v0_blhd ? contiguous_aligned(*v0_blhd) : at::Tensor();
    const at::Tensor lam = lambda.value_or(at::Tensor());
    const at::Tensor v_raw = v0.defined() ? at::empty(shape, qkv.options()) : at::Tensor();
    kernels::rope_split_forward(bits(qkv), cos.data_ptr<float>(), sin.data_ptr<float>(), bits(v0), bits(lam), mutable_bits(q), mutable_bits(k),
                                mutable_bits(v), v_raw.defined() ? mutable_bits(v_raw) : nullptr, B, L, heads, head_dim, stream_of(qkv));
    ctx->save_for_backward({cos, sin, v_raw, v0, lam});
    ctx->saved_data["shape"] = shape;
    return {q, k, v};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &cos = saved[0], &sin = saved[1], &v_raw = saved[2], &v0 = saved[3], &lam = saved[4];
    const std::vector<int64_t> shape = ctx->saved_data["shape"].toIntVector();
    const int64_t B = shape[0], L = shape[1], H = shape[2], Dh = shape[3];
    // A head whose gradient is undefined (unused) counts as zeros.
    std::vector<at::Tensor> g;
    for (int i = 0; i < 3; ++i) {
      at::Tensor t = grads[static_cast<size_t>(i)].defined() ? grads[static_cast<size_t>(i)] : at::zeros(shape, cos.options().dtype(at::kBFloat16));
      if (t.stride(3) != 1 || !aligned16(t) || t.stride(0) % kernels::kVecElements || t.stride(1) % kernels::kVecElements ||
          t.stride(2) % kernels::kVecElements) {
        t = t.contiguous();
      }
      g.push_back(t);
    }
    auto strides = [](const at::Tensor& t) { return kernels::HeadStrides{t.stride(0), t.stride(1), t.stride(2)}; };
    at::Tensor dqkv = at::empty({B, L, 3 * H * Dh}, g[0].options());
    at::Tensor dv0 = v0.defined() ? at::empty_like(v0) : at::Tensor();
    at::Tensor partials = v0.defined() ? at::empty({kernels::rope_split_blocks(B, L, H, Dh)}, cos.options()) : at::Tensor();
    kernels::rope_split_backward(bits(g[0]), strides(g[0]), bits(g[1]), strides(g[1]), bits(g[2]), strides(g[2]), cos.data_ptr<float>(),
                                 sin.data_ptr<float>(), bits(v_raw), bits(v0), bits(lam), mutable_bits(dqkv),
                                 dv0.defined() ? mutable_bits(dv0) : nullptr, partials.defined() ? partials.data_ptr<float>() : nullptr, B,
                                 L, H, Dh, stream_of(cos));
    const at::Tensor dlam = lam.defined() ? partials.sum().to(lam.scalar_type()).view({1}) : at::Tensor();
    return {dqkv, at::Tensor(), at::Tensor(), dv0, dlam, at::Tensor(), at::Tensor()};
  }
};

// fc2(GELU(fc1(x))) saving x and fc1(x) only (GELU's output is the block's largest activation, [tokens, 4D]).
// Backward recomputes GELU's output over fc1(x) in place, in the kernel pass that also makes fc1's input and
// bias gradients, so the GELU costs one pass forward and one backward (bf16 on CUDA, hidden width a
// multiple of 8).
class GeluMlp : public torch::autograd::Function<GeluMlp> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                               const at::Tensor& b2) {
    const at::Tensor a = contiguous_aligned(at::linear(x, w1, b1));
    const at::Tensor h = at::empty_like(a);
    kernels::gelu_forward(bits(a), mutable_bits(h), a.numel(), stream_of(a));
    ctx->save_for_backward({x, a, w1, w2, b1, b2});
    return {at::linear(h, w2, b2)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &a = saved[1], &w1 = saved[2], &w2 = saved[3], &b1 = saved[4], &b2 = saved[5];
    const int64_t hidden = a.size(-1);
    const at::Tensor g2 = grads[0].reshape({-1, grads[0].size(-1)});
    at::Tensor da = g2.mm(w2);
    // `a` is this node's own (saved, never shared): after the kernel it holds GELU(a), the forward's output.
    const at::Tensor h = a.view({-1, hidden});
    const at::Tensor db1_sum = at::empty({hidden}, da.options().dtype(at::kFloat));
    const at::Tensor workspace = at::empty({kernels::gelu_backward_workspace(da.size(0), hidden)}, db1_sum.options());
    kernels::gelu_backward_recompute(mutable_bits(da), mutable_bits(h), db1_sum.data_ptr<float>(), workspace.data_ptr<float>(), da.size(0),
                                     hidden, stream_of(da));
    const at::Tensor dw2 = weight_gradient(w2, g2, h);
    const at::Tensor dw1 = weight_gradient(w1, da, x.reshape({-1, x.size(-1)}));
    at::Tensor db1 = take_gradient_slot(b1);
    db1 = db1.defined() ? db1.copy_(db1_sum) : db1_sum.to(da.scalar_type());
    const at::Tensor dx = da.mm(w1).view_as(x);
    return {dx, dw1, db1, dw2, bias_gradient(b2, g2)};
  }
};

}  // namespace

// ---- the ATen compositions -------------------------------------------------------------------------------

namespace reference {

at::Tensor modulated_rms_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& shift, const at::Tensor& scale,
                              at::ScalarType dtype) {
  const auto accumulate_type = [](at::ScalarType t) { return at::promote_types(t, at::kFloat); };
  const at::Tensor x32 = x.to(accumulate_type(x.scalar_type()));
  at::Tensor y = x32 * at::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + kNormEps);
  if (weight.defined()) y = y * weight;
  const at::ScalarType acc = accumulate_type(dtype);
  return (y * (1 + scale.to(acc)) + shift.to(acc)).to(dtype);
}

at::Tensor gated_residual(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate) { return x + y * gate; }

std::pair<at::Tensor, at::Tensor> residual_then_norm(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate, const at::Tensor& weight,
                                                     const at::Tensor& shift, const at::Tensor& scale) {
  const at::Tensor x_new = gated_residual(x, y, gate);
  return {x_new, modulated_rms_norm(x_new, weight, shift, scale, x_new.scalar_type())};
}

Heads attention_heads(const at::Tensor& qkv, int64_t heads, int64_t head_dim, const at::Tensor& cos, const at::Tensor& sin,
                      const at::Tensor& v0, const at::Tensor& lambda) {
  const at::Tensor split = qkv.view({qkv.size(0), qkv.size(1), 3, heads, head_dim}).permute({2, 0, 3, 1, 4});
  at::Tensor v = split[2];
  if (v0.defined()) {
    const at::Tensor lam = lambda.to(qkv.scalar_type());
    v = lam * v + (1 - lam) * v0;
  }
  return {apply_rope(split[0], cos, sin), apply_rope(split[1], cos, sin), v};
}

at::Tensor gelu_mlp(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2) {
  return linear(at::gelu(linear(x, w1, b1)), w2, b2);
}

}  // namespace reference

// ---- dispatch ---------------------------------------------------------------------------------------------

bool fused_kernels_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("OPENVID_FUSED_KERNELS");
    return kernels::available() && !(v != nullptr && std::strcmp(v, "0") == 0);
  }();
  return enabled;
}

namespace {

// The norm's learnable weight as the kernels take it (bf16, contiguous), or none.
std::optional<at::Tensor> kernel_weight(const at::Tensor& weight) {
  return weight.defined() ? std::optional<at::Tensor>(contiguous_aligned(weight.to(at::kBFloat16))) : std::nullopt;
}

bool fits_junction(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate, const at::Tensor& shift, const at::Tensor& scale) {
  if (!fits_activations(x) || !kernels::residual_stream_fits(x.size(2))) return false;
  const int64_t B = x.size(0), D = x.size(2);
  if (y.defined() && (y.sizes() != x.sizes() || y.scalar_type() != at::kBFloat16 || !fits_rows(gate, B, D))) return false;
  return !shift.defined() || (fits_rows(shift, B, D) && fits_rows(scale, B, D));
}

}  // namespace

at::Tensor modulated_rms_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& shift, const at::Tensor& scale,
                              at::ScalarType out_dtype) {
  if (out_dtype == at::kBFloat16 && fits_junction(x, at::Tensor(), at::Tensor(), shift, scale)) {
    return ModulatedRmsNorm::apply(x, kernel_weight(weight), shift, scale)[0];
  }
  return reference::modulated_rms_norm(x, weight, shift, scale, out_dtype);
}

std::pair<at::Tensor, at::Tensor> norm_keeping_input(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& shift,
                                                     const at::Tensor& scale) {
  if (x.scalar_type() == at::kBFloat16 && fits_junction(x, at::Tensor(), at::Tensor(), shift, scale)) {
    const variable_list out = NormKeepingInput::apply(x, kernel_weight(weight), shift, scale);
    return {out[0], out[1]};
  }
  return {x, reference::modulated_rms_norm(x, weight, shift, scale, x.scalar_type())};
}

at::Tensor gated_residual(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate) {
  if (fits_junction(x, y, gate, at::Tensor(), at::Tensor())) return GatedResidual::apply(x, y, gate)[0];
  return reference::gated_residual(x, y, gate);
}

std::pair<at::Tensor, at::Tensor> residual_then_norm(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate, const at::Tensor& weight,
                                                     const at::Tensor& shift, const at::Tensor& scale) {
  if (fits_junction(x, y, gate, shift, scale)) {
    const variable_list out = ResidualNorm::apply(x, y, gate, kernel_weight(weight), shift, scale);
    return {out[0], out[1]};
  }
  return reference::residual_then_norm(x, y, gate, weight, shift, scale);
}

Heads attention_heads(const at::Tensor& qkv, int64_t heads, int64_t head_dim, const at::Tensor& cos, const at::Tensor& sin,
                      const at::Tensor& v0, const at::Tensor& lambda) {
  const bool fused = fits_activations(qkv) && head_dim % (2 * kernels::kVecElements) == 0 && cos.scalar_type() == at::kFloat &&
                     cos.is_contiguous() && sin.is_contiguous() && cos.size(0) == qkv.size(1) &&
                     (!v0.defined() || (v0.scalar_type() == at::kBFloat16 && lambda.is_cuda()));
  if (!fused) return reference::attention_heads(qkv, heads, head_dim, cos, sin, v0, lambda);
  // v0 comes as [B, H, L, Dh] (what a block returns); the kernel reads it as [B, L, H, Dh].
  const std::optional<at::Tensor> v0_blhd = v0.defined() ? std::optional<at::Tensor>(v0.transpose(1, 2)) : std::nullopt;
  const std::optional<at::Tensor> lam = v0.defined() ? std::optional<at::Tensor>(lambda.to(at::kBFloat16)) : std::nullopt;
  const variable_list out = AttentionHeads::apply(qkv, cos, sin, v0_blhd, lam, heads, head_dim);
  return {out[0].transpose(1, 2), out[1].transpose(1, 2), out[2].transpose(1, 2)};
}

at::Tensor gelu_mlp(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2) {
  if (fits_activations(x) && w1.size(0) % kernels::kVecElements == 0) return GeluMlp::apply(x, w1, b1, w2, b2)[0];
  return reference::gelu_mlp(x, w1, b1, w2, b2);
}

}  // namespace ov::model::ops
