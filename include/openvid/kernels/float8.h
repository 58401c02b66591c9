#pragma once
// The casts of float8 training (kernels/float8.cu): bf16 tensors to float8 e4m3 with one dynamic scale per
// tensor (torchao's "tensorwise" recipe: scale = 448 / amax), in two passes over the input: the amax, then the
// cast, which can write the row-major copy a forward or input-gradient product reads and the transposed copy
// (rows padded to a multiple of 16 with zeros) a weight-gradient product reads, from one read of the input.
// The scale never leaves the device: the cast kernel computes it from the amax the first pass wrote.
// Both passes can read GELU's input instead of its output (Float8Input::kGelu): they apply GELU as
// gelu_forward stores it (fused.h) on the way in, so the MLP's hidden activation is cast without existing
// in bf16.
// model/float8.h holds the ATen composition of the same casts (the CPU path and the kernels' reference).
#include <cstdint>

#include "openvid/kernels/fused.h"

namespace ov::kernels {

using fp8_t = uint8_t;  // the bits of a float8 e4m3 (fn) value
constexpr float kE4m3Max = 448.f;
constexpr float kAmaxFloor = 1e-12f;  // amax below it scales as it would (an all-zero tensor: no division by zero)

// What the passes read: x itself, or GELU(x) rounded to bf16 (bit for bit gelu_forward's output).
enum class Float8Input { kAsIs, kGelu };

// amax[0] = max |x| over n elements (n a multiple of 8, x 16-byte aligned); NaN if any element is NaN.
void float8_amax(const bf16_t* x, int64_t n, Float8Input input, float* amax, Stream stream);

// x [rows, cols] (cols a multiple of 16, 16-byte aligned), scale s = 448 / max(amax[0], kAmaxFloor) (NaN amax:
// NaN): out [rows, cols] = e4m3(x * s) (saturated to +-448, round to nearest even) when out is given; out_t
// [cols, padded_rows] = the same values transposed, zero beyond `rows` (padded_rows a multiple of 16, at least
// rows) when out_t is given; inv_scale[0] = 1 / s (the dequantisation scale the matrix product takes).
void float8_cast(const bf16_t* x, int64_t rows, int64_t cols, Float8Input input, const float* amax, fp8_t* out, fp8_t* out_t,
                 int64_t padded_rows, float* inv_scale, Stream stream);

}  // namespace ov::kernels
