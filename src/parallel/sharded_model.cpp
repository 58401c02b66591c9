#include "openvid/parallel/sharded_model.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <iomanip>
#include <map>
#include <sstream>

#include "openvid/model/float8.h"
#include "openvid/model/float8_weights.h"
#include "openvid/model/gradient_slots.h"
#include "openvid/runtime/error.h"

namespace ov::parallel {

// One unit's gradients during a step.
struct ShardedModel::Pending {
  at::Tensor flat;          // shard groups of several ranks: the unit's full fp32 gradient, summed here first
  std::vector<bool> seen;   // parameters with a gradient in this step (any micro-batch)
  std::vector<bool> last;   // ... in the last micro-batch (after arm())
  int64_t arrived = 0;      // count of `last`
  int64_t expected = 0;     // parameters with a gradient in the last micro-batch of the previous step (at first: all)
  bool launched = false;
  comm::Work reduction;
  at::Tensor partial;       // a later micro-batch's reduced slice, added into the gradient slice once it arrives
  comm::Work dp_reduction;  // shard and dp groups of several ranks: the slice's all-reduce over the replicas
  bool dp_launched = false;
};

namespace {

// The post-hook of a parameter's gradient accumulator runs once autograd has put the parameter's gradient
// of this backward into .grad (summed over every use of the parameter).
template <typename Fn>
std::shared_ptr<void> hook_gradient_accumulator(const at::Tensor& param, Fn&& fn) {
  auto accumulator = torch::autograd::impl::grad_accumulator(param);
  OV_CHECK(accumulator != nullptr, "sharded parameters must be leaves that require gradients");
  accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
      [fn = std::forward<Fn>(fn)](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
        fn();
        return outputs;
      }));
  // Autograd keeps only a weak reference to a leaf's accumulator between backward passes: holding it keeps
  // the hook installed. (Its pointer type differs between LibTorch versions; the deleter knows it.)
  using Holder = decltype(accumulator);
  return std::shared_ptr<void>(new Holder(std::move(accumulator)), [](void* p) { delete static_cast<Holder*>(p); });
}

}  // namespace

