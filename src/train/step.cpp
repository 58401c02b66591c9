#include "openvid/train/step.h"

#include <ATen/ATen.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <algorithm>
#include <cmath>

#include "openvid/data/device_batch.h"
#include "openvid/kernels/range.h"
#include "openvid/runtime/error.h"
#include "openvid/runtime/mpi_session.h"
#include "openvid/runtime/signals.h"
#include "openvid/train/evaluation.h"
#include "openvid/train/optimizer.h"

namespace ov::train {
namespace {

// Elements of the latents of the global batch's real samples: the loss is normalised by it, so that summing
// the ranks' losses gives the mean over the real samples whatever the layout (padding weighs nothing).
double global_elements(const data::HostBatch& b, int64_t global_valid) {
  return static_cast<double>(global_valid) * static_cast<double>(b.latents.size(1) * b.frames * b.latents.size(3) * b.latents.size(4));
}

}  // namespace

StepPipeline::StepPipeline(const RunContext& run, RunModel& model, PhaseTrace& trace)
    : run_(run),
      m_(model),
      trace_(trace),
      objective_(objective_settings(run.opt)),
      timers_{StepTimer{run.compute.device}, StepTimer{run.compute.device}} {}

StepPipeline::InFlight StepPipeline::launch(int64_t step, const data::HostBatch& host, double data_wait) {
  const kernels::Range range("step " + std::to_string(step));
  InFlight f;
  f.t0 = Clock::now();
  f.timer = &timers_[step % 2];
  StepTimer& timer = *f.timer;
  timer.begin();
  StepResult& r = f.result;
  r.step = step;
  r.data_wait = data_wait;
  const auto bytes_before = run_.groups.bytes_moved();
  f.bucket = host.bucket;
  // An emulated rank's peers read what it read (comm/emulated_communicator.h): the global batch is its real
  // samples on every data rank, however few the dataset holds (a padded remainder batch, here, is no smaller).
  f.samples = run_.u.emulated() ? host.valid * run_.u.num_data_ranks() : host.global_valid;
  const data::DeviceBatch b = data::to_device(host, run_.compute.device, at::kFloat);
  const int64_t n = static_cast<int64_t>(b.samples.size()), micro = run_.opt.grad_accum, per_micro = n / micro;
  const double elements = global_elements(host, f.samples);
  at::Tensor loss_sum = at::zeros({1}, b.latents.options().dtype(at::kDouble));
  for (int64_t i = 0; i < micro; ++i) {
    const at::Tensor l = [&] {
      const kernels::Range forward("forward");
      return batch_loss(m_.model, b, i * per_micro, per_micro, step, host.valid, elements, objective_);
    }();
    m_.sharded->arm(i + 1 == micro);  // each backward launches each unit's reduction when it is ready
    {
      const kernels::Range backward("backward");
      l.backward();
    }
    if (i + 1 < micro) m_.sharded->finish_micro_batch();
    loss_sum += l.detach();
  }
  timer.end_phase("forward_backward");
  const auto t_fb = Clock::now();
  trace_.add("forward_backward", f.t0, t_fb, step, run_.u.rank());
  m_.sharded->finish();
  timer.end_phase("gradient_reduction");
  const auto t_reduce = Clock::now();
  trace_.add("finish_gradient_reduction", t_fb, t_reduce, step, run_.u.rank());

  // One reduction over the world: the loss, whether a rank was asked to stop, and the gradient norm (the
  // dp replicas hold equal slices: each counts 1/dp of its own).
  const double stop = stop_signal() != 0 ? 1.0 : 0.0;
  at::Tensor stats = at::cat({loss_sum, loss_sum.new_full({1}, stop),
                              m_.sharded->grad_norm_squared().to(at::kDouble) / static_cast<double>(run_.u.mesh().dp())});
  run_.groups.world().all_reduce(stats, comm::ReduceOp::kSum).wait();
  // The verdict the optimizer reads on the device: apply only with a finite loss and gradient, clipped.
  const at::Tensor norm = stats.narrow(0, 2, 1).sqrt();
  const at::Tensor finite = at::isfinite(stats.narrow(0, 0, 1)).logical_and(at::isfinite(norm));
  const at::Tensor factor = run_.opt.grad_clip > 0 ? (run_.opt.grad_clip / norm).clamp_max(1.0) : at::ones_like(norm);
  const at::Tensor control = at::cat({finite.to(at::kFloat), factor.to(at::kFloat)});
  r.lr = run_.opt.learning_rate * lr_multiplier(run_.opt.lr_scheduler_type, step, run_.opt.max_steps, run_.opt.warmup_steps);
  // An emulated rank (--emulate_world) stands its peers' chunks in with the initial weights (and their
  // gradients with copies of its own): updates would drive that model anywhere. The optimizer runs all the same, with a step of 0, so
  // the weights and the loss stay at their finite initial values and the step costs what the job's does.
  if (run_.u.emulated()) r.lr = 0;
  timer.end_phase("statistics");
  {
    const kernels::Range optimizer("optimizer");
    m_.optimizer->step(r.lr, control);
    if (m_.sharded->has_ema()) m_.sharded->update_ema(run_.opt.ema_decay, control.narrow(0, 0, 1));  // moves on applied steps only
  }
  timer.end_phase("optimizer");
  const auto t_opt = Clock::now();
  trace_.add("checks_and_optimizer", t_reduce, t_opt, step, run_.u.rank());
  // The next step's parameters: the root's are waited for now; each block waits for its own in the next
  // forward, so those gathers run behind the computation of the blocks before it.
  m_.sharded->gather_async();
  m_.sharded->wait_gathered_root();
  timer.end_phase("gather");
  const auto bytes_after = run_.groups.bytes_moved();  // the step's collectives, the next step's gather included
  for (size_t g = 0; g < bytes_after.size(); ++g) {
    r.comm_bytes.emplace_back(bytes_after[g].first, static_cast<double>(bytes_after[g].second - bytes_before[g].second));
  }
  if (stats.is_cuda()) {
    f.stats = at::empty({3}, stats.options().device(at::kCPU).pinned_memory(true));
    f.stats.copy_(stats, /*non_blocking=*/true);
    f.copied.emplace(c10::DeviceType::CUDA);
    f.copied->record(c10::impl::VirtualGuardImpl(c10::DeviceType::CUDA).getStream(stats.device()));
  } else {
    f.stats = stats;
  }
  f.t_enqueued = t_opt;
  f.t_launched = Clock::now();
  return f;
}

StepResult StepPipeline::complete(InFlight& f) {
  if (f.copied) f.copied->synchronize();  // the step's one host synchronisation
  ++host_waits_;
  StepResult& r = f.result;
  trace_.add("gather_parameters", f.t_enqueued, Clock::now(), r.step, run_.u.rank());
  r.phase_ms = f.timer->read();
  const double* s = f.stats.data_ptr<double>();
  r.loss = s[0];
  r.stop_requested = s[1] > 0;
  r.grad_norm = std::sqrt(s[2]);
  r.skipped = !(std::isfinite(r.loss) && std::isfinite(r.grad_norm));
  if (r.skipped) {
    ++skipped_total_;
    if (++consecutive_nonfinite_ >= run_.opt.max_nonfinite_steps) {
      agree_on_errors(run_.u.world(),
                      "the loss or the gradients were not finite in " + std::to_string(consecutive_nonfinite_) +
                          " steps in a row (last: step " + std::to_string(r.step) + "); stopping. Lower --learning_rate, set "
                          "--grad_clip, or check the data with --check_finite_data",
                      kExitFailure);
    }
  } else {
    consecutive_nonfinite_ = 0;
  }
  // The communication resolved since the last read-back (on NCCL all of this step's: its events fired
  // before the statistics' copy did).
  const auto timing = run_.groups.timing();
  for (size_t g = 0; g < timing.size(); ++g) {
    const comm::Communicator::Timing before = g < last_timing_.size() ? last_timing_[g].second : comm::Communicator::Timing{};
    r.comm_exposed_ms.emplace_back(timing[g].first, timing[g].second.waited_ms - before.waited_ms);
    if (run_.groups.backend() == comm::Backend::kNccl) r.comm_busy_ms.emplace_back(timing[g].first, timing[g].second.busy_ms - before.busy_ms);
  }
  last_timing_ = timing;
  // The step's time: from its start (or the previous step's end, when it was queued before that) to its end,
  // which on a GPU is now (its result has just arrived) and on the CPU was the end of launch() (the work runs
  // as it is issued; counting up to now would move the next step's work into this one).
  const auto done = f.copied ? Clock::now() : f.t_launched;
  r.seconds = std::chrono::duration<double>(done - std::max(last_completed_, f.t0)).count();
  last_completed_ = done;
  return r;
}

}  // namespace ov::train
