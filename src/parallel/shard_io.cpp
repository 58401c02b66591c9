#include "openvid/parallel/shard_io.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <map>
#include <nlohmann/json.hpp>

#include "openvid/model/state_dict.h"
#include "openvid/runtime/error.h"

namespace ov::parallel {
model::TensorMap full_masters(const ShardedModel& model) {
  model::TensorMap out;
  for (size_t k = 0; k < model.units().size(); ++k) {
    const FlatUnit& u = model.units()[k];
    const at::Tensor master = model.slices(k).master;
    at::Tensor flat = at::empty({u.padded}, master.options());
    model.shard_group().all_gather(flat, master).wait();
    for (size_t i = 0; i < u.params.size(); ++i) out[u.params[i].name] = u.view(flat, i).clone();
  }
  return out;
}

void load_masters(ShardedModel& model, const model::TensorMap& full, const std::string& source) {
  model::ParameterShapes expected;
  for (const FlatUnit& u : model.units())
    for (const FlatParam& p : u.params) expected.push_back({p.name, p.shape});
  model::check_weights(full, expected, source);
  c10::NoGradGuard no_grad;
  for (size_t k = 0; k < model.units().size(); ++k) {
    const FlatUnit& u = model.units()[k];
    const UnitSlices& s = model.slices(k);
    const at::Tensor flat = u.pack([&](size_t i) { return full.at(u.params[i].name); }, s.master.options());
    s.master.copy_(flat.narrow(0, s.begin, u.shard_numel));
  }
}

model::TensorMap optimizer_slices(const ShardedModel& model) {
  model::TensorMap out;
  for (size_t k = 0; k < model.units().size(); ++k) {
    out[model.units()[k].name + ".exp_avg"] = model.slices(k).exp_avg;
    out[model.units()[k].name + ".exp_avg_sq"] = model.slices(k).exp_avg_sq;
  }
  return out;
}

std::string geometry_json(const ShardedModel& model) {
  nlohmann::json units = nlohmann::json::array();
  for (const FlatUnit& u : model.units()) {
    nlohmann::json params = nlohmann::json::array();
    for (const FlatParam& p : u.params) params.push_back({p.name, p.offset, p.numel});
    units.push_back({{"name", u.name}, {"numel", u.extent}, {"padded", u.padded}, {"params", params}});
  }
  return nlohmann::json{{"shard_size", model.shard_group().size()}, {"units", units}}.dump();
}

void load_optimizer_slices(ShardedModel& model, const std::vector<model::TensorMap>& files, const std::string& geometry,
                           const std::string& source) {
  // Where the writing layout put each parameter: unit name -> (parameter name -> (offset, numel)).
  std::map<std::string, std::map<std::string, std::pair<int64_t, int64_t>>> old;
  try {
    const nlohmann::json g = nlohmann::json::parse(geometry);
    for (const auto& unit : g.at("units")) {
      auto& params = old[unit.at("name").get<std::string>()];
      for (const auto& p : unit.at("params")) params[p.at(0).get<std::string>()] = {p.at(1).get<int64_t>(), p.at(2).get<int64_t>()};
    }
  } catch (const nlohmann::json::exception& e) {
    throw InputError("optimizer state in '" + source + "': its geometry cannot be read: " + e.what());
  }
  c10::NoGradGuard no_grad;
  for (size_t k = 0; k < model.units().size(); ++k) {
    const FlatUnit& u = model.units()[k];
    const UnitSlices& s = model.slices(k);
    const auto where = old.find(u.name);
    if (where == old.end()) throw InputError("optimizer state in '" + source + "' has no unit " + u.name);
    for (const char* kind : {".exp_avg", ".exp_avg_sq"}) {
      std::vector<at::Tensor> parts;  // the writing layout's slices, in shard-rank order: its flat unit
      for (const model::TensorMap& f : files) {
        const auto it = f.find(u.name + kind);
        if (it == f.end()) throw InputError("optimizer state in '" + source + "' lacks " + u.name + kind);
        parts.push_back(it->second.reshape(-1).to(at::kFloat));
      }
      const at::Tensor old_flat = at::cat(parts);
      const at::Tensor flat = u.pack(
          [&](size_t i) {
            const FlatParam& p = u.params[i];
            const auto it = where->second.find(p.name);
            if (it == where->second.end() || it->second.second != p.numel || it->second.first + p.numel > old_flat.numel()) {
              throw InputError("optimizer state in '" + source + "' does not match parameter " + p.name + " of unit " + u.name);
            }
            return old_flat.narrow(0, it->second.first, p.numel);
          },
          s.master.options());
      (std::string(kind) == ".exp_avg" ? s.exp_avg : s.exp_avg_sq).copy_(flat.narrow(0, s.begin, u.shard_numel));
    }
  }
}

}  // namespace ov::parallel
