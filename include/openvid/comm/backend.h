#pragma once
// Which collectives backend a job runs on, as asked for (--backend) and as resolved for the device.
#include "openvid/runtime/device.h"

namespace ov::comm {

enum class Backend { kMpi, kNccl };
enum class BackendRequest { kAuto, kMpi, kNccl };

const char* to_string(Backend b);

// kAuto -> NCCL when this rank drives a CUDA device and NCCL is compiled in, else MPI. kMpi / kNccl as
// asked; throws InputError when the choice cannot work with `device`.
Backend resolve_backend(BackendRequest requested, const DeviceChoice& device);

}  // namespace ov::comm
