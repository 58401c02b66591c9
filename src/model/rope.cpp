#include "openvid/model/rope.h"

#include <ATen/ATen.h>

#include "openvid/runtime/error.h"

namespace ov::model {

at::Tensor rope_axis_angles(int64_t dim) {
  // The reference's operations, in its order, all fp32: 1 / base^(arange(0, dim, 2).float() / dim),
  // then outer(position, freqs).
  const at::Tensor freqs = 1.0 / at::pow(kRopeBase, at::arange(0, dim, 2, at::kLong).to(at::kFloat) / dim);
  return at::outer(at::arange(kRopeGrid, at::kFloat), freqs);
}

RopeAxisTables rope_axis_tables(int64_t head_dim, const at::Device& device) {
  OV_CHECK(head_dim % 8 == 0, "head_dim must be a multiple of 8 for 3-D RoPE");
  const int64_t r = head_dim / 2;
  const at::Tensor time = rope_axis_angles(r), space = rope_axis_angles(r / 2);  // [128, r/2], [128, r/4]
  return {at::cos(time).to(device), at::sin(time).to(device), at::cos(space).to(device), at::sin(space).to(device)};
}

std::pair<at::Tensor, at::Tensor> rope_tables(const RopeAxisTables& axes, int64_t registers, const TokenWindow& win,
                                              RopeLayout layout) {
  const int64_t r = 2 * axes.cos_time.size(1);
  const int64_t lt = win.local_t();
  OV_CHECK(win.t_begin >= 0 && lt >= 0 && win.t_begin + lt <= win.t, "time slice outside the token grid");
  const auto& off = win.offset;
  if (off[0] < 0 || off[1] < 0 || off[2] < 0 || off[0] + win.t > kRopeGrid || off[1] + win.h > kRopeGrid ||
      off[2] + win.w > kRopeGrid) {
    throw InputError("a video of " + std::to_string(win.t) + "x" + std::to_string(win.h) + "x" +
                     std::to_string(win.w) + " tokens (t, h, w) at RoPE offset (" + std::to_string(off[0]) + ", " +
                     std::to_string(off[1]) + ", " + std::to_string(off[2]) + ") does not fit the " +
                     std::to_string(kRopeGrid) + "^3 RoPE grid");
  }
  // Grid coordinates of this rank's tokens, in token order (h, w, t_local), t fastest; built on the device.
  const at::TensorOptions index = at::TensorOptions().dtype(at::kLong).device(axes.cos_time.device());
  const at::Tensor hi = at::arange(win.h, index).view({-1, 1, 1}).expand({win.h, win.w, lt}).reshape(-1);
  const at::Tensor wi = at::arange(win.w, index).view({1, -1, 1}).expand({win.h, win.w, lt}).reshape(-1);
  const at::Tensor ti = (at::arange(lt, index) + win.t_begin).view({1, 1, -1}).expand({win.h, win.w, lt}).reshape(-1);
  at::Tensor pt = ti, ph = hi, pw = wi;
  if (layout == RopeLayout::kSeed) {
    // Token i (global index in h, w, t order) takes the i-th position of the window in t, h, w order.
    const at::Tensor g = (hi * win.w + wi) * win.t + ti;
    pt = at::div(g, win.h * win.w, "floor");
    ph = at::remainder(at::div(g, win.w, "floor"), win.h);
    pw = at::remainder(g, win.w);
  }
  auto gather = [&](const at::Tensor& time, const at::Tensor& space) {
    return at::cat({time.index_select(0, pt + off[0]), space.index_select(0, ph + off[1]), space.index_select(0, pw + off[2])}, 1);
  };
  const at::TensorOptions fp32 = axes.cos_time.options();
  const at::Tensor reg_cos = at::ones({registers, r}, fp32);
  const at::Tensor reg_sin = layout == RopeLayout::kSeed ? at::ones({registers, r}, fp32) : at::zeros({registers, r}, fp32);
  return {at::cat({reg_cos, gather(axes.cos_time, axes.cos_space)}, 0), at::cat({reg_sin, gather(axes.sin_time, axes.sin_space)}, 0)};
}

std::pair<at::Tensor, at::Tensor> rope_tables(int64_t head_dim, int64_t registers, const TokenWindow& window, RopeLayout layout) {
  return rope_tables(rope_axis_tables(head_dim, at::kCPU), registers, window, layout);
}

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t r = x.size(-1) / 2;
  const at::Tensor x32 = x.to(at::promote_types(x.scalar_type(), at::kFloat));  // fp32, or fp64 for fp64
  const at::Tensor x1 = x32.narrow(-1, 0, r), x2 = x32.narrow(-1, r, r);
  const at::Tensor y1 = x1 * cos + x2 * sin;
  const at::Tensor y2 = -x1 * sin + x2 * cos;
  return at::cat({y1, y2}, -1).to(x.scalar_type());
}

}  // namespace ov::model
