#pragma once
// The one place that applies a run's layout to a DiT from outside the model (after torchtitan's
// parallelize_*): context-parallel self-attention over the cp group, and activation recomputation of
// every k-th block. The model knows nothing of either. Sharding (parallel/sharded_model.h) then wraps the
// parallelized module in training; openvid_sample parallelizes without sharding.
#include "openvid/comm/communicator.h"
#include "openvid/model/dit.h"

namespace ov::parallel {

struct Parallelism {
  comm::Communicator* cp = nullptr;  // the context-parallel group; null or a group of one: attention stays local
  int recompute_every = 0;           // recompute every k-th block's activations in backward (0: none, 1: all)
};

// Local: installs the layout's self-attention and block runner on `model` (before ShardedModel wraps it).
void parallelize(model::DiT& model, const Parallelism& parallelism);

}  // namespace ov::parallel
