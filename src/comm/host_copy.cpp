#include "openvid/comm/host_copy.h"

#include <ATen/ops/empty.h>
#include <c10/core/Event.h>
#include <c10/core/impl/VirtualGuardImpl.h>

namespace ov::comm {

at::Tensor to_host(const at::Tensor& t) {
  if (!t.is_cuda()) return t;
  at::Tensor host = at::empty(t.sizes(), t.options().device(at::kCPU).pinned_memory(true));
  host.copy_(t, /*non_blocking=*/true);
  c10::Event copied(c10::DeviceType::CUDA);
  copied.record(c10::impl::VirtualGuardImpl(c10::DeviceType::CUDA).getStream(t.device()));
  copied.synchronize();
  return host;
}

}  // namespace ov::comm
