#pragma once
// Layout advice (--plan): every layout of the planned job (fs x cp dividing the world, cp splitting every
// bucket's video tokens in time, recomputation off, every other block or every block) with its memory per
// rank (train/plan.h) and a predicted step: compute from the model's FLOPs at --peak_tflops x
// --plan_efficiency, each collective's time from a ring model of the network (NVLink inside a node, the
// per-GPU network across nodes: latency per ring step plus bytes over bus bandwidth), and the step's
// overlap structure: the shard group's gathers under the next forward (each block waits for its own; the
// root's and what exceeds the forward are exposed) and its reduce-scatters under the backward (only what
// exceeds it, and the last unit's, is exposed), the dp all-reduce of each unit's slice under the
// backward too (the last unit's exposed), the cp group's key and value exchange inside
// attention (exposed). Ranked by predicted tokens per second among those that fit; a prediction, not a
// measurement (docs/planning.md says what it leaves out).
#include <string>
#include <vector>

#include "openvid/comm/network_model.h"
#include "openvid/config/options.h"
#include "openvid/data/manifest.h"
#include "openvid/train/plan.h"

namespace ov::train {

// The ring model of each collective (comm/network_model.h), shared with the emulated ranks.
using comm::Collective;
using comm::collective_seconds;
using comm::Network;

struct LayoutPrediction {
  int dp = 1, fs = 1, cp = 1, recompute_every = 0;
  int64_t global_batch = 0;       // samples per step of the largest bucket's batches (per data rank x data ranks)
  double memory = 0;              // planned peak per rank, bytes
  bool fits = false;
  double compute_s = 0, exposed_s = 0, step_s = 0;  // per step, averaged over an epoch's buckets
  double mfu = 0, tokens_per_s = 0;
};

// Every layout of `target`'s world, best first (fitting ones by tokens/s, then the others by memory).
std::vector<LayoutPrediction> predict_layouts(const Options& options, const data::Manifest& manifest, const PlanTarget& target,
                                              const Network& net, double peak_tflops);

// The table of the layouts with the network's assumptions, the best marked, and the configured layout's row.
std::string advice_report(const Options& options, const PlanTarget& target, const Network& net, double peak_tflops,
                          const std::vector<LayoutPrediction>& layouts);

}  // namespace ov::train
