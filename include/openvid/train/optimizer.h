#pragma once
// The reference's "mup_adam" (SPEC.md "Optimizer"): AdamW with a learning-rate multiplier and weight
// decay per parameter, chosen by name and shape, and the warm-up + linear / cosine / constant schedule.
//
// The optimizer works on segments: a segment is a parameter, or any contiguous piece of one (a slice of
// an FSDP flat shard), with its own rule. The update of each element depends only on that element's
// parameter, gradient and state, so stepping a sharded model segment by segment equals stepping the
// whole one.
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "openvid/config/options.h"
#include "openvid/model/safetensors.h"

namespace ov::train {

struct ParamRule {
  double lr_mult = 1;
  double weight_decay = 0;
};

// The rule of the parameter `name` with `shape` (base weight decay `base_wd`):
//  1. name has "bias", "norm" or "lambda": lr x 0.01, no decay; else with k = shape[-1]: lr x 32/k,
//     decay base_wd * k / 1024;
//  2. name has "patch_embed", "context_kv" or "positional_embedding": lr x 0.01, no decay (replacing 1);
//  3. then name has "time": lr x 0.1; name has "modulation": lr x 0.1 (decay unchanged).
ParamRule mup_adam_rule(const std::string& name, at::IntArrayRef shape, double base_wd);

// Multiplier of every group's learning rate at optimizer step `step` (from 0: the first update uses 0).
double lr_multiplier(LrSchedule schedule, int64_t step, int64_t max_steps, int64_t warmup_steps);

struct AdamOptions {
  double beta1 = 0.95, beta2 = 0.99, eps = 1e-8;
};

class AdamW {
 public:
  explicit AdamW(AdamOptions options) : options_(options) {}

  // `param` and `grad` are fp32 views of the same shape (the master weights and their gradient);
  // `name` keys the state in checkpoints. The moments are allocated here, or are the given views (the
  // sharded model keeps them in flat per-unit buffers, which its checkpoints write directly).
  void add_segment(std::string name, at::Tensor param, at::Tensor grad, ParamRule rule, at::Tensor exp_avg = {},
                   at::Tensor exp_avg_sq = {});
  void set_steps(int64_t steps) { step_ = steps; }

  // One update with base learning rate `lr` (the schedule already applied), as torch.optim.AdamW does it:
  // decoupled decay p *= 1 - lr_i wd_i, then p -= (lr_i / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps).
  void step(double lr);

  int64_t steps() const { return step_; }
  // Moments by segment name ("<name>.exp_avg", "<name>.exp_avg_sq") and "step", for checkpoints.
  model::TensorMap state() const;
  void load_state(const model::TensorMap& state, const std::string& source);

 private:
  struct Segment {
    std::string name;
    at::Tensor param, grad, exp_avg, exp_avg_sq;
    ParamRule rule;
  };
  AdamOptions options_;
  std::vector<Segment> segments_;
  int64_t step_ = 0;
};

}  // namespace ov::train
