#include "openvid/parallel/shard_io.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>

#include "openvid/model/state_dict.h"
#include "openvid/runtime/error.h"

namespace ov::parallel {
namespace {

const at::Tensor& weights_of(const UnitSlices& s, Weights which) {
  OV_CHECK(which == Weights::kMasters || s.ema.defined(), "the moving average of the weights was asked for, but it is off");
  return which == Weights::kMasters ? s.master : s.ema;
}

}  // namespace

void for_each_full_weight(const ShardedModel& model, Weights which, const std::function<void(const std::string&, const at::Tensor&)>& sink) {
  for (size_t k = 0; k < model.units().size(); ++k) {
    const FlatUnit& u = model.units()[k];
    const at::Tensor mine = weights_of(model.slices(k), which);
    at::Tensor flat = mine;  // a shard group of one rank holds the whole unit
    if (model.shard_group().size() > 1) {
      flat = at::empty({u.padded}, mine.options());
      model.shard_group().all_gather(flat, mine).wait();
    }
    for (size_t i = 0; i < u.params.size(); ++i) sink(u.params[i].name, u.view(flat, i));
  }  // the unit's buffer is released before the next one is gathered
}

model::TensorSpecs weight_specs(const ShardedModel& model) {
  model::TensorSpecs specs;
  for (const FlatUnit& u : model.units())
    for (const FlatParam& p : u.params) specs[p.name] = model::TensorSpec{at::kFloat, p.shape};
  return specs;
}

model::TensorMap full_masters(const ShardedModel& model, Weights which) {
  model::TensorMap out;
  for_each_full_weight(model, which, [&](const std::string& name, const at::Tensor& t) { out[name] = t.clone(); });
  return out;
}

namespace {

// Where this rank's slice [begin, begin + length) of a unit's flat buffer comes from: for each parameter
// it overlaps, the slice position, the parameter, and the parameter's elements [first, first + count).
struct Piece {
  int64_t at;
  size_t param;
  int64_t first, count;
};
std::vector<Piece> slice_pieces(const FlatUnit& u, int64_t begin, int64_t length) {
  std::vector<Piece> out;
  for (size_t i = 0; i < u.params.size(); ++i) {
    const FlatParam& p = u.params[i];
    const int64_t lo = std::max(begin, p.offset), hi = std::min(begin + length, p.offset + p.numel);
    if (lo < hi) out.push_back({lo - begin, i, lo - p.offset, hi - lo});
  }
  return out;
}

}  // namespace

void load_masters(ShardedModel& model, const std::string& path, const std::string& source, Weights which) {
  model::ParameterShapes expected;
  for (const FlatUnit& u : model.units())
    for (const FlatParam& p : u.params) expected.push_back({p.name, p.shape});
  model::check_weights(model::read_weights(path, model::Read::kHeader), expected, source);
  model::ElementRanges ranges;  // a parameter overlaps this rank's slice in one piece at most
  for (size_t k = 0; k < model.units().size(); ++k) {
    const FlatUnit& u = model.units()[k];
    for (const Piece& pc : slice_pieces(u, model.slices(k).begin, u.shard_numel)) ranges[u.params[pc.param].name] = {pc.first, pc.count};
  }
  const model::TensorMap got = model::read_weight_ranges(path, ranges);
  c10::NoGradGuard no_grad;
  for (size_t k = 0; k < model.units().size(); ++k) {
    const FlatUnit& u = model.units()[k];
    const UnitSlices& s = model.slices(k);
    at::Tensor slice = at::zeros({u.shard_numel}, at::kFloat);  // alignment gaps and padding stay zero
    for (const Piece& pc : slice_pieces(u, s.begin, u.shard_numel)) slice.narrow(0, pc.at, pc.count).copy_(got.at(u.params[pc.param].name));
    weights_of(s, which).copy_(slice);
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

void load_optimizer(ShardedModel& model, const std::vector<std::string>& files, const std::string& source) {
  OV_CHECK(!files.empty(), "load_optimizer needs the optimizer files of a checkpoint");
  // Where the writing layout put each parameter: unit name -> its padded length and (parameter -> (offset, numel)).
  struct OldUnit {
    int64_t padded = 0;
    std::map<std::string, std::pair<int64_t, int64_t>> params;
  };
  std::map<std::string, OldUnit> old;
  int64_t shard_size = 0;
  try {
    const nlohmann::json g = nlohmann::json::parse(model::read_metadata(files[0])["geometry"]);
    shard_size = g.at("shard_size").get<int64_t>();
    for (const auto& unit : g.at("units")) {
      OldUnit& o = old[unit.at("name").get<std::string>()];
      o.padded = unit.at("padded").get<int64_t>();
      for (const auto& p : unit.at("params")) o.params[p.at(0).get<std::string>()] = {p.at(1).get<int64_t>(), p.at(2).get<int64_t>()};
    }
  } catch (const nlohmann::json::exception& e) {
    throw InputError("optimizer state in '" + source + "': its geometry cannot be read: " + e.what());
  }
  if (shard_size != static_cast<int64_t>(files.size())) {
    throw InputError("optimizer state in '" + source + "' was written by " + std::to_string(shard_size) + " shard ranks but has " +
                     std::to_string(files.size()) + " files");
  }
  // Each parameter by name, in whichever unit that layout put it (a float8 run splits a block's weights into a
  // unit of their own: parallel/sharded_model.h), so runs can switch between bf16 and fp8 on resume.
  std::map<std::string, std::pair<std::string, std::pair<int64_t, int64_t>>> old_param;
  for (const auto& [unit, o] : old) {
    for (const auto& [name, at] : o.params) old_param[name] = {unit, at};
  }
  c10::NoGradGuard no_grad;
  for (size_t k = 0; k < model.units().size(); ++k) {
    const FlatUnit& u = model.units()[k];
    const UnitSlices& s = model.slices(k);
    // The new slice's parameters, found in the old flat buffers; per old unit, the span [lo, hi) covering them is read.
    const std::vector<Piece> pieces = slice_pieces(u, s.begin, u.shard_numel);
    struct Source {
      std::vector<size_t> pieces;
      std::vector<int64_t> old_at;
      int64_t lo = std::numeric_limits<int64_t>::max(), hi = 0;
    };
    std::map<std::string, Source> sources;
    for (size_t i = 0; i < pieces.size(); ++i) {
      const FlatParam& p = u.params[pieces[i].param];
      const auto it = old_param.find(p.name);
      if (it == old_param.end() || it->second.second.second != p.numel ||
          it->second.second.first + p.numel > old.at(it->second.first).padded) {
        throw InputError("optimizer state in '" + source + "' does not match parameter " + p.name + " of unit " + u.name);
      }
      Source& src = sources[it->second.first];
      src.pieces.push_back(i);
      src.old_at.push_back(it->second.second.first + pieces[i].first);
      src.lo = std::min(src.lo, src.old_at.back());
      src.hi = std::max(src.hi, src.old_at.back() + pieces[i].count);
    }
    for (const char* kind : {".exp_avg", ".exp_avg_sq"}) {
      at::Tensor slice = at::zeros({u.shard_numel}, at::kFloat);
      for (const auto& [unit, src] : sources) {
        const int64_t old_shard = old.at(unit).padded / shard_size;
        std::vector<at::Tensor> parts;  // [lo, hi) of the old flat buffer, from the files that hold it
        for (int64_t r = src.lo / old_shard; r * old_shard < src.hi; ++r) {
          const int64_t a = std::max(src.lo, r * old_shard), b = std::min(src.hi, (r + 1) * old_shard);
          const std::string& file = files[static_cast<size_t>(r)];
          parts.push_back(model::read_ranges(file, {{unit + kind, {a - r * old_shard, b - a}}}).at(unit + kind).to(at::kFloat));
        }
        const at::Tensor span = at::cat(parts);
        for (size_t j = 0; j < src.pieces.size(); ++j) {
          const Piece& pc = pieces[src.pieces[j]];
          slice.narrow(0, pc.at, pc.count).copy_(span.narrow(0, src.old_at[j] - src.lo, pc.count));
        }
      }
      (std::string(kind) == ".exp_avg" ? s.exp_avg : s.exp_avg_sq).copy_(slice);
    }
  }
}

}  // namespace ov::parallel
