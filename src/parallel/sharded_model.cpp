#include "openvid/parallel/sharded_model.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <map>

#include "openvid/runtime/error.h"

namespace ov::parallel {

ShardedModel::ShardedModel(torch::nn::Module& module, comm::Communicator& shard, comm::Communicator& dp,
                           at::ScalarType compute_dtype)
    : shard_(shard), dp_(dp), compute_dtype_(compute_dtype) {
  // Units: "blocks.<i>" for each block's parameters, "root" for everything else, in registration order.
  std::map<std::string, size_t> index;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    std::string unit = "root";
    if (name.rfind("blocks.", 0) == 0) unit = name.substr(0, name.find('.', 7));
    if (!index.count(unit)) {
      index[unit] = units_.size();
      units_.push_back(Unit{unit, {}, {}, {}, {}, 0, 0, 0, {}, {}, {}, {}, {}});
    }
    Unit& u = units_[index[unit]];
    OV_CHECK(item.value().scalar_type() == at::kFloat, "sharded parameters must be fp32 masters");
    u.names.push_back(name);
    u.params.push_back(item.value());
    u.offsets.push_back(u.numel);
    u.numels.push_back(item.value().numel());
    u.numel += item.value().numel();
  }
  const int64_t s = shard_.size(), r = shard_.rank();
  c10::NoGradGuard no_grad;
  for (Unit& u : units_) {
    u.padded = (u.numel + s - 1) / s * s;
    u.shard_numel = u.padded / s;
    // Every rank holds the same initial values; each keeps its slice as the master. Buffers live where
    // the module's parameters do (the GPU for NCCL).
    at::Tensor flat = at::zeros({u.padded}, u.params.front().options());
    for (size_t i = 0; i < u.params.size(); ++i) flat.narrow(0, u.offsets[i], u.numels[i]).copy_(u.params[i].reshape(-1));
    u.master = flat.narrow(0, r * u.shard_numel, u.shard_numel).clone();
    u.grad = at::zeros_like(u.master);
    u.exp_avg = at::zeros_like(u.master);
    u.exp_avg_sq = at::zeros_like(u.master);
    u.full = flat.to(compute_dtype_);
    for (size_t i = 0; i < u.params.size(); ++i) {
      u.params[i].set_data(u.full.narrow(0, u.offsets[i], u.numels[i]).view(u.params[i].sizes()));
    }
  }
  pending_.resize(units_.size());
  for (size_t k = 0; k < units_.size(); ++k) {
    pending_[k].seen.assign(units_[k].params.size(), false);
    for (size_t i = 0; i < units_[k].params.size(); ++i) {
      units_[k].params[i].register_hook([this, k, i](const at::Tensor& grad) { on_gradient(k, i, grad); });
    }
  }
}

void ShardedModel::arm() {
  armed_ = true;
  launch_order_.clear();
  for (size_t k = 0; k < units_.size(); ++k) {
    Pending& p = pending_[k];
    p.flat = at::zeros({units_[k].padded}, units_[k].master.options());
    std::fill(p.seen.begin(), p.seen.end(), false);
    p.arrived = 0;
    p.launched = false;
  }
}

void ShardedModel::on_gradient(size_t k, size_t i, const at::Tensor& grad) {
  if (!armed_) return;  // earlier micro-batches accumulate into .grad as usual
  Unit& u = units_[k];
  Pending& p = pending_[k];
  OV_CHECK(!p.launched, "parameter " + u.names[i] + " received a gradient after unit " + u.name +
                            " was reduced (a parameter used twice in one backward)");
  c10::NoGradGuard no_grad;
  at::Tensor slot = p.flat.narrow(0, u.offsets[i], u.numels[i]);
  slot.add_(grad.reshape(-1));  // a parameter used twice in the graph gets two calls
  const at::Tensor earlier = u.params[i].grad();  // micro-batches before this one
  if (!p.seen[i]) {
    if (earlier.defined()) slot.add_(earlier.reshape(-1));
    p.seen[i] = true;
    ++p.arrived;
  }
  if (p.arrived == p.expected && !p.launched) launch(k);
}