ShardedModel::ShardedModel(torch::nn::Module& module, comm::Communicator& shard, comm::Communicator& dp, ShardingOptions options)
    : shard_(shard),
      dp_(dp),
      options_(options),
      units_(flat_units(module, shard.size(), shard.size() > 1 ? options.float8_gather : std::function<bool(const std::string&)>{})) {
  std::map<std::string, at::Tensor> by_name;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    OV_CHECK(item.value().scalar_type() == at::kFloat, "sharded parameters must be fp32 masters");
    by_name[item.key()] = item.value();
  }
  const at::TensorOptions fp32 = by_name.begin()->second.options();  // buffers live where the parameters do
  int64_t total = 0;
  for (const FlatUnit& u : units_) total += u.shard_numel;
  const bool keep_dtype = options_.single_backward && shard_.size() == 1 && dp_.size() == 1;
  master_all_ = at::empty({total}, fp32);
  grad_all_ = at::zeros({total}, fp32.dtype(keep_dtype ? options_.compute_dtype : at::kFloat));
  exp_avg_all_ = at::zeros({total}, fp32);
  exp_avg_sq_all_ = at::zeros({total}, fp32);

  int64_t float8_weights = 0;
  for (const FlatUnit& u : units_) float8_weights += u.float8 ? static_cast<int64_t>(u.params.size()) : 0;
  if (float8_weights > 0) {
    float8_amax_ = at::zeros({float8_weights}, fp32);
    float8_inv_scale_ = at::ones({float8_weights}, fp32);
  }

  c10::NoGradGuard no_grad;
  int64_t at_rank = 0, float8_weight = 0;
  for (const FlatUnit& u : units_) {
    std::vector<at::Tensor> params;
    for (const FlatParam& p : u.params) params.push_back(by_name.at(p.name));
    // Every rank holds the same initial values: each keeps its slice as the master, and the full buffer
    // needs no gather.
    const at::Tensor flat = u.pack([&](size_t i) { return params[i]; }, fp32);
    UnitSlices s;
    s.begin = shard_.rank() * u.shard_numel;
    s.master = master_all_.narrow(0, at_rank, u.shard_numel);
    s.grad = grad_all_.narrow(0, at_rank, u.shard_numel);
    s.exp_avg = exp_avg_all_.narrow(0, at_rank, u.shard_numel);
    s.exp_avg_sq = exp_avg_sq_all_.narrow(0, at_rank, u.shard_numel);
    s.master.copy_(flat.narrow(0, s.begin, u.shard_numel));
    if (u.float8) {
      // Gathered as e4m3 (zeros in the padding); the parameters keep no values of their own.
      s.full = at::zeros({u.padded}, fp32.dtype(at::kByte)).view(at::kFloat8_e4m3fn);
      s.stage = s.master.to(options_.compute_dtype, /*non_blocking=*/false, /*copy=*/true);
      for (size_t i = 0; i < params.size(); ++i, ++float8_weight) {
        const FlatParam& p = u.params[i];
        params[i].set_data(model::stand_in(p.shape, fp32.dtype(options_.compute_dtype)));
        model::set_float8_weight(params[i], {u.view(s.full, i), float8_inv_scale_.narrow(0, float8_weight, 1)});
        const int64_t a = std::max(s.begin, p.offset), b = std::min(s.begin + u.shard_numel, p.offset + p.numel);
        if (a < b) float8_pieces_.push_back({slices_.size(), float8_weight, a - s.begin, b - a});
      }
      at_rank += u.shard_numel;
      slices_.push_back(std::move(s));
      params_.push_back(std::move(params));
      continue;
    }
    s.full = flat.to(options_.compute_dtype);
    for (size_t i = 0; i < params.size(); ++i) {
      params[i].set_data(u.view(s.full, i));
      // One backward writing each gradient once, in the parameter's dtype, into the whole unit: the model's
      // linear layers can write their gradients straight into the slice.
      if (keep_dtype) model::add_gradient_slot(params[i], u.view(s.grad, i));
    }
    at_rank += u.shard_numel;
    slices_.push_back(std::move(s));
    params_.push_back(std::move(params));
  }
  pending_.resize(units_.size());
  gathers_.resize(units_.size());
  for (size_t k = 0; k < units_.size(); ++k) {  // "blocks.<i>[.float8]" -> block i; the rest is the root
    const std::string& name = units_[k].name;
    if (name.rfind("blocks.", 0) != 0) {
      root_units_.push_back(k);
      continue;
    }
    const auto block = static_cast<size_t>(std::stoll(name.substr(7)));
    if (block_units_.size() <= block) block_units_.resize(block + 1);
    block_units_[block].push_back(k);
  }
  for (size_t k = 0; k < units_.size(); ++k) {
    pending_[k].seen.assign(params_[k].size(), false);
    pending_[k].last.assign(params_[k].size(), false);
    // The first step waits for every parameter: a unit whose parameters all get gradients is reduced during
    // that backward too (one with an unused parameter is reduced by finish(), and later steps know).
    pending_[k].expected = static_cast<int64_t>(params_[k].size());
    if (!options_.reduce_in_backward) continue;
    // After set_data: a new dtype gives a parameter a new gradient accumulator.
    for (size_t i = 0; i < params_[k].size(); ++i) {
      hook_owners_.push_back(hook_gradient_accumulator(params_[k][i], [this, k, i] { on_gradient(k, i); }));
    }
  }
  if (float8_weights > 0) gather();  // the float8 copies of the initial weights
}

ShardedModel::~ShardedModel() {
  for (const std::vector<at::Tensor>& unit : params_) {
    model::remove_gradient_slots(unit);
    model::remove_float8_weights(unit);
  }
}

void ShardedModel::accumulate(size_t k, size_t i, const at::Tensor& grad) {
  Pending& p = pending_[k];
  OV_CHECK(!p.launched, "parameter " + units_[k].params[i].name + " received a gradient after unit " + units_[k].name +
                            " was reduced (a parameter used in two backward passes of one micro-batch)");
  c10::NoGradGuard no_grad;
  const FlatParam& fp = units_[k].params[i];
  if (shard_.size() == 1) {  // straight into the gradient slice, which is the whole unit
    at::Tensor slot = slices_[k].grad.narrow(0, fp.offset, fp.numel);
    if (!p.seen[i] && grad.data_ptr() == slot.data_ptr()) {  // written there by the backward (model/gradient_slots.h)
      p.seen[i] = true;
      return;
    }
    OV_CHECK(!p.seen[i] || slot.scalar_type() == at::kFloat,
             "parameter " + fp.name + " got a second gradient in one step, but gradients are kept in " +
                 std::string(c10::toString(slot.scalar_type())) + " (single_backward)");
    if (p.seen[i]) slot.add_(grad.reshape(-1));
    else slot.copy_(grad.reshape(-1));
  } else {
    if (!p.flat.defined()) allocate_flat(k);
    p.flat.narrow(0, fp.offset, fp.numel).add_(grad.reshape(-1));
  }
  p.seen[i] = true;
}

