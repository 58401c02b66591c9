#include "openvid/train/setup.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <set>
#include <iostream>
#include <nlohmann/json.hpp>

#include "openvid/data/manifest.h"
#include "openvid/data/synthetic.h"
#include "openvid/model/float8_conversion.h"
#include "openvid/model/state_dict.h"
#include "openvid/parallel/parallelize.h"
#include "openvid/parallel/shard_io.h"
#include "openvid/runtime/error.h"
#include "openvid/runtime/files.h"
#include "openvid/runtime/mpi_session.h"
#include "openvid/train/checkpoint.h"

namespace ov::train {

ComputeSetup compute_setup(const Options& options, const Universe& universe) {
  ComputeSetup c;
  if (universe.device().kind == DeviceKind::kCuda) c.device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(universe.device().index));
  c.dtype = compute_dtype(options.precision, universe.device());
  all_ranks_check(universe.world(), [&] {
    const std::string unsupported = options.precision == Precision::kFp8 ? model::float8_unsupported(c.device) : "";
    if (!unsupported.empty()) throw InputError(unsupported);
  });
  if (c.dtype != at::kBFloat16) {
    at::globalContext().setAllowTF32CuBLAS(false);
    at::globalContext().setAllowTF32CuDNN(false);
  }
  if (options.deterministic) {
    // Before the first cuBLAS call: cuBLAS is repeatable with a fixed workspace configuration (ATen checks it
    // under deterministic algorithms). Deterministic algorithms make ATen's flash-attention backward sum dQ
    // without atomics, which it does only when they are strict (warn-only mode keeps the atomics and warns); an
    // op without a deterministic kernel then stops the step with ATen's error naming it.
    setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", 0);
    at::globalContext().setDeterministicAlgorithms(true, /*warn_only=*/false);
    at::globalContext().setDeterministicCuDNN(true);
    at::globalContext().setBenchmarkCuDNN(false);
  }
  return c;
}

void check_against_model(const data::Manifest& m, const ModelConfig& model, const std::string& path) {
  if (m.latent_channels != model.in_channels || m.text_dim != model.text_dim) {
    throw InputError("dataset '" + path + "' holds " + std::to_string(m.latent_channels) + "-channel latents and " +
                     std::to_string(m.text_dim) + "-wide text states, the model expects " + std::to_string(model.in_channels) + " and " +
                     std::to_string(model.text_dim) + " (--model_in_channels, --model_text_dim)");
  }
  std::vector<std::array<int64_t, 3>> shapes;
  for (const auto& b : m.buckets) shapes.push_back({b.frames, b.height, b.width});
  const data::PatchMisfits misfits = data::patch_misfits(shapes, model.patch, model.time_patch);
  const std::string tp = std::to_string(model.time_patch), sp = std::to_string(model.patch);
  if (!misfits.time.empty()) {
    throw InputError("the model's time patch (--model_time_patch " + tp + ": a video token spans " + tp +
                     " latent frames) does not divide the latent frames of dataset '" + path + "' bucket(s) " + misfits.time +
                     ": preprocess those clips to a multiple of " + tp + " latent frames, or train with a --model_time_patch dividing "
                     "every bucket's frames (1 always does)");
  }
  if (!misfits.space.empty()) {
    throw InputError("the model's patch (--model_patch " + sp + ") does not divide the latent height and width of dataset '" + path +
                     "' bucket(s) " + misfits.space + ": preprocess those clips to multiples of " + sp +
                     " latent pixels, or train with a --model_patch dividing every bucket's height and width");
  }
}

