#pragma once
// What a run learns about its model between steps, from the fixed held-out batches (after torchtitan's
// validator): the held-out loss, and samples drawn for the held-out texts with the rectified-flow sampler
// that openvid_sample uses too (model/sampler.h), written with their pictures and videos (video/render.h).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "openvid/comm/process_groups.h"
#include "openvid/config/options.h"
#include "openvid/model/dit.h"
#include "openvid/runtime/universe.h"
#include "openvid/train/objective.h"
#include "openvid/train/setup.h"
#include "openvid/video/latent_codec.h"

namespace ov::train {

// Local: the loss of samples [first, first + count) of `batch` through `model` (make_flow_batch, the
// forward over this rank's tokens, flow_loss normalised by `global_elements`), on the batch's device.
at::Tensor batch_loss(model::DiT& model, const data::DeviceBatch& batch, int64_t first, int64_t count, int64_t step, int64_t valid,
                      double global_elements, const ObjectiveSettings& settings);

class Validator {
 public:
  // Collective over the world: with --sample_every and --sample_decoder rank 0 loads the decoder now, so
  // that a bad one ends the job at the start rather than at the first samples. What `run` refers to must
  // outlive it.
  Validator(const RunContext& run, model::DiT model, std::string run_dir);

  // Collective over the world: the held-out loss over the fixed evaluation batches (fixed timesteps and
  // noise, RoPE offset 0); nan without held-out samples. by_bucket() then holds each evaluated bucket's.
  double loss();
  const std::vector<std::pair<std::string, double>>& by_bucket() const { return by_bucket_; }

  // Collective (rank 0 samples while the others wait at the next step): latents for the first --sample_count
  // held-out text states from fixed noise (the same every time), written with their sample ids to
  // RUN_DIR/samples/step_<8 digits>.safetensors; with --sample_decoder also one MP4 file per sample and their
  // contact sheet (step_<8 digits>.png). Returns, on rank 0, the latents' path and the sheet (PNG bytes, size).
  struct Samples {
    std::string path, png;
    int width = 0, height = 0;
  };
  Samples draw_samples(int64_t done);

 private:
  RunContext run_;
  model::DiT model_;
  std::string run_dir_;
  ObjectiveSettings objective_;
  std::optional<video::LatentCodec> decoder_;  // rank 0, with --sample_decoder
  std::vector<std::pair<std::string, double>> by_bucket_;  // the last loss()'s, by bucket name
};

}  // namespace ov::train
