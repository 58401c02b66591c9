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
  auto sharded = std::make_unique<ShardedModel>(*model, shard, dp, sharding);
  // Each block first waits for its own units' gather (ShardedModel::gather_async at a step's end), so that
  // the gathers of later blocks run behind the computation of earlier ones.
  ShardedModel* s = sharded.get();
  model->set_block_runner([s, inner = model->block_runner()](model::BlockImpl& block, const at::Tensor& x, const at::Tensor& c,
                                                              const at::Tensor& text, const at::Tensor& v0, const model::BlockContext& ctx) {
    s->wait_gathered_block(block.index());
    return inner ? inner(block, x, c, text, v0, ctx) : block.forward(x, c, text, v0, ctx);
  });
  return sharded;
}

}  // namespace ov::parallel