void ShardedModel::launch(size_t k) {
  Pending& p = pending_[k];
  p.work = shard_.reduce_scatter(units_[k].grad, p.flat, comm::ReduceOp::kSum);
  p.launched = true;
  launch_order_.push_back(k);
}

void ShardedModel::finish() {
  OV_CHECK(armed_, "ShardedModel::finish() without arm()");
  armed_ = false;
  launched_in_backward_ = static_cast<int64_t>(launch_order_.size());
  // Units the hooks did not complete, in backward order (the last units first), like reduce_gradients().
  for (size_t k = units_.size(); k-- > 0;) {
    Pending& p = pending_[k];
    if (p.launched) continue;
    for (size_t i = 0; i < units_[k].params.size(); ++i) {  // parameters with gradients from earlier micro-batches only
      const at::Tensor g = units_[k].params[i].grad();
      if (!p.seen[i] && g.defined()) p.flat.narrow(0, units_[k].offsets[i], units_[k].numels[i]).add_(g.reshape(-1));
    }
    launch(k);
  }
  for (size_t k : launch_order_) {
    Pending& p = pending_[k];
    p.work.wait();
    dp_.all_reduce(units_[k].grad, comm::ReduceOp::kSum).wait();
    p.expected = p.arrived;  // what the next step can wait for
    p.flat = at::Tensor();
    for (auto& param : units_[k].params) param.mutable_grad() = at::Tensor();
  }
}

void ShardedModel::gather() {
  for (Unit& u : units_) shard_.all_gather(u.full, u.master.to(compute_dtype_)).wait();
}

void ShardedModel::reduce_gradients() {
  c10::NoGradGuard no_grad;
  for (auto it = units_.rbegin(); it != units_.rend(); ++it) {  // backward order, as a hooked version would
    Unit& u = *it;
    at::Tensor flat = at::zeros({u.padded}, u.master.options());
    for (size_t i = 0; i < u.params.size(); ++i) {
      at::Tensor g = u.params[i].grad();
      if (g.defined()) flat.narrow(0, u.offsets[i], u.numels[i]).copy_(g.reshape(-1));
      u.params[i].mutable_grad() = at::Tensor();
    }
    shard_.reduce_scatter(u.grad, flat, comm::ReduceOp::kSum).wait();
    dp_.all_reduce(u.grad, comm::ReduceOp::kSum).wait();
  }
}

void ShardedModel::add_to_optimizer(train::AdamW& optimizer, double base_weight_decay) {
  const int64_t r = shard_.rank();
  for (Unit& u : units_) {
    const int64_t lo = r * u.shard_numel, hi = lo + u.shard_numel;
    for (size_t i = 0; i < u.params.size(); ++i) {
      const int64_t a = std::max(lo, u.offsets[i]), b = std::min(hi, u.offsets[i] + u.numels[i]);
      if (a >= b) continue;
      optimizer.add_segment(u.names[i] + "@" + std::to_string(a - u.offsets[i]), u.master.narrow(0, a - lo, b - a),
                            u.grad.narrow(0, a - lo, b - a),
                            train::mup_adam_rule(u.names[i], u.params[i].sizes(), base_weight_decay),
                            u.exp_avg.narrow(0, a - lo, b - a), u.exp_avg_sq.narrow(0, a - lo, b - a));
    }
  }
}

double ShardedModel::local_grad_norm_squared() const {
  double s = 0;
  for (const Unit& u : units_) s += u.grad.to(at::kDouble).pow(2).sum().item<double>();
  return s;
}

void ShardedModel::scale_gradients(double factor) {
  for (Unit& u : units_) u.grad.mul_(factor);
}

bool ShardedModel::gradients_finite() const {
  for (const Unit& u : units_)
    if (!at::isfinite(u.grad).all().item<bool>()) return false;
  return true;
}

ShardMemory ShardedModel::memory(int64_t states) const {
  ShardMemory m;
  for (const Unit& u : units_) {
    m.master_bytes += u.master.nbytes();
    m.grad_bytes += u.grad.nbytes();
    m.optimizer_bytes += states * u.master.nbytes();  // exp_avg and exp_avg_sq
    m.gathered_bytes += u.full.nbytes();
  }
  return m;
}

}  // namespace ov::parallel

