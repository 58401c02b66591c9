#include "openvid/train/trainer.h"

#include <ATen/ATen.h>

#include <chrono>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <numeric>
#include <optional>
#include <sstream>

#include "openvid/data/prefetch.h"
#include "openvid/model/flops.h"
#include "openvid/model/safetensors.h"
#include "openvid/parallel/shard_io.h"
#include "openvid/runtime/error.h"
#include "openvid/runtime/files.h"
#include "openvid/runtime/mpi_session.h"
#include "openvid/runtime/signals.h"
#include "openvid/train/checkpoint.h"
#include "openvid/train/evaluation.h"
#include "openvid/train/step.h"
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

}  // namespace

struct Trainer::Impl {
  const Options opt;
  Universe& u;
  comm::ProcessGroups& groups;
  ComputeSetup compute;
  std::string run_dir;
  RunData data;
  RunModel m;
  int64_t start_step = 0;
  PhaseTrace trace;
  StepPipeline steps;                  // the optimizer steps (train/step.h)
  std::optional<Validator> validator;  // the held-out loss and the samples

  Impl(const Options& o, Universe& universe, comm::ProcessGroups& g, RunInputs in)
      : opt(o),
        u(universe),
        groups(g),
        compute(in.compute),
        run_dir(std::move(in.run_dir)),
        data(std::move(in.data)),
        m(build_run_model(o, g, compute)),
        steps(context(), m, trace) {}

  RunContext context() { return RunContext{opt, u, groups, compute, data}; }

  void resume(const std::string& request);
};

void Trainer::Impl::resume(const std::string& path) {
  const CheckpointState st = resume_run(path, m, opt, u, *data.sampler);
  steps.set_skipped_total(st.skipped_steps);
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
  d.validator.emplace(d.context(), d.m.model, d.run_dir);  // a bad --sample_decoder ends the job now
  if (!resume_from.empty()) {
    d.resume(resume_from);
  } else if (options.resume == "auto" && universe.rank() == 0) {
    std::cout << "--resume auto: no complete checkpoint under " << d.run_dir << "/checkpoints; starting at step 0\n";
  }
}

Trainer::Trainer(const Options& options, Universe& universe, comm::ProcessGroups& groups)
    : Trainer(options, universe, groups, check_run_inputs(options, universe)) {}

int64_t Trainer::start_step() const { return impl_->start_step; }
int64_t Trainer::host_synchronisations() const { return impl_->steps.host_waits(); }

std::string Trainer::save_checkpoint(int64_t next_step) {
  Impl& d = *impl_;
  CheckpointState state;
  state.next_step = next_step;
  state.optimizer_steps = d.m.optimizer->steps();
  state.skipped_steps = d.steps.skipped_total();
  state.sampler = d.data.sampler->state_after(next_step);
  return write_checkpoint(d.run_dir + "/checkpoints", state, *d.m.sharded, d.u, to_ini(d.opt), d.opt.keep_checkpoints);
}

Trainer::~Trainer() = default;
const std::string& Trainer::run_directory() const { return impl_->run_dir; }

StepResult Trainer::train_step(int64_t step) {
  Impl& d = *impl_;
  const data::HostBatch batch = d.data.dataset->read(d.data.sampler->batch(d.data.sampler->position_after(step)), d.data.layout);
  return d.steps.step(step, batch, 0.0);
}

double Trainer::evaluate() { return impl_->validator->loss(); }
const std::vector<std::pair<std::string, double>>& Trainer::eval_by_bucket() const { return impl_->validator->by_bucket(); }

parallel::ShardMemory Trainer::memory() const { return impl_->m.sharded->memory(); }
model::TensorMap Trainer::weights() { return parallel::full_masters(*impl_->m.sharded); }
model::TensorMap Trainer::ema_weights() {
  return impl_->m.sharded->has_ema() ? parallel::full_masters(*impl_->m.sharded, parallel::Weights::kEma) : model::TensorMap();
}

