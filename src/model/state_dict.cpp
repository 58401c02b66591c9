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

void load_state_dict(torch::nn::Module& module, const TensorMap& weights, const std::string& source) {
  const auto params = module.named_parameters(/*recurse=*/true);
  std::vector<std::string> missing, unexpected, wrong_shape, wrong_dtype;
  std::set<std::string> known;
  for (const auto& item : params) {
    known.insert(item.key());
    const auto it = weights.find(item.key());
    if (it == weights.end()) {
      missing.push_back(item.key());
    } else if (it->second.sizes() != item.value().sizes()) {
      wrong_shape.push_back(item.key() + " " + shape_str(it->second) + " in the file vs " + shape_str(item.value()) +
                            " in the model");
    } else if (!at::isFloatingType(it->second.scalar_type())) {
      wrong_dtype.push_back(item.key() + " (" + std::string(c10::toString(it->second.scalar_type())) + ")");
    }
  }
  for (const auto& [name, t] : weights) {
    if (!known.count(name) && !ignored(name)) unexpected.push_back(name);
  }
  if (!missing.empty() || !unexpected.empty() || !wrong_shape.empty() || !wrong_dtype.empty()) {
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
  at::NoGradGuard no_grad;
  for (const auto& item : params) {
    at::Tensor p = item.value();
    p.copy_(weights.at(item.key()));
  }
}

}  // namespace ov::model