namespace ov::parallel {

model::TensorMap ShardedModel::full_masters() {
  model::TensorMap out;
  for (Unit& u : units_) {
    at::Tensor flat = at::empty({u.padded}, u.master.options());
    shard_.all_gather(flat, u.master).wait();
    for (size_t i = 0; i < u.params.size(); ++i) {
      out[u.names[i]] = flat.narrow(0, u.offsets[i], u.numels[i]).view(u.params[i].sizes()).clone();
    }
  }
  return out;
}

void ShardedModel::load_masters(const model::TensorMap& full, const std::string& source) {
  std::string problems;
  for (const Unit& u : units_)
    for (size_t i = 0; i < u.params.size(); ++i) {
      const auto it = full.find(u.names[i]);
      if (it == full.end() || it->second.numel() != u.numels[i]) problems += (problems.empty() ? "" : ", ") + u.names[i];
    }
  if (!problems.empty()) throw InputError("'" + source + "' lacks or mis-shapes: " + problems);
  const int64_t r = shard_.rank();
  c10::NoGradGuard no_grad;
  for (Unit& u : units_) {
    at::Tensor flat = at::zeros({u.padded}, u.master.options());
    for (size_t i = 0; i < u.params.size(); ++i) flat.narrow(0, u.offsets[i], u.numels[i]).copy_(full.at(u.names[i]).reshape(-1));
    u.master.copy_(flat.narrow(0, r * u.shard_numel, u.shard_numel));
  }
}

}  // namespace ov::parallel

#include <nlohmann/json.hpp>

namespace ov::parallel {

model::TensorMap ShardedModel::optimizer_slices() const {
  model::TensorMap out;
  for (const Unit& u : units_) {
    out[u.name + ".exp_avg"] = u.exp_avg;
    out[u.name + ".exp_avg_sq"] = u.exp_avg_sq;
  }
  return out;
}

std::string ShardedModel::geometry_json() const {
  nlohmann::json units = nlohmann::json::array();
  for (const Unit& u : units_) {
    nlohmann::json params = nlohmann::json::array();
    for (size_t i = 0; i < u.names.size(); ++i) params.push_back({u.names[i], u.offsets[i], u.numels[i]});
    units.push_back({{"name", u.name}, {"numel", u.numel}, {"padded", u.padded}, {"params", params}});
  }
  return nlohmann::json{{"shard_size", shard_.size()}, {"units", units}}.dump();
}

void ShardedModel::load_optimizer_slices(const std::vector<model::TensorMap>& files, const std::string& source) {
  const int64_t old_size = static_cast<int64_t>(files.size()), r = shard_.rank();
  c10::NoGradGuard no_grad;
  for (Unit& u : units_) {
    for (const char* kind : {".exp_avg", ".exp_avg_sq"}) {
      // The old layout padded the unit to a multiple of its shard count: reassemble, trim, re-slice.
      std::vector<at::Tensor> parts;
      for (const model::TensorMap& f : files) {
        const auto it = f.find(u.name + kind);
        if (it == f.end()) throw InputError("optimizer state in '" + source + "' lacks " + u.name + kind);
        parts.push_back(it->second.reshape(-1).to(at::kFloat));
      }
      const at::Tensor old_flat = at::cat(parts);
      if (old_flat.numel() < u.numel || old_flat.numel() != (u.numel + old_size - 1) / old_size * old_size) {
        throw InputError("optimizer state in '" + source + "' does not match unit " + u.name + " (" + std::to_string(old_flat.numel()) +
                         " values for " + std::to_string(u.numel) + " parameters over " + std::to_string(old_size) + " shards)");
      }
      at::Tensor flat = at::zeros({u.padded}, u.master.options());
      flat.narrow(0, 0, u.numel).copy_(old_flat.narrow(0, 0, u.numel));
      (std::string(kind) == ".exp_avg" ? u.exp_avg : u.exp_avg_sq).copy_(flat.narrow(0, r * u.shard_numel, u.shard_numel));
    }
  }
}

}  // namespace ov::parallel
