#pragma once
// The training loop: for each optimizer step, the next global batch (one shape bucket) is read by the
// prefetcher, turned into rectified-flow examples with draws keyed by (seed, step, sample), run through
// the DiT (context-parallel attention over the cp group), and back-propagated; the sharded model sums
// the gradients over the shard and dp groups; the optimizer steps on this rank's slices; the masters are
// gathered for the next step. Evaluation, logs and the final export run on their intervals.
//
// Every public function is a collective over the universe's world unless it says otherwise.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "openvid/comm/process_groups.h"
#include "openvid/config/options.h"
#include "openvid/model/safetensors.h"
#include "openvid/runtime/universe.h"
#include "openvid/train/setup.h"
#include "openvid/train/step.h"

namespace ov::train {

class Trainer {
 public:
  // `inputs` from check_run_inputs (train/setup.h), run before the groups were created.
  Trainer(const Options& options, Universe& universe, comm::ProcessGroups& groups, RunInputs inputs);
  // check_run_inputs, then the above.
  Trainer(const Options& options, Universe& universe, comm::ProcessGroups& groups);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Trains until max_steps (checkpointing on its interval); returns the process exit code. SIGUSR1 or
  // SIGTERM on any rank stops every rank at the next step boundary with a checkpoint and kExitRequeue.
  int run();

  // The first step this trainer runs (0, or the step a resumed checkpoint continues at).
  int64_t start_step() const;
  // Times the trainer waited for the device to read a step's statistics (once per step).
  int64_t host_synchronisations() const;
  // Writes a checkpoint whose next step is `next_step`; returns its directory.
  std::string save_checkpoint(int64_t next_step);

  // One optimizer step on the batch of sampler step `step` (reads it directly; used by tests).
  StepResult train_step(int64_t step);
  // Held-out loss over the fixed evaluation batches (train/evaluation.h, Validator::loss).
  double evaluate();
  // Local: each evaluated bucket's held-out loss at the last evaluate().
  const std::vector<std::pair<std::string, double>>& eval_by_bucket() const;
  // The fp32 weights, full size, with the reference's names.
  model::TensorMap weights();
  // Their moving average (--ema_decay), or nothing when it is off.
  model::TensorMap ema_weights();
  // Directory of this run's outputs.
  const std::string& run_directory() const;
  // Local: this rank's sharded state and gathered buffers (bytes).
  parallel::ShardMemory memory() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ov::train
