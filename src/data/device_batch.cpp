#include "openvid/data/device_batch.h"

#include <ATen/ATen.h>

namespace ov::data {

DeviceBatch to_device(const HostBatch& host, const at::Device& device, at::ScalarType dtype) {
  DeviceBatch d;
  d.bucket = host.bucket;
  d.samples = host.samples;
  d.frames = host.frames;
  d.t_begin = host.t_begin;
  d.t_count = host.t_count;
  const bool async = device.is_cuda() && host.latents.is_pinned();
  d.latents = host.latents.to(device, /*non_blocking=*/async).to(dtype);
  d.text = host.text.to(device, /*non_blocking=*/async).to(dtype);
  return d;
}

}  // namespace ov::data
