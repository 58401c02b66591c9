#pragma once
// Sharded data parallelism with ZeRO-2 semantics (docs/training.md "Sharding"; DDP is a shard group of
// one rank). The module's parameters are grouped in flat units (parallel/flat_unit.h). Each rank of the
// shard group (fs*cp ranks) keeps the fp32 master copy, the fp32 gradient and the Adam moments of its
// slice of every unit; the module's parameters are views of each unit's full buffer in the compute dtype,
// kept from forward to backward (reshard_after_forward = false).
//
// Gradients: every parameter's gradient is added, in fp32, into its unit's accumulation buffer as soon as
// autograd has produced it (a hook on the parameter's gradient accumulator; the parameter's own .grad is
// released at once). On the last micro-batch, a unit whose gradients are all in is reduce-scattered (sum)
// over the shard group at once, while the rest of backward runs, then all-reduced (sum) over the dp
// group: hybrid sharding. Losses are normalised by the global element count, so sums are the gradient.
// A unit's full gradient buffer is freed as soon as its reduce-scatter is done (at most
// ShardingOptions::max_reductions_in_flight wait at once), so the full gradients alive during the last
// backward are a few units, not the model (unit_gradient_buffers() counts them), in every micro-batch of
// --grad_accum (see arm).
// A shard group of one rank accumulates straight into its gradient slice and reduces nothing; with one
// backward per step too (ShardingOptions::single_backward, one dp rank), the slice registers a gradient slot per
// parameter (model/gradient_slots.h), so the model's linear layers write their gradients there themselves.
//
// Parameters: the optimizer writes the updated masters, in the compute dtype, into this rank's chunk of
// each unit's full buffer (the slice views of slices()); gather() all-gathers the chunks in place.
//
// Float8 all-gather (ShardingOptions::float8_gather, shard groups of several ranks): the weights whose products
// run in float8 (model/float8.h) form units of their own ("blocks.<i>.float8"), gathered as e4m3 bytes, half
// of bf16's. gather() takes each such weight's amax over its chunks on every rank (one all-reduce (max) of a
// float per weight for the whole model), casts this rank's chunk with the weight's scale, and all-gathers the
// bytes; the gathered copy and its scale are registered for the products (model/float8_weights.h), which then
// compute exactly what one rank's casts of the whole weights give. Those parameters keep no values of their
// own in the compute dtype (a stand-in without storage): their gathered memory is one byte per element.
#include <ATen/core/Tensor.h>

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "openvid/comm/communicator.h"
#include "openvid/parallel/flat_unit.h"

namespace torch::nn {
class Module;
}

