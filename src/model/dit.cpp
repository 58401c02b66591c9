#include "openvid/model/dit.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "openvid/kernels/range.h"
#include "openvid/model/block_ops.h"
#include "openvid/model/float8.h"
#include "openvid/model/linear.h"
#include "openvid/runtime/error.h"

namespace ov::model {
namespace {

at::Tensor linear(const at::Tensor& x, const torch::nn::Linear& l, at::ScalarType dtype) {
  return ops::linear(x, l->weight.to(dtype), l->bias.defined() ? l->bias.to(dtype) : at::Tensor());
}

torch::nn::Linear make_linear(int64_t in, int64_t out, bool bias) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
}

// A parameter-less container, so that children get the reference's names ("time_embed.0.weight").
std::shared_ptr<torch::nn::Module> container(torch::nn::Module& parent, const std::string& name) {
  return parent.register_module(name, std::make_shared<torch::nn::Module>(name));
}

// An RMSNorm's weight as the reference names it ("norm1.weight"), or undefined when not learnable.
at::Tensor norm_weight(torch::nn::Module& parent, const std::string& name, int64_t width, bool affine) {
  if (!affine) return at::Tensor();
  return container(parent, name)->register_parameter("weight", at::ones({width}));
}

}  // namespace

const char* name(BlockLinear layer) {
  static const char* const names[kBlockLinears] = {"qkv", "attn_proj", "q_cross", "context_kv", "cross_proj", "mlp"};
  return names[static_cast<int>(layer)];
}

at::Tensor LocalSelfAttention::attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  return at::scaled_dot_product_attention(q, k, v, std::nullopt, 0.0, false, 1.0 / std::sqrt(q.size(-1)));
}

// ---- Block -------------------------------------------------------------------------------------------

BlockImpl::BlockImpl(const DiTConfig& config, int index)
    : index_(index),
      width_(config.width),
      heads_(config.width / config.head_dim),
      head_dim_(config.head_dim),
      residual_v_(config.residual_v) {
  const int64_t d = config.width;
  const bool affine = config.bias_and_norm_affine;
  norm1_ = norm_weight(*this, "norm1", d, affine);
  qkv_ = register_module("qkv", make_linear(d, 3 * d, affine));
  attn_proj_ = register_module("attn_proj", make_linear(d, d, false));
  lambda_ = register_parameter("lambda_param", at::full({1}, 0.5));
  norm2_ = norm_weight(*this, "norm2", d, affine);
  q_cross_ = register_module("q_cross", make_linear(d, d, affine));
  context_kv_ = register_module("context_kv", make_linear(config.text_dim, 2 * d, affine));
  cross_proj_ = register_module("cross_proj", make_linear(d, d, false));
  norm3_ = norm_weight(*this, "norm3", d, affine);
  auto mlp = container(*this, "mlp");
  mlp0_ = mlp->register_module("0", make_linear(d, config.mlp_ratio * d, true));
  mlp2_ = mlp->register_module("2", make_linear(config.mlp_ratio * d, d, true));
  ada_ = container(*this, "adaLN_modulation")->register_module("1", make_linear(d, 9 * d, true));
}

const at::Tensor& BlockImpl::weight(BlockLinear layer) const {
  switch (layer) {
    case BlockLinear::kQkv: return qkv_->weight;
    case BlockLinear::kAttnProj: return attn_proj_->weight;
    case BlockLinear::kQCross: return q_cross_->weight;
    case BlockLinear::kContextKv: return context_kv_->weight;
    case BlockLinear::kCrossProj: return cross_proj_->weight;
    case BlockLinear::kMlp: break;
  }
  return mlp0_->weight;
}

std::vector<at::Tensor> BlockImpl::weights(BlockLinear layer) const {
  if (layer == BlockLinear::kMlp) return {mlp0_->weight, mlp2_->weight};
  return {weight(layer)};
}