void ShardedModel::allocate_flat(size_t k) {
  pending_[k].flat = at::zeros({units_[k].padded}, slices_[k].grad.options());
  ++flats_.alive;
  flats_.alive_bytes += pending_[k].flat.nbytes();
  flats_.peak = std::max(flats_.peak, flats_.alive);
  flats_.peak_bytes = std::max(flats_.peak_bytes, flats_.alive_bytes);
}

void ShardedModel::release_flat(size_t k) {
  Pending& p = pending_[k];
  p.reduction.wait();  // NCCL: the compute stream waits for the transfer, so the buffer's next user comes after it
  if (p.partial.defined()) {
    slices_[k].grad.add_(p.partial);
    p.partial = at::Tensor();
  }
  // The step's last reduce-scatter of the unit is in its slice: the replicas' all-reduce of it starts now,
  // behind the rest of backward (complete_reductions waits for it).
  if (last_micro_ && shard_.size() > 1 && dp_.size() > 1 && !p.dp_launched) {
    p.dp_reduction = dp_.all_reduce(slices_[k].grad, comm::ReduceOp::kSum);
    p.dp_launched = true;
  }
  if (!p.flat.defined()) return;
  flats_.alive_bytes -= p.flat.nbytes();
  --flats_.alive;
  p.flat = at::Tensor();
}

void ShardedModel::on_gradient(size_t k, size_t i) {
  at::Tensor& g = params_[k][i].mutable_grad();
  if (!g.defined()) return;
  accumulate(k, i, g);
  g = at::Tensor();  // released now: the gradient slot holds it
  Pending& p = pending_[k];
  if (!armed_) return;  // an earlier micro-batch: accumulate only
  if (!p.last[i]) {
    p.last[i] = true;
    ++p.arrived;
  }
  if (p.arrived == p.expected && !p.launched) launch(k);
}

void ShardedModel::launch(size_t k) {
  Pending& p = pending_[k];
  UnitSlices& s = slices_[k];
  if (shard_.size() == 1) {
    c10::NoGradGuard no_grad;
    for (size_t i = 0; i < p.seen.size(); ++i) {  // a parameter without a gradient this step: zero, not last step's
      if (!p.seen[i]) s.grad.narrow(0, units_[k].params[i].offset, units_[k].params[i].numel).zero_();
    }
    if (dp_.size() > 1) p.reduction = dp_.all_reduce(s.grad, comm::ReduceOp::kSum);
  } else {
    if (!p.flat.defined()) allocate_flat(k);
    // The step's first reduction writes the slice; a later micro-batch's is added to it (release_flat).
    if (summing_) p.partial = at::empty_like(s.grad);
    p.reduction = shard_.reduce_scatter(summing_ ? p.partial : s.grad, p.flat, comm::ReduceOp::kSum);
    // The step's one reduction of the unit (no earlier micro-batch to add): where groups can order one
    // collective after another's (NCCL on the device, the emulated stand-ins), the replicas' all-reduce of the
    // slice goes right behind its reduce-scatter (release_flat would start it only once the unit leaves the
    // window below, leaving the last units' to the step's end).
    if (last_micro_ && !summing_ && dp_.size() > 1 && dp_.starts_after() && shard_.starts_after()) {
      p.dp_reduction = dp_.all_reduce_after(p.reduction, s.grad, comm::ReduceOp::kSum);
      p.dp_launched = true;
    }
    // At most max_reductions_in_flight full unit gradients wait for their transfer: the oldest is released
    // once it is done, so memory stays at the shards plus a few units whatever the model's depth.
    reducing_.push_back(k);
    while (static_cast<int64_t>(reducing_.size()) > options_.max_reductions_in_flight) {
      release_flat(reducing_.front());
      reducing_.pop_front();
    }
  }
  p.launched = true;
  launch_order_.push_back(k);
}

void ShardedModel::arm(bool last) {
  OV_CHECK(options_.reduce_in_backward, "arm() needs the hooks of reduce_in_backward");
  complete_gathers();
  // An earlier micro-batch is reduced during its backward only where full unit gradients are summed (a
  // shard group of several ranks); one rank per shard group accumulates into its slices in place.
  armed_ = last || shard_.size() > 1;
  last_micro_ = last;
}

