// Gaussian noise keyed per (sample, frame) (include/openvid/kernels/noise.h): one thread per element,
// the same Philox4x32-10 and Box-Muller as the CPU path.
#include "openvid/kernels/cuda_check.h"
#include "openvid/kernels/noise.h"
#include "openvid/kernels/philox.h"

namespace ov::kernels {
namespace {

__global__ void noise_kernel(float* __restrict__ out, const uint64_t* __restrict__ keys, int64_t total, int64_t channels,
                             int64_t frames, int64_t plane) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= total) return;
  // out[b, c, f, p] with p = h * W + w.
  const int64_t p = n % plane, f = (n / plane) % frames, c = (n / (plane * frames)) % channels, b = n / (plane * frames * channels);
  out[n] = philox_normal(keys[b * frames + f], static_cast<uint64_t>(c * plane + p));
}

}  // namespace

void gaussian_noise(float* out, const uint64_t* keys, int64_t batch, int64_t channels, int64_t frames, int64_t height,
                    int64_t width, Stream stream) {
  const int64_t total = batch * channels * frames * height * width;
  if (total == 0) return;
  constexpr int kThreads = 256;
  noise_kernel<<<static_cast<unsigned>((total + kThreads - 1) / kThreads), kThreads, 0, stream>>>(out, keys, total, channels, frames,
                                                                                                  height * width);
  OV_CUDA_CHECK_LAUNCH();
}

}  // namespace ov::kernels
