#pragma once
// Counter-based Gaussian noise that the CPU and the GPU compute alike: Philox4x32-10 (Salmon et al.,
// "Parallel random numbers: as easy as 1, 2, 3", SC'11) turns (key, counter) into four 32-bit words,
// Box-Muller in double precision turns pairs of them into two normals. Element i of a stream takes
// counter i / 4 and output i % 4, so any slice of a stream can be drawn on its own, in any order, on
// any device. The CPU path (train/objective.cpp) and the CUDA kernel (kernels/noise.cu) call these same
// functions; results agree to the last bit except where the two math libraries' double log/cos/sin round
// differently (within an ulp of double, far below fp32's resolution).
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define OV_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define OV_HOST_DEVICE inline
#endif

namespace ov::kernels {

struct Philox4 {
  uint32_t x[4];
};

OV_HOST_DEVICE Philox4 philox4x32_10(uint64_t counter, uint64_t key) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0, p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// Uniform in (0, 1) from 32 bits: never exactly 0 or 1.
OV_HOST_DEVICE double philox_uniform(uint32_t bits) { return (static_cast<double>(bits) + 0.5) * 2.3283064365386963e-10; }

// Element i of the standard normal stream `key`.
OV_HOST_DEVICE float philox_normal(uint64_t key, uint64_t i) {
  const Philox4 r = philox4x32_10(i >> 2, key);
  const int pair = static_cast<int>((i >> 1) & 1), second = static_cast<int>(i & 1);
  const double radius = sqrt(-2.0 * log(philox_uniform(r.x[2 * pair])));
  const double angle = 6.283185307179586 * philox_uniform(r.x[2 * pair + 1]);
  return static_cast<float>(radius * (second ? sin(angle) : cos(angle)));
}

}  // namespace ov::kernels
