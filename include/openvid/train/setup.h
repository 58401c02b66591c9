#pragma once
// Setting a run up before its first step: where and in which precision each rank computes, the run
// directory, the data (with the synthetic dataset of --dataset fake) checked against the model and the
// layout, and the sharded model with its optimizer and initial weights. Every input check ends the job on
// every rank with one message (exit 2) before anything of the run is written.
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "openvid/comm/process_groups.h"
#include "openvid/train/batching.h"
#include "openvid/config/options.h"
#include "openvid/data/dataset.h"
#include "openvid/data/sampler.h"
#include "openvid/model/dit.h"
#include "openvid/parallel/sharded_model.h"
#include "openvid/runtime/universe.h"
#include "openvid/train/objective.h"
#include "openvid/train/optimizer.h"

namespace ov::train {

// Local: this rank's device and compute dtype (bf16 on GPUs unless --precision fp32). fp32 means fp32:
// TF32 is switched off in cuBLAS and cuDNN, so that the CPU's results carry over to the GPU.
struct ComputeSetup {
  at::Device device{at::kCPU};
  at::ScalarType dtype = at::kFloat;
};
ComputeSetup compute_setup(const Options& options, const Universe& universe);

// The data of a run: the dataset, the sampler, this rank's share of every read and the fixed evaluation
// batches (read once, before the prefetcher owns the dataset).
struct RunData {
  std::unique_ptr<data::Dataset> dataset;
  std::unique_ptr<data::Sampler> sampler;
  data::ReaderLayout layout;
  BucketBatches batches;  // each bucket's samples per data rank (--batch_size or --batch_tokens)
  std::vector<data::HostBatch> eval_batches;
};

// Everything a run reads, checked on every rank before any communicator but MPI's exists: the data (the
// synthetic dataset of --dataset fake written first), the names and shapes of --load_checkpoint's weights,
// the checkpoint --resume names, and that the run directory can be written. Only then is config.ini
// written: a relaunch with bad input leaves a finished run's directory as it was.
struct RunInputs {
  ComputeSetup compute;
  std::string run_dir;      // <run_dir>/<run_name>
  RunData data;
  std::string resume_from;  // the checkpoint to continue from; "" starts at step 0
};

// Local: throws InputError when dataset `path`'s manifest does not fit the model (channels, text width, the
// patch rule), naming the options to change.
void check_against_model(const data::Manifest& manifest, const ModelConfig& model, const std::string& path);

// Collective over the world (MPI only). Bad input ends the job on every rank with one message (exit 2).
RunInputs check_run_inputs(const Options& options, const Universe& universe);

// The model of a run on this rank: the DiT (context-parallel attention over the cp group), its sharded
// state over the shard and dp groups, and AdamW on this rank's slices.
struct RunModel {
  model::DiT model{nullptr};
  std::unique_ptr<parallel::ShardedModel> sharded;
  std::unique_ptr<AdamW> optimizer;
  std::string float8;  // --precision fp8: which block linears run in float8 (model::describe), else ""
};

// Collective over the world: builds the model from --seed, or from --load_checkpoint's weights.
RunModel build_run_model(const Options& options, comm::ProcessGroups& groups, const ComputeSetup& compute);

ObjectiveSettings objective_settings(const Options& options);

// What the parts of a running job (the step pipeline, the validator) read of it; the Trainer owns it all
// and outlives them.
struct RunContext {
  const Options& opt;
  const Universe& u;
  comm::ProcessGroups& groups;
  const ComputeSetup& compute;
  const RunData& data;
};

}  // namespace ov::train
