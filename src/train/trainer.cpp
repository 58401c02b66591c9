#include "openvid/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/core/GradMode.h>
#include <sys/resource.h>

#include <atomic>
#include <csignal>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

#ifdef OPENVID_TORCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "openvid/data/dataset.h"
#include "openvid/data/device_batch.h"
#include "openvid/data/prefetch.h"
#include "openvid/data/sampler.h"
#include "openvid/data/synthetic.h"
#include "openvid/model/dit.h"
#include "openvid/model/flops.h"
#include "openvid/model/state_dict.h"
#include "openvid/parallel/cp_attention.h"
#include "openvid/parallel/sharded_model.h"
#include "openvid/runtime/error.h"
#include "openvid/runtime/mpi_session.h"
#include "openvid/train/checkpoint.h"
#include "openvid/train/objective.h"
#include "openvid/train/optimizer.h"
#include "openvid/train/run_log.h"

namespace ov::train {
using Clock = std::chrono::steady_clock;

namespace {

constexpr int64_t kEvalStep = -1;  // evaluation draws use this "step": fixed across the run and runs

// A sample's identity for random draws: unique in the dataset, independent of the layout.
int64_t sample_key(int64_t bucket, int64_t index) { return (bucket << 40) | index; }

// The signal asking for a checkpoint and a requeue (SIGUSR1 from Slurm's --signal, SIGTERM on preemption).
std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int sig) { g_stop_signal.store(sig); }

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Peak memory of this rank: the CUDA caching allocator's peak on a GPU, the process's peak RSS on a CPU.
double peak_memory_gb(const at::Device& device) {
#ifdef OPENVID_TORCH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    return static_cast<double>(stats.allocated_bytes[0].peak) / 1e9;  // [0]: all pools
  }
#endif
  static_cast<void>(device);
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1e6;  // kilobytes on Linux
}

}  // namespace

struct Trainer::Impl {
  Options opt;
  Universe& u;
  comm::ProcessGroups& groups;
  at::Device device{at::kCPU};
  at::ScalarType compute_dtype = at::kFloat;
  std::string run_dir;

  std::unique_ptr<data::Dataset> dataset;
  std::unique_ptr<data::Sampler> sampler;
  data::ReaderLayout layout;
  std::vector<data::HostBatch> eval_batches;
  std::vector<int64_t> eval_valid;  // real samples of each evaluation batch on this rank

  model::DiT model{nullptr};
  std::unique_ptr<parallel::ShardedModel> sharded;
  std::unique_ptr<AdamW> optimizer;
  int64_t consecutive_nonfinite = 0, skipped_total = 0;
  int64_t start_step = 0;
  PhaseTrace trace;

  Impl(const Options& o, Universe& universe, comm::ProcessGroups& g) : opt(o), u(universe), groups(g) {}

  void open_data();
  void build_model();
  StepResult step(int64_t step, const data::HostBatch& batch, double data_wait);
  // Loss sum of this rank's samples (global normalisation); backward when `train`.
  double forward_backward(const data::HostBatch& batch, int64_t step, bool train, int64_t valid, double global_elements);
  // One all-reduce (sum) over the world of several values.
  std::vector<double> global_sums(const std::vector<double>& local);
};

