#pragma once
// Sampling from a trained DiT: Euler steps of the rectified flow from noise (t = 1) to data (t = 0) on the
// training objective's shifted time grid t_i = shift(i / N), x <- x + (t_i - t_{i-1}) * v, accumulated in
// fp32, with classifier-free guidance against zero text: v = v_uncond + g * (v_cond - v_uncond).
#include <ATen/core/Tensor.h>

#include <functional>

#include "openvid/model/dit.h"

namespace ov::model {

struct SamplerOptions {
  int64_t steps = 50;     // N Euler steps
  double guidance = 6.0;  // g; 1 = the conditional velocity alone (no unconditional pass)
  double shift = 8.0;     // a in shift(t) = a t / (1 + (a - 1) t), as in training (--timestep_shift)
  std::function<void(int64_t done, int64_t steps)> progress;  // after each step, when set
};

// noise [B, C, T, H, W] (the starting point, t = 1), text [B, Lc, Dc]: the latents [B, C, T, H, W] in fp32.
// RoPE offsets 0. No gradients are kept. With `window` (context parallelism: the model's self-attention
// gathers the cp group's keys and values), `noise` is this rank's time slice of the window and so is the
// result; every rank of the group calls it together.
at::Tensor sample_latents(DiT& model, const at::Tensor& noise, const at::Tensor& text, const SamplerOptions& options,
                          const TokenWindow* window = nullptr);

}  // namespace ov::model
