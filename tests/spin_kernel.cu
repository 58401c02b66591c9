// A kernel that keeps the GPU busy for a given time: it holds a collective queued behind it in flight, to
// test the NCCL watchdog on one GPU (fault_job nccl-stall).
#include <cuda_runtime.h>

namespace {
__global__ void spin_kernel(unsigned long long nanoseconds) {
  unsigned long long start = 0, now = 0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  } while (now - start < nanoseconds);
}
}  // namespace

void spin_gpu_for(double seconds, cudaStream_t stream) {
  spin_kernel<<<1, 1, 0, stream>>>(static_cast<unsigned long long>(seconds * 1e9));
}
