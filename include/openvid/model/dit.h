#pragma once
// The reference trainer's video DiT (docs/model.md), as LibTorch modules with the reference's parameter names, so
// a state dict moves between the reference trainer and openvid by name.
//
// Precision: parameters are fp32 (the master copy). set_compute_dtype(kBFloat16) makes every matmul,
// attention and activation run in bf16 (weights cast on use, which autograd turns into fp32 gradients);
// norms, RoPE, the time embedding's sinusoids and the modulation arithmetic of the norms stay fp32.
// FSDP later swaps in gathered compute-dtype weights without changing this module's code.
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <array>
#include <functional>
#include <memory>

#include "openvid/config/model_config.h"
#include "openvid/model/rope.h"
#include "openvid/runtime/device.h"

namespace ov::model {

using DiTConfig = ov::ModelConfig;

// Self-attention over the whole sequence: the hook context parallelism replaces (its version gathers
// the video keys/values of the cp group). q, k, v are [B, heads, L, head_dim] with the registers first.
class SelfAttention {
 public:
  virtual ~SelfAttention() = default;
  virtual at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) = 0;
};

// The default: scaled dot-product attention over the local sequence (flash / cuDNN kernels on GPUs).
class LocalSelfAttention final : public SelfAttention {
 public:
  at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) override;
};

// What every block of one forward shares.
struct BlockContext {
  at::Tensor rope_cos, rope_sin;  // [L, head_dim/2] fp32, on the compute device
  at::ScalarType compute_dtype = at::kFloat;
  SelfAttention* self_attention = nullptr;
};

// A block's linear layers as a conversion to float8 names them (model/float8_conversion.h); the MLP's two
// linears are one (their products run in float8 together, GELU between them).
enum class BlockLinear { kQkv, kAttnProj, kQCross, kContextKv, kCrossProj, kMlp };
constexpr int kBlockLinears = 6;
// "qkv", "attn_proj", "q_cross", "context_kv", "cross_proj", "mlp" (the reference's module names).
const char* name(BlockLinear layer);

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const DiTConfig& config, int index);

  // x [B, L, D], c [B, D] (conditioning), text [B, Lc, Dc], v0 [B, heads, L, head_dim] (block 0's values;
  // undefined in block 0). Returns (x, v): the updated tokens and this block's (mixed) values.
  std::pair<at::Tensor, at::Tensor> forward(const at::Tensor& x, const at::Tensor& c, const at::Tensor& text,
                                            const at::Tensor& v0, const BlockContext& ctx);

  int index() const { return index_; }

  // The layer's weights [out, in] (for the MLP its first linear's, fc1, whose out is fc2's in).
  const at::Tensor& weight(BlockLinear layer) const;
  // Every weight of the layer's products (the MLP's fc1 and fc2).
  std::vector<at::Tensor> weights(BlockLinear layer) const;
  // Whether the layer's products run in float8 (model/float8.h); false until a conversion says so.
  void set_float8(BlockLinear layer, bool on) { float8_[static_cast<size_t>(layer)] = on; }
  bool float8(BlockLinear layer) const { return float8_[static_cast<size_t>(layer)]; }
  // Which of a float8 layer's products run in float8 (--fp8_recipe); every float8 layer of the block alike.
  void set_float8_recipe(Float8Recipe recipe) { float8_recipe_ = recipe; }

 private:
  at::Tensor project(const at::Tensor& x, const torch::nn::Linear& l, BlockLinear layer, at::ScalarType dtype) const;

  int index_;
  std::array<bool, kBlockLinears> float8_{};
  Float8Recipe float8_recipe_ = Float8Recipe::kTensorwise;
  int64_t width_, heads_, head_dim_;
  bool residual_v_;
  at::Tensor norm1_, norm2_, norm3_;  // undefined unless bias_and_norm_affine
  torch::nn::Linear qkv_{nullptr}, attn_proj_{nullptr}, q_cross_{nullptr}, context_kv_{nullptr},
      cross_proj_{nullptr}, mlp0_{nullptr}, mlp2_{nullptr}, ada_{nullptr};
  at::Tensor lambda_;
};
TORCH_MODULE(Block);

// How a block runs in forward: (block, x, c, text, v0, ctx) -> (x, v), block.forward by default. The model
// decides nothing about recomputing activations: parallel/parallelize.h installs a runner that does
// (model/recompute.h) for the blocks a run chooses.
using BlockRunner = std::function<std::pair<at::Tensor, at::Tensor>(BlockImpl&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                                    const at::Tensor&, const BlockContext&)>;

class DiTImpl : public torch::nn::Module {
 public:
  explicit DiTImpl(const DiTConfig& config);

  // x [B, C, T, H, W], text [B, Lc, Dc], t [B] in [0, 1] -> v [B, C, T, H, W]. rope_offset is the RoPE
  // window start (t, h, w); training draws it per step, evaluation and sampling use zeros.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& text, const at::Tensor& t,
                     std::array<int64_t, 3> rope_offset = {0, 0, 0});

  // The same for the tokens of `window` only: x holds the latent frames of the window's time slice
  // [B, C, t_count * time_patch, H, W] (context parallelism; self-attention goes through the hook).
  at::Tensor forward_window(const at::Tensor& x, const at::Tensor& text, const at::Tensor& t,
                            const TokenWindow& window);

  // Deterministic initialisation from `seed` (same weights on every rank and device): PyTorch's default
  // for linear and conv layers, 2-D weights times init_std_factor, registers standard normal, lambdas
  // 0.5, norm weights 1, modulation layers and final_proj zero.
  void initialize(uint64_t seed);

  void set_compute_dtype(at::ScalarType dtype) { compute_dtype_ = dtype; }
  at::ScalarType compute_dtype() const { return compute_dtype_; }
  void set_self_attention(std::shared_ptr<SelfAttention> op) { self_attention_ = std::move(op); }
  // Every block runs through `runner` (null: block.forward).
  void set_block_runner(BlockRunner runner) { block_runner_ = std::move(runner); }
  const BlockRunner& block_runner() const { return block_runner_; }

  const DiTConfig& config() const { return config_; }
  int64_t num_blocks() const { return static_cast<int64_t>(blocks_.size()); }
  Block& block(int64_t i) { return blocks_[static_cast<size_t>(i)]; }

 private:
  at::Tensor time_embedding(const at::Tensor& t) const;

  DiTConfig config_;
  at::ScalarType compute_dtype_ = at::kFloat;
  std::shared_ptr<SelfAttention> self_attention_;
  BlockRunner block_runner_;
  RopeAxisTables rope_axes_;  // on the device of the last forward
  torch::nn::Conv3d patch_embed_{nullptr};
  at::Tensor register_tokens_;
  torch::nn::Linear time0_{nullptr}, time2_{nullptr}, final_mod_{nullptr}, final_proj_{nullptr};
  at::Tensor final_norm_;
  std::vector<Block> blocks_;
};
TORCH_MODULE(DiT);

}  // namespace ov::model
