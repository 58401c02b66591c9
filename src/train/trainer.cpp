#include "openvid/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>

#include <c10/core/Event.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>

#include "openvid/comm/host_copy.h"
#include "openvid/data/device_batch.h"
#include "openvid/data/prefetch.h"
#include "openvid/model/flops.h"
#include "openvid/model/safetensors.h"
#include "openvid/model/sampler.h"
#include "openvid/parallel/shard_io.h"
#include "openvid/runtime/error.h"
#include "openvid/runtime/mpi_session.h"
#include "openvid/runtime/signals.h"
#include "openvid/train/checkpoint.h"
#include "openvid/kernels/range.h"
#include "openvid/train/profiling.h"
#include "openvid/train/run_log.h"
#include "openvid/train/setup.h"
#include "openvid/video/latent_codec.h"
#include "openvid/video/png.h"
#if OPENVID_HAVE_FFMPEG
#include "openvid/video/video_io.h"
#endif

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
  std::optional<video::LatentCodec> sample_decoder;  // rank 0, with --sample_decoder

  Impl(const Options& o, Universe& universe, comm::ProcessGroups& g, RunInputs in)
      : opt(o),
        u(universe),
        groups(g),
        compute(in.compute),
        run_dir(std::move(in.run_dir)),
        data(std::move(in.data)),
        m(build_run_model(o, universe, g, compute)),
        objective(objective_settings(o)) {}

  // Loss of this rank's samples [first, first + count) of `b` (normalised by `elements`), on the device.
  at::Tensor loss(const data::DeviceBatch& b, int64_t first, int64_t count, int64_t step, int64_t valid, double elements) {
    const FlowBatch fb = make_flow_batch(b, first, count, step, valid, objective);
    const at::Tensor pred = m.model->forward_window(fb.x_t, fb.text, fb.t, fb.window);
    return flow_loss(pred * fb.weight, fb.target * fb.weight, elements);
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

namespace {

// One line on what a resume with other options does to the run ("" when nothing that matters changed):
// the global batch, the step count and the learning-rate schedule.
std::string resume_changes(const CheckpointState& st, const Options& now, int64_t data_ranks_now, int64_t steps_per_epoch_now) {
  Options before;
  try {
    before = options_from_ini(st.options_ini, "the checkpoint's options");
  } catch (const InputError&) {
    return "";  // written by another version: nothing to compare with
  }
  std::vector<std::string> changes;
  const int64_t batch_before = int64_t{before.batch_size} * st.data_ranks, batch_now = int64_t{now.batch_size} * data_ranks_now;
  if (st.data_ranks > 0 && batch_before != batch_now) {
    changes.push_back("global batch " + std::to_string(batch_before) + " -> " + std::to_string(batch_now) + " (each step now averages " +
                      std::to_string(batch_now) + " samples, an epoch is " + std::to_string(steps_per_epoch_now) +
                      " steps, and the remaining steps see the data in another order than an uninterrupted run)");
  }
  std::string length;
  if (before.max_steps != now.max_steps) length = "max_steps " + std::to_string(before.max_steps) + " -> " + std::to_string(now.max_steps);
  if (before.num_epochs != now.num_epochs) {
    length += (length.empty() ? "" : ", ") + std::string("num_epochs ") + std::to_string(before.num_epochs) + " -> " + std::to_string(now.num_epochs);
  }
  if (!length.empty()) {
    changes.push_back(length + " (the run now ends at step " + std::to_string(std::min(now.max_steps, int64_t{now.num_epochs} * steps_per_epoch_now)) + ")");
  }
  const int64_t step = st.next_step;
  const double lr_before = before.learning_rate * lr_multiplier(before.lr_scheduler_type, step, before.max_steps, before.warmup_steps);
  const double lr_now = now.learning_rate * lr_multiplier(now.lr_scheduler_type, step, now.max_steps, now.warmup_steps);
  if (std::abs(lr_now - lr_before) > 1e-9 * std::max(std::abs(lr_before), 1e-30)) {
    std::ostringstream os;
    os << std::scientific << std::setprecision(2) << "learning rate at step " << step << " jumps " << lr_before << " -> " << lr_now
       << " (schedule " << to_string(before.lr_scheduler_type) << " to " << before.max_steps << " steps, peak " << before.learning_rate
       << " -> " << to_string(now.lr_scheduler_type) << " to " << now.max_steps << " steps, peak " << now.learning_rate << ")";
    changes.push_back(os.str());
  }
  std::string line;
  for (const std::string& c : changes) line += (line.empty() ? "" : "; ") + c;
  return line;
}

}  // namespace

void Trainer::Impl::resume(const std::string& path) {
  const CheckpointState st = read_checkpoint(path, *m.sharded, u);
  m.sharded->refresh_compute_copy();
  m.optimizer->set_steps(st.optimizer_steps);
  skipped_total = st.skipped_steps;
  start_step = st.next_step;
  if (u.rank() == 0) {
    std::cout << "resuming from " << path << " at step " << start_step << "\n";
    if (m.sharded->has_ema() && !st.has_ema) std::cout << "note: the checkpoint has no moving average of the weights; it starts at its weights\n";
    if (!m.sharded->has_ema() && st.has_ema) std::cout << "note: --ema_decay is 0: the checkpoint's moving average of the weights is not continued\n";
    const std::string changes = resume_changes(st, opt, u.num_data_ranks(), data.sampler->steps_per_epoch());
    if (!changes.empty()) std::cout << "note: this resume changes the run: " << changes << "\n";
    std::cout << std::flush;
  }
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
  if (options.sample_every > 0 && !options.sample_decoder.empty()) {  // a bad decoder ends the job now, not at the first sample
    root_check(universe.world(), [&] {
      d.sample_decoder.emplace(options.sample_decoder, video::LatentCodec::Part::kDecoder,
                               video::Compression{options.sample_temporal_compression, options.sample_spatial_compression}, d.compute.device,
                               d.compute.dtype);
    });
  }
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

double Trainer::evaluate() {
  Impl& d = *impl_;
  c10::NoGradGuard no_grad;
  at::Tensor local = at::zeros({1}, at::TensorOptions().dtype(at::kDouble).device(d.compute.device));
  double valid = 0;
  for (size_t i = 0; i < d.data.eval_batches.size(); ++i) {
    const data::HostBatch& host = d.data.eval_batches[i];
    const data::DeviceBatch b = data::to_device(host, d.compute.device, at::kFloat);
    // Per-sample normalisation happens after the sum: count this batch's elements of the valid samples.
    local += d.loss(b, 0, static_cast<int64_t>(b.samples.size()), kEvalStep, d.data.eval_valid[i], 1.0);
    valid += static_cast<double>(d.data.eval_valid[i]) * static_cast<double>(host.latents.size(1) * host.frames * host.latents.size(3) *
                                                                             host.latents.size(4));
  }
  // Each valid element appears on cp ranks only through its own slice, so the element count is summed
  // over the data ranks (cp rank 0 of each group counts the whole sample).
  at::Tensor sums = at::cat({local, local.new_full({1}, d.data.layout.cp_rank == 0 ? valid : 0.0)});
  d.groups.world().all_reduce(sums, comm::ReduceOp::kSum).wait();
  const at::Tensor s = comm::to_host(sums);
  return s[1].item<double>() > 0 ? s[0].item<double>() / s[1].item<double>() : std::nan("");
}

Trainer::Samples Trainer::write_samples(int64_t done) {
  Impl& d = *impl_;
  Samples out;
  std::string& path = out.path;
  // Rank 0 alone: with --cp 1 its gathered parameters are the whole model, and its first held-out batch is fixed.
  root_check<std::exception>(
      d.u.world(),
      [&] {
        OV_CHECK(!d.data.eval_batches.empty(), "--sample_every without held-out batches");
        const data::HostBatch& host = d.data.eval_batches.front();
        const int64_t n = std::min<int64_t>(d.opt.sample_count, static_cast<int64_t>(host.samples.size()));
        const at::Tensor text = host.text.narrow(0, 0, n).to(d.compute.device, at::kFloat);
        // The same noise every time: drawn on the CPU from the run's seed alone.
        at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(d.opt.seed) + 0x5a3d1e);
        const at::Tensor noise = at::normal(0.0, 1.0, {n, host.latents.size(1), host.frames, host.latents.size(3), host.latents.size(4)}, gen);
        model::SamplerOptions so;
        so.steps = d.opt.sample_steps;
        so.guidance = d.opt.sample_guidance;
        so.shift = d.opt.timestep_shift;
        const at::Tensor latents = model::sample_latents(d.m.model, noise.to(d.compute.device), text, so).cpu();
        std::vector<int64_t> ids(host.samples.begin(), host.samples.begin() + n);
        std::filesystem::create_directories(d.run_dir + "/samples");
        const std::string digits = std::to_string(done);
        path = d.run_dir + "/samples/step_" + std::string(digits.size() < 8 ? 8 - digits.size() : 0, '0') + digits + ".safetensors";
        model::write_safetensors(path, {{"latents", latents}, {"text_states", text.cpu()}, {"sample_ids", at::tensor(ids, at::kLong)}},
                                 {{"producer", version_string()}, {"step", digits}, {"steps", std::to_string(so.steps)},
                                  {"guidance", std::to_string(so.guidance)}, {"bucket", std::to_string(host.bucket)}});
        if (d.sample_decoder) {
          // The stored latents are (encoder output - shift) * scale (docs/dataset.md): the decoder gets them back.
          const data::Manifest& man = d.data.dataset->manifest();
          const at::Tensor videos = d.sample_decoder->run(latents.to(d.compute.device).div(man.latent_scale).add(man.latent_shift));
          const at::Tensor sheet = video::contact_sheet(videos);
          out.png = video::encode_png(sheet);
          out.height = static_cast<int>(sheet.size(0));
          out.width = static_cast<int>(sheet.size(1));
          const std::string stem = path.substr(0, path.size() - std::string(".safetensors").size());
          std::ofstream(stem + ".png", std::ios::binary) << out.png;
#if OPENVID_HAVE_FFMPEG
          for (int64_t i = 0; i < videos.size(0); ++i) {  // and each sample as a video file
            const at::Tensor frames = video::to_rgb_frames(videos[i]);
            video::VideoWriter w(stem + "_" + std::to_string(i) + ".mp4", static_cast<int>(frames.size(2)), static_cast<int>(frames.size(1)), 24);
            for (int64_t f = 0; f < frames.size(0); ++f) w.write(frames[f]);
            w.finish();
          }
#endif
        }
      },
      kExitFailure);
  return out;
}

model::TensorMap Trainer::weights() { return parallel::full_masters(*impl_->m.sharded); }
model::TensorMap Trainer::ema_weights() {
  return impl_->m.sharded->has_ema() ? parallel::full_masters(*impl_->m.sharded, parallel::Weights::kEma) : model::TensorMap();
}

int Trainer::run() {
  Impl& d = *impl_;
  const bool root = d.u.rank() == 0;
  const data::Manifest& manifest = d.data.dataset->manifest();
  const int64_t epoch_cap = int64_t{d.opt.num_epochs} * d.data.sampler->steps_per_epoch();
  const Cadence cadence{std::min(d.opt.max_steps, epoch_cap), d.opt.log_every, d.opt.evaluate_every, d.opt.checkpoint_every,
                        d.opt.sample_every};
  // Why the run ends where it does, said at the start and at the end.
  const bool capped = epoch_cap < d.opt.max_steps;
  const std::string end_reason =
      capped ? "the epoch cap: --num_epochs " + std::to_string(d.opt.num_epochs) + " x " + std::to_string(d.data.sampler->steps_per_epoch()) +
                   " steps per epoch = " + std::to_string(epoch_cap) + " steps, before --max_steps " + std::to_string(d.opt.max_steps)
             : "--max_steps " + std::to_string(d.opt.max_steps);
  const bool bf16 = d.compute.dtype == at::kBFloat16;
  const double peak = d.opt.peak_tflops > 0 ? d.opt.peak_tflops : device_peak_tflops(d.compute.device, bf16);
  if (root) {
    std::cout << "training " << model::parameter_count(d.opt.model) / 1e6 << "M parameters for " << d.opt.max_steps << " steps: "
              << d.data.sampler->steps_per_epoch() << " steps per epoch, global batch " << d.data.sampler->global_batch() << " ("
              << d.opt.batch_size << " per data rank x " << d.u.num_data_ranks() << "), " << c10::toString(d.compute.dtype)
              << " compute on " << device_name(d.compute.device) << ", run directory " << d.run_dir << "\n";
    const parallel::ShardMemory mem = d.m.sharded->memory();
    std::cout << std::fixed << std::setprecision(2) << "sharded state per rank (1/" << d.u.mesh().shard_size() << "): masters "
              << mem.master_bytes / 1e6 << " MB, gradients " << mem.grad_bytes / 1e6 << " MB, Adam moments " << mem.optimizer_bytes / 1e6
              << " MB; gathered parameters " << mem.gathered_bytes / 1e6 << " MB\n" << std::defaultfloat;
    if (capped) {
      const int64_t epochs_needed = (d.opt.max_steps + d.data.sampler->steps_per_epoch() - 1) / d.data.sampler->steps_per_epoch();
      std::cout << std::scientific << std::setprecision(2) << "note: the run will end at step " << epoch_cap << ", at " << end_reason
                << "; the learning-rate schedule runs to max_steps, so it ends at lr "
                << d.opt.learning_rate * lr_multiplier(d.opt.lr_scheduler_type, epoch_cap - 1, d.opt.max_steps, d.opt.warmup_steps)
                << " (--num_epochs " << epochs_needed << " trains to max_steps)\n" << std::defaultfloat;
    }
    if (d.compute.device.is_cuda() && peak == 0) {
      std::cout << "no peak TFLOP/s known for " << device_name(d.compute.device) << ": logs show no MFU (set --peak_tflops)\n";
    }
    std::cout << std::flush;
  }
  RunLog log(d.run_dir, root, peak, d.u.size(), d.compute.device, d.start_step);
  // The trained weights, with the reference's names, for the reference trainer and openvid_modelcheck.
  const std::string export_path = d.run_dir + "/model.safetensors";
  auto export_weights = [&] {  // one unit at a time (write_full_weights): no rank holds the whole model
    const parallel::ShardedModel& sharded = *d.m.sharded;
    std::string error = write_full_weights(export_path, sharded, parallel::Weights::kMasters, {{"producer", version_string()}, {"format", "pt"}}, d.u);
    if (sharded.has_ema()) {
      const std::string e = write_full_weights(d.run_dir + "/ema.safetensors", sharded, parallel::Weights::kEma,
                                               {{"producer", version_string()}, {"format", "pt"}, {"ema_decay", std::to_string(d.opt.ema_decay)}}, d.u);
      if (error.empty()) error = e;
    }
    agree_on_errors(d.u.world(), error, kExitFailure);
  };
  if (d.start_step >= cadence.last_step) {
    // A finished run whose export is missing (a crash between the last checkpoint and the export) gets it now.
    const bool missing = d.opt.write_checkpoints && broadcast_string(d.u.world(), std::filesystem::exists(export_path) ? "" : "1") == "1";
    if (missing) export_weights();
    if (root) {
      std::cout << "nothing to do: the run is at step " << d.start_step << " of " << cadence.last_step << " (" << end_reason << ")"
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
      const Samples drawn = write_samples(done);
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
  const std::string stopped = "stopped at step " + std::to_string(cadence.last_step) + ": reached " + end_reason + "\n";
  if (!d.opt.write_checkpoints) {
    if (root) std::cout << stopped << "done in " << format_duration(seconds_since(start)) << " (--write_checkpoints false: nothing saved)\n";
    return kExitOk;
  }
  export_weights();
  if (root) {
    std::cout << stopped << "done in " << format_duration(seconds_since(start)) << ": weights " << d.run_dir
              << "/model.safetensors, metrics " << d.run_dir << "/metrics.jsonl, configuration " << d.run_dir << "/config.ini\n";
  }
  return kExitOk;
}

}  // namespace ov::train
