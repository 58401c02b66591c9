#pragma once
// 3-D rotary position embedding of the DiT (as the reference trainer's): a fixed grid of 128^3 (t, h, w)
// positions with base 100 and r = head_dim/2 angles per token, time taking r/2 of them and height and
// width r/4 each. Tables are computed in fp32 with the same operations as the reference, so they agree
// with it to the last bit.
#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <string>

#include "openvid/config/model_config.h"

namespace ov::model {

constexpr int64_t kRopeGrid = 128;
constexpr double kRopeBase = 100.0;

// The video tokens of one forward, on the RoPE grid. Tokens are ordered (h, w, t), t fastest.
// A context-parallel rank holds the time slice [t_begin, t_begin + t_count) of every (h, w).
struct TokenWindow {
  int64_t t = 1, h = 1, w = 1;             // token grid of the whole sample (T', H', W')
  int64_t t_begin = 0, t_count = -1;       // this rank's time slice; t_count -1 = all of it
  std::array<int64_t, 3> offset{0, 0, 0};  // window start (t, h, w) on the 128^3 grid
  int64_t local_t() const { return t_count < 0 ? t - t_begin : t_count; }
  int64_t local_tokens() const { return h * w * local_t(); }
};

// Per-axis frequency table [kRopeGrid, dim/2]: position x 1 / base^(arange(0, dim, 2) / dim), in fp32.
at::Tensor rope_axis_angles(int64_t dim);

// cos and sin of the per-axis angle tables, on one device: time [kRopeGrid, head_dim/4], space (height
// and width) [kRopeGrid, head_dim/8]. Computed once on the CPU with the reference's operations; a token's
// angles are the concatenation of its three axes' rows, so its cos/sin are too.
struct RopeAxisTables {
  at::Tensor cos_time, sin_time, cos_space, sin_space;
};
RopeAxisTables rope_axis_tables(int64_t head_dim, const at::Device& device);

// cos and sin [registers + window.local_tokens(), head_dim/2] in fp32 on the axis tables' device, built
// there (no host-to-device copy). Throws InputError when the window does not fit the grid.
std::pair<at::Tensor, at::Tensor> rope_tables(const RopeAxisTables& axes, int64_t registers, const TokenWindow& window,
                                              RopeLayout layout);
// The same from tables made for the CPU.
std::pair<at::Tensor, at::Tensor> rope_tables(int64_t head_dim, int64_t registers, const TokenWindow& window,
                                              RopeLayout layout);

// Rotate-half application to x [B, heads, L, head_dim] with cos/sin [L, head_dim/2]; computed in fp32 (fp64
// for fp64 inputs) and cast back to x's dtype.
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace ov::model
