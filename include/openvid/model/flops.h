#pragma once
// Size and cost of the DiT as functions of its configuration (for logs, MFU and benchmarks).
//
// FLOPs count multiply-adds of matrix products and attention as 2 each, per sample; elementwise work
// (norms, RoPE, activations, softmax) is left out. With N = T'H'W' video tokens, L = registers + N,
// Lc text tokens, D width, m mlp_ratio, Dc text width, P = patch^2 * time_patch * C:
//   per block:   qkv 6 L D^2 + attention 4 L^2 D + attn_proj 2 L D^2
//              + q_cross 2 L D^2 + context_kv 4 Lc Dc D + cross attention 4 L Lc D + cross_proj 2 L D^2
//              + MLP 4 m L D^2 + adaLN 18 D^2
//   outside:     patch_embed 2 N P D + time_embed 16 D^2 + final_modulation 4 D^2 + final_proj 2 N D P
// A training step costs 3x the forward (backward = 2x forward), the usual convention for MFU.
#include <cstdint>

#include "openvid/config/model_config.h"

namespace ov::model {

// Number of parameters the DiT of `config` has (exactly what DiTImpl registers).
int64_t parameter_count(const ov::ModelConfig& config);

// Forward FLOPs for one sample whose latent is [C, frames, height, width], with text_len text tokens.
double forward_flops(const ov::ModelConfig& config, int64_t frames, int64_t height, int64_t width, int64_t text_len);

// 3 x forward_flops.
double training_flops(const ov::ModelConfig& config, int64_t frames, int64_t height, int64_t width, int64_t text_len);

}  // namespace ov::model
