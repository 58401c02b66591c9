#pragma once
// Where the backward of a linear layer may write a parameter's gradient directly, instead of into a fresh
// tensor that the parameter's owner then copies into its own buffer (one pass over every weight gradient
// per step, and a launch per parameter, saved).
//
// The owner of a parameter's gradient storage (parallel::ShardedModel, when one backward per step writes
// each gradient once, in the compute dtype) registers a slot: a tensor of the parameter's shape, dtype and
// device, contiguous. The model's operations (ops::linear, ops::gelu_mlp) take the slot of a weight or bias
// with take() when they compute its gradient and write it there with an out= product; autograd then hands
// that very tensor to the parameter's gradient accumulator, which keeps it without a copy, and the owner sees
// the gradient already in place. A slot is handed out once until the owner's reset(): the gradient of a
// parameter used twice in one backward is summed by autograd as usual. Without a slot (CPU paths, several
// micro-batches, several ranks summing in fp32) everything is as before.
//
// Process-wide, keyed by the parameter's TensorImpl (the module's parameter itself; a view or a cast of it
// has no slot). Thread-safe: autograd may run backward on another thread than the owner's.
//
// Why a registry rather than an explicit hand-over (the sharded model giving each linear its destination):
// the destination is a fact about the parameter's storage, which only the sharded model knows, and it is
// used deep inside free functions (ops::linear, ops::gelu_mlp) that receive the parameter and nothing of
// its owner. Handing it over explicitly would thread a gradient destination through every module and call
// site of the DiT (qkv, projections, cross-attention, MLP, modulation, embeddings, final layer), and make the
// model hold state of its sharding: what this project keeps out of the model. A lookup by the parameter
// itself keeps the model unaware, costs one mutex-guarded map lookup per weight and bias per backward, and
// cannot go stale: a slot belongs to exactly one parameter object and is removed with its owner.
#include <ATen/core/Tensor.h>

#include <vector>

namespace ov::model {

// Local. `slot` must match `param` in shape, dtype and device and be contiguous.
void add_gradient_slot(const at::Tensor& param, const at::Tensor& slot);
// Local: forgets the slots of these parameters (their owner is going away).
void remove_gradient_slots(const std::vector<at::Tensor>& params);
// Local: the slots of these parameters can be handed out again (the owner has consumed this step's gradients).
void reset_gradient_slots(const std::vector<at::Tensor>& params);
// The slot of `param` if it has one not yet handed out since the last reset (marking it handed out), else an
// undefined tensor. An undefined `param` has none.
at::Tensor take_gradient_slot(const at::Tensor& param);

}  // namespace ov::model
