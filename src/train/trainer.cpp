#include "openvid/train/trainer.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <c10/core/Event.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <optional>

#include "openvid/comm/host_copy.h"
#include "openvid/data/device_batch.h"
#include "openvid/data/prefetch.h"
#include "openvid/model/flops.h"
#include "openvid/model/safetensors.h"
#include "openvid/parallel/shard_io.h"
#include "openvid/runtime/error.h"
#include "openvid/runtime/mpi_session.h"
#include "openvid/runtime/signals.h"
#include "openvid/train/checkpoint.h"
#include "openvid/train/evaluation.h"
#include "openvid/train/resume.h"
#include "openvid/train/run_start.h"
#include "openvid/kernels/range.h"
#include "openvid/train/profiling.h"
#include "openvid/train/run_log.h"
#include "openvid/train/setup.h"

namespace ov::train {
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Elements of the latents of one global batch: the loss is normalised by it, so that summing the ranks'
// losses gives the mean over the global batch whatever the layout.
double global_elements(const data::HostBatch& b, int64_t global_batch) {
  return static_cast<double>(global_batch) * static_cast<double>(b.latents.size(1) * b.frames * b.latents.size(3) * b.latents.size(4));
}

}  // namespace

struct Trainer::Impl {
  const Options opt;
  Universe& u;
  comm::ProcessGroups& groups;
  ComputeSetup compute;
  std::string run_dir;
  RunData data;
  RunModel m;
  ObjectiveSettings objective;
  int64_t start_step = 0, skipped_total = 0, consecutive_nonfinite = 0;
  PhaseTrace trace;
  int64_t host_waits = 0;  // times the host waited for the device (one per step)
  std::optional<Validator> validator;  // the held-out loss and the samples

  Impl(const Options& o, Universe& universe, comm::ProcessGroups& g, RunInputs in)
      : opt(o),
        u(universe),
        groups(g),
        compute(in.compute),
        run_dir(std::move(in.run_dir)),
        data(std::move(in.data)),
        m(build_run_model(o, g, compute)),
        objective(objective_settings(o)) {}

  // Loss of this rank's samples [first, first + count) of `b` (normalised by `elements`), on the device.
  at::Tensor loss(const data::DeviceBatch& b, int64_t first, int64_t count, int64_t step, int64_t valid, double elements) {
    return batch_loss(m.model, b, first, count, step, valid, elements, objective);
  }

  // A step whose work is enqueued and whose statistics are on their way to the host.
  struct InFlight {
    StepResult result;              // filled by complete()
    int64_t bucket = -1;
    at::Tensor stats;               // [loss, stop flag, squared gradient norm] on the host (pinned on GPUs)
    std::optional<c10::Event> copied;  // GPUs: recorded after the statistics' copy
    StepTimer* timer = nullptr;
    Clock::time_point t0, t_enqueued;
  };
  // Enqueues one optimizer step without waiting for the device. Two steps may be in flight at once
  // (launch(s + 1) before complete(s)), so that the device never idles while the host prepares a step.
  InFlight launch(int64_t step, const data::HostBatch& batch, double data_wait);
  // Waits for the step's statistics (its one host synchronisation) and fills its result.
  StepResult complete(InFlight& f);
  StepResult step(int64_t step, const data::HostBatch& batch, double data_wait) {
    InFlight f = launch(step, batch, data_wait);
    return complete(f);
  }
  void resume(const std::string& request);
  StepTimer timers[2]{StepTimer{compute.device}, StepTimer{compute.device}};  // steps alternate
  Clock::time_point last_completed = Clock::now();
};