int Trainer::run() {
  Impl& d = *impl_;
  const bool root = d.u.rank() == 0;
  const data::Manifest& manifest = d.data.dataset->manifest();
  const RunEnd end = run_end(d.opt, *d.data.sampler);  // why the run ends where it does, said at the start and the end
  // No held-out samples (a small --heldout_fraction of small buckets rounds to none): evaluation and samples,
  // which draw from them, are off, said once at the start, rather than an eval loss of nan or a failure at the
  // first sampling step; checkpoints keep the cadence evaluation would have given them.
  const bool no_heldout = d.data.eval_batches.empty() && (d.opt.evaluate_every > 0 || d.opt.sample_every > 0);
  const int64_t checkpoint_every =
      no_heldout && d.opt.checkpoint_every == 0 && d.opt.evaluate_every > 0 ? d.opt.evaluate_every : d.opt.checkpoint_every;
  const Cadence cadence{end.last_step,    d.opt.log_every,           no_heldout ? 0 : d.opt.evaluate_every,
                        checkpoint_every, no_heldout ? 0 : d.opt.sample_every, d.opt.write_checkpoints};
  const double peak = d.opt.peak_tflops > 0 ? d.opt.peak_tflops : device_peak_tflops(d.compute.device, d.compute.dtype == at::kBFloat16);
  if (root) print_run_start(d.opt, d.u, d.data, d.compute, d.m, end, peak, d.run_dir);
  if (!d.data.batches.json.empty()) {  // the token budget's batch sizes, beside config.ini
    root_check<std::exception>(d.u.world(), [&] { write_file_durably(d.run_dir + "/batch_sizes.json", d.data.batches.json); }, kExitFailure);
  }
  if (root && no_heldout) {
    std::cout << "warning: no held-out samples (--heldout_fraction " << d.opt.heldout_fraction << " of each bucket rounds to none): "
              << (d.opt.evaluate_every > 0 ? "evaluation (--evaluate_every " + std::to_string(d.opt.evaluate_every) + ")" : std::string())
              << (d.opt.evaluate_every > 0 && d.opt.sample_every > 0 ? " and " : "")
              << (d.opt.sample_every > 0 ? "samples (--sample_every " + std::to_string(d.opt.sample_every) + ")" : std::string())
              << " are off"
              << (d.opt.write_checkpoints && checkpoint_every > 0 ? "; checkpoints stay every " + std::to_string(checkpoint_every) + " steps"
                                                                   : std::string())
              << ". Raise --heldout_fraction (a bucket of N samples holds out round(N x fraction)) to have them\n"
              << std::flush;
  }
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
  std::optional<StepPipeline::InFlight> pending;
  bool stop = false;
  double exposed_ms = 0, step_ms = 0;  // over the run's steps: communication waited for, and the steps' time
  // Logs, evaluates, checkpoints as the cadence says for the completed step; true when the run stops here.
  auto finish = [&](StepPipeline::InFlight& f) {
    const StepResult r = d.steps.complete(f);
    stop = stop || r.stop_requested;
    const int64_t done = r.step + 1;
    const auto& bucket = manifest.buckets[static_cast<size_t>(f.bucket)];
    const double samples = static_cast<double>(f.samples);  // real ones: a remainder batch holds fewer
    const double tokens = samples * static_cast<double>((bucket.frames / d.opt.model.time_patch) * (bucket.height / d.opt.model.patch) *
                                                        (bucket.width / d.opt.model.patch));
    log.add_step(r.loss, r.seconds + r.data_wait, r.data_wait, samples, tokens,
                 samples * model::training_flops(d.opt.model, bucket.frames, bucket.height, bucket.width, manifest.text_tokens),
                 r.phase_ms, r.comm_bytes, r.comm_exposed_ms, r.comm_busy_ms);
    exposed_ms += std::accumulate(r.comm_exposed_ms.begin(), r.comm_exposed_ms.end(), 0.0, [](double s, const auto& g) { return s + g.second; });
    step_ms += 1e3 * r.seconds;
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
      point.skipped = d.steps.skipped_total();
      point.eval_loss = eval_loss;
      if (eval_loss) point.eval_by_bucket = d.validator->by_bucket();
      log.write(point);
    }
    const bool in_sync = !pending.has_value();  // no later step was enqueued: the state is this step's
    if (in_sync && (cadence.checkpoint(done) || stop) && !d.u.emulated()) {  // an emulated rank holds one shard of the job's
      const std::string where = save_checkpoint(done);
      if (root) std::cout << "checkpoint " << where << "\n" << std::flush;
    }
    if (in_sync && stop) {
      if (root && d.u.emulated()) {
        std::cout << "received signal (SIGUSR1 or SIGTERM): stopped at step " << done << " (an emulated rank writes no checkpoint); exiting with code "
                  << kExitRequeue << "\n" << std::flush;
      } else if (root) {
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
    StepPipeline::InFlight now = d.steps.launch(step, item.batch, prefetcher.last_wait_seconds());
    if (pending) {
      StepPipeline::InFlight previous = std::move(*pending);
      pending = std::move(now);
      finish(previous);  // its stop flag makes this step the last
    } else {
      pending = std::move(now);
    }
    const int64_t done = step + 1;
    if (stop || cadence.needs_state(done)) {
      StepPipeline::InFlight current = std::move(*pending);
      pending.reset();
      if (finish(current)) return kExitRequeue;
    }
  }
  kineto.reset();  // saves a trace still running
  if (root && d.u.mesh().shard_size() > 1) std::cout << parallel::unit_gradient_summary(*d.m.sharded) << "\n";
  if (root) std::cout << "communication on rank 0, per step (start-up and evaluation included): " << d.groups.traffic_line(cadence.last_step - d.start_step) << "\n";
  if (root && step_ms > 0) {
    std::ostringstream os;
    os << std::fixed << std::setprecision(2) << "exposed communication on rank 0 (waited for): " << 100 * exposed_ms / step_ms << "% of the steps' time, "
       << exposed_ms / static_cast<double>(cadence.last_step - d.start_step) << " ms per step\n";
    std::cout << os.str();
  }
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
