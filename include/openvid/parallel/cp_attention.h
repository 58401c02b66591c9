#pragma once
// Context-parallel self-attention (docs/training.md): the video tokens of a sample are split over
// the cp ranks by time; registers (and text) are replicated on every cp rank. Each rank attends with its
// local queries to the keys/values of: its own copy of the registers, and the video tokens of the whole
// group, all-gathered. In backward, the gradients of the gathered keys/values are reduce-scattered back
// to their owners. Attention has no mask, so the order of the gathered keys does not matter, and the
// result equals single-rank attention over the whole sequence. Gradients of replicated parts (registers)
// come out partial per rank and are summed by the gradient reduction over the shard group.
//
// Communication per layer and rank, forward: all-gather of k and v of the local video tokens
// (2 x (cp - 1)/cp x B x N x D elements received); backward: reduce-scatter of the same volume.
#include <memory>

#include "openvid/comm/communicator.h"
#include "openvid/model/dit.h"

namespace ov::parallel {

class CpSelfAttention final : public model::SelfAttention {
 public:
  // `cp_group`: the cp communicator (every call is a collective over it); `registers`: leading tokens
  // of the sequence that are replicated on every cp rank.
  CpSelfAttention(comm::Communicator& cp_group, int64_t registers) : group_(cp_group), registers_(registers) {}
  at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) override;

 private:
  comm::Communicator& group_;
  int64_t registers_;
};

// Collective over `group`: x [B, h, n, d] -> [B, h, size * n, d], rank r's tokens at [r * n, (r+1) * n);
// backward reduce-scatters (sums) the gradient back. Differentiable.
at::Tensor gather_tokens(comm::Communicator& group, const at::Tensor& x);

}  // namespace ov::parallel
