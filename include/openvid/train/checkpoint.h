#pragma once
// Checkpoints of a run: <run>/checkpoints/step_<8 digits>/ with
//   model.safetensors              the fp32 masters, full size, with the reference's names (also the export)
//   optimizer-<r>-of-<S>.safetensors  Adam moments of shard rank r, flat per unit, with the unit geometry
//   trainer.json                   next step, optimizer steps, skipped steps, the layout, the options and the
//                                  sampler's state (the epoch and the samples of each bucket it has taken)
//   COMPLETE                       written last; a directory without it is ignored
// Written by all ranks in parallel into step_<n>.tmp, then renamed and marked complete by rank 0, so a
// crash at any point leaves the previous checkpoint intact. Only the newest keep_checkpoints complete
// ones are kept. A checkpoint loads on any layout: the masters are full and the moments are re-sliced.
#include <optional>
#include <string>

#include "openvid/config/model_config.h"
#include "openvid/data/sampler.h"
#include "openvid/parallel/shard_io.h"
#include "openvid/parallel/sharded_model.h"
#include "openvid/runtime/universe.h"

namespace ov::train {

struct CheckpointState {
  int64_t next_step = 0;        // the first step still to run
  int64_t optimizer_steps = 0;  // AdamW's step count (bias correction)
  int64_t skipped_steps = 0;
  int shard_files = 0;          // the writing layout's shard group size
  int data_ranks = 0;           // the writing layout's dp * fs (0: not recorded)
  std::string options_ini;      // the writing run's options (to_ini)
  bool has_ema = false;         // the checkpoint holds the weights' moving average (ema.safetensors)
  std::optional<data::SamplerState> sampler;  // where the data order stands (absent: written by an older version)
};

// Local: checks the checkpoint at `path` without loading its tensors: complete, an openvid trainer.json,
// weights whose names and shapes fit `model`, every optimizer file there. Throws InputError naming the
// problem; returns the trainer state.
CheckpointState check_checkpoint(const std::string& path, const ModelConfig& model);

// Local: the newest complete checkpoint directory under `checkpoints_dir`, if any.
std::optional<std::string> latest_checkpoint(const std::string& checkpoints_dir);

// Collective over the world: rank 0 writes the full fp32 weights (masters or their moving average) to the
// safetensors file `path` (the reference's names, the same bytes as model::write_safetensors of
// parallel::full_masters), gathered over its shard group one unit at a time: no rank holds more than one
// unit beyond its shards. The other replicas only wait. Returns rank 0's I/O error ("" if none) on rank 0,
// "" elsewhere: the caller agrees on it (every rank of shard group 0 stays in the gathers to the end).
std::string write_full_weights(const std::string& path, const parallel::ShardedModel& model, parallel::Weights which,
                               const model::Metadata& metadata, const Universe& universe);

// Collective over the world: the run's export, RUN_DIR/model.safetensors, and with the moving average
// RUN_DIR/ema.safetensors (its decay in the metadata), by write_full_weights; an I/O error ends the job on
// every rank with one message (exit 1).
void write_export(const std::string& run_dir, const parallel::ShardedModel& model, double ema_decay, const Universe& universe);

// Collective over the world. Returns the directory written.
std::string write_checkpoint(const std::string& checkpoints_dir, const CheckpointState& state, parallel::ShardedModel& model,
                             const Universe& universe, const std::string& options_ini, int keep);

// Collective over the world: loads masters and moments into `model` (call refresh_compute_copy() after)
// and returns the trainer state. Bad or incomplete checkpoints end the job on every rank with one message.
CheckpointState read_checkpoint(const std::string& path, parallel::ShardedModel& model, const Universe& universe);

}  // namespace ov::train
