#pragma once
// A named range of host time, for profilers: an NVTX range (Nsight Systems) when the build has CUDA, and a
// user annotation in LibTorch's profiler (Kineto traces of --profile_dir). Costs next to nothing when no
// profiler listens.
#include <memory>
#include <string>

namespace at {
class RecordFunction;
}

namespace ov::kernels {

class Range {
 public:
  explicit Range(const std::string& name);
  ~Range();
  Range(const Range&) = delete;
  Range& operator=(const Range&) = delete;

 private:
  std::unique_ptr<at::RecordFunction> record_;
};

}  // namespace ov::kernels