void Trainer::Impl::open_data() {
  std::string path = opt.dataset;
  if (path.empty()) {
    agree_on_errors(u.world(), "no dataset: pass --dataset PATH (a dataset.json or its directory) or --dataset fake");
  }
  if (path == "fake") {
    path = run_dir + "/fake_data";
    data::SyntheticSpec spec;
    std::string error;
    try {
      const auto shape = data::parse_latent_shape(opt.fake_latent_shape, "--fake_latent_shape");
      spec.shapes = {shape};
    } catch (const InputError& e) {
      error = e.what();
    }
    agree_on_errors(u.world(), error);
    spec.directory = path;
    spec.samples_per_bucket = opt.fake_samples;
    spec.channels = opt.model.in_channels;
    spec.text_tokens = opt.fake_text_tokens;
    spec.text_dim = opt.model.text_dim;
    spec.seed = static_cast<uint64_t>(opt.seed);
    int exists = std::filesystem::exists(path + "/" + data::kManifestName) ? 1 : 0;
    OV_MPI_CHECK(MPI_Bcast(&exists, 1, MPI_INT, 0, u.world()));
    if (!exists) {
      if (u.rank() == 0) std::cout << "writing a synthetic dataset (" << opt.fake_samples << " samples of " << opt.fake_latent_shape
                                   << ") to " << path << "\n" << std::flush;
      data::write_synthetic_dataset(u.world(), spec);
    }
  }
  dataset = data::Dataset::open(path, u.world(), data::DatasetOptions{opt.check_finite_data});
  const data::Manifest& m = dataset->manifest();
  std::string error;
  if (m.latent_channels != opt.model.in_channels || m.text_dim != opt.model.text_dim) {
    error = "dataset '" + path + "' holds " + std::to_string(m.latent_channels) + "-channel latents and " + std::to_string(m.text_dim) +
            "-wide text states, the model expects " + std::to_string(opt.model.in_channels) + " and " + std::to_string(opt.model.text_dim) +
            " (--model_in_channels, --model_text_dim)";
  }
  for (const auto& b : m.buckets) {
    if (error.empty() && (b.height % opt.model.patch != 0 || b.width % opt.model.patch != 0)) {
      error = "bucket '" + b.name + "' has a latent of " + std::to_string(b.height) + "x" + std::to_string(b.width) +
              ", not a multiple of --model_patch " + std::to_string(opt.model.patch);
    }
  }
  const MeshCoord c = u.coord();
  layout = data::ReaderLayout{u.data_rank(), u.num_data_ranks(), c.cp, u.mesh().cp(), opt.model.time_patch};
  if (error.empty()) {
    try {
      dataset->check_layout(layout);
    } catch (const InputError& e) {
      error = e.what();
    }
  }
  agree_on_errors(u.world(), error);
  std::vector<int64_t> counts;
  for (const auto& b : m.buckets) counts.push_back(b.count);
  try {
    sampler = std::make_unique<data::Sampler>(counts, static_cast<uint64_t>(opt.seed),
                                              int64_t{opt.batch_size} * u.num_data_ranks(), opt.heldout_fraction);
  } catch (const InputError& e) {
    error = e.what();
  }
  agree_on_errors(u.world(), error);
  // The evaluation set is small and fixed: read once, before the prefetcher owns the dataset.
  for (const data::GlobalBatch& gb : sampler->heldout_batches(opt.eval_batches)) {
    eval_batches.push_back(dataset->read(gb, layout));
    // Padded positions of the global batch are this rank's only if they fall in its share.
    const int64_t per_rank = opt.batch_size, first = int64_t{layout.data_rank} * per_rank;
    eval_valid.push_back(std::clamp<int64_t>(gb.valid - first, 0, per_rank));
  }
}

void Trainer::Impl::build_model() {
  model = model::DiT(opt.model);
  model->initialize(static_cast<uint64_t>(opt.seed));
  model->to(device);
  model->set_compute_dtype(compute_dtype);
  if (u.mesh().cp() > 1) model->set_self_attention(std::make_shared<parallel::CpSelfAttention>(groups.cp(), opt.model.registers));
  sharded = std::make_unique<parallel::ShardedModel>(*model, groups.shard(), groups.dp(), compute_dtype);
  if (!opt.load_checkpoint.empty()) {
    std::string error;
    model::TensorMap w;
    try {
      w = model::read_weights(opt.load_checkpoint);
      sharded->load_masters(w, opt.load_checkpoint);
    } catch (const InputError& e) {
      error = e.what();
    }
    agree_on_errors(u.world(), error);
  }
  optimizer = std::make_unique<AdamW>(AdamOptions{opt.adam_beta1, opt.adam_beta2, opt.adam_eps});
  sharded->add_to_optimizer(*optimizer, opt.weight_decay);
  sharded->gather();
}

