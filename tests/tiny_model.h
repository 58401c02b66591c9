#pragma once
// A DiT configuration small enough for unit tests (about 90k parameters, milliseconds per step).
#include <string>

#include "openvid/config/options.h"

inline ov::ModelOptions tiny_model_config(bool affine = false, const std::string& layout = "aligned") {
  ov::ModelOptions c;
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