namespace ov::parallel {

struct ShardMemory {
  int64_t master_bytes = 0, grad_bytes = 0, optimizer_bytes = 0;  // this rank's sharded state
  int64_t gathered_bytes = 0;                                      // full-size compute buffers
};

// This rank's state of one unit. master, exp_avg, exp_avg_sq are fp32 [shard_numel] views into rank-wide
// buffers, grad too (or in the compute dtype, see ShardingOptions::single_backward) (one allocation each, units back to back, so that a fused optimizer or a norm reads
// them in one pass); full is the unit's gathered buffer [padded] in the compute dtype.
struct UnitSlices {
  at::Tensor master, grad, exp_avg, exp_avg_sq;
  at::Tensor ema;  // fp32 [shard_numel]: the masters' moving average, when enabled (enable_ema)
  at::Tensor full;   // [padded]: the compute dtype, or e4m3 for a float8 unit
  at::Tensor stage;  // a float8 unit's: this rank's chunk in the compute dtype, cast into own_full() by gather()
  int64_t begin = 0;  // this rank's slice is [begin, begin + shard_numel) of the unit's flat buffer
  at::Tensor own_full() const { return full.narrow(0, begin, master.numel()); }
  // Where the optimizer writes this rank's chunk in the compute dtype.
  at::Tensor compute_chunk() const { return stage.defined() ? stage : own_full(); }
};

struct ShardingOptions {
  at::ScalarType compute_dtype = at::kFloat;  // the gathered parameters' dtype (bf16 halves gathers and memory)
  bool reduce_in_backward = true;             // false: reduce_gradients() after backward (the plain path)
  // Gradients are kept in fp32 wherever something is summed into them (several ranks, several micro-batches).
  // true: nothing is (one rank per shard group and dp group, one backward per step): keep them in the compute
  // dtype the backward produces them in, which is exact, and halves their memory and the optimizer's reads.
  // A second gradient for a parameter in one step is then an error.
  bool single_backward = false;
  // Shard groups of several ranks: full unit gradients whose reduce-scatter may be in flight at once during
  // backward; past it the oldest is waited for (on NCCL: by the compute stream, not the host) and released.
  int64_t max_reductions_in_flight = 2;
  // Names of the parameters gathered as float8 e4m3 (see above): weights whose products run in float8. Used
  // by shard groups of several ranks; a group of one rank gathers nothing.
  std::function<bool(const std::string&)> float8_gather = nullptr;
};

// Full unit gradients (the fp32 buffers a shard group of several ranks sums into and reduce-scatters): how
// many are alive now and the most at once since the model was built (an accounting hook for tests and logs).
struct UnitGradientBuffers {
  int64_t alive = 0, peak = 0;
  int64_t alive_bytes = 0, peak_bytes = 0;
};

class ShardedModel {
 public:
  // Collective over `shard` and `dp`: every rank passes a module initialised identically (fp32). Builds
  // the units, keeps this rank's fp32 slices and points the module's parameters at the full buffers. The
  // sharded model must outlive every backward pass through the module (its hooks point back to it).
  ShardedModel(torch::nn::Module& module, comm::Communicator& shard, comm::Communicator& dp, ShardingOptions options = {});
  ~ShardedModel();
  ShardedModel(const ShardedModel&) = delete;
  ShardedModel& operator=(const ShardedModel&) = delete;

  const std::vector<FlatUnit>& units() const { return units_; }
  int64_t num_units() const { return static_cast<int64_t>(units_.size()); }
  const UnitSlices& slices(size_t unit) const { return slices_[unit]; }
  comm::Communicator& shard_group() const { return shard_; }
  at::ScalarType compute_dtype() const { return options_.compute_dtype; }

  // Collective over the shard group: all-gathers every unit's chunk of its full buffer (written by the
  // optimizer, or by refresh_compute_copy()), in place. Nothing to do for a shard group of one rank.
  // gather() completes the gathers (on NCCL: the compute stream waits for them). gather_async() only
  // launches them: the caller waits for unit k with wait_gathered(k) before using it (a forward pre-hook of
  // block k), so that the gathers of later units run behind the computation of earlier ones; arm(),
  // reduce_gradients() and gather() complete whatever was not waited for.
  void gather();
  void gather_async();
  void wait_gathered(size_t unit);
  // wait_gathered for the units of block `block` ("blocks.<i>" and its float8 unit), or of the root.
  void wait_gathered_block(int64_t block);
  void wait_gathered_root();
  // Whether unit k's gather was launched and not yet waited for (a hook for tests).
  bool gather_pending(size_t unit) const { return gathers_[unit].pending(); }
  // Local, then gather(): copies the masters into the chunks in the compute dtype (after loading them).
  void refresh_compute_copy();

  // Gradient reduction launched during backward: arm() before the last micro-batch's backward; finish()
  // after it launches what the hooks did not (units whose parameters got no gradient in the previous
  // step; the first step waits for all of them) and makes the reductions complete (shard group, then dp group)
  // from the caller's point of view. Earlier micro-batches only accumulate, unless each is armed with
  // arm(false) and followed by finish_micro_batch(): then, on a shard group of several ranks, each
  // micro-batch's units are reduce-scattered during its backward and added into the gradient slices (as
  // ZeRO-2 does), so no micro-batch keeps the whole model's full gradients (with one rank per shard group
  // they accumulate in place, and these calls do nothing more).
  void arm(bool last = true);
  void finish_micro_batch();
  void finish();
  // The plain path (reduce_in_backward = false): after backward, reduces every unit in backward order.
  void reduce_gradients();
  // Units of the last finish() whose reduction was launched from the hooks, during backward.
  int64_t units_launched_in_backward() const { return launched_in_backward_; }