Trainer::Impl::InFlight Trainer::Impl::launch(int64_t step, const data::HostBatch& host, double data_wait) {
  const kernels::Range range("step " + std::to_string(step));
  InFlight f;
  f.t0 = Clock::now();
  f.timer = &timers[step % 2];
  StepTimer& timer = *f.timer;
  timer.begin();
  StepResult& r = f.result;
  r.step = step;
  r.data_wait = data_wait;
  f.bucket = host.bucket;
  const data::DeviceBatch b = data::to_device(host, compute.device, at::kFloat);
  const int64_t n = static_cast<int64_t>(b.samples.size()), micro = opt.grad_accum, per_micro = n / micro;
  const double elements = global_elements(host, data.sampler->global_batch());
  at::Tensor loss_sum = at::zeros({1}, b.latents.options().dtype(at::kDouble));
  for (int64_t i = 0; i < micro; ++i) {
    const at::Tensor l = [&] {
      const kernels::Range forward("forward");
      return loss(b, i * per_micro, per_micro, step, n, elements);
    }();
    m.sharded->arm(i + 1 == micro);  // each backward launches each unit's reduction when it is ready
    {
      const kernels::Range backward("backward");
      l.backward();
    }
    if (i + 1 < micro) m.sharded->finish_micro_batch();
    loss_sum += l.detach();
  }
  timer.end_phase("forward_backward");
  const auto t_fb = Clock::now();
  trace.add("forward_backward", f.t0, t_fb, step, u.rank());
  m.sharded->finish();
  timer.end_phase("gradient_reduction");
  const auto t_reduce = Clock::now();
  trace.add("finish_gradient_reduction", t_fb, t_reduce, step, u.rank());

  // One reduction over the world: the loss, whether a rank was asked to stop, and the gradient norm (the
  // dp replicas hold equal slices: each counts 1/dp of its own).
  const double stop = stop_signal() != 0 ? 1.0 : 0.0;
  at::Tensor stats = at::cat({loss_sum, loss_sum.new_full({1}, stop),
                              m.sharded->grad_norm_squared().to(at::kDouble) / static_cast<double>(u.mesh().dp())});
  groups.world().all_reduce(stats, comm::ReduceOp::kSum).wait();
  // The verdict the optimizer reads on the device: apply only with a finite loss and gradient, clipped.
  const at::Tensor norm = stats.narrow(0, 2, 1).sqrt();
  const at::Tensor finite = at::isfinite(stats.narrow(0, 0, 1)).logical_and(at::isfinite(norm));
  const at::Tensor factor = opt.grad_clip > 0 ? (opt.grad_clip / norm).clamp_max(1.0) : at::ones_like(norm);
  const at::Tensor control = at::cat({finite.to(at::kFloat), factor.to(at::kFloat)});
  r.lr = opt.learning_rate * lr_multiplier(opt.lr_scheduler_type, step, opt.max_steps, opt.warmup_steps);
  timer.end_phase("statistics");
  {
    const kernels::Range optimizer("optimizer");
    m.optimizer->step(r.lr, control);
    if (m.sharded->has_ema()) m.sharded->update_ema(opt.ema_decay, control.narrow(0, 0, 1));  // moves on applied steps only
  }
  timer.end_phase("optimizer");
  const auto t_opt = Clock::now();
  trace.add("checks_and_optimizer", t_reduce, t_opt, step, u.rank());
  m.sharded->gather();
  timer.end_phase("gather");
  if (stats.is_cuda()) {
    f.stats = at::empty({3}, stats.options().device(at::kCPU).pinned_memory(true));
    f.stats.copy_(stats, /*non_blocking=*/true);
    f.copied.emplace(c10::DeviceType::CUDA);
    f.copied->record(c10::impl::VirtualGuardImpl(c10::DeviceType::CUDA).getStream(stats.device()));
  } else {
    f.stats = stats;
  }
  f.t_enqueued = t_opt;
  return f;
}

StepResult Trainer::Impl::complete(InFlight& f) {
  if (f.copied) f.copied->synchronize();  // the step's one host synchronisation
  ++host_waits;
  StepResult& r = f.result;
  trace.add("gather_parameters", f.t_enqueued, Clock::now(), r.step, u.rank());
  r.phase_ms = f.timer->read();
  const double* s = f.stats.data_ptr<double>();
  r.loss = s[0];
  r.stop_requested = s[1] > 0;
  r.grad_norm = std::sqrt(s[2]);
  r.skipped = !(std::isfinite(r.loss) && std::isfinite(r.grad_norm));
  if (r.skipped) {
    ++skipped_total;
    if (++consecutive_nonfinite >= opt.max_nonfinite_steps) {
      agree_on_errors(u.world(),
                      "the loss or the gradients were not finite in " + std::to_string(consecutive_nonfinite) +
                          " steps in a row (last: step " + std::to_string(r.step) + "); stopping. Lower --learning_rate, set "
                          "--grad_clip, or check the data with --check_finite_data",
                      kExitFailure);
    }
  } else {
    consecutive_nonfinite = 0;
  }
  const auto now = Clock::now();
  r.seconds = std::chrono::duration<double>(now - std::max(last_completed, f.t0)).count();
  last_completed = now;
  return r;
}

void Trainer::Impl::resume(const std::string& path) {
  const CheckpointState st = resume_run(path, m, opt, u, data.sampler->steps_per_epoch());
  skipped_total = st.skipped_steps;
  start_step = st.next_step;
}

Trainer::Trainer(const Options& options, Universe& universe, comm::ProcessGroups& groups, RunInputs inputs) {
  const std::string resume_from = inputs.resume_from;
  impl_ = std::make_unique<Impl>(options, universe, groups, std::move(inputs));
  Impl& d = *impl_;
  if (!options.profile_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(options.profile_dir, ec);
    d.trace.open(options.profile_dir + "/trace-rank" + std::to_string(universe.rank()) + ".json");
  }
  d.validator.emplace(d.opt, d.u, d.groups, d.compute, d.data, d.m.model, d.run_dir);  // a bad --sample_decoder ends the job now
  if (!resume_from.empty()) {
    d.resume(resume_from);
  } else if (options.resume == "auto" && universe.rank() == 0) {
    std::cout << "--resume auto: no complete checkpoint under " << d.run_dir << "/checkpoints; starting at step 0\n";
  }
}

