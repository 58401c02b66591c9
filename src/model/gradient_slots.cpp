#include "openvid/model/gradient_slots.h"

#include <mutex>
#include <unordered_map>

#include "openvid/runtime/error.h"

namespace ov::model {
namespace {

struct Slot {
  at::Tensor tensor;
  bool taken = false;
};

struct Registry {
  std::mutex mutex;
  std::unordered_map<const c10::TensorImpl*, Slot> slots;
};

Registry& registry() {
  static Registry r;
  return r;
}

}  // namespace

void add_gradient_slot(const at::Tensor& param, const at::Tensor& slot) {
  OV_CHECK(param.defined() && slot.defined() && slot.sizes() == param.sizes() && slot.scalar_type() == param.scalar_type() &&
               slot.device() == param.device() && slot.is_contiguous(),
           "a gradient slot must be a contiguous tensor of its parameter's shape, dtype and device");
  Registry& r = registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  r.slots[param.unsafeGetTensorImpl()] = Slot{slot, false};
}

void remove_gradient_slots(const std::vector<at::Tensor>& params) {
  Registry& r = registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  for (const at::Tensor& p : params) r.slots.erase(p.unsafeGetTensorImpl());
}

void reset_gradient_slots(const std::vector<at::Tensor>& params) {
  Registry& r = registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  for (const at::Tensor& p : params) {
    const auto it = r.slots.find(p.unsafeGetTensorImpl());
    if (it != r.slots.end()) it->second.taken = false;
  }
}

at::Tensor take_gradient_slot(const at::Tensor& param) {
  if (!param.defined()) return at::Tensor();
  Registry& r = registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  const auto it = r.slots.find(param.unsafeGetTensorImpl());
  if (it == r.slots.end() || it->second.taken) return at::Tensor();
  // A parameter that has changed since it was registered (set_data to another shape or dtype) has no slot.
  if (it->second.tensor.sizes() != param.sizes() || it->second.tensor.scalar_type() != param.scalar_type()) return at::Tensor();
  it->second.taken = true;
  // A new tensor over the slot's storage: the caller's result is its own tensor, which autograd can keep.
  return it->second.tensor.view(it->second.tensor.sizes());
}

}  // namespace ov::model
