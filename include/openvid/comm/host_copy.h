#pragma once
// Reading a device result on the host without blocking the NCCL watchdog.
#include <ATen/core/Tensor.h>

namespace ov::comm {

// `t` on the host: a device tensor is copied into pinned memory and the host waits on an event recorded
// after the copy. Not a plain .cpu(): a pageable copy can hold the CUDA driver for as long as the device
// work queued before it runs, and the NCCL watchdog must still query its events then to end a stalled job.
at::Tensor to_host(const at::Tensor& t);

}  // namespace ov::comm
