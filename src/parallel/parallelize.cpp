#include "openvid/parallel/parallelize.h"

#include <memory>

#include "openvid/model/recompute.h"
#include "openvid/parallel/cp_attention.h"

namespace ov::parallel {

void parallelize(model::DiT& model, const Parallelism& p) {
  if (p.cp != nullptr && p.cp->size() > 1) {
    model->set_self_attention(std::make_shared<CpSelfAttention>(*p.cp, model->config().registers));
  }
  model->set_block_runner(model::recompute_every(p.recompute_every));
}

std::unique_ptr<ShardedModel> parallelize_and_shard(model::DiT& model, const Parallelism& p, comm::Communicator& shard,
                                                    comm::Communicator& dp, const ShardingOptions& sharding) {
  parallelize(model, p);
  return std::make_unique<ShardedModel>(*model, shard, dp, sharding);
}

}  // namespace ov::parallel
