#include "openvid/train/optimizer.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cmath>

#include "openvid/kernels/adamw.h"
#include "openvid/kernels/stream.h"
#include "openvid/parallel/sharded_model.h"
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
                        at::Tensor exp_avg_sq, at::Tensor compute_copy) {
  OV_CHECK(param.scalar_type() == at::kFloat && grad.sizes() == param.sizes() &&
               (grad.scalar_type() == at::kFloat || grad.scalar_type() == at::kBFloat16),
           "AdamW segments are fp32 masters with fp32 or bf16 gradients of the same shape");
  if (!exp_avg.defined()) exp_avg = at::zeros_like(param);
  if (!exp_avg_sq.defined()) exp_avg_sq = at::zeros_like(param);
  OV_CHECK(exp_avg.sizes() == param.sizes() && exp_avg_sq.sizes() == param.sizes(), "AdamW state views must match the segment");
  OV_CHECK(!compute_copy.defined() || compute_copy.numel() == param.numel(), "a compute copy must match its segment");
  if (!steps_.defined()) steps_ = at::zeros({1}, param.options().dtype(at::kLong));
  OV_CHECK(param.device() == steps_.device(), "AdamW segments must share one device");
  segments_.push_back({std::move(name), param, grad, exp_avg, exp_avg_sq, compute_copy, rule});
  fused_plan_.reset();
}

int64_t AdamW::steps() const { return steps_.defined() ? steps_.item<int64_t>() : 0; }

void AdamW::set_steps(int64_t steps) {
  OV_CHECK(steps_.defined(), "AdamW::set_steps before any segment");
  steps_.fill_(steps);
}

void AdamW::step(double lr, const at::Tensor& control) {
  if (segments_.empty()) return;
  c10::NoGradGuard no_grad;
  const at::Tensor c = control.defined() ? control : at::tensor({1.f, 1.f}, steps_.options().dtype(at::kFloat));
  OV_CHECK(c.numel() == 2 && c.scalar_type() == at::kFloat && c.device() == steps_.device(),
           "AdamW control is [apply, factor] in fp32 on the segments' device");
  if (!step_fused(lr, c)) step_with_aten(lr, c);
  steps_.add_(c.narrow(0, 0, 1).to(at::kLong));  // counts the update only when it applied
}

// The reference path (CPUs, and the reference the fused kernel is tested against).
void AdamW::step_with_aten(double lr, const at::Tensor& control) {
  const at::Tensor host = control.cpu();
  if (host[0].item<float>() == 0.f) return;
  const double factor = host[1].item<float>();
  const double t = static_cast<double>(steps_.item<int64_t>() + 1);
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double bc1 = 1 - std::pow(b1, t);
  const double bc2_sqrt = std::sqrt(1 - std::pow(b2, t));
  for (Segment& s : segments_) {
    const double lr_i = lr * s.rule.lr_mult;
    const at::Tensor g32 = s.grad.to(at::kFloat);
    const at::Tensor g = factor == 1.0 ? g32 : g32 * factor;
    if (s.rule.weight_decay != 0) s.param.mul_(1 - lr_i * s.rule.weight_decay);
    s.exp_avg.lerp_(g, 1 - b1);
    s.exp_avg_sq.mul_(b2).addcmul_(g, g, 1 - b2);
    const at::Tensor denom = (s.exp_avg_sq.sqrt() / bc2_sqrt).add_(options_.eps);
    s.param.addcdiv_(s.exp_avg, denom, -lr_i / bc1);
    if (s.compute_copy.defined()) s.compute_copy.view_as(s.param).copy_(s.param);
  }
}

namespace {

// The fused kernel's view of the segments: their table and the chunks each CUDA block takes, on the device.
struct FusedPlan {
  at::Tensor segments;  // AdamSegment records as bytes
  at::Tensor chunks;    // int64 (segment, first) pairs
  int64_t num_chunks = 0;
  kernels::CopyKind copy = kernels::CopyKind::kNone;
  kernels::CopyKind grad = kernels::CopyKind::kFloat;
};

}  // namespace