void ShardedModel::launch_the_rest() {
  for (size_t k = units_.size(); k-- > 0;) {  // in backward order (the last units first)
    if (!pending_[k].launched) launch(k);
  }
}

void ShardedModel::finish_micro_batch() {
  if (!armed_) return;  // accumulated in place
  armed_ = false;
  launch_the_rest();
  reducing_.clear();
  for (size_t k : launch_order_) {
    release_flat(k);
    pending_[k].arrived = 0;
    pending_[k].launched = false;
    std::fill(pending_[k].last.begin(), pending_[k].last.end(), false);
  }
  launch_order_.clear();
  summing_ = true;  // the step's later reductions add to the slices
}

void ShardedModel::finish() {
  OV_CHECK(armed_, "ShardedModel::finish() without arm()");
  armed_ = false;
  launched_in_backward_ = static_cast<int64_t>(launch_order_.size());
  launch_the_rest();
  complete_reductions();
}

void ShardedModel::complete_reductions() {
  reducing_.clear();
  // A shard group of several ranks reduce-scattered; its slices are summed over the replicas by the
  // all-reduces release_flat started, the earlier units' already during backward.
  for (size_t k : launch_order_) release_flat(k);
  for (size_t k : launch_order_) {
    pending_[k].dp_reduction.wait();
    pending_[k].dp_launched = false;
  }
  last_micro_ = true;
  for (size_t k : launch_order_) {
    Pending& p = pending_[k];
    p.expected = p.arrived;  // what the next step can wait for
    p.arrived = 0;
    p.launched = false;
    std::fill(p.seen.begin(), p.seen.end(), false);
    std::fill(p.last.begin(), p.last.end(), false);
    model::reset_gradient_slots(params_[k]);
  }
  launch_order_.clear();
  summing_ = false;
}

void ShardedModel::reduce_gradients() {
  OV_CHECK(!options_.reduce_in_backward, "reduce_gradients() is the path without hooks (reduce_in_backward = false)");
  complete_gathers();
  for (size_t k = units_.size(); k-- > 0;) {  // backward order, as the hooks would
    for (size_t i = 0; i < params_[k].size(); ++i) {
      at::Tensor& g = params_[k][i].mutable_grad();
      if (!g.defined()) continue;
      accumulate(k, i, g);
      g = at::Tensor();
    }
    launch(k);
  }
  complete_reductions();
}

void ShardedModel::enable_ema() {
  if (has_ema()) return;
  c10::NoGradGuard no_grad;
  ema_all_ = master_all_.clone();
  int64_t at_rank = 0;
  for (size_t k = 0; k < units_.size(); ++k) {
    slices_[k].ema = ema_all_.narrow(0, at_rank, units_[k].shard_numel);
    at_rank += units_[k].shard_numel;
  }
}

void ShardedModel::reset_ema() {
  c10::NoGradGuard no_grad;
  if (has_ema()) ema_all_.copy_(master_all_);
}

void ShardedModel::update_ema(double decay, const at::Tensor& apply) {
  OV_CHECK(has_ema(), "update_ema before enable_ema");
  c10::NoGradGuard no_grad;
  // One pass over the rank's slices; the weight is on the device, so a skipped step needs no host decision.
  ema_all_.lerp_(master_all_, apply.to(ema_all_.options()).mul(1.0 - decay));
}

at::Tensor ShardedModel::grad_norm_squared() const {
  return at::linalg_vector_norm(grad_all_, 2, {}, false, at::kFloat).square().view({1});
}

ShardMemory ShardedModel::memory(int64_t states) const {
  ShardMemory m;
  m.master_bytes = master_all_.nbytes();
  m.grad_bytes = grad_all_.nbytes();
  m.optimizer_bytes = states * master_all_.nbytes();  // exp_avg and exp_avg_sq
  for (const UnitSlices& s : slices_) m.gathered_bytes += s.full.nbytes() + (s.stage.defined() ? s.stage.nbytes() : 0);
  return m;
}

std::string unit_gradient_summary(const ShardedModel& model) {
  const UnitGradientBuffers& b = model.unit_gradient_buffers();
  int64_t all = 0;
  for (const FlatUnit& u : model.units()) all += u.padded * static_cast<int64_t>(sizeof(float));
  std::ostringstream os;
  os << std::fixed << std::setprecision(2) << "full unit gradients during backward: at most " << b.peak << " of " << model.num_units()
     << " units at once, " << b.peak_bytes / 1e6 << " MB (all units: " << all / 1e6 << " MB)";
  return os.str();
}

}  // namespace ov::parallel
