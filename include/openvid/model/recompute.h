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

// A DiT block runner (DiTImpl::set_block_runner) that recomputes every k-th block (index % k == 0) when
// gradients are recorded and runs the others plainly; k <= 0: null (no block is recomputed).
BlockRunner recompute_every(int k);

}  // namespace ov::model
