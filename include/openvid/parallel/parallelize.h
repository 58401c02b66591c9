#pragma once
// The one place that applies a run's layout to a DiT from outside the model (after torchtitan's
// parallelize_*): context-parallel self-attention over the cp group, activation recomputation of every
// k-th block, and (training) sharding over the shard and dp groups (parallel/sharded_model.h). The model
// knows nothing of any of them. openvid_sample parallelizes without sharding.
#include <memory>

#include "openvid/comm/communicator.h"
#include "openvid/model/dit.h"
#include "openvid/parallel/sharded_model.h"

namespace ov::parallel {

struct Parallelism {
  comm::Communicator* cp = nullptr;  // the context-parallel group; null or a group of one: attention stays local
  int recompute_every = 0;           // recompute every k-th block's activations in backward (0: none, 1: all)
};

// Local: installs the layout's self-attention and block runner on `model`.
void parallelize(model::DiT& model, const Parallelism& parallelism);

// Collective over `shard` and `dp`: parallelize, then shard the module over the groups (every rank passes
// a model initialised identically). The returned sharded model must outlive every backward through it.
std::unique_ptr<ShardedModel> parallelize_and_shard(model::DiT& model, const Parallelism& parallelism, comm::Communicator& shard,
                                                    comm::Communicator& dp, const ShardingOptions& sharding);

}  // namespace ov::parallel
