#pragma once
// Which device a rank computes on: what the user asks for (--device) and what the universe resolves it to.
#include <string>

namespace ov {

enum class DeviceKind { kCpu, kCuda };

struct DeviceChoice {
  DeviceKind kind = DeviceKind::kCpu;
  int index = -1;  // CUDA ordinal, -1 on the CPU
  std::string str() const;  // "cpu" or "cuda:N"
};

// --device: resolved per rank by Universe::create (auto: a GPU per node-local rank when there are GPUs).
enum class DeviceRequest { kAuto, kCpu, kCuda };

}  // namespace ov