std::vector<double> Trainer::Impl::global_sums(const std::vector<double>& local) {
  at::Tensor t = at::tensor(local, at::kDouble).to(device);
  groups.world().all_reduce(t, comm::ReduceOp::kSum).wait();
  const at::Tensor c = t.cpu();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

double Trainer::Impl::forward_backward(const data::HostBatch& host, int64_t step, bool train, int64_t valid, double global_elements) {
  const data::DeviceBatch b = data::to_device(host, device, at::kFloat);
  const int64_t n = static_cast<int64_t>(b.samples.size());
  const int64_t micro = train ? opt.grad_accum : 1;
  const int64_t per_micro = n / micro;
  const int64_t C = b.latents.size(1), H = b.latents.size(3), W = b.latents.size(4);
  model::TokenWindow window;
  window.t = b.frames / opt.model.time_patch;
  window.h = H / opt.model.patch;
  window.w = W / opt.model.patch;
  window.t_begin = b.t_begin / opt.model.time_patch;
  window.t_count = b.t_count / opt.model.time_patch;
  window.offset = train ? draw_rope_offset(static_cast<uint64_t>(opt.seed), step, window.t, window.h, window.w)
                        : std::array<int64_t, 3>{0, 0, 0};
  double loss_sum = 0;
  for (int64_t m = 0; m < micro; ++m) {
    std::vector<at::Tensor> noise;
    std::vector<double> ts;
    at::Tensor text = b.text.narrow(0, m * per_micro, per_micro).clone();
    std::vector<double> weight;
    for (int64_t i = 0; i < per_micro; ++i) {
      const int64_t k = m * per_micro + i;
      const int64_t key = sample_key(b.bucket, b.samples[static_cast<size_t>(k)]);
      const SampleDraw d = draw_sample(static_cast<uint64_t>(opt.seed), train ? step : kEvalStep, key, opt.timestep_shift,
                                       train ? opt.caption_dropout : 0.0);
      ts.push_back(d.t);
      if (d.drop_caption) text[i].zero_();
      noise.push_back(draw_noise(static_cast<uint64_t>(opt.seed), train ? step : kEvalStep, key, C, b.t_begin, b.t_count, H, W));
      weight.push_back(k < valid ? 1.0 : 0.0);  // padding of an evaluation batch counts nothing
    }
    const at::Tensor x = b.latents.narrow(0, m * per_micro, per_micro);
    const at::Tensor t = at::tensor(ts, at::kFloat).to(device);
    const FlowExample ex = make_example(x, at::stack(noise).to(device), t);
    at::Tensor pred = model->forward_window(ex.x_t, text, t, window);
    const at::Tensor w = at::tensor(weight, at::kFloat).to(device).view({-1, 1, 1, 1, 1});
    const at::Tensor loss = flow_loss(pred * w, ex.target * w, global_elements);
    if (train) {
      // The last micro-batch's backward launches each unit's gradient reduction as soon as it is ready.
      if (m + 1 == micro) sharded->arm();
      loss.backward();
    }
    loss_sum += loss.detach().to(at::kDouble).cpu().item<double>();
  }
  return loss_sum;
}

StepResult Trainer::Impl::step(int64_t step, const data::HostBatch& batch, double data_wait) {
  const auto t0 = Clock::now();
  StepResult r;
  r.step = step;
  r.data_wait = data_wait;
  const double elements = static_cast<double>(sampler->global_batch()) * static_cast<double>(batch.latents.size(1) * batch.frames *
                                                                                              batch.latents.size(3) * batch.latents.size(4));
  const double local = forward_backward(batch, step, true, static_cast<int64_t>(batch.samples.size()), elements);
  const auto t_fb = Clock::now();
  trace.add("forward_backward", t0, t_fb, step, u.rank());
  sharded->finish();
  const auto t_reduce = Clock::now();
  trace.add("finish_gradient_reduction", t_fb, t_reduce, step, u.rank());
  // One reduction decides for every rank: the loss, the gradient norm and whether anything is non-finite.
  at::Tensor stats = at::tensor({sharded->local_grad_norm_squared(), sharded->gradients_finite() ? 0.0 : 1.0}, at::kDouble).to(device);
  groups.shard().all_reduce(stats, comm::ReduceOp::kSum).wait();
  const at::Tensor s = stats.cpu();
  // The loss and whether any rank was asked to stop (SIGUSR1/SIGTERM) travel in the same reduction.
  const std::vector<double> sums = global_sums({local, g_stop_signal.load() != 0 ? 1.0 : 0.0});
  r.loss = sums[0];
  r.stop_requested = sums[1] > 0;
  r.grad_norm = std::sqrt(s[0].item<double>());
  const bool finite = s[1].item<double>() == 0 && std::isfinite(r.loss) && std::isfinite(r.grad_norm);
  // The dp replicas of a shard hold identical gradients: the shard-group verdict is the same everywhere,
  // and the world-wide loss sum already is.
  r.lr = opt.learning_rate * lr_multiplier(opt.lr_scheduler_type, step, opt.max_steps, opt.warmup_steps);
  if (!finite) {
    r.skipped = true;
    ++skipped_total;
    ++consecutive_nonfinite;
    sharded->scale_gradients(0.0);
    if (consecutive_nonfinite >= opt.max_nonfinite_steps) {
      agree_on_errors(u.world(),
                      "the loss or the gradients were not finite in " + std::to_string(consecutive_nonfinite) +
                          " steps in a row (last: step " + std::to_string(step) + "); stopping. Lower --learning_rate, set "
                          "--grad_clip, or check the data with --check_finite_data",
                      kExitFailure);
    }
  } else {
    consecutive_nonfinite = 0;
    if (opt.grad_clip > 0 && r.grad_norm > opt.grad_clip) sharded->scale_gradients(opt.grad_clip / r.grad_norm);
    optimizer->step(r.lr);
  }
  const auto t_opt = Clock::now();
  trace.add("checks_and_optimizer", t_reduce, t_opt, step, u.rank());
  sharded->gather();
  trace.add("gather_parameters", t_opt, Clock::now(), step, u.rank());
  r.seconds = seconds_since(t0);
  return r;
}

Trainer::Trainer(const Options& options, Universe& universe, comm::ProcessGroups& groups)
    : impl_(std::make_unique<Impl>(options, universe, groups)) {
  Impl& d = *impl_;
  if (universe.device().kind == DeviceKind::kCuda) {
    d.device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(universe.device().index));
  }
  d.compute_dtype = options.precision == Precision::kBf16 || (options.precision == Precision::kAuto && d.device.is_cuda()) ? at::kBFloat16 : at::kFloat;
  if (d.compute_dtype == at::kFloat) {
    // fp32 means fp32: no TF32 in cuBLAS or cuDNN (the CPU's results must carry over to the GPU).
    at::globalContext().setAllowTF32CuBLAS(false);
    at::globalContext().setAllowTF32CuDNN(false);
  }
  d.run_dir = options.run_dir + "/" + options.run_name;
  std::string error;
  if (universe.rank() == 0) {
    std::error_code ec;
    std::filesystem::create_directories(d.run_dir, ec);
    if (ec) error = "cannot create the run directory '" + d.run_dir + "': " + ec.message();
    else std::ofstream(d.run_dir + "/config.ini") << to_ini(options);
  }
  agree_on_errors(universe.world(), broadcast_string(universe.world(), error));
  d.open_data();
  d.build_model();
  if (!options.profile_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(options.profile_dir, ec);
    d.trace.open(options.profile_dir + "/trace-rank" + std::to_string(universe.rank()) + ".json");
  }
  if (!options.resume.empty()) {
    std::string path = options.resume;
    if (path == "auto") {
      const auto latest = latest_checkpoint(d.run_dir + "/checkpoints");
      path = broadcast_string(universe.world(), latest.value_or(""));
    }
    if (path.empty()) {
      if (universe.rank() == 0) std::cout << "--resume auto: no complete checkpoint under " << d.run_dir << "/checkpoints; starting at step 0\n";
    } else {
      const CheckpointState st = read_checkpoint(path, *d.sharded, universe);
      d.sharded->gather();
      d.optimizer->set_steps(st.optimizer_steps);
      d.skipped_total = st.skipped_steps;
      d.start_step = st.next_step;
      if (universe.rank() == 0) std::cout << "resuming from " << path << " at step " << d.start_step << "\n" << std::flush;
    }
  }
}