  // The exponential moving average of the masters, this rank's slices in fp32 (as the masters: ZeRO-style).
  // enable_ema() (local) starts it at the current masters; update_ema (local, on the device, no host
  // synchronisation) moves it: ema += (1 - decay) * apply * (master - ema), `apply` a 1-element fp32 tensor,
  // 1 for an applied step and 0 for a skipped one.
  void enable_ema();
  bool has_ema() const { return ema_all_.defined(); }
  void update_ema(double decay, const at::Tensor& apply);
  // Local: the moving average restarts at the masters (a checkpoint without one).
  void reset_ema();

  // Sum of squares of this rank's gradient slices, as a 1-element fp32 tensor on the device: no host
  // synchronisation (a non-finite gradient makes it non-finite). Accumulated in fp32 whatever the dtype.
  at::Tensor grad_norm_squared() const;
  ShardMemory memory(int64_t optimizer_states_per_element = 2) const;
  const UnitGradientBuffers& unit_gradient_buffers() const { return flats_; }

 private:
  struct Pending;
  void on_gradient(size_t unit, size_t param);
  void accumulate(size_t unit, size_t param, const at::Tensor& grad);
  void launch(size_t unit);
  void launch_the_rest();  // the units whose reductions the hooks did not launch, in backward order
  void allocate_flat(size_t unit);
  void release_flat(size_t unit);  // waits for the unit's reduction, then frees its full gradient
  void complete_reductions();
  void complete_gathers();
  void cast_float8_chunks();  // the float8 units' chunks, from their stages (collective: one all-reduce)

  comm::Communicator& shard_;
  comm::Communicator& dp_;
  ShardingOptions options_;
  std::vector<FlatUnit> units_;
  std::vector<UnitSlices> slices_;
  at::Tensor master_all_, grad_all_, exp_avg_all_, exp_avg_sq_all_;  // rank-wide buffers the slices view
  at::Tensor ema_all_;                                                 // the same for the moving average (when on)
  std::vector<std::vector<at::Tensor>> params_;                       // the module's parameters, by unit
  std::vector<comm::Work> gathers_;
  std::vector<std::vector<size_t>> block_units_;  // per block index, its units
  std::vector<size_t> root_units_;
  std::vector<Pending> pending_;
  std::vector<size_t> launch_order_;
  std::deque<size_t> reducing_;  // units whose full gradient is being reduce-scattered, oldest first
  UnitGradientBuffers flats_;
  // Float8 units: per weight, its amax and dequantisation scale (fp32 [weights]), and where this rank's chunks
  // hold a piece of it (unit, offset and length in the unit's chunk).
  struct Float8Piece {
    size_t unit = 0;
    int64_t weight = 0, at = 0, count = 0;
  };
  at::Tensor float8_amax_, float8_inv_scale_;
  std::vector<Float8Piece> float8_pieces_;
  std::vector<std::shared_ptr<void>> hook_owners_;  // keeps the gradient accumulators (and their hooks) alive
  bool armed_ = false;
  bool summing_ = false;  // this step's slices already hold an earlier micro-batch's reduced gradients
  bool last_micro_ = true;  // the micro-batch being reduced is the step's last (arm(last))
  int64_t launched_in_backward_ = 0;
};

// "full unit gradients during backward: at most 4 of 9 units at once, 1.23 MB (all units: 2.77 MB)": what
// bounds the backward's transient memory on a shard group of several ranks (the run's last lines).
std::string unit_gradient_summary(const ShardedModel& model);

}  // namespace ov::parallel