at::Tensor BlockImpl::project(const at::Tensor& x, const torch::nn::Linear& l, BlockLinear layer, at::ScalarType dtype) const {
  if (!float8(layer)) return linear(x, l, dtype);
  return ops::float8_linear(x, l->weight.to(dtype), l->bias.defined() ? l->bias.to(dtype) : at::Tensor(), float8_recipe_);
}

std::pair<at::Tensor, at::Tensor> BlockImpl::forward(const at::Tensor& x_in, const at::Tensor& c, const at::Tensor& text,
                                                     const at::Tensor& v0, const BlockContext& ctx) {
  const at::ScalarType dt = ctx.compute_dtype;
  const int64_t b = x_in.size(0), l = x_in.size(1), lc = text.size(1);
  const std::vector<at::Tensor> mod = linear(at::silu(c), ada_, dt).unsqueeze(1).chunk(9, -1);
  const at::Tensor &shift_sa = mod[0], &scale_sa = mod[1], &gate_sa = mod[2], &shift_ca = mod[3],
                   &scale_ca = mod[4], &gate_ca = mod[5], &shift_mlp = mod[6], &scale_mlp = mod[7],
                   &gate_mlp = mod[8];
  // Self-attention; qkv features split as (3, heads, head_dim), 3 outermost; value residual; RoPE on q, k.
  at::Tensor x, h;  // the residual stream, and its modulated norm after each junction, computed with it
  std::tie(x, h) = ops::norm_keeping_input(x_in, norm1_, shift_sa, scale_sa);
  const at::Tensor qkv = project(h, qkv_, BlockLinear::kQkv, dt);
  OV_CHECK(!residual_v_ || index_ == 0 || v0.defined(), "value residual needs block 0's values");
  const ops::Heads heads = ops::attention_heads(qkv, heads_, head_dim_, ctx.rope_cos, ctx.rope_sin,
                                                residual_v_ && index_ > 0 ? v0 : at::Tensor(), lambda_);
  const at::Tensor sa = ctx.self_attention->attend(heads.q, heads.k, heads.v).transpose(1, 2).reshape({b, l, width_});
  std::tie(x, h) = ops::residual_then_norm(x, project(sa, attn_proj_, BlockLinear::kAttnProj, dt), gate_sa, norm2_, shift_ca, scale_ca);

  // Cross-attention to the text states (no RoPE).
  const at::Tensor qc = project(h, q_cross_, BlockLinear::kQCross, dt).view({b, l, heads_, head_dim_}).transpose(1, 2);
  // unbind, not kv[0] and kv[1]: its backward is one stack, where each select's zero-fills, copies and adds.
  const std::vector<at::Tensor> kv =
      project(text.to(dt), context_kv_, BlockLinear::kContextKv, dt).view({b, lc, 2, heads_, head_dim_}).permute({2, 0, 3, 1, 4}).unbind(0);
  const at::Tensor ca = at::scaled_dot_product_attention(qc, kv[0], kv[1], std::nullopt, 0.0, false,
                                                         1.0 / std::sqrt(static_cast<double>(head_dim_)))
                            .transpose(1, 2)
                            .reshape({b, l, width_});
  std::tie(x, h) = ops::residual_then_norm(x, project(ca, cross_proj_, BlockLinear::kCrossProj, dt), gate_ca, norm3_, shift_mlp, scale_mlp);

  // MLP with exact (erf) GELU.
  const at::Tensor w1 = mlp0_->weight.to(dt), b1 = mlp0_->bias.to(dt), w2 = mlp2_->weight.to(dt), b2 = mlp2_->bias.to(dt);
  const at::Tensor m = float8(BlockLinear::kMlp) ? ops::float8_gelu_mlp(h, w1, b1, w2, b2, float8_recipe_) : ops::gelu_mlp(h, w1, b1, w2, b2);
  x = ops::gated_residual(x, m, gate_mlp);
  return {x, heads.v};
}

// ---- DiT ---------------------------------------------------------------------------------------------

