#pragma once
// Sharded data parallelism with ZeRO-2 semantics (SPEC.md "Parallelism"; DDP is the case of a shard group
// of one rank). The module's parameters are grouped in flat units (one per DiT block, one for the rest).
// Each rank of the shard group (fs*cp ranks) keeps the fp32 master copy, the gradient and the optimizer
// state of its 1/(fs*cp) slice of every unit; the module's parameters are views of gathered full
// buffers, kept from forward to backward (reshard_after_forward = false). After backward each unit's
// gradient is reduce-scattered (summed) over the shard group, then all-reduced (summed) over the dp group
// -- hybrid sharding. Losses are normalised by the global element count, so sums are the gradient.
//
// This version gathers and reduces unit by unit at the step's start and end (exact, simple); launching
// each unit's reduction while the rest of backward runs is the GPU-speed work that builds on it.
#include <torch/nn/module.h>

#include <string>
#include <vector>

#include "openvid/comm/communicator.h"
#include "openvid/model/safetensors.h"
#include "openvid/train/optimizer.h"

namespace ov::parallel {

struct ShardMemory {
  int64_t master_bytes = 0, grad_bytes = 0, optimizer_bytes = 0;  // this rank's sharded state
  int64_t gathered_bytes = 0;                                      // full-size compute buffers
};

class ShardedModel {
 public:
  // Collective over `shard` and `dp`: every rank passes a module initialised identically (fp32). Builds
  // the units, keeps this rank's fp32 master slices and points the module's parameters at the gathered
  // buffers, which hold `compute_dtype` (bf16 halves the gathers and the gathered memory; the module's
  // parameters then are bf16 views, gradients are reduced in fp32 into the fp32 slices).
  ShardedModel(torch::nn::Module& module, comm::Communicator& shard, comm::Communicator& dp,
               at::ScalarType compute_dtype = at::kFloat);

  // Collective over the shard group: all-gathers every unit's master, in the compute dtype, into the
  // module's parameters.
  void gather();

  // Collective over the shard group, then the dp group: sums the module's parameter gradients of all
  // ranks into this rank's gradient slices; clears the module's gradients (undefined gradients count 0).
  void reduce_gradients();

  // Overlapped form of reduce_gradients(): arm() before the last micro-batch's backward; every unit's
  // reduce-scatter is then launched from gradient hooks as soon as that unit's backward has produced all
  // its gradients (while the rest of backward runs); finish() after backward launches what is left,
  // completes the reductions (shard group, then dp group) and clears the module's gradients. Units whose
  // parameters got no gradient in the previous step are completed by finish() (the first step learns them).
  void arm();
  void finish();
  // Units of the last finish() whose reduction was launched from the hooks, during backward.
  int64_t units_launched_in_backward() const { return launched_in_backward_; }

  // Registers this rank's slices with `optimizer`, one segment per (unit slice x parameter) overlap, each
  // with the mup_adam rule of its parameter.
  void add_to_optimizer(train::AdamW& optimizer, double base_weight_decay);

  // Sum of squares of this rank's gradient slices (all-reduce over shard and dp for the global norm).
  double local_grad_norm_squared() const;
  void scale_gradients(double factor);
  bool gradients_finite() const;

  ShardMemory memory(int64_t optimizer_states_per_element = 2) const;

  // Collective over the shard group: the fp32 masters of every parameter, full size, by name.
  model::TensorMap full_masters();
  // Local: replaces this rank's master slices by the matching slices of `full` (name -> full tensor),
  // then gather() makes the module use them. Throws InputError listing every missing or mis-shaped name.
  void load_masters(const model::TensorMap& full, const std::string& source);

  // Local: this rank's optimizer moments, flat per unit ("<unit>.exp_avg", "<unit>.exp_avg_sq"), and the
  // geometry that lets another layout re-slice them (JSON: units, their parameters, offsets, padding).
  model::TensorMap optimizer_slices() const;
  std::string geometry_json() const;
  // Local: sets this rank's moments from the slices written by all `files.size()` shard ranks of some
  // earlier layout (in shard-rank order; any shard count). Throws InputError on a mismatch.
  void load_optimizer_slices(const std::vector<model::TensorMap>& files, const std::string& source);
  int64_t num_units() const { return static_cast<int64_t>(units_.size()); }

 private:
  struct Unit {
    std::string name;
    std::vector<std::string> names;
    std::vector<at::Tensor> params;  // the module's parameters (views of `full` after gather())
    std::vector<int64_t> offsets, numels;
    int64_t numel = 0, padded = 0, shard_numel = 0;
    at::Tensor master, grad;  // this rank's fp32 slice [shard_numel]
    at::Tensor exp_avg, exp_avg_sq;  // its Adam moments
    at::Tensor full;          // gathered [padded], compute dtype
  };
  void on_gradient(size_t unit, size_t param, const at::Tensor& grad);
  void launch(size_t unit);

  comm::Communicator& shard_;
  comm::Communicator& dp_;
  at::ScalarType compute_dtype_;
  std::vector<Unit> units_;
  bool armed_ = false;
  struct Pending {
    at::Tensor flat;                 // the unit's full gradient, filled by the hooks
    std::vector<bool> seen;          // which parameters' gradients arrived
    int64_t arrived = 0, expected = -1;  // expected: parameters with a gradient in the last step (-1: unknown)
    bool launched = false;
    comm::Work work;
  };
  std::vector<Pending> pending_;
  std::vector<size_t> launch_order_;
  int64_t launched_in_backward_ = 0;
};

}  // namespace ov::parallel
