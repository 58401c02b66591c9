#include "openvid/data/device_batch.h"

#include <ATen/ATen.h>

namespace ov::data {

DeviceBatch to_device(const HostBatch& host, const at::Device& device, at::ScalarType dtype) {
  const bool async = device.is_cuda() && host.latents.is_pinned();
  return DeviceBatch{host.bucket,  host.samples, host.latents.to(device, /*non_blocking=*/async).to(dtype),
                     host.text.to(device, /*non_blocking=*/async).to(dtype), host.frames, host.t_begin, host.t_count};
}

at::Tensor to_device_async(const at::Tensor& host, const at::Device& device) {
  if (!device.is_cuda()) return host.to(device);
  return host.pin_memory().to(device, /*non_blocking=*/true);
}

}  // namespace ov::data
