#pragma once
// The CUDA stream LibTorch is enqueuing on for a device (its "current stream"), for kernel launches that
// must be ordered with the ATen work around them. Without a CUDA LibTorch: the legacy default stream.
// The launch guard of every openvid kernel: `device` (the tensors') must be the calling thread's current
// CUDA device, where the kernel will run; otherwise it throws ov::Error naming both devices.
#include <c10/core/Device.h>

#include "openvid/kernels/launch.h"

namespace ov::kernels {

Stream current_stream(const c10::Device& device);

}  // namespace ov::kernels
