#include "openvid/runtime/device.h"

#include <ATen/Context.h>

#include <cstdio>
#include <map>

#ifdef OPENVID_TORCH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>
#endif

#include "openvid/runtime/error.h"

namespace ov {

std::string DeviceChoice::str() const {
  return kind == DeviceKind::kCpu ? std::string("cpu") : "cuda:" + std::to_string(index);
}

c10::ScalarType compute_dtype(Precision precision, const DeviceChoice& device) {
  const bool bf16 = precision == Precision::kBf16 || precision == Precision::kFp8 || (precision == Precision::kAuto && device.kind == DeviceKind::kCuda);
  return bf16 ? c10::ScalarType::BFloat16 : c10::ScalarType::Float;
}

int gpu_for_rank(int visible, int local_rank, int local_size) {
  OV_CHECK(visible > 0 && local_rank >= 0 && local_rank < local_size, "gpu_for_rank: no GPU or a bad node-local rank");
  return visible >= local_size ? local_rank : local_rank % visible;
}

std::string gpu_sharing_error(const std::string& host, const std::vector<RankGpu>& ranks) {
  std::map<std::string, const RankGpu*> first;  // GPU id -> the first rank that takes it
  for (const RankGpu& r : ranks) {
    const auto [it, fresh] = first.emplace(r.id, &r);
    if (fresh) continue;
    const RankGpu& a = *it->second;
    return "ranks " + std::to_string(a.rank) + " and " + std::to_string(r.rank) + " on host " + host + " would share one GPU (" + r.id +
           ", their cuda:" + std::to_string(a.index) + " and cuda:" + std::to_string(r.index) + ") among the " + std::to_string(ranks.size()) +
           " ranks there: launch at most one rank per GPU (srun --ntasks-per-node=<GPUs per node> --gpus-per-task=1, or mpirun "
           "-npernode <GPUs per node>), or pass --device cpu";
  }
  return "";
}

#ifdef OPENVID_TORCH_CUDA
namespace {
void check_cuda(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess) throw Error(std::string(what) + " failed: " + cudaGetErrorString(rc));
}
}  // namespace

int visible_gpus() { return at::hasCUDA() ? static_cast<int>(at::getNumGPUs()) : 0; }

std::string gpu_uuid(int index) {
  cudaDeviceProp prop{};
  check_cuda(cudaGetDeviceProperties(&prop, index), "cudaGetDeviceProperties");
  const auto* b = reinterpret_cast<const unsigned char*>(prop.uuid.bytes);
  char s[64];
  std::snprintf(s, sizeof(s), "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3], b[4], b[5],
                b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
  return s;
}

void make_current_gpu(int index) { c10::cuda::set_device(static_cast<c10::DeviceIndex>(index)); }

int current_gpu() { return at::hasCUDA() && at::getNumGPUs() > 0 ? static_cast<int>(c10::cuda::current_device()) : -1; }
#else
int visible_gpus() { return 0; }
std::string gpu_uuid(int) { throw Error("gpu_uuid: this build of LibTorch has no CUDA support"); }
void make_current_gpu(int) { throw Error("make_current_gpu: this build of LibTorch has no CUDA support"); }
int current_gpu() { return -1; }
#endif

}  // namespace ov
