#pragma once
// The model's linear layers: at::linear, whose backward writes the weight's and the bias's gradients into
// their gradient slots (model/gradient_slots.h) when they have one, with the same matrix products and sums as
// ATen's own backward of at::linear (so the gradients are the same to the bit), and is ATen's own otherwise.
#include <ATen/core/Tensor.h>

namespace ov::model::ops {

// y = x W^T + b: x [..., in], weight [out, in], bias [out] or undefined.
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

// The weight gradient g^T x of a linear layer (g [rows, out], x [rows, in]), in the weight's gradient slot
// when it has one; likewise the bias gradient (the column sums of g). For autograd functions of the model
// that compute a linear layer's gradients themselves.
at::Tensor weight_gradient(const at::Tensor& weight, const at::Tensor& g, const at::Tensor& x);
at::Tensor bias_gradient(const at::Tensor& bias, const at::Tensor& g);

}  // namespace ov::model::ops
