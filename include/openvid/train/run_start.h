#pragma once
// How a run starts and ends, as told to the user: where and why it ends (--max_steps, or the epoch cap
// before it: said at the start and at the end), and rank 0's start-up lines (what is trained, on what, the
// epoch's coverage of the data, the sharded state per rank, the epoch cap's effect on the schedule, a GPU without a known peak).
#include <cstdint>
#include <string>

#include "openvid/config/options.h"
#include "openvid/data/manifest.h"
#include "openvid/data/sampler.h"
#include "openvid/parallel/sharded_model.h"
#include "openvid/runtime/universe.h"
#include "openvid/train/setup.h"

namespace ov::train {

struct RunEnd {
  int64_t last_step = 0;  // the run's last step: min(max_steps, the step where num_epochs epochs end)
  bool capped = false;    // the epoch cap comes first
  std::string reason;     // "--max_steps 400", or the epoch cap spelled out
};
RunEnd run_end(const Options& opt, const data::Sampler& sampler);

// What an epoch trains of the data, one line (said at the start: no sample is left out silently): the
// remainders padded or left out (--drop_remainder), and any bucket never trained, by name.
std::string epoch_coverage(const data::Sampler& sampler, const data::Manifest& manifest);

// Local: the start-up lines, printed by the calling rank (rank 0).
void print_run_start(const Options& opt, const Universe& u, const RunData& data, const ComputeSetup& compute,
                     const RunModel& model, const RunEnd& end, double peak_tflops, const std::string& run_dir);

}  // namespace ov::train