int64_t Trainer::start_step() const { return impl_->start_step; }

std::string Trainer::save_checkpoint(int64_t next_step) {
  Impl& d = *impl_;
  return write_checkpoint(d.run_dir + "/checkpoints", CheckpointState{next_step, d.optimizer->steps(), d.skipped_total}, *d.sharded, d.u,
                          to_ini(d.opt), d.opt.keep_checkpoints);
}

Trainer::~Trainer() = default;
const std::string& Trainer::run_directory() const { return impl_->run_dir; }

StepResult Trainer::train_step(int64_t step) {
  Impl& d = *impl_;
  const data::HostBatch batch = d.dataset->read(d.sampler->batch(d.sampler->position_after(step)), d.layout);
  return d.step(step, batch, 0.0);
}

double Trainer::evaluate() {
  Impl& d = *impl_;
  c10::NoGradGuard no_grad;
  double local = 0, valid = 0;
  for (size_t i = 0; i < d.eval_batches.size(); ++i) {
    const data::HostBatch& b = d.eval_batches[i];
    // Per-sample normalisation happens after the sum: count this batch's elements of the valid samples.
    local += d.forward_backward(b, 0, false, d.eval_valid[i], 1.0);
    valid += static_cast<double>(d.eval_valid[i]) * static_cast<double>(b.latents.size(1) * b.frames * b.latents.size(3) * b.latents.size(4));
  }
  // Each valid element appears on cp ranks only through its own slice, so the element count is summed
  // over the data ranks (cp rank 0 of each group counts the whole sample).
  const std::vector<double> sums = d.global_sums({local, d.layout.cp_rank == 0 ? valid : 0.0});
  return sums[1] > 0 ? sums[0] / sums[1] : std::nan("");
}

