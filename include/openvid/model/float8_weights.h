#pragma once
// Weights that arrive already cast to float8: the owner of a weight's storage (parallel::ShardedModel, whose
// shard group all-gathers float8 weights as e4m3 bytes, half of bf16's) registers the gathered e4m3 copy of the
// weight and its dequantisation scale, and the float8 products (model/float8.h) use it instead of casting the
// weight themselves. The copy is what the weight's own cast would give (one scale per tensor, from the amax of
// the whole weight), so the products are the same to the bit.
//
// A registry keyed by the parameter's TensorImpl, as model/gradient_slots.h and for its reasons: the copy is a
// fact about the parameter's storage, which only its owner knows, and it is used deep inside free functions
// that receive the parameter alone. A registered parameter's own values are not kept (its data is a stand-in
// of its shape without storage): a product that finds no copy for it refuses to run.
#include <ATen/core/Tensor.h>

#include <optional>
#include <vector>

namespace ov::model {

struct Float8Weight {
  at::Tensor rows;       // e4m3 [out, in], row-major, contiguous
  at::Tensor inv_scale;  // fp32 [1]: 1 / scale, on the weight's device
};

// Local. `weight.rows` must have `param`'s shape.
void set_float8_weight(const at::Tensor& param, const Float8Weight& weight);
// Local: forgets these parameters' copies (their owner is going away).
void remove_float8_weights(const std::vector<at::Tensor>& params);
// The registered copy of `param`, if any.
std::optional<Float8Weight> float8_weight(const at::Tensor& param);

// The data of a registered parameter: a tensor of `sizes` without storage of its own (every stride 0 over one
// element), which is_stand_in() recognises, so that nothing computes with it by mistake.
at::Tensor stand_in(at::IntArrayRef sizes, const at::TensorOptions& options);
bool is_stand_in(const at::Tensor& t);

}  // namespace ov::model
