#include "openvid/train/setup.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "openvid/data/synthetic.h"
#include "openvid/model/state_dict.h"
#include "openvid/parallel/cp_attention.h"
#include "openvid/parallel/shard_io.h"
#include "openvid/runtime/error.h"
#include "openvid/runtime/files.h"
#include "openvid/runtime/mpi_session.h"
#include "openvid/train/checkpoint.h"

namespace ov::train {

ComputeSetup compute_setup(const Options& options, const Universe& universe) {
  ComputeSetup c;
  if (universe.device().kind == DeviceKind::kCuda) c.device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(universe.device().index));
  const bool bf16 = options.precision == Precision::kBf16 || (options.precision == Precision::kAuto && c.device.is_cuda());
  c.dtype = bf16 ? at::kBFloat16 : at::kFloat;
  if (!bf16) {
    at::globalContext().setAllowTF32CuBLAS(false);
    at::globalContext().setAllowTF32CuDNN(false);
  }
  return c;
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
  const bool exists = broadcast_string(u.world(), std::filesystem::exists(spec.directory + "/" + data::kManifestName) ? "1" : "") == "1";
  if (!exists) {
    if (u.rank() == 0) {
      std::cout << "writing a synthetic dataset (" << opt.fake_samples << " samples of " << opt.fake_latent_shape << ") to "
                << spec.directory << "\n" << std::flush;
    }
    data::write_synthetic_dataset(u.world(), spec);
  }
  return spec.directory;
}

// The dataset's latents and text states must fit the model.
void check_against_model(const data::Manifest& m, const ModelConfig& model, const std::string& path) {
  if (m.latent_channels != model.in_channels || m.text_dim != model.text_dim) {
    throw InputError("dataset '" + path + "' holds " + std::to_string(m.latent_channels) + "-channel latents and " +
                     std::to_string(m.text_dim) + "-wide text states, the model expects " + std::to_string(model.in_channels) + " and " +
                     std::to_string(model.text_dim) + " (--model_in_channels, --model_text_dim)");
  }
  for (const auto& b : m.buckets) {
    if (b.height % model.patch != 0 || b.width % model.patch != 0) {
      throw InputError("bucket '" + b.name + "' has a latent of " + std::to_string(b.height) + "x" + std::to_string(b.width) +
                       ", not a multiple of --model_patch " + std::to_string(model.patch));
    }
  }
}

// The dataset at `path`, checked against the model and the layout, and the fixed evaluation batches.
RunData open_run_data(const Options& opt, const Universe& u, const std::string& path) {
  RunData d;
  d.dataset = data::Dataset::open(path, u.world(), data::DatasetOptions{opt.check_finite_data});
  const data::Manifest& m = d.dataset->manifest();
  d.layout = data::ReaderLayout{u.data_rank(), u.num_data_ranks(), u.coord().cp, u.mesh().cp(), opt.model.time_patch};
  all_ranks_check(u.world(), [&] {
    check_against_model(m, opt.model, path);
    d.dataset->check_layout(d.layout);
    std::vector<int64_t> counts;
    for (const auto& b : m.buckets) counts.push_back(b.count);
    d.sampler = std::make_unique<data::Sampler>(counts, static_cast<uint64_t>(opt.seed), int64_t{opt.batch_size} * u.num_data_ranks(),
                                                opt.heldout_fraction);
  });
  for (const data::GlobalBatch& gb : d.sampler->heldout_batches(opt.eval_batches)) {
    d.eval_batches.push_back(d.dataset->read(gb, d.layout));
    // Padded positions of the global batch are this rank's only if they fall in its share.
    const int64_t per_rank = opt.batch_size, first = int64_t{d.layout.data_rank} * per_rank;
    d.eval_valid.push_back(std::clamp<int64_t>(gb.valid - first, 0, per_rank));
  }
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
    make_run_directory(in.run_dir, u);
    in.data = open_run_data(opt, u, synthetic_dataset(opt, u, in.run_dir));
  } else {
    in.data = open_run_data(opt, u, opt.dataset);
    make_run_directory(in.run_dir, u);
  }
  root_check<std::exception>(u.world(), [&] { write_file_durably(in.run_dir + "/config.ini", to_ini(opt)); });
  return in;
}

RunModel build_run_model(const Options& opt, const Universe& u, comm::ProcessGroups& groups, const ComputeSetup& compute) {
  RunModel r;
  r.model = model::DiT(opt.model);
  r.model->initialize(static_cast<uint64_t>(opt.seed));
  r.model->to(compute.device);
  r.model->set_compute_dtype(compute.dtype);
  if (u.mesh().cp() > 1) r.model->set_self_attention(std::make_shared<parallel::CpSelfAttention>(groups.cp(), opt.model.registers));
  // One backward per step: the gradients are kept in the compute dtype when no rank sums into them.
  r.sharded = std::make_unique<parallel::ShardedModel>(*r.model, groups.shard(), groups.dp(),
                                                       parallel::ShardingOptions{compute.dtype, true, opt.grad_accum == 1});
  if (!opt.load_checkpoint.empty()) {  // names and shapes were checked by check_run_inputs
    parallel::load_masters(*r.sharded, model::read_weights(opt.load_checkpoint), opt.load_checkpoint);
    r.sharded->refresh_compute_copy();
  }
  r.optimizer = std::make_unique<AdamW>(AdamOptions{opt.adam_beta1, opt.adam_beta2, opt.adam_eps});
  add_shards(*r.optimizer, *r.sharded, opt.weight_decay);
  return r;
}

ObjectiveSettings objective_settings(const Options& opt) {
  return ObjectiveSettings{static_cast<uint64_t>(opt.seed), opt.timestep_shift, opt.caption_dropout, opt.model.patch,
                           opt.model.time_patch};
}

}  // namespace ov::train