namespace {

// --dataset fake: the synthetic dataset of the fake_* options in the run directory, written on first use.
std::string synthetic_dataset(const Options& opt, const Universe& u, const std::string& run_dir) {
  data::SyntheticSpec spec;
  spec.shapes = {data::parse_latent_shape(opt.fake_latent_shape, "--fake_latent_shape")};
  spec.directory = run_dir + "/fake_data";
  spec.samples_per_bucket = opt.fake_samples;
  spec.channels = opt.model.in_channels;
  spec.text_tokens = opt.fake_text_tokens;
  spec.text_dim = opt.model.text_dim;
  spec.seed = static_cast<uint64_t>(opt.seed);
  // The options it was written with, beside it: data written with other options is written anew.
  const nlohmann::json written_with = {{"samples", opt.fake_samples},         {"latent_shape", opt.fake_latent_shape},
                                       {"text_tokens", opt.fake_text_tokens}, {"channels", opt.model.in_channels},
                                       {"text_dim", opt.model.text_dim},      {"seed", opt.seed}};
  const std::string stamp = spec.directory + "/written_with.json";
  std::string state;  // "" current, else why it is (re)written
  root_check(u.world(), [&] {
    if (!std::filesystem::exists(spec.directory + "/" + data::kManifestName)) {
      state = "writing a synthetic dataset";
      return;
    }
    std::ifstream in(stamp);
    const nlohmann::json on_disk = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (on_disk == written_with) return;
    state = "the synthetic dataset in " + spec.directory + " was written with other --fake_* options (" +
            (on_disk.is_discarded() ? std::string("unrecorded") : on_disk.dump()) + "); writing it anew";
    std::error_code ec;
    std::filesystem::remove_all(spec.directory, ec);
    if (ec) throw InputError("cannot remove the outdated synthetic dataset '" + spec.directory + "': " + ec.message());
  });
  state = broadcast_string(u.world(), state);
  if (!state.empty()) {
    if (u.rank() == 0) {
      std::cout << state << " (" << opt.fake_samples << " samples of " << opt.fake_latent_shape << ") to " << spec.directory << "\n"
                << std::flush;
    }
    data::write_synthetic_dataset(u.world(), spec);
    root_check<std::exception>(u.world(), [&] { write_file_durably(stamp, written_with.dump(2) + "\n"); }, kExitFailure);
  }
  return spec.directory;
}

// The dataset's latents and text states must fit the model.

// The dataset at `path`, checked against the model and the layout, and the fixed evaluation batches.

RunData open_run_data(const Options& opt, const Universe& u, const std::string& path) {
  RunData d;
  d.dataset = data::Dataset::open(path, u.world(), data::DatasetOptions{opt.check_finite_data});
  const data::Manifest& m = d.dataset->manifest();
  d.layout = data::ReaderLayout{u.data_rank(), u.num_data_ranks(), u.coord().cp, u.mesh().cp(), opt.model.time_patch};
  all_ranks_check(u.world(), [&] {
    check_against_model(m, opt.model, path);
    d.dataset->check_layout(d.layout);
    std::vector<int64_t> counts, global;
    for (const auto& b : m.buckets) counts.push_back(b.count);
    d.batches = bucket_batches(opt, m);
    for (int64_t n : d.batches.per_rank) global.push_back(n * u.num_data_ranks());
    d.sampler = std::make_unique<data::Sampler>(counts, static_cast<uint64_t>(opt.seed), global, opt.heldout_fraction, opt.drop_remainder);
  });
  for (const data::GlobalBatch& gb : d.sampler->heldout_batches(opt.eval_batches)) d.eval_batches.push_back(d.dataset->read(gb, d.layout));
  return d;
}

// Rank 0 creates the run directory and proves it writable (a probe file, removed again).
void make_run_directory(const std::string& dir, const Universe& u) {
  root_check(u.world(), [&] {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw InputError("cannot create the run directory '" + dir + "': " + ec.message() + " (check --run_dir)");
    const std::filesystem::path probe = std::filesystem::path(dir) / ".openvid-write-probe";
    if (!std::ofstream(probe) || !std::filesystem::remove(probe, ec)) {
      throw InputError("the run directory '" + dir + "' is not writable (check --run_dir and its permissions)");
    }
  });
}

// What an earlier run left in `dir` (its checkpoints, metrics, exported weights), as a short list; "" if
// nothing. config.ini and fake_data alone are no run: a start that failed before step 1 leaves them.
std::string earlier_run_files(const std::filesystem::path& dir) {
  std::vector<std::string> found;
  std::error_code ec;
  if (const auto latest = latest_checkpoint((dir / "checkpoints").string())) {
    found.push_back("checkpoints up to " + std::filesystem::path(*latest).filename().string());
  } else if (std::filesystem::is_directory(dir / "checkpoints", ec) && !std::filesystem::is_empty(dir / "checkpoints", ec)) {
    found.push_back("incomplete checkpoints");
  }
  for (const char* name : {"metrics.jsonl", "model.safetensors"}) {
    if (std::filesystem::exists(dir / name, ec)) found.push_back(name);
  }
  std::string list;
  for (const std::string& f : found) list += (list.empty() ? "" : ", ") + f;
  return list;
}

// A free name beside `dir`: <dir>.replaced-<UTC time>[-k].
std::filesystem::path aside_path(const std::filesystem::path& dir) {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &utc);
  std::filesystem::path aside = dir.string() + ".replaced-" + stamp;
  for (int k = 2; std::filesystem::exists(aside); ++k) aside = dir.string() + ".replaced-" + stamp + "-" + std::to_string(k);
  return aside;
}

