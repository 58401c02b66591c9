#pragma once
// What the GPU test suites (test_gpu.cpp, test_gpu_float8.cpp) share: the device they run on and how they
// compare a GPU result with its reference.
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#include "openvid/model/dit.h"
#include "tiny_model.h"

inline const at::Device kCuda(at::kCUDA, 0);

// |got - want| / |want| (Frobenius norms, in double on the CPU).
inline double relative_error(const at::Tensor& got, const at::Tensor& want) {
  return (got.to(at::kDouble).cpu() - want.to(at::kDouble).cpu()).norm().item<double>() /
         std::max(want.to(at::kDouble).cpu().norm().item<double>(), 1e-30);
}

// Two equal DiTs (the tiny configuration with biases and norm weights, width 64, heads of 32) with random
// parameters from `seed`, on the CPU: a GPU check converts or places one and compares it with the other.
inline std::pair<ov::model::DiT, ov::model::DiT> twin_models(uint64_t seed) {
  ov::ModelConfig cfg = tiny_model_config(true);
  cfg.width = 64;
  cfg.head_dim = 32;
  ov::model::DiT a(cfg), b(cfg);
  randomize_parameters(*a, seed);
  randomize_parameters(*b, seed);
  return {a, b};
}
