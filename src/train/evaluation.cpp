#include "openvid/train/evaluation.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <vector>

#include "openvid/comm/host_copy.h"
#include "openvid/model/safetensors.h"
#include "openvid/model/sampler.h"
#include "openvid/runtime/error.h"
#include "openvid/runtime/mpi_session.h"
#include "openvid/video/render.h"

namespace ov::train {

at::Tensor batch_loss(model::DiT& model, const data::DeviceBatch& batch, int64_t first, int64_t count, int64_t step, int64_t valid,
                      double global_elements, const ObjectiveSettings& settings) {
  const FlowBatch fb = make_flow_batch(batch, first, count, step, valid, settings);
  const at::Tensor pred = model->forward_window(fb.x_t, fb.text, fb.t, fb.window);
  return flow_loss(pred * fb.weight, fb.target * fb.weight, global_elements);
}

Validator::Validator(const RunContext& run, model::DiT model, std::string run_dir)
    : run_(run), model_(std::move(model)), run_dir_(std::move(run_dir)), objective_(objective_settings(run.opt)) {
  const Options& o = run.opt;
  if (o.sample_every > 0 && !o.sample_decoder.empty()) {
    root_check(run.u.world(), [&] {
      decoder_.emplace(o.sample_decoder, video::LatentCodec::Part::kDecoder,
                       video::Compression{o.sample_temporal_compression, o.sample_spatial_compression}, run.compute.device, run.compute.dtype);
      if (!run.data.eval_batches.empty()) {  // one latent of the samples' shape, before any step
        const data::HostBatch& b = run.data.eval_batches.front();
        decoder_->check(b.frames, b.latents.size(3), b.latents.size(4), o.model.in_channels);
      }
    });
  }
}

double Validator::loss() {
  c10::NoGradGuard no_grad;
  // Per bucket, the sum of squared errors and the element count of the valid samples (normalised after the
  // sums: each valid element appears on cp ranks only through its own slice, so the count is summed over the
  // data ranks, cp rank 0 of each group counting the whole sample).
  const auto& buckets = run_.data.dataset->manifest().buckets;
  const auto nb = static_cast<int64_t>(buckets.size());
  at::Tensor sums = at::zeros({2 * nb}, at::TensorOptions().dtype(at::kDouble).device(run_.compute.device));
  std::vector<double> counts(static_cast<size_t>(2 * nb), 0.0);  // the element counts, in the odd places
  for (const data::HostBatch& host : run_.data.eval_batches) {
    const data::DeviceBatch b = data::to_device(host, run_.compute.device, at::kFloat);
    sums.narrow(0, 2 * host.bucket, 1) += batch_loss(model_, b, 0, static_cast<int64_t>(b.samples.size()), kEvalStep, host.valid, 1.0, objective_);
    if (run_.data.layout.cp_rank == 0) {
      counts[static_cast<size_t>(2 * host.bucket + 1)] +=
          static_cast<double>(host.valid) * static_cast<double>(host.latents.size(1) * host.frames * host.latents.size(3) * host.latents.size(4));
    }
  }
  sums += at::tensor(counts, at::kDouble).to(sums.device());
  run_.groups.world().all_reduce(sums, comm::ReduceOp::kSum).wait();
  const at::Tensor s = comm::to_host(sums).view({nb, 2});
  by_bucket_.clear();
  double total = 0, elements = 0;
  for (int64_t k = 0; k < nb; ++k) {
    const double sse = s[k][0].item<double>(), n = s[k][1].item<double>();
    if (n == 0) continue;
    by_bucket_.emplace_back(buckets[static_cast<size_t>(k)].name, sse / n);
    total += sse;
    elements += n;
  }
  return elements > 0 ? total / elements : std::nan("");
}

Validator::Samples Validator::draw_samples(int64_t done) {
  Samples out;
  std::string& path = out.path;
  // Rank 0 alone: with --cp 1 its gathered parameters are the whole model, and its first held-out batch is fixed.
  root_check<std::exception>(
      run_.u.world(),
      [&] {
        OV_CHECK(!run_.data.eval_batches.empty(), "--sample_every without held-out batches");
        const data::HostBatch& host = run_.data.eval_batches.front();
        const int64_t n = std::min<int64_t>(run_.opt.sample_count, static_cast<int64_t>(host.samples.size()));
        const at::Tensor text = host.text.narrow(0, 0, n).to(run_.compute.device, at::kFloat);
        // The same noise every time: drawn on the CPU from the run's seed alone.
        at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(run_.opt.seed) + 0x5a3d1e);
        const at::Tensor noise = at::normal(0.0, 1.0, {n, host.latents.size(1), host.frames, host.latents.size(3), host.latents.size(4)}, gen);
        model::SamplerOptions so;
        so.steps = run_.opt.sample_steps;
        so.guidance = run_.opt.sample_guidance;
        so.shift = run_.opt.timestep_shift;
        const at::Tensor latents = model::sample_latents(model_, noise.to(run_.compute.device), text, so).cpu();
        std::vector<int64_t> ids(host.samples.begin(), host.samples.begin() + n);
        std::filesystem::create_directories(run_dir_ + "/samples");
        const std::string digits = std::to_string(done);
        path = run_dir_ + "/samples/step_" + std::string(digits.size() < 8 ? 8 - digits.size() : 0, '0') + digits + ".safetensors";
        model::write_safetensors(path, {{"latents", latents}, {"text_states", text.cpu()}, {"sample_ids", at::tensor(ids, at::kLong)}},
                                 {{"producer", version_string()}, {"step", digits}, {"steps", std::to_string(so.steps)},
                                  {"guidance", std::to_string(so.guidance)}, {"bucket", std::to_string(host.bucket)}});
        if (decoder_) {  // pictures and videos of the samples (video/render.h)
          const data::Manifest& man = run_.data.dataset->manifest();
          const std::string stem = path.substr(0, path.size() - std::string(".safetensors").size());
          const video::RenderedSheet sheet = video::render_samples(*decoder_, latents, video::RenderOptions{man.latent_scale, man.latent_shift},
                                                                   [&](int64_t i) { return stem + "_" + std::to_string(i) + ".mp4"; });
          out.png = sheet.png;
          out.width = sheet.width;
          out.height = sheet.height;
          std::ofstream(stem + ".png", std::ios::binary) << out.png;
        }
      },
      kExitFailure);
  return out;
}

}  // namespace ov::train
