#pragma once
// Which device a rank computes on: what the user asks for (--device), the rule that binds a rank to a GPU,
// and the few CUDA queries the runtime needs (compiled without CUDA too: no GPUs then).
#include <c10/core/ScalarType.h>

#include <string>
#include <vector>

namespace ov {

enum class DeviceKind { kCpu, kCuda };

struct DeviceChoice {
  DeviceKind kind = DeviceKind::kCpu;
  int index = -1;  // CUDA ordinal, -1 on the CPU
  std::string str() const;  // "cpu" or "cuda:N"
};

// --device: resolved per rank by Universe::create (auto: a GPU per rank when there are GPUs).
enum class DeviceRequest { kAuto, kCpu, kCuda };

// --precision: the dtype a rank computes in (masters, moments and reductions stay fp32).
// kFp8: bf16 compute with the block linears' products in float8 (model/float8_conversion.h; GPUs of compute
// capability 8.9 or newer).
enum class Precision { kAuto, kFp32, kBf16, kFp8 };
// --fp8_recipe: which of a float8 layer's three products run in float8 (model/float8.h). kTensorwise: all
// three; kTensorwiseGwHp: the forward and the input gradient, with the weight gradient in bf16 (torchao's
// "with_gw_hp" recipes).
enum class Float8Recipe { kTensorwise, kTensorwiseGwHp };
// The words of --fp8_recipe (the option's choices and the run's start line both use them).
constexpr const char* to_string(Float8Recipe recipe) {
  return recipe == Float8Recipe::kTensorwiseGwHp ? "tensorwise_with_gw_hp" : "tensorwise";
}
// The one precision decision of every executable: bf16 for kBf16 and kFp8, and for kAuto on a GPU; fp32 otherwise.
c10::ScalarType compute_dtype(Precision precision, const DeviceChoice& device);

// ---- The binding rule (Universe::create applies it; pure, so that it is tested without GPUs).
// A rank sees `visible` GPUs (> 0) and is node-local rank `local_rank` of `local_size`. Launchers bind in
// one of two ways, and both work:
//  * every GPU of the node is visible to every rank (mpirun; srun without GPU binding): visible >=
//    local_size, and the rank takes GPU `local_rank`;
//  * each task sees only its own GPU(s) (srun --gpus-per-task=1, --gpu-bind, a site's cgroup binding):
//    visible < local_size, and the rank takes GPU `local_rank % visible` (0 when it sees one).
// Whether two ranks then land on one physical GPU is not decided from these counts but from the GPUs'
// identities (gpu_sharing_error).
int gpu_for_rank(int visible, int local_rank, int local_size);

// One rank of a host and the GPU it would take: `id` identifies the physical GPU (its UUID), `index` is
// the CUDA ordinal the rank sees it as.
struct RankGpu {
  int rank = 0, local_rank = 0, index = 0;
  std::string id;
};
// "" when no two ranks of `host` take the same physical GPU; else one message naming the first GPU taken
// twice, its ranks, and what to launch instead.
std::string gpu_sharing_error(const std::string& host, const std::vector<RankGpu>& ranks);

// ---- This process's GPUs (CUDA builds of LibTorch; without CUDA: none, and the calls below are not made).
int visible_gpus();
// The physical GPU's UUID in nvidia-smi's form ("GPU-8c1f..."), whatever CUDA_VISIBLE_DEVICES numbers it as; creates no
// CUDA context.
std::string gpu_uuid(int index);
// Makes `index` LibTorch's (and CUDA's) current device of the calling thread.
void make_current_gpu(int index);
// The calling thread's current CUDA device; -1 without CUDA.
int current_gpu();

}  // namespace ov