Trainer::Trainer(const Options& options, Universe& universe, comm::ProcessGroups& groups)
    : Trainer(options, universe, groups, check_run_inputs(options, universe)) {}

int64_t Trainer::start_step() const { return impl_->start_step; }
int64_t Trainer::host_synchronisations() const { return impl_->host_waits; }

std::string Trainer::save_checkpoint(int64_t next_step) {
  Impl& d = *impl_;
  return write_checkpoint(d.run_dir + "/checkpoints", CheckpointState{next_step, d.m.optimizer->steps(), d.skipped_total, 0, 0, ""}, *d.m.sharded,
                          d.u, to_ini(d.opt), d.opt.keep_checkpoints);
}

Trainer::~Trainer() = default;
const std::string& Trainer::run_directory() const { return impl_->run_dir; }

StepResult Trainer::train_step(int64_t step) {
  Impl& d = *impl_;
  const data::HostBatch batch = d.data.dataset->read(d.data.sampler->batch(d.data.sampler->position_after(step)), d.data.layout);
  return d.step(step, batch, 0.0);
}

double Trainer::evaluate() { return impl_->validator->loss(); }

model::TensorMap Trainer::weights() { return parallel::full_masters(*impl_->m.sharded); }
model::TensorMap Trainer::ema_weights() {
  return impl_->m.sharded->has_ema() ? parallel::full_masters(*impl_->m.sharded, parallel::Weights::kEma) : model::TensorMap();
}

