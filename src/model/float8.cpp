#include "openvid/model/float8.h"

#include <ATen/ATen.h>

#include <limits>

#include "openvid/kernels/float8.h"
#include "openvid/kernels/stream.h"
#include "openvid/model/block_ops.h"
#include "openvid/runtime/error.h"

namespace ov::model {
namespace {

using kernels::bf16_t;
using kernels::fp8_t;

bool aligned16(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

bool on_kernels(const at::Tensor& x) { return float8::runs_on_kernels(x); }

const bf16_t* bits(const at::Tensor& t) { return static_cast<const bf16_t*>(t.data_ptr()); }
fp8_t* bytes(const at::Tensor& t) { return t.defined() ? static_cast<fp8_t*>(t.data_ptr()) : nullptr; }

}  // namespace

namespace float8 {

// The kernels take x: bf16 on CUDA, contiguous, aligned, rows of a multiple of 16 values.
bool runs_on_kernels(const at::Tensor& x) {
  return x.is_cuda() && x.scalar_type() == at::kBFloat16 && ops::fused_kernels_enabled() && x.is_contiguous() && aligned16(x) &&
         x.size(-1) % 16 == 0;
}

bool fits(int64_t in_features, int64_t out_features) { return in_features % 16 == 0 && out_features % 16 == 0; }

int64_t padded_rows(int64_t rows) { return (rows + 15) / 16 * 16; }

namespace reference {

at::Tensor amax(const at::Tensor& x, Input input) {
  const at::Tensor v = input == Input::kGelu ? at::gelu(x) : x;
  return at::linalg_vector_norm(v, std::numeric_limits<double>::infinity()).to(at::kFloat).reshape({1});
}

Cast cast(const at::Tensor& x_in, const at::Tensor& amax, bool rows, bool transposed, Input input) {
  OV_CHECK(x_in.dim() == 2, "float8::cast takes a 2-D tensor");
  const at::Tensor x = input == Input::kGelu ? at::gelu(x_in) : x_in;
  // One IEEE division each, as the kernel computes them; a NaN amax stays NaN (clamp_min propagates it).
  const at::Tensor s = at::full_like(amax, kernels::kE4m3Max).div_(amax.clamp_min(kernels::kAmaxFloor));
  const at::Tensor q = (x.to(at::kFloat) * s).clamp_(-kernels::kE4m3Max, kernels::kE4m3Max).to(at::kFloat8_e4m3fn);
  Cast c;
  if (rows) c.rows = q;
  if (transposed) {
    c.transposed = q.t().contiguous();
    const int64_t pad = padded_rows(x.size(0)) - x.size(0);
    if (pad > 0) c.transposed = at::cat({c.transposed, at::zeros({x.size(1), pad}, q.options())}, 1);
  }
  c.inv_scale = at::ones_like(s).div_(s);
  return c;
}

}  // namespace reference

namespace {
kernels::Float8Input kernel_input(Input input) { return input == Input::kGelu ? kernels::Float8Input::kGelu : kernels::Float8Input::kAsIs; }
}  // namespace

at::Tensor amax(const at::Tensor& x, Input input) {
  if (!on_kernels(x)) return reference::amax(x, input);
  at::Tensor out = at::empty({1}, x.options().dtype(at::kFloat));
  kernels::float8_amax(bits(x), x.numel(), kernel_input(input), out.data_ptr<float>(), kernels::current_stream(x.device()));
  return out;
}

Cast cast(const at::Tensor& x, const at::Tensor& amax, bool rows, bool transposed, Input input) {
  if (!on_kernels(x) || x.dim() != 2) return reference::cast(x, amax, rows, transposed, input);
  const int64_t r = x.size(0), cols = x.size(1), padded = padded_rows(r);
  const at::TensorOptions fp8 = x.options().dtype(at::kFloat8_e4m3fn);
  Cast c;
  if (rows) c.rows = at::empty({r, cols}, fp8);
  if (transposed) c.transposed = at::empty({cols, padded}, fp8);
  c.inv_scale = at::empty({1}, x.options().dtype(at::kFloat));
  kernels::float8_cast(bits(x), r, cols, kernel_input(input), amax.data_ptr<float>(), bytes(c.rows), bytes(c.transposed), padded, c.inv_scale.data_ptr<float>(),
                       kernels::current_stream(x.device()));
  return c;
}

void cast_into(const at::Tensor& x, const at::Tensor& amax, const at::Tensor& out) {
  OV_CHECK(x.is_contiguous() && out.is_contiguous() && x.numel() == out.numel() && x.numel() % 16 == 0 &&
               out.scalar_type() == at::kFloat8_e4m3fn,
           "float8::cast_into: contiguous tensors of one numel, a multiple of 16, into e4m3");
  if (x.numel() == 0) return;
  int64_t cols = 16;
  for (int64_t c : {128, 64, 32}) {
    if (x.numel() % c == 0) {
      cols = c;
      break;
    }
  }
  const at::Tensor x2 = x.view({-1, cols});
  if (!on_kernels(x2) || reinterpret_cast<uintptr_t>(out.data_ptr()) % 8 != 0) {
    out.view({-1, cols}).copy_(reference::cast(x2, amax, true, false).rows);
    return;
  }
  const at::Tensor inv_scale = at::empty({1}, x.options().dtype(at::kFloat));
  kernels::float8_cast(bits(x2), x2.size(0), cols, kernels::Float8Input::kAsIs, amax.data_ptr<float>(), bytes(out), nullptr, 0,
                       inv_scale.data_ptr<float>(), kernels::current_stream(x.device()));
}

void inverse_scales(const at::Tensor& amax, const at::Tensor& inv_scale) {
  const at::Tensor s = at::full_like(amax, kernels::kE4m3Max).div_(amax.clamp_min(kernels::kAmaxFloor));
  inv_scale.copy_(at::ones_like(s).div_(s));
}

}  // namespace float8
}  // namespace ov::model