bool AdamW::step_fused(double lr, const at::Tensor& control) {
  if (!options_.fused || !kernels::available() || !steps_.is_cuda()) return false;
  if (!fused_plan_) {
    auto plan = std::make_shared<FusedPlan>();
    std::vector<kernels::AdamSegment> table;
    std::vector<int64_t> chunks;
    for (const Segment& s : segments_) {
      OV_CHECK(s.param.is_contiguous() && s.grad.is_contiguous() && s.exp_avg.is_contiguous() && s.exp_avg_sq.is_contiguous(),
               "fused AdamW needs contiguous segments");
      kernels::CopyKind kind = kernels::CopyKind::kNone;
      if (s.compute_copy.defined()) {
        OV_CHECK(s.compute_copy.is_contiguous(), "fused AdamW needs contiguous compute copies");
        kind = s.compute_copy.scalar_type() == at::kBFloat16 ? kernels::CopyKind::kBFloat16 : kernels::CopyKind::kFloat;
        OV_CHECK(kind == kernels::CopyKind::kBFloat16 || s.compute_copy.scalar_type() == at::kFloat,
                 "fused AdamW writes bf16 or fp32 compute copies");
        OV_CHECK(plan->copy == kernels::CopyKind::kNone || plan->copy == kind, "fused AdamW needs one compute-copy dtype");
        plan->copy = kind;
      }
      for (int64_t first = 0; first < s.param.numel(); first += kernels::kAdamChunk) {
        chunks.push_back(static_cast<int64_t>(table.size()));
        chunks.push_back(first);
      }
      const kernels::CopyKind grad_kind = s.grad.scalar_type() == at::kBFloat16 ? kernels::CopyKind::kBFloat16 : kernels::CopyKind::kFloat;
      OV_CHECK(table.empty() || plan->grad == grad_kind, "fused AdamW needs one gradient dtype");
      plan->grad = grad_kind;
      table.push_back({s.param.data_ptr<float>(), s.grad.data_ptr(), s.exp_avg.data_ptr<float>(),
                       s.exp_avg_sq.data_ptr<float>(), s.compute_copy.defined() ? s.compute_copy.data_ptr() : nullptr,
                       s.param.numel(), s.rule.lr_mult, s.rule.weight_decay});
    }
    const auto bytes = static_cast<int64_t>(table.size() * sizeof(kernels::AdamSegment));
    plan->segments = at::from_blob(table.data(), {bytes}, at::kByte).to(steps_.device());
    plan->chunks = at::tensor(chunks, at::kLong).to(steps_.device());
    plan->num_chunks = static_cast<int64_t>(chunks.size() / 2);
    fused_plan_ = plan;
  }
  const auto& plan = *std::static_pointer_cast<FusedPlan>(fused_plan_);
  const kernels::AdamConstants c{lr,
                                 options_.beta1,
                                 options_.beta2,
                                 static_cast<float>(1 - options_.beta1),
                                 static_cast<float>(options_.beta2),
                                 static_cast<float>(1 - options_.beta2),
                                 static_cast<float>(options_.eps)};
  kernels::fused_adamw(reinterpret_cast<const kernels::AdamSegment*>(plan.segments.data_ptr()), plan.chunks.data_ptr<int64_t>(),
                       plan.num_chunks, plan.grad, plan.copy, c, control.data_ptr<float>(), steps_.data_ptr<int64_t>(),
                       kernels::current_stream(steps_.device()));
  return true;
}

void add_shards(AdamW& optimizer, const parallel::ShardedModel& model, double base_weight_decay) {
  for (size_t k = 0; k < model.units().size(); ++k) {
    const parallel::FlatUnit& u = model.units()[k];
    const parallel::UnitSlices& s = model.slices(k);
    const int64_t lo = s.begin, hi = lo + u.shard_numel;
    for (const parallel::FlatParam& p : u.params) {
      const int64_t a = std::max(lo, p.offset), b = std::min(hi, p.offset + p.numel);
      if (a >= b) continue;
      optimizer.add_segment(p.name + "@" + std::to_string(a - p.offset), s.master.narrow(0, a - lo, b - a), s.grad.narrow(0, a - lo, b - a),
                            mup_adam_rule(p.name, p.shape, base_weight_decay), s.exp_avg.narrow(0, a - lo, b - a),
                            s.exp_avg_sq.narrow(0, a - lo, b - a), s.compute_chunk().narrow(0, a - lo, b - a));
    }
  }
}

}  // namespace ov::train
