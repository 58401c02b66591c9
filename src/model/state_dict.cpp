#include "openvid/model/state_dict.h"

#include <ATen/ATen.h>

#include <set>
#include <sstream>

#include "openvid/runtime/error.h"

namespace ov::model {

TensorMap state_dict(const torch::nn::Module& module) {
  TensorMap out;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) out[item.key()] = item.value().detach();
  return out;
}

namespace {
bool ignored(const std::string& name) { return name.rfind("rope.", 0) == 0; }  // reference's rope tables

std::string shape_str(const at::Tensor& t) { return c10::str(t.sizes()); }

void append(std::ostringstream& os, const char* what, const std::vector<std::string>& items) {
  if (items.empty()) return;
  os << "; " << what << " (" << items.size() << "): ";
  for (size_t i = 0; i < items.size(); ++i) os << (i ? ", " : "") << items[i];
}
}  // namespace

ParameterShapes parameter_shapes(const ModelConfig& c) {
  const int64_t d = c.width, dc = c.text_dim, h = int64_t{c.mlp_ratio} * c.width;
  const int64_t out = int64_t{c.patch} * c.patch * c.time_patch * c.in_channels;
  const bool affine = c.bias_and_norm_affine;
  ParameterShapes s;
  auto linear = [&](const std::string& name, int64_t in, int64_t outputs, bool bias) {
    s.push_back({name + ".weight", {outputs, in}});
    if (bias) s.push_back({name + ".bias", {outputs}});
  };
  // The order torch::nn::Module gives: a module's own parameters, then its children in registration order.
  s.push_back({"register_tokens", {1, c.registers, d}});
  s.push_back({"patch_embed.weight", {d, c.in_channels, c.time_patch, c.patch, c.patch}});
  s.push_back({"patch_embed.bias", {d}});
  linear("time_embed.0", d, 4 * d, true);
  linear("time_embed.2", 4 * d, d, true);
  for (int i = 0; i < c.depth; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    s.push_back({b + "lambda_param", {1}});
    if (affine) s.push_back({b + "norm1.weight", {d}});
    linear(b + "qkv", d, 3 * d, affine);
    linear(b + "attn_proj", d, d, false);
    if (affine) s.push_back({b + "norm2.weight", {d}});
    linear(b + "q_cross", d, d, affine);
    linear(b + "context_kv", dc, 2 * d, affine);
    linear(b + "cross_proj", d, d, false);
    if (affine) s.push_back({b + "norm3.weight", {d}});
    linear(b + "mlp.0", d, h, true);
    linear(b + "mlp.2", h, d, true);
    linear(b + "adaLN_modulation.1", d, 9 * d, true);
  }
  linear("final_modulation.1", d, 2 * d, true);
  if (affine) s.push_back({"final_norm.weight", {d}});
  linear("final_proj", d, out, true);
  return s;
}

void check_weights(const TensorMap& weights, const ParameterShapes& expected, const std::string& source) {
  std::vector<std::string> missing, unexpected, wrong_shape, wrong_dtype;
  std::set<std::string> known;
  for (const auto& [name, shape] : expected) {
    known.insert(name);
    const auto it = weights.find(name);
    if (it == weights.end()) {
      missing.push_back(name + " " + c10::str(at::IntArrayRef(shape)));
    } else if (it->second.sizes() != at::IntArrayRef(shape)) {
      wrong_shape.push_back(name + " " + shape_str(it->second) + " in the file vs " + c10::str(at::IntArrayRef(shape)) +
                            " in the model");
    } else if (!at::isFloatingType(it->second.scalar_type())) {
      wrong_dtype.push_back(name + " (" + std::string(c10::toString(it->second.scalar_type())) + ")");
    }
  }
  for (const auto& [name, t] : weights) {
    if (!known.count(name) && !ignored(name)) unexpected.push_back(name + " " + shape_str(t));
  }
  if (missing.empty() && unexpected.empty() && wrong_shape.empty() && wrong_dtype.empty()) return;
  std::ostringstream os;
  os << "weights from '" << source << "' do not match the model";
  append(os, "missing", missing);
  append(os, "unexpected", unexpected);
  append(os, "wrong shape", wrong_shape);
  append(os, "not a floating dtype", wrong_dtype);
  const auto has_bias = [&](const std::vector<std::string>& v) {
    for (const auto& n : v)
      if (n.find("qkv.bias") != std::string::npos) return true;
    return false;
  };
  if (has_bias(unexpected)) os << " (the file has qkv biases: was it trained with train_bias_and_rms = true?)";
  if (has_bias(missing)) os << " (the file has no qkv biases: was it trained with train_bias_and_rms = false?)";
  throw InputError(os.str());
}

void load_state_dict(torch::nn::Module& module, const TensorMap& weights, const std::string& source) {
  const auto params = module.named_parameters(/*recurse=*/true);
  ParameterShapes shapes;
  for (const auto& item : params) shapes.push_back({item.key(), item.value().sizes().vec()});
  check_weights(weights, shapes, source);
  at::NoGradGuard no_grad;
  for (const auto& item : params) {
    at::Tensor p = item.value();
    p.copy_(weights.at(item.key()));
  }
}

}  // namespace ov::model
