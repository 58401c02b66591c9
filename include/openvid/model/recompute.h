#pragma once
// Recomputation of one DiT block's activations in backward (what PyTorch calls activation
// checkpointing). LibTorch has no checkpoint(): this is a custom autograd function that runs the block
// without recording a graph in forward and recomputes it, with the graph, in backward (as PyTorch's
// reentrant torch.utils.checkpoint does). The block is deterministic (no dropout), so the recomputation is
// exact and gradients are bitwise those of the plain forward.
#include "openvid/model/dit.h"

namespace ov::model {

std::pair<at::Tensor, at::Tensor> recomputed_block(BlockImpl& block, const at::Tensor& x, const at::Tensor& c,
                                                     const at::Tensor& text, const at::Tensor& v0,
                                                     const BlockContext& ctx);

}  // namespace ov::model