// A run starts in a directory of its own: an earlier run's files there are continued (--resume), moved
// aside (--start_over) or refused, never mixed with the new run's.
void claim_run_directory(const Options& opt, const Universe& u, const std::string& run_dir) {
  if (!opt.resume.empty()) return;
  root_check(u.world(), [&] {
    const std::string files = earlier_run_files(run_dir);
    if (files.empty()) return;
    if (!opt.start_over) {
      throw InputError("the run directory '" + run_dir + "' holds an earlier run (" + files +
                       "): continue it with --resume auto, start it over with --start_over (its files are moved aside, not "
                       "deleted), or choose another --run_name");
    }
    const std::filesystem::path aside = aside_path(run_dir);
    std::error_code ec;
    std::filesystem::rename(run_dir, aside, ec);
    if (ec) throw InputError("--start_over: cannot move '" + run_dir + "' to '" + aside.string() + "': " + ec.message());
    std::cout << "--start_over: moved the earlier run's files from " << run_dir << " to " << aside.string() << "\n" << std::flush;
  });
}

}  // namespace

RunInputs check_run_inputs(const Options& opt, const Universe& u) {
  RunInputs in;
  in.compute = compute_setup(opt, u);
  in.run_dir = opt.run_dir + "/" + opt.run_name;
  const bool fake = opt.dataset == "fake";
  all_ranks_check(u.world(), [&] {
    if (opt.dataset.empty()) throw InputError("no dataset: pass --dataset PATH (a dataset.json or its directory) or --dataset fake");
    if (fake) data::parse_latent_shape(opt.fake_latent_shape, "--fake_latent_shape");
    if (!opt.load_checkpoint.empty()) {
      model::check_weights(model::read_weights(opt.load_checkpoint, model::Read::kHeader), model::parameter_shapes(opt.model),
                           opt.load_checkpoint);
    }
  });
  if (!opt.resume.empty()) {
    in.resume_from = opt.resume == "auto" ? broadcast_string(u.world(), latest_checkpoint(in.run_dir + "/checkpoints").value_or(""))
                                          : opt.resume;
    if (!in.resume_from.empty()) all_ranks_check(u.world(), [&] { check_checkpoint(in.resume_from, opt.model); });
  }
  if (fake) {
    claim_run_directory(opt, u, in.run_dir);
    make_run_directory(in.run_dir, u);
    in.data = open_run_data(opt, u, synthetic_dataset(opt, u, in.run_dir));
  } else {
    in.data = open_run_data(opt, u, opt.dataset);
    claim_run_directory(opt, u, in.run_dir);
    make_run_directory(in.run_dir, u);
  }
  root_check<std::exception>(u.world(), [&] { write_file_durably(in.run_dir + "/config.ini", to_ini(opt)); });
  return in;
}

RunModel build_run_model(const Options& opt, comm::ProcessGroups& groups, const ComputeSetup& compute) {
  RunModel r;
  r.model = model::DiT(opt.model);
  r.model->initialize(static_cast<uint64_t>(opt.seed));
  r.model->to(compute.device);
  r.model->set_compute_dtype(compute.dtype);
  // One backward per step: the gradients are kept in the compute dtype when no rank sums into them.
  parallel::ShardingOptions sharding{compute.dtype, true, opt.grad_accum == 1};
  if (opt.precision == Precision::kFp8) {
    const model::Float8Conversion conversion = model::convert_to_float8(r.model, opt.fp8_min_features, opt.fp8_recipe);
    r.float8 = model::describe(conversion);
    if (groups.shard().size() > 1 && !conversion.weights.empty()) {
      r.float8 += "; the shard group gathers their weights as float8 e4m3";
      const std::set<std::string> gathered(conversion.weights.begin(), conversion.weights.end());
      sharding.float8_gather = [gathered](const std::string& name) { return gathered.count(name) > 0; };
    }
  }
  r.sharded = parallel::parallelize_and_shard(r.model, parallel::Parallelism{&groups.cp(), opt.model.recompute_every}, groups.shard(),
                                              groups.dp(), sharding);
  if (!opt.load_checkpoint.empty()) {  // names and shapes were checked by check_run_inputs
    parallel::load_masters(*r.sharded, opt.load_checkpoint, opt.load_checkpoint);
    r.sharded->refresh_compute_copy();
  }
  if (opt.ema_decay > 0) r.sharded->enable_ema();  // from the initial (or loaded) weights
  r.optimizer = std::make_unique<AdamW>(AdamOptions{opt.adam_beta1, opt.adam_beta2, opt.adam_eps});
  add_shards(*r.optimizer, *r.sharded, opt.weight_decay);
  return r;
}

ObjectiveSettings objective_settings(const Options& opt) {
  return ObjectiveSettings{static_cast<uint64_t>(opt.seed), opt.timestep_shift, opt.caption_dropout, opt.model.patch,
                           opt.model.time_patch};
}

}  // namespace ov::train