DiTImpl::DiTImpl(const DiTConfig& config)
    : config_(config), self_attention_(std::make_shared<LocalSelfAttention>()) {
  ov::validate(config);
  const int64_t d = config.width;
  patch_embed_ = register_module(
      "patch_embed", torch::nn::Conv3d(torch::nn::Conv3dOptions(config.in_channels, d,
                                                                {config.time_patch, config.patch, config.patch})
                                           .stride({config.time_patch, config.patch, config.patch})
                                           .bias(true)));
  register_tokens_ = register_parameter("register_tokens", at::zeros({1, config.registers, d}));
  auto time = container(*this, "time_embed");
  time0_ = time->register_module("0", make_linear(d, 4 * d, true));
  time2_ = time->register_module("2", make_linear(4 * d, d, true));
  auto blocks = container(*this, "blocks");
  for (int i = 0; i < config.depth; ++i) blocks_.push_back(blocks->register_module(std::to_string(i), Block(config, i)));
  final_mod_ = container(*this, "final_modulation")->register_module("1", make_linear(d, 2 * d, true));
  final_norm_ = norm_weight(*this, "final_norm", d, config.bias_and_norm_affine);
  const int64_t out = int64_t{config.patch} * config.patch * config.time_patch * config.in_channels;
  final_proj_ = register_module("final_proj", make_linear(d, out, true));
  initialize(0);
}

