#include "openvid/model/flops.h"

namespace ov::model {

int64_t parameter_count(const ov::ModelConfig& c) {
  const int64_t d = c.width, dc = c.text_dim, m = c.mlp_ratio;
  const int64_t p = int64_t{c.patch} * c.patch * c.time_patch * c.in_channels;
  const int64_t affine = c.bias_and_norm_affine ? 1 : 0;
  const int64_t block = 3 * d * d + affine * 3 * d      // qkv
                        + d * d                          // attn_proj
                        + 1                              // lambda_param
                        + d * d + affine * d             // q_cross
                        + dc * 2 * d + affine * 2 * d    // context_kv
                        + d * d                          // cross_proj
                        + d * m * d + m * d + m * d * d + d  // mlp
                        + d * 9 * d + 9 * d              // adaLN_modulation
                        + affine * 3 * d;                // norm1..3
  const int64_t outside = (c.in_channels * c.time_patch * c.patch * c.patch) * d + d  // patch_embed
                          + int64_t{c.registers} * d                                  // register_tokens
                          + d * 4 * d + 4 * d + 4 * d * d + d                         // time_embed
                          + d * 2 * d + 2 * d                                         // final_modulation
                          + d                                                         // final_norm
                          + d * p + p;                                                // final_proj
  return outside + c.depth * block;
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
