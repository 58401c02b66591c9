#pragma once
// Moving a module's parameters to and from name -> tensor maps with the reference trainer's names.
#include <torch/nn/module.h>

#include "openvid/model/safetensors.h"

namespace ov::model {

// Parameter name -> detached parameter (no copy).
TensorMap state_dict(const torch::nn::Module& module);

// Copies `weights` into the module's parameters by name, converting floating dtypes. Names the reference
// stores but openvid recomputes (rope.*) are ignored. Every mismatch (missing, unexpected, wrong shape,
// non-floating dtype) is reported in one InputError mentioning `source`; nothing is copied then.
void load_state_dict(torch::nn::Module& module, const TensorMap& weights, const std::string& source);

}  // namespace ov::model
