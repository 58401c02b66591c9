#pragma once
// Float8 training's linear layers (docs/gpu.md "Float8"): the three matrix products of a linear layer (forward,
// input gradient, weight gradient) in float8 e4m3 with one dynamic scale per tensor (torchao's "tensorwise"
// recipe: scale = 448 / amax of the tensor, computed on the device each time, no history), through cuBLASLt by
// way of at::_scaled_mm; products accumulate in fp32 and come out in the input's dtype. Everything around
// them (bias, GELU, the gradients' dtypes, gradient slots) is as in model/linear.h and model/block_ops.h.
//
// Casts in float8.cpp, the layers in float8_layers.cpp. The casts run as openvid's kernels (kernels/float8.h) for bf16 CUDA tensors, and as the ATen composition
// below otherwise (CPUs, where ATen's float8 casts and _scaled_mm run too, so the numerics are tested there).
// Layouts, as cuBLASLt's float8 products want them: the left operand row-major, the right one column-major,
// the contracted dimension a multiple of 16. The weight-gradient product contracts over the tokens, so the
// transposed copies of its operands have their token count padded to a multiple of 16 with zeros.
//
// Memory: a float8 linear saves for backward its input's transposed float8 copy (half the bytes of the bf16
// input other linears save) and its scale, or, for an input that needs no gradient (text states, shared by
// every block and kept by their owner), the input itself, cast again in backward; weights are cast again in backward from the bf16 weight (alive
// anyway) with the forward's amax, so the cast is the same to the bit. Backward drops the bf16 output
// gradient as soon as its float8 copies exist, and the MLP casts GELU's output from GELU's input, so no
// moment of a float8 layer holds more than its bf16 twin does.
//
// Recipes (--fp8_recipe): kTensorwise runs all three products in float8 as above. kTensorwiseGwHp runs the
// forward and input-gradient products so, and the weight gradient as the bf16 layer does (g^T x in bf16 from the
// bf16 output gradient and the bf16 input, which the layer then saves instead of its float8 copy: the bf16
// layer's memory): the product whose errors matter most to Adam, which divides each weight's update by that
// weight's own gradient scale, so a small gradient element's float8 rounding error is not small in its update.
#include <ATen/core/Tensor.h>

#include "openvid/runtime/device.h"

namespace ov::model::float8 {

// Whether x's casts run as openvid's kernels (bf16 on CUDA, contiguous, 16-byte aligned, rows of a multiple of
// 16 values; fused kernels enabled), rather than as the ATen composition.
bool runs_on_kernels(const at::Tensor& x);

// In and out features a float8 product takes (multiples of 16).
bool fits(int64_t in_features, int64_t out_features);
// The padded token count of a weight-gradient operand.
int64_t padded_rows(int64_t rows);

// What a cast reads: x, or GELU(x) (exact GELU in x's dtype, as ATen's at::gelu gives it), so the MLP's hidden
// activation is cast from GELU's input without being stored.
enum class Input { kAsIs, kGelu };

// fp32 [1]: max |x| (NaN when x holds a NaN).
at::Tensor amax(const at::Tensor& x, Input input = Input::kAsIs);

// A cast of a 2-D tensor x [rows, cols] with s = 448 / max(amax, 1e-12): `rows` = e4m3(x * s) [rows, cols]
// (saturated), `transposed` = the same transposed [cols, padded_rows(rows)], zeros past `rows`; either may be
// left out (undefined). inv_scale = 1 / s, fp32 [1].
struct Cast {
  at::Tensor rows, transposed, inv_scale;
};
Cast cast(const at::Tensor& x, const at::Tensor& amax, bool rows, bool transposed, Input input = Input::kAsIs);

// The row-major copy of cast() written into `out` (e4m3, x's numel, contiguous; x contiguous with a numel
// that is a multiple of 16, any shape: it is cast as one flat run of values). The scale is not written.
void cast_into(const at::Tensor& x, const at::Tensor& amax, const at::Tensor& out);

// The dequantisation scales 1 / s, s = 448 / max(amax, 1e-12), of a vector of amaxes, into `inv_scale`: the
// same IEEE operations as cast() (so the same bits).
void inverse_scales(const at::Tensor& amax, const at::Tensor& inv_scale);

namespace reference {  // the ATen compositions (CPU path; the kernels' reference)
at::Tensor amax(const at::Tensor& x, Input input = Input::kAsIs);
Cast cast(const at::Tensor& x, const at::Tensor& amax, bool rows, bool transposed, Input input = Input::kAsIs);
}  // namespace reference

}  // namespace ov::model::float8

namespace ov::model::ops {

// y = x W^T + b with the three products in float8: x [..., in] and weight [out, in] of one dtype (bf16 in
// training; fp32 too, for tests), bias [out] or undefined. fits(in, out) must hold.
at::Tensor float8_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                         Float8Recipe recipe = Float8Recipe::kTensorwise);

// fc2(GELU(fc1(x))) (exact GELU) with both linears' products in float8. Saves x's transposed float8 copy and
// fc1's output; GELU's output is recomputed in backward (as ops::gelu_mlp does) and cast again with the
// forward's scale. kTensorwiseGwHp saves x as is instead, and recomputes GELU's output in bf16 for fc2's weight
// gradient over fc1's output, in place (as ops::gelu_mlp does).
at::Tensor float8_gelu_mlp(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2,
                           Float8Recipe recipe = Float8Recipe::kTensorwise);

}  // namespace ov::model::ops
