#include "openvid/model/float8_weights.h"

#include <ATen/ATen.h>

#include <mutex>
#include <unordered_map>

#include "openvid/runtime/error.h"

namespace ov::model {
namespace {

struct Registry {
  std::mutex mutex;
  std::unordered_map<const c10::TensorImpl*, Float8Weight> weights;
};

Registry& registry() {
  static Registry r;
  return r;
}

}  // namespace

void set_float8_weight(const at::Tensor& param, const Float8Weight& weight) {
  OV_CHECK(param.defined() && weight.rows.defined() && weight.rows.sizes() == param.sizes() && weight.rows.is_contiguous() &&
               weight.rows.scalar_type() == at::kFloat8_e4m3fn && weight.inv_scale.numel() == 1,
           "a float8 weight must be a contiguous e4m3 tensor of its parameter's shape with one scale");
  Registry& r = registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  r.weights[param.unsafeGetTensorImpl()] = weight;
}

void remove_float8_weights(const std::vector<at::Tensor>& params) {
  Registry& r = registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  for (const at::Tensor& p : params) r.weights.erase(p.unsafeGetTensorImpl());
}

std::optional<Float8Weight> float8_weight(const at::Tensor& param) {
  if (!param.defined()) return std::nullopt;
  Registry& r = registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  const auto it = r.weights.find(param.unsafeGetTensorImpl());
  if (it == r.weights.end()) return std::nullopt;
  return it->second;
}

at::Tensor stand_in(at::IntArrayRef sizes, const at::TensorOptions& options) { return at::zeros({1}, options).expand(sizes); }

bool is_stand_in(const at::Tensor& t) {
  if (!t.defined() || t.numel() <= 1) return false;
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (t.stride(d) != 0) return false;
  }
  return true;
}

}  // namespace ov::model
