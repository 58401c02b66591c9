#pragma once
// A HostBatch on the compute device: 16-bit values copied as stored (half the bytes of fp32), from
// pinned memory without blocking the host on GPUs, then converted on the device.
#include <ATen/core/Tensor.h>

#include "openvid/data/dataset.h"

namespace ov::data {

struct DeviceBatch {
  int64_t bucket = -1;
  std::vector<int64_t> samples;
  at::Tensor latents;  // [B, C, t_count, H, W] in `dtype`, on the device
  at::Tensor text;     // [B, Lc, Dc]
  int64_t frames = 0, t_begin = 0, t_count = 0;
};

// On CUDA the copies are queued on the current stream with non_blocking (the host buffers are pinned),
// so the host does not wait. The Dataset reuses a host buffer once no tensor holds its storage: keep the
// HostBatch until the copies have run (LibTorch's pinned allocator also records the copy's stream and
// does not hand the memory out again before it completes). On the CPU this is a plain conversion.
DeviceBatch to_device(const HostBatch& host, const at::Device& device, at::ScalarType dtype);

// A small host tensor (per-sample scalars, keys) on `device` without making the host wait for the device:
// staged through pinned memory on CUDA (a copy from pageable memory would synchronise). As is on the CPU.
at::Tensor to_device_async(const at::Tensor& host, const at::Device& device);

}  // namespace ov::data
