#include "openvid/model/flops.h"

#include "openvid/model/state_dict.h"

namespace ov::model {

int64_t parameter_count(const ov::ModelConfig& c) {
  int64_t n = 0;
  for (const auto& [name, shape] : parameter_shapes(c)) {
    int64_t k = 1;
    for (int64_t x : shape) k *= x;
    n += k;
  }
  return n;
}

double forward_flops(const ov::ModelConfig& c, int64_t frames, int64_t height, int64_t width, int64_t text_len) {
  const double d = c.width, dc = c.text_dim, m = c.mlp_ratio, lc = static_cast<double>(text_len);
  const double p = static_cast<double>(c.patch) * c.patch * c.time_patch * c.in_channels;
  const double n = static_cast<double>(frames / c.time_patch) * static_cast<double>(height / c.patch) *
                   static_cast<double>(width / c.patch);
  const double l = c.registers + n;
  const double block = 6 * l * d * d + 4 * l * l * d + 2 * l * d * d  // self-attention
                       + 2 * l * d * d + 4 * lc * dc * d + 4 * l * lc * d + 2 * l * d * d  // cross-attention
                       + 4 * m * l * d * d                                                 // MLP
                       + 18 * d * d;                                                       // adaLN
  const double outside = 2 * n * p * d + 16 * d * d + 4 * d * d + 2 * n * d * p;
  return outside + c.depth * block;
}

double training_flops(const ov::ModelConfig& c, int64_t frames, int64_t height, int64_t width, int64_t text_len) {
  return 3 * forward_flops(c, frames, height, width, text_len);
}

}  // namespace ov::model
