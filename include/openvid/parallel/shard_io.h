#pragma once
// Moving a sharded model's state to and from files: full-size fp32 weights by name (checkpoints, the
// export, --load_checkpoint) and the flat Adam moments of each rank's slices with the geometry that lets
// any other layout re-slice them.
#include <functional>
#include <string>
#include <vector>

#include "openvid/model/safetensors.h"
#include "openvid/model/safetensors_writer.h"
#include "openvid/parallel/sharded_model.h"

namespace ov::parallel {

// Which fp32 weights of the shards: the masters, or their moving average (ShardedModel::enable_ema).
enum class Weights { kMasters, kEma };

// Collective over the shard group: the fp32 masters (or their moving average) of every parameter, full
// size, one unit at a time: a unit is all-gathered into one buffer, `sink` sees each of its parameters (a
// view of that buffer, on the model's device), and the buffer is released before the next unit's gather.
// Memory beyond the shards: one unit. Checkpoints and the export write through it (train/checkpoint.h).
void for_each_full_weight(const ShardedModel& model, Weights which, const std::function<void(const std::string&, const at::Tensor&)>& sink);
// Local: every parameter's name, fp32 dtype and full shape (a SafetensorsWriter's entries).
model::TensorSpecs weight_specs(const ShardedModel& model);
// Collective over the shard group: every parameter's full weights, by name, all at once (the whole model in
// memory: for tests and small models; files are written with for_each_full_weight).
model::TensorMap full_masters(const ShardedModel& model, Weights which = Weights::kMasters);

// Local: replaces this rank's master slices by the weights at `path` (a safetensors file, a sharded set or
// a checkpoint directory; see model::read_weights), reading only the elements of its slices; then
// refresh_compute_copy() makes the module use them. Throws InputError (model::check_weights) first.
void load_masters(ShardedModel& model, const std::string& path, const std::string& source, Weights which = Weights::kMasters);

// Local: this rank's Adam moments, flat per unit ("<unit>.exp_avg", "<unit>.exp_avg_sq"), and the geometry
// (JSON: the shard count, the units with their parameters' offsets and sizes).
model::TensorMap optimizer_slices(const ShardedModel& model);
std::string geometry_json(const ShardedModel& model);

// Local: sets this rank's moments from the optimizer files written by every shard rank of some layout (in
// shard-rank order; the first holds that layout's geometry): each parameter's moments are found by name
// wherever that layout put them, and only the parts of the files that this rank's slices need are read.
// Throws InputError on a mismatch.
void load_optimizer(ShardedModel& model, const std::vector<std::string>& files, const std::string& source);

}  // namespace ov::parallel
