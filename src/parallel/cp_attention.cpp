#include "openvid/parallel/cp_attention.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>

namespace ov::parallel {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// [B, h, n, d] <-> token-major [n, B, h, d], so each rank's tokens are one contiguous block.
at::Tensor token_major(const at::Tensor& x) { return x.permute({2, 0, 1, 3}).contiguous(); }
at::Tensor head_major(const at::Tensor& x) { return x.permute({1, 2, 0, 3}); }

class GatherTokens : public torch::autograd::Function<GatherTokens> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, comm::Communicator* group) {
    ctx->saved_data["group"] = reinterpret_cast<int64_t>(group);
    const at::Tensor local = token_major(x);
    at::Tensor all = at::empty({local.size(0) * group->size(), local.size(1), local.size(2), local.size(3)}, local.options());
    group->all_gather(all, local).wait();
    return {head_major(all)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto* group = reinterpret_cast<comm::Communicator*>(ctx->saved_data["group"].toInt());
    // Summed in fp32 whatever the compute dtype: each rank's partial gradient of every key and value is
    // added over the group exactly once and rounded once (bf16 sums would round at each of the cp - 1
    // additions, an error growing with cp). The fp32 copy is the token-major copy the transfer needs anyway.
    const at::Tensor gp = grads[0].permute({2, 0, 1, 3});
    at::Tensor g = at::empty(gp.sizes(), gp.options().dtype(at::kFloat));
    g.copy_(gp);
    at::Tensor mine = at::empty({g.size(0) / group->size(), g.size(1), g.size(2), g.size(3)}, g.options());
    group->reduce_scatter(mine, g, comm::ReduceOp::kSum).wait();
    return {head_major(mine).to(grads[0].scalar_type()), at::Tensor()};
  }
};

}  // namespace

at::Tensor gather_tokens(comm::Communicator& group, const at::Tensor& x) {
  if (group.size() == 1) return x;
  return GatherTokens::apply(x, &group)[0];
}

at::Tensor CpSelfAttention::attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const int64_t n = k.size(2) - registers_;
  const at::Tensor keys = at::cat({k.narrow(2, 0, registers_), gather_tokens(group_, k.narrow(2, registers_, n))}, 2);
  const at::Tensor values = at::cat({v.narrow(2, 0, registers_), gather_tokens(group_, v.narrow(2, registers_, n))}, 2);
  return at::scaled_dot_product_attention(q, keys, values, std::nullopt, 0.0, false, 1.0 / std::sqrt(static_cast<double>(q.size(-1))));
}

}  // namespace ov::parallel
