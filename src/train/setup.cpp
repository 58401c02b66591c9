#include "openvid/train/setup.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <filesystem>
#include <iostream>

#include "openvid/data/synthetic.h"
#include "openvid/parallel/cp_attention.h"
#include "openvid/parallel/shard_io.h"
#include "openvid/runtime/error.h"
#include "openvid/runtime/mpi_session.h"

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

std::string make_run_directory(const Options& options, const Universe& universe) {
  const std::string dir = options.run_dir + "/" + options.run_name;
  root_check(universe.world(), [&] {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw InputError("cannot create the run directory '" + dir + "': " + ec.message());
  });
  return dir;
}

namespace {

// --dataset fake: the synthetic dataset of the fake_* options in the run directory, written on first use.
std::string synthetic_dataset(const Options& opt, const Universe& u, const std::string& run_dir) {
  data::SyntheticSpec spec;
  all_ranks_check(u.world(), [&] { spec.shapes = {data::parse_latent_shape(opt.fake_latent_shape, "--fake_latent_shape")}; });
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

}  // namespace

RunData open_run_data(const Options& opt, const Universe& u, const std::string& run_dir) {
  all_ranks_check(u.world(), [&] {
    if (opt.dataset.empty()) throw InputError("no dataset: pass --dataset PATH (a dataset.json or its directory) or --dataset fake");
  });
  const std::string path = opt.dataset == "fake" ? synthetic_dataset(opt, u, run_dir) : opt.dataset;
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

RunModel build_run_model(const Options& opt, const Universe& u, comm::ProcessGroups& groups, const ComputeSetup& compute) {
  RunModel r;
  r.model = model::DiT(opt.model);
  r.model->initialize(static_cast<uint64_t>(opt.seed));
  r.model->to(compute.device);
  r.model->set_compute_dtype(compute.dtype);
  if (u.mesh().cp() > 1) r.model->set_self_attention(std::make_shared<parallel::CpSelfAttention>(groups.cp(), opt.model.registers));
  r.sharded = std::make_unique<parallel::ShardedModel>(*r.model, groups.shard(), groups.dp(), parallel::ShardingOptions{compute.dtype});
  if (!opt.load_checkpoint.empty()) {
    all_ranks_check(u.world(), [&] { parallel::load_masters(*r.sharded, model::read_weights(opt.load_checkpoint), opt.load_checkpoint); });
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
