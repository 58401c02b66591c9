#pragma once
// Continuing a run from a checkpoint (--resume): the checkpoint's state loaded into the model and the
// optimizer, and what rank 0 says about it: where the run resumes, what becomes of the moving average, and
// what a resume with other options changes (the global batch, the run's length, the learning rate).
#include <cstdint>
#include <string>

#include "openvid/config/options.h"
#include "openvid/runtime/universe.h"
#include "openvid/train/checkpoint.h"
#include "openvid/train/setup.h"

namespace ov::train {

// Local: one line on what resuming the run of checkpoint `st` with the options `now` changes ("" when
// nothing that matters does): the global batch, how the data order goes on (`sampler` after its resume;
// `sampler_resumed`: the checkpoint's sampler state fitted and was applied), the step count and the
// learning-rate schedule.
std::string resume_changes(const CheckpointState& st, const Options& now, int64_t data_ranks_now, const data::Sampler& sampler,
                           bool sampler_resumed);

// Collective over the world: loads the checkpoint at `path` into `m` (masters and moments, the compute
// copy refreshed, the optimizer's step count) and its data position into `sampler`, prints where the run resumes and its notes on rank 0, and
// returns the checkpoint's state. Bad checkpoints end the job on every rank with one message.
CheckpointState resume_run(const std::string& path, RunModel& m, const Options& opt, const Universe& u, data::Sampler& sampler);

}  // namespace ov::train
