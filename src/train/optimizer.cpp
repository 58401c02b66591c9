#include "openvid/train/optimizer.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cmath>

#include "openvid/runtime/error.h"

namespace ov::train {

ParamRule mup_adam_rule(const std::string& name, at::IntArrayRef shape, double base_wd) {
  const auto has = [&](const char* part) { return name.find(part) != std::string::npos; };
  ParamRule r;
  if (has("bias") || has("norm") || has("lambda")) {
    r = {0.01, 0.0};
  } else {
    const double k = shape.empty() ? 1.0 : static_cast<double>(shape.back());
    r = {32.0 / k, base_wd * k / 1024.0};
  }
  if (has("patch_embed") || has("context_kv") || has("positional_embedding")) r = {0.01, 0.0};
  if (has("time")) r.lr_mult *= 0.1;
  if (has("modulation")) r.lr_mult *= 0.1;
  return r;
}

double lr_multiplier(LrSchedule schedule, int64_t step, int64_t max_steps, int64_t warmup) {
  if (step < warmup) return static_cast<double>(step) / static_cast<double>(warmup);
  const double span = static_cast<double>(std::max<int64_t>(max_steps - warmup, 1));
  const double done = static_cast<double>(step - warmup);
  switch (schedule) {
    case LrSchedule::kLinear: return std::max(0.0, (static_cast<double>(max_steps - step)) / span);
    case LrSchedule::kCosine: return std::max(0.0, 0.5 * (1 + std::cos(M_PI * done / span)));
    case LrSchedule::kConstant: return 1.0;
  }
  return 1.0;
}

void AdamW::add_segment(std::string name, at::Tensor param, at::Tensor grad, ParamRule rule, at::Tensor exp_avg,
                        at::Tensor exp_avg_sq) {
  OV_CHECK(param.scalar_type() == at::kFloat && grad.sizes() == param.sizes(), "AdamW segments are fp32 with matching gradients");
  if (!exp_avg.defined()) exp_avg = at::zeros_like(param);
  if (!exp_avg_sq.defined()) exp_avg_sq = at::zeros_like(param);
  OV_CHECK(exp_avg.sizes() == param.sizes() && exp_avg_sq.sizes() == param.sizes(), "AdamW state views must match the segment");
  segments_.push_back({std::move(name), param, grad, exp_avg, exp_avg_sq, rule});
}

void AdamW::step(double lr) {
  ++step_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double bc1 = 1 - std::pow(b1, static_cast<double>(step_));
  const double bc2_sqrt = std::sqrt(1 - std::pow(b2, static_cast<double>(step_)));
  c10::NoGradGuard no_grad;
  for (Segment& s : segments_) {
    const double lr_i = lr * s.rule.lr_mult;
    if (s.rule.weight_decay != 0) s.param.mul_(1 - lr_i * s.rule.weight_decay);
    s.exp_avg.lerp_(s.grad, 1 - b1);
    s.exp_avg_sq.mul_(b2).addcmul_(s.grad, s.grad, 1 - b2);
    const at::Tensor denom = (s.exp_avg_sq.sqrt() / bc2_sqrt).add_(options_.eps);
    s.param.addcdiv_(s.exp_avg, denom, -lr_i / bc1);
  }
}

model::TensorMap AdamW::state() const {
  model::TensorMap out;
  for (const Segment& s : segments_) {
    out[s.name + ".exp_avg"] = s.exp_avg;
    out[s.name + ".exp_avg_sq"] = s.exp_avg_sq;
  }
  out["step"] = at::full({1}, step_, at::kLong);
  return out;
}

void AdamW::load_state(const model::TensorMap& state, const std::string& source) {
  std::string missing;
  for (const Segment& s : segments_)
    for (const char* k : {".exp_avg", ".exp_avg_sq"}) {
      const auto it = state.find(s.name + k);
      if (it == state.end() || it->second.sizes() != s.param.sizes()) missing += (missing.empty() ? "" : ", ") + s.name + k;
    }
  if (!state.count("step")) missing += (missing.empty() ? "" : ", ") + std::string("step");
  if (!missing.empty()) throw InputError("optimizer state in '" + source + "' lacks or mis-shapes: " + missing);
  c10::NoGradGuard no_grad;
  for (Segment& s : segments_) {
    s.exp_avg.copy_(state.at(s.name + ".exp_avg"));
    s.exp_avg_sq.copy_(state.at(s.name + ".exp_avg_sq"));
  }
  step_ = state.at("step").item<int64_t>();
}

}  // namespace ov::train
