// The GPU's global timer on a stream (include/openvid/kernels/clock.h).
#include "openvid/kernels/clock.h"
#include "openvid/kernels/cuda_check.h"

namespace ov::kernels {
namespace {

__device__ __forceinline__ int64_t global_time() {
  uint64_t t = 0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return static_cast<int64_t>(t);
}

__global__ void stamp_kernel(int64_t* slot) { *slot = global_time(); }

__global__ void spin_kernel(const int64_t* slot, int64_t nanoseconds) {
  const int64_t end = *slot + nanoseconds;
  while (global_time() < end) __nanosleep(500);
}

}  // namespace

void stamp_time(int64_t* slot, Stream stream) {
  stamp_kernel<<<1, 1, 0, stream>>>(slot);
  OV_CUDA_CHECK_LAUNCH();
}

void spin_until(const int64_t* slot, int64_t nanoseconds, Stream stream) {
  if (nanoseconds <= 0) return;
  spin_kernel<<<1, 1, 0, stream>>>(slot, nanoseconds);
  OV_CUDA_CHECK_LAUNCH();
}

}  // namespace ov::kernels
