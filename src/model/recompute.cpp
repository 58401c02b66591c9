#include "openvid/model/recompute.h"

#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

namespace ov::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Saved between forward and backward: the block and what its context held (the caller's BlockContext
// is gone by the time backward runs).
struct Saved {
  BlockImpl* block;
  BlockContext ctx;
};

at::Tensor detached_leaf(const at::Tensor& t) {
  if (!t.defined()) return t;
  at::Tensor d = t.detach();
  d.requires_grad_(t.requires_grad());
  return d;
}

class RecomputedBlock : public torch::autograd::Function<RecomputedBlock> {
 public:
  static variable_list forward(AutogradContext* actx, const at::Tensor& x, const at::Tensor& c,
                               const at::Tensor& text, const std::optional<at::Tensor>& v0,
                               std::shared_ptr<Saved> saved) {
    // Runs with grad mode off (custom functions' forward does): no graph is kept.
    auto [out, v] = saved->block->forward(x, c, text, v0.value_or(at::Tensor()), saved->ctx);
    actx->save_for_backward({x, c, text, v0.value_or(at::Tensor())});
    actx->saved_data["saved"] = c10::IValue::make_capsule(c10::make_intrusive<SavedHolder>(std::move(saved)));
    actx->set_materialize_grads(false);  // the values output of most blocks is unused: keep its grad undefined
    return {out, v};
  }

  static variable_list backward(AutogradContext* actx, variable_list grads) {
    const variable_list inputs = actx->get_saved_variables();
    const auto holder = c10::static_intrusive_pointer_cast<SavedHolder>(actx->saved_data["saved"].toCapsule());
    at::Tensor x = detached_leaf(inputs[0]), c = detached_leaf(inputs[1]), text = detached_leaf(inputs[2]),
               v0 = detached_leaf(inputs[3]);
    variable_list outs, out_grads;
    {
      at::AutoGradMode grad_on(true);
      auto [out, v] = holder->saved->block->forward(x, c, text, v0, holder->saved->ctx);
      for (auto [o, g] : {std::pair{out, grads[0]}, std::pair{v, grads[1]}}) {
        if (g.defined() && o.requires_grad()) {
          outs.push_back(o);
          out_grads.push_back(g);
        }
      }
      // Accumulates into the block's parameters and into the detached inputs.
      if (!outs.empty()) torch::autograd::backward(outs, out_grads);
    }
    auto grad_of = [](const at::Tensor& t) { return t.defined() && t.requires_grad() ? t.grad() : at::Tensor(); };
    return {grad_of(x), grad_of(c), grad_of(text), grad_of(v0), at::Tensor()};
  }

  // Carries the shared pointer through AutogradContext::saved_data (which holds IValues only).
  struct SavedHolder : torch::CustomClassHolder {
    explicit SavedHolder(std::shared_ptr<Saved> s) : saved(std::move(s)) {}
    std::shared_ptr<Saved> saved;
  };
};

}  // namespace

BlockRunner recompute_every(int k) {
  if (k <= 0) return nullptr;
  return [k](BlockImpl& block, const at::Tensor& x, const at::Tensor& c, const at::Tensor& text, const at::Tensor& v0,
             const BlockContext& ctx) {
    const bool recompute = block.index() % k == 0 && c10::GradMode::is_enabled();
    return recompute ? recomputed_block(block, x, c, text, v0, ctx) : block.forward(x, c, text, v0, ctx);
  };
}

std::pair<at::Tensor, at::Tensor> recomputed_block(BlockImpl& block, const at::Tensor& x, const at::Tensor& c,
                                                     const at::Tensor& text, const at::Tensor& v0,
                                                     const BlockContext& ctx) {
  auto saved = std::make_shared<Saved>(Saved{&block, ctx});
  const std::optional<at::Tensor> v0_opt = v0.defined() ? std::optional<at::Tensor>(v0) : std::nullopt;
  variable_list out = RecomputedBlock::apply(x, c, text, v0_opt, std::move(saved));
  return {out[0], out[1]};
}

}  // namespace ov::model