void DiTImpl::initialize(uint64_t seed) {
  // Drawn on the CPU from one generator in registration order, then copied: identical on every rank
  // and device, and independent of the global RNG.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto params = named_parameters(/*recurse=*/true);
  auto ends_with = [](const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  auto contains = [](const std::string& s, const char* part) { return s.find(part) != std::string::npos; };
  at::NoGradGuard no_grad;
  for (const auto& item : params) {
    const std::string& name = item.key();
    at::Tensor p = item.value();
    at::Tensor init;
    if (name == "register_tokens") {
      init = at::normal(0.0, 1.0, p.sizes(), gen);
    } else if (ends_with(name, "lambda_param")) {
      init = at::full(p.sizes(), 0.5);
    } else if (contains(name, "norm") && ends_with(name, ".weight") && p.dim() == 1) {
      init = at::ones(p.sizes());
    } else if (contains(name, "modulation") || name.rfind("final_proj.", 0) == 0) {
      init = at::zeros(p.sizes());
    } else {
      // PyTorch's default for Linear/Conv (kaiming_uniform with a = sqrt(5), and the bias): U(+-1/sqrt(fan_in)).
      const std::string weight_name = ends_with(name, ".bias") ? name.substr(0, name.size() - 4) + "weight" : name;
      const at::Tensor w = params[weight_name];
      const int64_t fan_in = w.numel() / w.size(0);
      const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
      init = at::empty(p.sizes(), at::kFloat).uniform_(-bound, bound, gen);
      if (p.dim() == 2) init.mul_(config_.init_std_factor);
    }
    p.copy_(init);
  }
}

at::Tensor DiTImpl::time_embedding(const at::Tensor& t) const {
  const int64_t half = config_.width / 2;
  const at::Tensor freqs =
      at::exp(-std::log(10000.0) * at::arange(half, at::TensorOptions().dtype(at::kFloat).device(t.device())) / half);
  const at::Tensor args = t.to(at::kFloat).unsqueeze(1) * freqs.unsqueeze(0);
  const at::Tensor emb = at::cat({at::cos(args), at::sin(args)}, -1);
  return linear(at::silu(linear(emb.to(compute_dtype_), time0_, compute_dtype_)), time2_, compute_dtype_);
}

at::Tensor DiTImpl::forward(const at::Tensor& x, const at::Tensor& text, const at::Tensor& t,
                            std::array<int64_t, 3> rope_offset) {
  OV_CHECK(x.dim() == 5, "DiT input must be [B, C, T, H, W]");
  TokenWindow window;
  window.t = x.size(2) / config_.time_patch;
  window.h = x.size(3) / config_.patch;
  window.w = x.size(4) / config_.patch;
  window.offset = rope_offset;
  return forward_window(x, text, t, window);
}

at::Tensor DiTImpl::forward_window(const at::Tensor& x, const at::Tensor& text, const at::Tensor& t,
                                   const TokenWindow& window) {
  const DiTConfig& cfg = config_;
  const at::ScalarType dt = compute_dtype_;
  const int64_t b = x.size(0), d = cfg.width, r = cfg.registers;
  const int64_t lt = window.local_t(), hh = window.h, ww = window.w;
  if (x.dim() != 5 || x.size(1) != cfg.in_channels || x.size(2) != lt * cfg.time_patch ||
      x.size(3) != hh * cfg.patch || x.size(4) != ww * cfg.patch) {
    throw InputError("DiT input of shape " + c10::str(x.sizes()) + " does not match [B, " +
                     std::to_string(cfg.in_channels) + ", T, H, W] with T a multiple of time_patch " +
                     std::to_string(cfg.time_patch) + " and H, W multiples of patch " + std::to_string(cfg.patch));
  }
  if (text.dim() != 3 || text.size(0) != b || text.size(2) != cfg.text_dim) {
    throw InputError("text states of shape " + c10::str(text.sizes()) + " do not match [B, Lc, " +
                     std::to_string(cfg.text_dim) + "]");
  }
  if (t.dim() != 1 || t.size(0) != b) throw InputError("timesteps must be [B]");

  // Patch embedding; tokens in (h, w, t) order, t fastest; registers first. The convolution (kernel = stride =
  // the patch) as one matrix product over the patches, each flattened as the weight is, (c, t, h, w): the
  // tokens come out in place, where the convolution's [B, D, t, h, w] output needed a strided copy each way.
  const int64_t pt = cfg.time_patch, p = cfg.patch, c_in = cfg.in_channels;
  const at::Tensor patches = x.to(dt)
                                 .view({b, c_in, lt, pt, hh, p, ww, p})
                                 .permute({0, 4, 6, 2, 1, 3, 5, 7})
                                 .reshape({b, hh * ww * lt, c_in * pt * p * p});
  const at::Tensor tokens = at::linear(patches, patch_embed_->weight.to(dt).view({d, c_in * pt * p * p}), patch_embed_->bias.to(dt));
  at::Tensor seq = at::cat({register_tokens_.to(dt).expand({b, r, d}), tokens}, 1);
  const at::Tensor c = time_embedding(t);

  if (!rope_axes_.cos_time.defined() || rope_axes_.cos_time.device() != x.device()) rope_axes_ = rope_axis_tables(cfg.head_dim, x.device());
  auto [cos, sin] = rope_tables(rope_axes_, r, window, cfg.rope_layout);
  BlockContext ctx{cos, sin, dt, self_attention_.get()};
  const at::Tensor text_c = text.to(dt);  // once, not in every block
  at::Tensor v0;
  for (Block& block : blocks_) {
    const kernels::Range range("block " + std::to_string(block->index()));
    auto [out, v] = block_runner_ ? block_runner_(*block, seq, c, text_c, v0, ctx) : block->forward(seq, c, text_c, v0, ctx);
    seq = out;
    if (block->index() == 0) v0 = v;
  }

  // Final layer on the video tokens, then unpatchify: features (p_h, p_w, p_t, c), c fastest.
  const at::Tensor video = seq.narrow(1, r, hh * ww * lt);
  const std::vector<at::Tensor> mod = linear(at::silu(c), final_mod_, dt).unsqueeze(1).chunk(2, -1);
  const at::Tensor out = linear(ops::modulated_rms_norm(video, final_norm_, mod[0], mod[1], dt), final_proj_, dt);
  return out.view({b, hh, ww, lt, cfg.patch, cfg.patch, cfg.time_patch, cfg.in_channels})
      .permute({0, 7, 3, 6, 1, 4, 2, 5})
      .reshape({b, cfg.in_channels, lt * cfg.time_patch, hh * cfg.patch, ww * cfg.patch})
      .to(at::promote_types(dt, at::kFloat));
}

}  // namespace ov::model
