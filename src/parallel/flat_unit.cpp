#include "openvid/parallel/flat_unit.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <map>

namespace ov::parallel {
namespace {
int64_t round_up(int64_t n, int64_t multiple) { return (n + multiple - 1) / multiple * multiple; }
}  // namespace

at::Tensor FlatUnit::view(const at::Tensor& flat, size_t i) const {
  const FlatParam& p = params[i];
  return flat.narrow(0, p.offset, p.numel).view(p.shape);
}

at::Tensor FlatUnit::pack(const std::function<at::Tensor(size_t)>& values, const at::TensorOptions& options) const {
  at::Tensor flat = at::zeros({padded}, options);
  for (size_t i = 0; i < params.size(); ++i) flat.narrow(0, params[i].offset, params[i].numel).copy_(values(i).reshape(-1));
  return flat;
}

std::vector<FlatUnit> flat_units(const torch::nn::Module& module, int64_t shard_size, const std::function<bool(const std::string&)>& float8) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) shapes.emplace_back(item.key(), item.value().sizes().vec());
  return flat_units(shapes, shard_size, float8);
}

std::vector<FlatUnit> flat_units(const std::vector<std::pair<std::string, std::vector<int64_t>>>& shapes, int64_t shard_size,
                                 const std::function<bool(const std::string&)>& float8) {
  std::vector<FlatUnit> units;
  std::map<std::string, size_t> index;
  for (const auto& [name, shape] : shapes) {
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    const bool in_float8 = float8 && float8(name);
    const std::string unit = (name.rfind("blocks.", 0) == 0 ? name.substr(0, name.find('.', 7)) : "root") + (in_float8 ? ".float8" : "");
    if (!index.count(unit)) {
      index[unit] = units.size();
      units.push_back(FlatUnit{unit, {}, 0, 0, 0, in_float8});
    }
    FlatUnit& u = units[index[unit]];
    const int64_t offset = round_up(u.extent, kAlignElements);
    u.params.push_back(FlatParam{name, shape, offset, numel});
    u.extent = offset + numel;
  }
  for (FlatUnit& u : units) {
    u.padded = round_up(std::max<int64_t>(u.extent, 1), shard_size * kAlignElements);
    u.shard_numel = u.padded / shard_size;
  }
  return units;
}

}  // namespace ov::parallel
