#include "openvid/model/float8_conversion.h"

#include <ATen/core/dispatch/Dispatcher.h>

#include <map>
#include <set>

#ifdef OPENVID_TORCH_CUDA
#include <cuda_runtime_api.h>
#endif

#include "openvid/model/float8.h"
#include "openvid/model/state_dict.h"

namespace ov::model {

Float8Conversion float8_conversion(const ModelConfig& config, int64_t min_features, Float8Recipe recipe) {
  Float8Conversion c;
  c.recipe = recipe;
  if (config.depth == 0) return c;
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& [name, shape] : parameter_shapes(config)) shapes[name] = shape;
  // Each layer's weights by module name (the MLP's fc1 decides, as its products are the layer's first).
  const auto modules = [](BlockLinear layer) {
    return layer == BlockLinear::kMlp ? std::vector<std::string>{"mlp.0", "mlp.2"} : std::vector<std::string>{name(layer)};
  };
  std::vector<bool> on(kBlockLinears, false);
  for (int i = 0; i < kBlockLinears; ++i) {
    const auto layer = static_cast<BlockLinear>(i);
    const std::vector<int64_t>& w = shapes.at("blocks.0." + modules(layer).front() + ".weight");
    const int64_t out = w[0], in = w[1];
    std::string why;
    if (!float8::fits(in, out)) {
      why = "in " + std::to_string(in) + ", out " + std::to_string(out) + ": not both multiples of 16";
    } else if (config.width < min_features) {
      why = "model width " + std::to_string(config.width) + " under --fp8_min_features " + std::to_string(min_features);
    }
    on[static_cast<size_t>(i)] = why.empty();
    if (why.empty()) {
      c.converted.push_back(name(layer));
    } else {
      c.kept.push_back(std::string(name(layer)) + " (" + why + ")");
    }
  }
  std::set<std::string> converted;
  for (int64_t b = 0; b < config.depth; ++b) {
    for (int i = 0; i < kBlockLinears; ++i) {
      if (!on[static_cast<size_t>(i)]) continue;
      for (const std::string& m : modules(static_cast<BlockLinear>(i))) converted.insert("blocks." + std::to_string(b) + "." + m + ".weight");
    }
  }
  for (const auto& [name, shape] : parameter_shapes(config)) {  // in registration order
    if (converted.count(name)) c.weights.push_back(name);
  }
  return c;
}

Float8Conversion convert_to_float8(DiT& model, int64_t min_features, Float8Recipe recipe) {
  Float8Conversion c = float8_conversion(model->config(), min_features, recipe);
  const std::set<std::string> converted(c.converted.begin(), c.converted.end());
  for (int64_t b = 0; b < model->num_blocks(); ++b) {
    model->block(b)->set_float8_recipe(recipe);
    for (int i = 0; i < kBlockLinears; ++i) {
      const auto layer = static_cast<BlockLinear>(i);
      model->block(b)->set_float8(layer, converted.count(name(layer)) > 0);
    }
  }
  return c;
}

std::string describe(const Float8Conversion& conversion) {
  auto list = [](const std::vector<std::string>& v) {
    std::string s;
    for (const std::string& x : v) s += (s.empty() ? "" : ", ") + x;
    return s.empty() ? std::string("none") : s;
  };
  const std::string recipe = std::string("recipe ") + ov::to_string(conversion.recipe) +
                             (conversion.recipe == Float8Recipe::kTensorwiseGwHp ? ", weight gradients in bf16" : "");
  return "float8 products (" + recipe + ") in every block: " + list(conversion.converted) + "; kept in bf16: " + list(conversion.kept);
}

std::string float8_unsupported(const at::Device& device) {
  const std::string instead = ": use --precision bf16 instead";
  if (!device.is_cuda()) return "--precision fp8 needs an NVIDIA GPU of compute capability 8.9 or newer (H100, H200, L40S, B200); this rank computes on the CPU: run on such a GPU, or use --precision auto (fp32 on CPUs)";
  const auto op = c10::Dispatcher::singleton().findOp({"aten::_scaled_mm", ""});
  if (!op.has_value() || !op->hasKernelForDispatchKey(c10::DispatchKey::CUDA)) {
    return "--precision fp8 needs a LibTorch whose CUDA build has at::_scaled_mm (PyTorch 2.4 or newer, CUDA 12.1 or newer)" + instead;
  }
#ifdef OPENVID_TORCH_CUDA
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device.index()) != cudaSuccess) return "--precision fp8: cannot read the properties of " + device.str();
  if (prop.major * 10 + prop.minor < 89) {
    return "--precision fp8 needs a GPU of compute capability 8.9 or newer (float8 tensor cores); " + device.str() + " is " + prop.name +
           " (" + std::to_string(prop.major) + "." + std::to_string(prop.minor) + ")" + instead;
  }
#endif
  return "";
}

}  // namespace ov::model
