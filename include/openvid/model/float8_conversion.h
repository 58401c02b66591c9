#pragma once
// Float8 training as a conversion of the model, applied from outside it (after torchao's
// convert_to_float8_training): marks the block linears whose three products run in float8 (model/float8.h);
// the model's code is the same either way. A layer is converted when its products fit float8 (in and out
// features multiples of 16) and the model is wide enough to gain: width at least `min_features`. The threshold
// is the model's width, not each layer's size, because what decides is the whole step: on an H100 at width
// 1024 neither every layer in float8 nor the one layer whose features pass 2048 (context_kv, 4096 -> 2048,
// over the text's 16x fewer tokens) beats bf16, while at width 2048 all of them together gain 1.12x
// (docs/gpu.md "Float8"). Attention, norms, modulation, embeddings and the final layer are never converted.
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "openvid/model/dit.h"

namespace ov::model {

struct Float8Conversion {
  std::vector<std::string> converted;  // layer names ("qkv", ...), the same in every block
  std::vector<std::string> kept;       // "context_kv (in 24, out 64: not both multiples of 16)": the others, and why
  std::vector<std::string> weights;    // the converted layers' weight parameters by name ("blocks.0.qkv.weight", ...)
  Float8Recipe recipe = Float8Recipe::kTensorwise;  // which of their products run in float8
};

// Which layers a model of `config` converts, from its shapes alone (the dry run's plan; convert_to_float8
// applies it).
Float8Conversion float8_conversion(const ModelConfig& config, int64_t min_features, Float8Recipe recipe = Float8Recipe::kTensorwise);
Float8Conversion convert_to_float8(DiT& model, int64_t min_features, Float8Recipe recipe = Float8Recipe::kTensorwise);

// One line for the run's start: "float8 products (recipe tensorwise) in every block: qkv, ...; kept in bf16:
// context_kv (...)"; the with_gw_hp recipe adds that the weight gradients are bf16.
std::string describe(const Float8Conversion& conversion);

// "" when float8 products can run on `device`, else why not and what to use instead (the CPU, a GPU before
// compute capability 8.9, a LibTorch without a CUDA kernel for at::_scaled_mm).
std::string float8_unsupported(const at::Device& device);

}  // namespace ov::model