int Trainer::run() {
  Impl& d = *impl_;
  const bool root = d.u.rank() == 0;
  const data::Manifest& manifest = d.data.dataset->manifest();
  const RunEnd end = run_end(d.opt, d.data.sampler->steps_per_epoch());  // why the run ends where it does, said at the start and the end
  const Cadence cadence{end.last_step, d.opt.log_every, d.opt.evaluate_every, d.opt.checkpoint_every, d.opt.sample_every};
  const double peak = d.opt.peak_tflops > 0 ? d.opt.peak_tflops : device_peak_tflops(d.compute.device, d.compute.dtype == at::kBFloat16);
  if (root) print_run_start(d.opt, d.u, d.data, d.compute, *d.m.sharded, end, peak, d.run_dir);
  RunLog log(d.run_dir, root, peak, d.u.size(), d.compute.device, d.start_step);
  // The trained weights, with the reference's names, for the reference trainer and openvid_modelcheck.
  const std::string export_path = d.run_dir + "/model.safetensors";
  if (d.start_step >= cadence.last_step) {
    // A finished run whose export is missing (a crash between the last checkpoint and the export) gets it now.
    const bool missing = d.opt.write_checkpoints && broadcast_string(d.u.world(), std::filesystem::exists(export_path) ? "" : "1") == "1";
    if (missing) write_export(d.run_dir, *d.m.sharded, d.opt.ema_decay, d.u);
    if (root) {
      std::cout << "nothing to do: the run is at step " << d.start_step << " of " << cadence.last_step << " (" << end.reason << ")"
                << (missing ? "; wrote its missing export " + export_path : std::string()) << "\n";
    }
    return kExitOk;
  }
  install_stop_signal_handlers();  // (again: a library caller may not have)
  // A signal during the start-up: nothing is trained yet, so nothing to checkpoint; every rank exits 3 and
  // the requeued job starts (or resumes) as this one would have.
  {
    if (agree_int(d.u.world(), stop_signal() != 0 ? 1 : 0, MPI_MAX, "the agreement on signals before the first step") != 0) {
      if (root) {
        std::cout << "received signal (SIGUSR1 or SIGTERM on some rank) before the first step: nothing to checkpoint; exiting with code "
                  << kExitRequeue << " so the job can be requeued (resume with --resume auto)\n" << std::flush;
      }
      return kExitRequeue;
    }
  }
  data::Prefetcher prefetcher(*d.data.dataset, *d.data.sampler, d.data.sampler->position_after(d.start_step),
                              cadence.last_step - d.start_step, d.data.layout);
  std::optional<KinetoTrace> kineto;
  if (!d.opt.profile_dir.empty()) {
    const auto [first, last] = parse_step_range(d.opt.profile_steps);
    kineto.emplace(d.opt.profile_dir + "/kineto-rank" + std::to_string(d.u.rank()) + ".json", first, last, d.compute.device.is_cuda());
  }
  const auto start = Clock::now();
  // A step's result is read while the next step is already enqueued (the device never waits for the host
  // between steps), except where the state after the step matters before anything else runs: evaluation,
  // checkpoints, the last step, and a stop requested by a signal (learned one step late: every rank then
  // finishes that next step, checkpoints after it and exits).
  std::optional<Impl::InFlight> pending;
  bool stop = false;
  // Logs, evaluates, checkpoints as the cadence says for the completed step; true when the run stops here.
  auto finish = [&](Impl::InFlight& f) {
    const StepResult r = d.complete(f);
    stop = stop || r.stop_requested;
    const int64_t done = r.step + 1;
    const auto& bucket = manifest.buckets[static_cast<size_t>(f.bucket)];
    const double samples = static_cast<double>(d.data.sampler->global_batch());
    const double tokens = samples * static_cast<double>((bucket.frames / d.opt.model.time_patch) * (bucket.height / d.opt.model.patch) *
                                                        (bucket.width / d.opt.model.patch));
    log.add_step(r.loss, r.seconds + r.data_wait, r.data_wait, samples, tokens,
                 samples * model::training_flops(d.opt.model, bucket.frames, bucket.height, bucket.width, manifest.text_tokens),
                 r.phase_ms);
    std::optional<double> eval_loss;
    if (cadence.evaluate(done)) eval_loss = evaluate();
    if (cadence.sample(done)) {
      const Validator::Samples drawn = d.validator->draw_samples(done);
      if (root) std::cout << "samples " << drawn.path << "\n" << std::flush;
      if (!drawn.png.empty()) log.image("samples/contact_sheet", done, drawn.png, drawn.width, drawn.height);
    }
    if (cadence.log(done)) {
      RunLog::Point point;
      point.step = done;
      point.last_step = cadence.last_step;
      point.lr = r.lr;
      point.grad_norm = r.grad_norm;
      point.eta_seconds = seconds_since(start) / static_cast<double>(done - d.start_step) * static_cast<double>(cadence.last_step - done);
      point.skipped = d.skipped_total;
      point.eval_loss = eval_loss;
      log.write(point);
    }
    const bool in_sync = !pending.has_value();  // no later step was enqueued: the state is this step's
    if (in_sync && ((d.opt.write_checkpoints && cadence.checkpoint(done)) || stop)) {
      const std::string where = save_checkpoint(done);
      if (root) std::cout << "checkpoint " << where << "\n" << std::flush;
    }
    if (in_sync && stop) {
      if (root) {
        std::cout << "received signal (SIGUSR1 or SIGTERM on some rank): checkpoint written at step " << done << "; exiting with code "
                  << kExitRequeue << " so the job can be requeued (resume with --resume auto)\n" << std::flush;
      }
      return true;
    }
    return false;
  };
  for (int64_t step = d.start_step; step < cadence.last_step; ++step) {
    if (kineto) kineto->at_step(step);
    const auto t_wait = Clock::now();
    const data::Prefetcher::Item item = prefetcher.next();
    d.trace.add("data_wait", t_wait, Clock::now(), step, d.u.rank());
    Impl::InFlight now = d.launch(step, item.batch, prefetcher.last_wait_seconds());
    if (pending) {
      Impl::InFlight previous = std::move(*pending);
      pending = std::move(now);
      finish(previous);  // its stop flag makes this step the last
    } else {
      pending = std::move(now);
    }
    const int64_t done = step + 1;
    if (stop || cadence.evaluate(done) || cadence.sample(done) || (d.opt.write_checkpoints && cadence.checkpoint(done)) ||
        done == cadence.last_step) {
      Impl::InFlight current = std::move(*pending);
      pending.reset();
      if (finish(current)) return kExitRequeue;
    }
  }
  kineto.reset();  // saves a trace still running
  if (root && d.u.mesh().shard_size() > 1) std::cout << parallel::unit_gradient_summary(*d.m.sharded) << "\n";
  const std::string stopped = "stopped at step " + std::to_string(cadence.last_step) + ": reached " + end.reason + "\n";
  if (!d.opt.write_checkpoints) {
    if (root) std::cout << stopped << "done in " << format_duration(seconds_since(start)) << " (--write_checkpoints false: nothing saved)\n";
    return kExitOk;
  }
  write_export(d.run_dir, *d.m.sharded, d.opt.ema_decay, d.u);
  if (root) {
    std::cout << stopped << "done in " << format_duration(seconds_since(start)) << ": weights " << d.run_dir
              << "/model.safetensors, metrics " << d.run_dir << "/metrics.jsonl, configuration " << d.run_dir << "/config.ini\n";
  }
  return kExitOk;
}

}  // namespace ov::train
