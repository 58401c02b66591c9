#pragma once
// The reference's "mup_adam" (rules below): AdamW with a learning-rate multiplier and weight
// decay per parameter, chosen by name and shape, and the warm-up + linear / cosine / constant schedule.
//
// The optimizer works on segments: a segment is a parameter, or any contiguous piece of one (a slice of
// an FSDP flat shard), with its own rule. The update of each element depends only on that element's
// parameter, gradient and state, so stepping a sharded model segment by segment equals stepping the
// whole one. A segment may name a compute copy: the updated weights are written there too, in its dtype
// (the sharded model's gathered bf16 parameters), so that no separate pass makes them.
//
// Nothing here waits for the device: whether a step applies (finite gradients) and the clipping factor
// come as a device tensor, and the count of applied updates (bias correction) lives on the device too.
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "openvid/config/options.h"

namespace ov::parallel {
class ShardedModel;
}

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
  bool fused = true;  // CUDA segments: the fused kernel when the build has it (false: the ATen path, its reference)
};

class AdamW {
 public:
  explicit AdamW(AdamOptions options) : options_(options) {}

  // `param` and `grad` are fp32 views of the same shape (the master weights and their gradient). The
  // moments are allocated here, or are the given views (the sharded model keeps them in flat buffers,
  // which its checkpoints write directly). `compute_copy`, when given, receives the updated weights.
  void add_segment(std::string name, at::Tensor param, at::Tensor grad, ParamRule rule, at::Tensor exp_avg = {},
                   at::Tensor exp_avg_sq = {}, at::Tensor compute_copy = {});

  // One update with base learning rate `lr` (the schedule already applied), as torch.optim.AdamW does it:
  // decoupled decay p *= 1 - lr_i wd_i, then p -= (lr_i / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps),
  // t counting applied updates. `control` ([2] fp32 on the segments' device, or undefined for "apply, 1"):
  // control[0] 1 applies the update and 0 skips it entirely; control[1] multiplies the gradients first.
  // CUDA segments take one fused kernel over all segments (kernels/adamw.cu) when the build has it.
  void step(double lr, const at::Tensor& control = {});

  // Applied updates so far (reads the device counter: a host synchronisation; for checkpoints).
  int64_t steps() const;
  void set_steps(int64_t steps);

 private:
  struct Segment {
    std::string name;
    at::Tensor param, grad, exp_avg, exp_avg_sq, compute_copy;
    ParamRule rule;
  };
  void step_with_aten(double lr, const at::Tensor& control);
  bool step_fused(double lr, const at::Tensor& control);

  AdamOptions options_;
  std::vector<Segment> segments_;
  at::Tensor steps_;  // int64 [1] on the segments' device
  std::shared_ptr<void> fused_plan_;  // the fused kernel's segment table, built on first use
};

// Registers this rank's slices of `model` with `optimizer`: one segment per (unit slice x parameter)
// overlap with the mup_adam rule of its parameter, writing its compute copy into the unit's full buffer.
void add_shards(AdamW& optimizer, const parallel::ShardedModel& model, double base_weight_decay);

}  // namespace ov::train