model::TensorMap Trainer::weights() { return impl_->sharded->full_masters(); }

int Trainer::run() {
  Impl& d = *impl_;
  const bool root = d.u.rank() == 0;
  const int64_t steps = d.opt.max_steps;
  const data::Manifest& m = d.dataset->manifest();
  if (root) {
    std::cout << "training " << model::parameter_count(d.opt.model) / 1e6 << "M parameters for " << steps << " steps: "
              << d.sampler->steps_per_epoch() << " steps per epoch, global batch " << d.sampler->global_batch() << " (" << d.opt.batch_size
              << " per data rank x " << d.u.num_data_ranks() << "), " << c10::toString(d.compute_dtype) << " compute on "
              << d.device.str() << ", run directory " << d.run_dir << "\n";
    const parallel::ShardMemory mem = d.sharded->memory();
    std::cout << std::fixed << std::setprecision(2) << "sharded state per rank (1/" << d.u.mesh().shard_size() << "): masters "
              << mem.master_bytes / 1e6 << " MB, gradients " << mem.grad_bytes / 1e6 << " MB, Adam moments " << mem.optimizer_bytes / 1e6
              << " MB; gathered parameters " << mem.gathered_bytes / 1e6 << " MB\n" << std::defaultfloat << std::flush;
  }
  RunLog log(d.run_dir, root, d.opt.peak_tflops > 0 ? d.opt.peak_tflops : (d.device.is_cuda() ? 989.0 : 0.0), d.u.size());
  const int64_t epochs_cap = int64_t{d.opt.num_epochs} * d.sampler->steps_per_epoch();
  const int64_t last = std::min(steps, epochs_cap);
  if (d.start_step >= last) {
    if (root) std::cout << "nothing to do: the run is at step " << d.start_step << " of " << last << "\n";
    return kExitOk;
  }
  struct sigaction action{};
  action.sa_handler = on_stop_signal;
  sigaction(SIGUSR1, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  data::Prefetcher prefetcher(*d.dataset, *d.sampler, d.sampler->position_after(d.start_step), last - d.start_step, d.layout);
  const auto start = Clock::now();
  for (int64_t step = d.start_step; step < last; ++step) {
    const auto t_wait = Clock::now();
    const data::Prefetcher::Item item = prefetcher.next();
    d.trace.add("data_wait", t_wait, Clock::now(), step, d.u.rank());
    const StepResult r = d.step(step, item.batch, prefetcher.last_wait_seconds());
    const auto& bucket = m.buckets[static_cast<size_t>(item.batch.bucket)];
    const double samples = static_cast<double>(d.sampler->global_batch());
    const double tokens = samples * static_cast<double>((bucket.frames / d.opt.model.time_patch) * (bucket.height / d.opt.model.patch) *
                                                        (bucket.width / d.opt.model.patch));
    log.add_step(r.loss, r.seconds + r.data_wait, r.data_wait, samples, tokens,
                 samples * model::training_flops(d.opt.model, bucket.frames, bucket.height, bucket.width, m.text_tokens));
    const bool eval_now = d.opt.evaluate_every > 0 && ((step + 1) % d.opt.evaluate_every == 0 || step + 1 == last);
    std::optional<double> eval_loss;
    if (eval_now) eval_loss = evaluate();
    if ((step + 1) % d.opt.log_every == 0 || step + 1 == last || eval_now) {
      RunLog::Point point;
      point.step = step + 1;
      point.last_step = last;
      point.lr = r.lr;
      point.grad_norm = r.grad_norm;
      point.eta_seconds = seconds_since(start) / static_cast<double>(step + 1 - d.start_step) * static_cast<double>(last - step - 1);
      point.peak_memory_gb = peak_memory_gb(d.device);
      point.skipped = d.skipped_total;
      point.eval_loss = eval_loss;
      log.write(point);
    }
    const bool checkpoint_now = step + 1 == last || (d.opt.checkpoint_every > 0 ? (step + 1) % d.opt.checkpoint_every == 0 : eval_now);
    if (checkpoint_now || r.stop_requested) {
      const std::string where = save_checkpoint(step + 1);
      if (root) std::cout << "checkpoint " << where << "\n" << std::flush;
    }
    if (r.stop_requested) {
      if (root) {
        std::cout << "received signal (SIGUSR1 or SIGTERM on some rank): checkpoint written at step " << step + 1 << "; exiting with code " << kExitRequeue
                  << " so the job can be requeued (resume with --resume auto)\n" << std::flush;
      }
      return kExitRequeue;
    }
  }
  // The trained weights, with the reference's names, for the reference trainer and openvid_modelcheck.
  const model::TensorMap w = weights();
  std::string error;
  if (root) {
    try {
      model::write_safetensors(d.run_dir + "/model.safetensors", w, {{"producer", version_string()}, {"format", "pt"}});
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  agree_on_errors(d.u.world(), broadcast_string(d.u.world(), error), kExitFailure);
  if (root) {
    std::cout << "done in " << format_duration(seconds_since(start)) << ": weights " << d.run_dir << "/model.safetensors, metrics "
              << d.run_dir << "/metrics.jsonl, configuration " << d.run_dir << "/config.ini\n";
  }
  return kExitOk;
}

}  // namespace ov::train
