#pragma once
// The DiT's configuration: what model/ is built from. A plain struct, so that model/ depends on this
// and not on the command line (config/options.h embeds it as the model_* options).
#include <string>

namespace ov {

enum class RopeLayout {
  kAligned,  // each video token gets the angles of its own (t, h, w) position; registers identity
  kSeed,     // the reference trainer's tables: token i (h, w, t order) gets the i-th position in (t, h, w)
             // order, and registers get cos 1 and sin 1
};

struct ModelConfig {
  int width = 512;                   // --model_width
  int depth = 9;                     // --model_depth
  int head_dim = 128;                // --model_head_dim (heads = width / head_dim)
  int mlp_ratio = 4;
  int patch = 2;                     // spatial patch (H and W)
  int time_patch = 2;
  int registers = 16;
  int in_channels = 16;              // latent channels C
  int text_dim = 4096;               // T5-XXL width
  bool residual_v = true;
  bool bias_and_norm_affine = false;  // the reference's --train_bias_and_rms
  double init_std_factor = 0.1;
  RopeLayout rope_layout = RopeLayout::kAligned;
  int recompute_every = 0;           // recompute every k-th block's activations in backward; 0 = none (parallel/parallelize applies it)
};

const char* to_string(RopeLayout layout);  // "aligned" | "seed"

// Throws ov::InputError naming the option (--model_width, ...) when `config` cannot build a model.
void validate(const ModelConfig& config);

}  // namespace ov
