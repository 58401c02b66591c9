#include "openvid/model/linear.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "openvid/model/gradient_slots.h"

namespace ov::model::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// ATen's at::linear folds x to [rows, in] and runs mm (addmm with a bias) against W^T; its backward is
// dx = g W, dW = g^T x (mm_mat2_backward's layout for W^T's column-major strides, then transposed back),
// db = the sum of g over rows. The same calls here, with out= variants into the slots.
class SlottedLinear : public torch::autograd::Function<SlottedLinear> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
    ctx->save_for_backward({x, weight, bias.value_or(at::Tensor())});
    return at::linear(x, weight, bias);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &weight = saved[1], &bias = saved[2];
    const at::Tensor g = grads[0].reshape({-1, grads[0].size(-1)});
    const at::Tensor x2 = x.reshape({-1, x.size(-1)});
    const at::Tensor dx = ctx->needs_input_grad(0) ? g.mm(weight).view(x.sizes()) : at::Tensor();
    const at::Tensor dw = ctx->needs_input_grad(1) ? weight_gradient(weight, g, x2) : at::Tensor();
    const at::Tensor db = bias.defined() && ctx->needs_input_grad(2) ? bias_gradient(bias, g) : at::Tensor();
    return {dx, dw, db};
  }
};

}  // namespace

at::Tensor weight_gradient(const at::Tensor& weight, const at::Tensor& g, const at::Tensor& x) {
  at::Tensor slot = take_gradient_slot(weight);
  if (!slot.defined()) return g.t().mm(x);
  at::mm_out(slot, g.t(), x);
  return slot;
}

at::Tensor bias_gradient(const at::Tensor& bias, const at::Tensor& g) {
  at::Tensor slot = take_gradient_slot(bias);
  if (!slot.defined()) return g.sum(0);
  at::sum_out(slot, g, {0});
  return slot;
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  // Only a weight that may have a slot (a leaf that needs its gradient) takes the custom path.
  if (!weight.requires_grad() || !weight.is_leaf() || x.dim() < 2) return at::linear(x, weight, bias);
  return SlottedLinear::apply(x, weight, bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt);
}

}  // namespace ov::model::ops
