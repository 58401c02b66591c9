#pragma once
// A DiT configuration small enough for unit tests (about 90k parameters, milliseconds per step).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>
#include <torch/nn/module.h>

#include <string>

#include "openvid/config/model_config.h"

inline ov::ModelConfig tiny_model_config(bool affine = false, ov::RopeLayout layout = ov::RopeLayout::kAligned) {
  ov::ModelConfig c;
  c.width = 32;
  c.depth = 3;
  c.head_dim = 16;
  c.registers = 4;
  c.in_channels = 4;
  c.text_dim = 24;
  c.bias_and_norm_affine = affine;
  c.rope_layout = layout;
  return c;
}

// Gives every parameter (also the zero-initialised ones) random values N(0, 0.2), lambdas around 0.5, so
// every path of the model carries signal.
inline void randomize_parameters(torch::nn::Module& m, uint64_t seed) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  c10::NoGradGuard no_grad;
  for (auto& p : m.parameters()) {
    p.copy_(at::normal(0, 0.2, p.sizes(), g).to(p.scalar_type()) + (p.numel() == 1 ? 0.5 : 0.0));
  }
}
