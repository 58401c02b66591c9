#include "openvid/model/sampler.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "openvid/runtime/error.h"

namespace ov::model {

at::Tensor sample_latents(DiT& model, const at::Tensor& noise, const at::Tensor& text, const SamplerOptions& o, const TokenWindow* window) {
  OV_CHECK(o.steps >= 1, "sampling needs at least one step");
  c10::NoGradGuard no_grad;
  const int64_t B = noise.size(0);
  const auto shift = [&](double t) { return o.shift * t / (1 + (o.shift - 1) * t); };
  const bool guided = o.guidance != 1.0;
  // The conditional and the unconditional pass as one batch of 2B.
  const at::Tensor text_in = guided ? at::cat({text, at::zeros_like(text)}) : text;
  at::Tensor x = noise.to(at::kFloat);
  for (int64_t i = o.steps; i >= 1; --i) {
    const double t_i = shift(static_cast<double>(i) / static_cast<double>(o.steps));
    const double t_next = shift(static_cast<double>(i - 1) / static_cast<double>(o.steps));
    const at::Tensor t = at::full({guided ? 2 * B : B}, t_i, x.options());
    const at::Tensor x_in = guided ? at::cat({x, x}) : x;
    const at::Tensor v_all = (window != nullptr ? model->forward_window(x_in, text_in, t, *window) : model->forward(x_in, text_in, t)).to(at::kFloat);
    const at::Tensor v = guided ? v_all.narrow(0, B, B) + o.guidance * (v_all.narrow(0, 0, B) - v_all.narrow(0, B, B)) : v_all;
    x = x + (t_i - t_next) * v;
    if (o.progress) o.progress(o.steps - i + 1, o.steps);
  }
  return x;
}

}  // namespace ov::model
