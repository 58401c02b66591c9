// The float8 linear layers (model/float8.h): autograd functions over the casts of model/float8.cpp and
// cuBLASLt's float8 products (at::_scaled_mm).
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "openvid/kernels/float8.h"
#include "openvid/kernels/stream.h"
#include "openvid/model/block_ops.h"
#include "openvid/model/float8.h"
#include "openvid/model/float8_weights.h"
#include "openvid/model/gradient_slots.h"
#include "openvid/model/linear.h"
#include "openvid/runtime/error.h"

namespace ov::model {

using kernels::bf16_t;

namespace ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// a [m, k] row-major and b [k, n] column-major, both e4m3 with their dequantisation scales -> a b [m, n] in
// `dtype` (+ bias), into `out` when it is defined. fast_accum as torchao sets it: the forward product only.
at::Tensor product(const at::Tensor& a, const at::Tensor& a_inv, const at::Tensor& b, const at::Tensor& b_inv, at::ScalarType dtype,
                   const at::Tensor& bias, bool fast_accum, at::Tensor out = {}) {
  // cuBLASLt adds a bias of the output's dtype in its epilogue (bf16 on GPUs); anything else is added after.
  const bool in_epilogue = bias.defined() && bias.scalar_type() == dtype && (dtype == at::kBFloat16 || !a.is_cuda());
  const std::optional<at::Tensor> epilogue = in_epilogue ? std::optional<at::Tensor>(bias) : std::nullopt;
  if (out.defined()) {
    at::_scaled_mm_out(out, a, b, a_inv, b_inv, epilogue, std::nullopt, dtype, fast_accum);
  } else {
    out = at::_scaled_mm(a, b, a_inv, b_inv, epilogue, std::nullopt, dtype, fast_accum);
  }
  if (bias.defined() && !in_epilogue) out.add_(bias.to(dtype));
  return out;
}

std::vector<int64_t> with_last(at::IntArrayRef sizes, int64_t last) {
  std::vector<int64_t> s = sizes.vec();
  s.back() = last;
  return s;
}

// The row-major float8 copy of a weight [out, in] for the forward product (as b: its transpose, column-major).
at::Tensor forward_weight(const float8::Cast& w) { return w.rows.t(); }

// A weight's row-major float8 copy for the forward: the registered one (model/float8_weights.h) with `amax` left
// undefined, else a cast of the weight, `amax` its amax.
float8::Cast weight_rows(const at::Tensor& weight, at::Tensor& amax) {
  if (const std::optional<Float8Weight> pre = float8_weight(weight)) return {pre->rows, at::Tensor(), pre->inv_scale};
  OV_CHECK(!is_stand_in(weight), "a float8 product got a weight whose values live in a float8 copy that is not registered");
  amax = float8::amax(weight);
  return float8::cast(weight, amax, true, false);
}

// The transposed copy of the same values for the input gradient: the forward's copy transposed (a registered
// weight), else the weight cast again with the forward's amax.
float8::Cast weight_transposed(const at::Tensor& weight, const at::Tensor& amax, const float8::Cast& forward) {
  if (amax.defined()) return float8::cast(weight, amax, false, true);
  const at::Tensor t = forward.rows.view(at::kByte).t().contiguous().view(at::kFloat8_e4m3fn);
  return {at::Tensor(), t, forward.inv_scale};
}

class Float8Linear : public torch::autograd::Function<Float8Linear> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                            Float8Recipe recipe) {
    const int64_t in = x.size(-1), out = weight.size(0);
    const at::Tensor x2 = x.reshape({-1, in}).contiguous();
    at::Tensor aw;
    const float8::Cast cw = weight_rows(weight, aw);
    const bool hp = recipe == Float8Recipe::kTensorwiseGwHp;
    // The input is saved as is for a bf16 weight gradient, and for an input without a gradient (the text states
    // of cross-attention's keys and values, the same tensor in every block, kept by its owner anyway), which is
    // cast again in backward rather than adding a float8 copy per block.
    const bool keep_input = (hp || !x.requires_grad()) && weight.requires_grad();
    const at::Tensor ax = float8::amax(x2);
    const float8::Cast cx = float8::cast(x2, ax, true, weight.requires_grad() && !keep_input);
    const at::Tensor y = product(cx.rows, cx.inv_scale, forward_weight(cw), cw.inv_scale, x.scalar_type(), bias.value_or(at::Tensor()), true);
    // A registered weight's copy is saved (a view of its owner's buffer); a cast one is cast again in backward.
    ctx->save_for_backward({cx.transposed, cx.inv_scale, weight, aw, bias.value_or(at::Tensor()), aw.defined() ? at::Tensor() : cw.rows,
                            cw.inv_scale, keep_input ? x2 : at::Tensor(), keep_input && !hp ? ax : at::Tensor()});
    ctx->saved_data["x_sizes"] = x.sizes().vec();
    ctx->saved_data["hp"] = hp;
    return y.view(with_last(x.sizes(), out));
  }

  // `grads` by reference (CppNode passes its own list): the bf16 output gradient is dropped once its float8
  // copies exist (and the bf16 weight gradient is made), so it never lives beside them and the input gradient.
  static variable_list backward(AutogradContext* ctx, variable_list& grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &weight = saved[2], &aw = saved[3], &bias = saved[4], &x_kept = saved[7];
    const float8::Cast cw{saved[5], at::Tensor(), saved[6]};
    const bool hp = ctx->saved_data["hp"].toBool();
    at::Tensor xt = saved[0], x_inv = saved[1];
    if (x_kept.defined() && !hp) {  // the input, kept as is: its transposed copy as the forward's cast would have made it
      const float8::Cast c = float8::cast(x_kept, saved[8], false, true);
      xt = c.transposed;
      x_inv = c.inv_scale;
    }
    const std::vector<int64_t> x_sizes = ctx->saved_data["x_sizes"].toIntVector();
    at::Tensor g = grads[0].reshape({-1, weight.size(0)}).contiguous();
    const bool need_dx = ctx->needs_input_grad(0), need_dw = ctx->needs_input_grad(1) && (hp ? x_kept.defined() : xt.defined());
    const at::Tensor db = bias.defined() && ctx->needs_input_grad(2) ? bias_gradient(bias, g) : at::Tensor();
    const at::ScalarType dt = g.scalar_type();
    at::Tensor dx, dw;
    if (need_dw && hp) dw = weight_gradient(weight, g, x_kept);
    float8::Cast cg = float8::cast(g, float8::amax(g), need_dx, need_dw && !hp);
    g.reset();
    grads[0].reset();
    if (need_dw && !hp) {
      dw = product(cg.transposed, cg.inv_scale, xt.t(), x_inv, weight.scalar_type(), {}, false, take_gradient_slot(weight));
      cg.transposed.reset();
    }
    if (need_dx) {
      const float8::Cast wt = weight_transposed(weight, aw, cw);  // the forward's cast, transposed
      dx = product(cg.rows, cg.inv_scale, wt.transposed.t(), wt.inv_scale, dt, {}, false).view(x_sizes);
    }
    return {dx, dw, db, at::Tensor()};
  }
};

