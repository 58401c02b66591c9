#pragma once
// One optimizer step of the training loop: forward and backward per micro-batch (each unit's gradient
// reduction launched during backward), one all-reduce over the world of the loss, the stop flag and the
// gradient norm, the verdict (apply or skip, clipping) and AdamW on the device, the gathers for the next
// step. launch() enqueues a step without waiting for the device; complete() reads its statistics, the
// step's one host synchronisation. Two steps may be in flight (launch(s + 1) before complete(s)), so the
// device never idles while the host prepares the next one.
#include <ATen/core/Tensor.h>
#include <c10/core/Event.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "openvid/comm/process_groups.h"
#include "openvid/config/options.h"
#include "openvid/data/dataset.h"
#include "openvid/runtime/universe.h"
#include "openvid/train/objective.h"
#include "openvid/train/profiling.h"
#include "openvid/train/setup.h"

namespace ov::train {

struct StepResult {
  int64_t step = 0;         // the optimizer step this was (from 0)
  double loss = 0;          // global mean loss of the step
  double grad_norm = 0;     // global gradient norm (before clipping)
  double lr = 0;            // base learning rate used
  bool skipped = false;     // non-finite loss or gradient: no update
  bool stop_requested = false;  // some rank got SIGUSR1/SIGTERM: every rank learns it at this step
  double seconds = 0, data_wait = 0;
  std::vector<std::pair<std::string, double>> phase_ms;  // milliseconds of each phase, timed where it ran
  std::vector<std::pair<std::string, double>> comm_bytes;  // bytes this rank's collectives of the step moved, per group
  // Milliseconds this rank waited for each group's collectives (exposed communication), and, on NCCL, how
  // long they ran, resolved at this step's read-back (Communicator::timing).
  std::vector<std::pair<std::string, double>> comm_exposed_ms, comm_busy_ms;
};

class StepPipeline {
 public:
  using Clock = std::chrono::steady_clock;
  // What `run`, `model` and `trace` refer to must outlive the pipeline (the Trainer holds it all).
  StepPipeline(const RunContext& run, RunModel& model, PhaseTrace& trace);

  // A step whose work is enqueued and whose statistics are on their way to the host.
  struct InFlight {
    StepResult result;                 // filled by complete()
    int64_t bucket = -1;
    int64_t samples = 0;               // real samples of the global batch
    at::Tensor stats;                  // [loss, stop flag, squared gradient norm] on the host (pinned on GPUs)
    std::optional<c10::Event> copied;  // GPUs: recorded after the statistics' copy
    StepTimer* timer = nullptr;
    Clock::time_point t0, t_enqueued, t_launched;
  };
  // Collective over the world: enqueues optimizer step `step` on `batch` (this rank's share of its global batch).
  InFlight launch(int64_t step, const data::HostBatch& batch, double data_wait);
  // Collective over the world: waits for the step's statistics and fills its result; too many non-finite
  // steps in a row (--max_nonfinite_steps) end the job on every rank (exit 1).
  StepResult complete(InFlight& f);
  StepResult step(int64_t step, const data::HostBatch& batch, double data_wait) {
    InFlight f = launch(step, batch, data_wait);
    return complete(f);
  }

  int64_t skipped_total() const { return skipped_total_; }
  void set_skipped_total(int64_t n) { skipped_total_ = n; }  // a resumed run's count
  int64_t host_waits() const { return host_waits_; }         // times the host waited for the device (one per step)

 private:
  RunContext run_;
  RunModel& m_;
  PhaseTrace& trace_;
  ObjectiveSettings objective_;
  StepTimer timers_[2];  // steps alternate
  Clock::time_point last_completed_ = Clock::now();
  std::vector<std::pair<std::string, comm::Communicator::Timing>> last_timing_;  // at the last read-back
  int64_t skipped_total_ = 0, consecutive_nonfinite_ = 0, host_waits_ = 0;
};

}  // namespace ov::train
