// The all-gathers of ShardedModel's units (sharded_model.h): each rank's chunk of every unit's full buffer,
// written by the optimizer (cast to float8 first for float8 units), gathered over the shard group, and the
// waits for them: all at once, or per block as the next forward reaches it.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "openvid/model/float8.h"
#include "openvid/parallel/sharded_model.h"

namespace ov::parallel {

void ShardedModel::gather() {
  gather_async();
  complete_gathers();
}

void ShardedModel::gather_async() {
  if (shard_.size() == 1) return;  // this rank's chunk is the whole unit
  complete_gathers();
  cast_float8_chunks();
  for (size_t k = 0; k < units_.size(); ++k) {
    const UnitSlices& s = slices_[k];
    gathers_[k] = units_[k].float8 ? shard_.all_gather(s.full.view(at::kByte), s.own_full().view(at::kByte))
                                   : shard_.all_gather(s.full, s.own_full());
  }
}

void ShardedModel::cast_float8_chunks() {
  if (!float8_amax_.defined()) return;
  c10::NoGradGuard no_grad;
  // Each weight's amax over the whole weight: its pieces' here (a weight lies in one run of a chunk), then the
  // maximum over the shard group. A rank without a piece of a weight contributes 0.
  float8_amax_.zero_();
  for (const Float8Piece& p : float8_pieces_) {
    float8_amax_.narrow(0, p.weight, 1).copy_(model::float8::amax(slices_[p.unit].stage.narrow(0, p.at, p.count)));
  }
  shard_.all_reduce(float8_amax_, comm::ReduceOp::kMax).wait();
  model::float8::inverse_scales(float8_amax_, float8_inv_scale_);
  for (const Float8Piece& p : float8_pieces_) {
    const UnitSlices& s = slices_[p.unit];
    model::float8::cast_into(s.stage.narrow(0, p.at, p.count), float8_amax_.narrow(0, p.weight, 1), s.own_full().narrow(0, p.at, p.count));
  }
}

void ShardedModel::wait_gathered(size_t unit) { gathers_[unit].wait(); }

void ShardedModel::wait_gathered_block(int64_t block) {
  if (block >= 0 && static_cast<size_t>(block) < block_units_.size())
    for (size_t k : block_units_[static_cast<size_t>(block)]) gathers_[k].wait();
}

void ShardedModel::wait_gathered_root() {
  for (size_t k : root_units_) gathers_[k].wait();
}

void ShardedModel::complete_gathers() {
  for (comm::Work& w : gathers_) w.wait();
}

void ShardedModel::refresh_compute_copy() {
  c10::NoGradGuard no_grad;
  for (UnitSlices& s : slices_) s.compute_chunk().copy_(s.master);
  gather();
}

}  // namespace ov::parallel
