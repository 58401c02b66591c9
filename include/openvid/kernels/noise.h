#pragma once
// The objective's Gaussian noise on the GPU (kernels/noise.cu), element for element what the CPU path
// draws with the same keys (kernels/philox.h).
#include <cstdint>

#include "openvid/kernels/launch.h"

namespace ov::kernels {

// out: [B, C, F, H, W] fp32. keys: device array [B * F], the stream of sample b's frame f; element
// (c, h, w) of that frame is element (c * H + h) * W + w of its stream.
void gaussian_noise(float* out, const uint64_t* keys, int64_t batch, int64_t channels, int64_t frames, int64_t height,
                    int64_t width, Stream stream);

}  // namespace ov::kernels
