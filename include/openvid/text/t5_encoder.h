#pragma once
// The T5 encoder (v1.1: gated-GELU feed-forward; v1.0: ReLU) as Hugging Face's T5EncoderModel computes
// it, for text states: token embedding, then per block a self-attention with T5's bucketed relative
// position bias (block 0's table, shared by all blocks) and no score scaling, and a feed-forward, each
// behind an RMS layer norm (no mean, no bias) with a residual; a final RMS norm. Inference only.
// Weights load from a Hugging Face folder: config.json with model.safetensors or a sharded set's
// model.safetensors.index.json (e.g. FLUX.1-dev's text_encoder_2/).
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <map>
#include <string>

namespace ov::text {

struct T5Config {
  int64_t vocab_size = 32128, d_model = 4096, d_kv = 64, d_ff = 10240, num_layers = 24, num_heads = 64;
  int64_t num_buckets = 32, max_distance = 128;
  double eps = 1e-6;
  bool gated = true;  // "gated-gelu" (v1.1): wo(gelu_tanh(wi_0 x) * wi_1 x); "relu" (v1.0): wo(relu(wi x))
};

// Reads a Hugging Face T5 config.json. Throws InputError naming the file and the field.
T5Config read_t5_config(const std::string& path);

// Bucket of each relative position (key - query), bidirectional as in an encoder: [q_len, k_len] int64.
at::Tensor relative_position_buckets(int64_t q_len, int64_t k_len, int64_t num_buckets, int64_t max_distance);

class T5Encoder {
 public:
  // Loads the folder's config and weights onto `device` in `dtype` (fp32, or bf16 as the reference
  // encodes on GPUs). Throws InputError naming the folder and what is missing or mis-shaped.
  T5Encoder(const std::string& folder, const at::Device& device, at::ScalarType dtype);

  // Random weights of `config`'s shapes (normal, std 0.05; norms 1) on `device`, for benchmarks of full-size
  // encoders without their checkpoint. Not a model: its outputs mean nothing.
  static T5Encoder random(const T5Config& config, const at::Device& device, at::ScalarType dtype, uint64_t seed = 0);

  // ids [N, L] int64 (any device) -> last hidden state [N, L, d_model] in the encoder's dtype, on its device.
  at::Tensor encode(const at::Tensor& ids) const;

  const T5Config& config() const { return config_; }
  at::Device device() const { return device_; }
  at::ScalarType dtype() const { return dtype_; }
  int64_t parameter_count() const;

 private:
  T5Encoder(const T5Config& config, const at::Device& device, at::ScalarType dtype) : config_(config), device_(device), dtype_(dtype) {}
  at::Tensor weight(const std::string& name) const { return weights_.at(name); }
  at::Tensor rms_norm(const at::Tensor& x, const std::string& weight_name) const;

  T5Config config_;
  at::Device device_;
  at::ScalarType dtype_;
  std::map<std::string, at::Tensor> weights_;  // Hugging Face names, on device_ in dtype_
};

}  // namespace ov::text
