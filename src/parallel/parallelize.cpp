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

}  // namespace ov::parallel
