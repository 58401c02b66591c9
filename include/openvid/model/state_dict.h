#pragma once
// Moving a module's parameters to and from name -> tensor maps with the reference trainer's names.
#include <torch/nn/module.h>

#include <string>
#include <utility>
#include <vector>

#include "openvid/config/model_config.h"
#include "openvid/model/safetensors.h"

namespace ov::model {

using ParameterShapes = std::vector<std::pair<std::string, std::vector<int64_t>>>;

// Every parameter the DiT of `config` has, by the reference's name, with its shape (without building the
// model: checks of weight files run before anything is allocated).
ParameterShapes parameter_shapes(const ModelConfig& config);

// Throws one InputError mentioning `source` that lists every missing, unexpected and mis-shaped tensor
// (with the expected and found shapes) and every non-floating one. Names the reference stores but openvid
// recomputes (rope.*) are ignored.
void check_weights(const TensorMap& weights, const ParameterShapes& expected, const std::string& source);

// Parameter name -> detached parameter (no copy).
TensorMap state_dict(const torch::nn::Module& module);

// Copies `weights` into the module's parameters by name, converting floating dtypes, after
// check_weights(); nothing is copied when it throws.
void load_state_dict(torch::nn::Module& module, const TensorMap& weights, const std::string& source);

}  // namespace ov::model