bool gelu_on_kernels(const at::Tensor& a) { return float8::runs_on_kernels(a) && a.size(-1) % kernels::kVecElements == 0; }

// fc1's output `a` is kept in saved_data, not saved variables, so backward can free it once GELU's gradient is
// made (a saved variable lives until the node is done). It is this node's own tensor, never seen outside.
class Float8GeluMlp : public torch::autograd::Function<Float8GeluMlp> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                            const at::Tensor& b2, Float8Recipe recipe) {
    const int64_t in = x.size(-1), out = w2.size(0);
    const at::ScalarType dt = x.scalar_type();
    const bool hp = recipe == Float8Recipe::kTensorwiseGwHp;
    const at::Tensor x2 = x.reshape({-1, in}).contiguous();
    at::Tensor aw1, aw2;
    const float8::Cast cw1 = weight_rows(w1, aw1);
    float8::Cast cx = float8::cast(x2, float8::amax(x2), true, w1.requires_grad() && !hp);
    const at::Tensor a = product(cx.rows, cx.inv_scale, forward_weight(cw1), cw1.inv_scale, dt, b1, true);
    cx.rows.reset();
    // GELU's output is cast straight from `a`: it never exists in bf16 (backward casts it again the same way).
    const at::Tensor ah = float8::amax(a, float8::Input::kGelu);
    const float8::Cast ch = float8::cast(a, ah, true, false, float8::Input::kGelu);
    const float8::Cast cw2 = weight_rows(w2, aw2);
    const at::Tensor y = product(ch.rows, ch.inv_scale, forward_weight(cw2), cw2.inv_scale, dt, b2, true);
    ctx->save_for_backward({cx.transposed, cx.inv_scale, ah, w1, aw1, b1, w2, aw2, b2, aw1.defined() ? at::Tensor() : cw1.rows, cw1.inv_scale,
                            aw2.defined() ? at::Tensor() : cw2.rows, cw2.inv_scale, hp && w1.requires_grad() ? x2 : at::Tensor()});
    ctx->saved_data["a"] = a;
    ctx->saved_data["x_sizes"] = x.sizes().vec();
    ctx->saved_data["hp"] = hp;
    return y.view(with_last(x.sizes(), out));
  }

  // `grads` by reference, as in Float8Linear. The order keeps at most fc1's output and one [rows, hidden] bf16
  // gradient alive, as ops::gelu_mlp does: in float8 weight gradients, GELU's output cast (1 byte) and fc2's
  // weight gradient first, then GELU's input gradient, then `a` is freed before that gradient's float8 copies
  // are made; in bf16 ones (kTensorwiseGwHp), GELU's input gradient first, which leaves GELU's output in `a`
  // for fc2's weight gradient (as ops::gelu_mlp does), then fc1's from the bf16 gradient before its cast.
  static variable_list backward(AutogradContext* ctx, variable_list& grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &xt = saved[0], &x_inv = saved[1], &ah = saved[2], &w1 = saved[3], &aw1 = saved[4], &b1 = saved[5], &w2 = saved[6],
                     &aw2 = saved[7], &b2 = saved[8], &x_kept = saved[13];
    const float8::Cast cw1{saved[9], at::Tensor(), saved[10]}, cw2{saved[11], at::Tensor(), saved[12]};
    const bool hp = ctx->saved_data["hp"].toBool();
    at::Tensor a = ctx->saved_data["a"].toTensor();
    ctx->saved_data.erase("a");
    const std::vector<int64_t> x_sizes = ctx->saved_data["x_sizes"].toIntVector();
    at::Tensor g = grads[0].reshape({-1, w2.size(0)}).contiguous();
    const at::ScalarType dt = g.scalar_type();
    const int64_t hidden = a.size(-1);
    const at::Tensor db2 = b2.defined() && ctx->needs_input_grad(4) ? bias_gradient(b2, g) : at::Tensor();
    float8::Cast cg = float8::cast(g, float8::amax(g), true, !hp);
    at::Tensor dw2;
    if (!hp) {  // fc2's weight gradient in float8 now; in bf16 (from g) once GELU's output is back in `a`
      g.reset();
      grads[0].reset();
      const float8::Cast chT = float8::cast(a, ah, false, true, float8::Input::kGelu);  // the forward's cast, transposed
      dw2 = product(cg.transposed, cg.inv_scale, chT.transposed.t(), chT.inv_scale, w2.scalar_type(), {}, false, take_gradient_slot(w2));
      cg.transposed.reset();
    }
    at::Tensor da;
    {
      const float8::Cast w2t = weight_transposed(w2, aw2, cw2);
      da = product(cg.rows, cg.inv_scale, w2t.transposed.t(), w2t.inv_scale, dt, {}, false);  // GELU output's gradient
    }
    cg = {};
    at::Tensor db1;
    const bool need_db1 = b1.defined() && ctx->needs_input_grad(2);
    if (gelu_on_kernels(a) && da.is_contiguous()) {
      // Leaves GELU's output in `a` (this node's own).
      const at::Tensor db1_sum = at::empty({hidden}, da.options().dtype(at::kFloat));
      const at::Tensor workspace = at::empty({kernels::gelu_backward_workspace(da.size(0), hidden)}, db1_sum.options());
      kernels::gelu_backward_recompute(static_cast<bf16_t*>(da.data_ptr()), static_cast<bf16_t*>(a.data_ptr()), db1_sum.data_ptr<float>(),
                                       workspace.data_ptr<float>(), da.size(0), hidden, kernels::current_stream(da.device()));
      if (need_db1) {
        db1 = take_gradient_slot(b1);
        db1 = db1.defined() ? db1.copy_(db1_sum) : db1_sum.to(dt);
      }
    } else {
      da = at::gelu_backward(da, a);
      if (hp) a = at::gelu(a);
      if (need_db1) db1 = bias_gradient(b1, da);
    }
    if (hp) {
      dw2 = weight_gradient(w2, g, a.view({-1, hidden}));
      g.reset();
      grads[0].reset();
    }
    a.reset();
    at::Tensor dx, dw1;
    if (hp && x_kept.defined()) dw1 = weight_gradient(w1, da, x_kept);
    float8::Cast cda = float8::cast(da, float8::amax(da), ctx->needs_input_grad(0), xt.defined());
    da.reset();
    if (xt.defined()) {
      dw1 = product(cda.transposed, cda.inv_scale, xt.t(), x_inv, w1.scalar_type(), {}, false, take_gradient_slot(w1));
      cda.transposed.reset();
    }
    if (ctx->needs_input_grad(0)) {
      const float8::Cast w1t = weight_transposed(w1, aw1, cw1);
      dx = product(cda.rows, cda.inv_scale, w1t.transposed.t(), w1t.inv_scale, dt, {}, false).view(x_sizes);
    }
    return {dx, dw1, db1, dw2, db2, at::Tensor()};
  }
};

}  // namespace

at::Tensor float8_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, Float8Recipe recipe) {
  OV_CHECK(float8::fits(weight.size(1), weight.size(0)), "float8_linear: in and out features must be multiples of 16");
  return Float8Linear::apply(x, weight, bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt, recipe);
}

at::Tensor float8_gelu_mlp(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2,
                           Float8Recipe recipe) {
  OV_CHECK(float8::fits(w1.size(1), w1.size(0)) && float8::fits(w2.size(1), w2.size(0)),
           "float8_gelu_mlp: in and out features must be multiples of 16");
  return Float8GeluMlp::apply(x, w1, b1, w2, b2, recipe);
}

}  // namespace ops
}  // namespace ov::model
