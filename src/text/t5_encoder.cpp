#include "openvid/text/t5_encoder.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <vector>

#include "openvid/model/safetensors.h"
#include "openvid/runtime/error.h"

namespace ov::text {
namespace fs = std::filesystem;

T5Config read_t5_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw InputError("T5 config '" + path + "' cannot be read: a T5 encoder folder holds config.json beside its weights");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw InputError("T5 config '" + path + "' is not valid JSON: " + e.what());
  }
  auto field = [&](const char* name, auto fallback, bool required) {
    using T = decltype(fallback);
    if (!j.contains(name)) {
      if (required) throw InputError("T5 config '" + path + "' has no '" + name + "': is this a Hugging Face T5 config.json?");
      return fallback;
    }
    try {
      return j.at(name).get<T>();
    } catch (const nlohmann::json::exception&) {
      throw InputError("T5 config '" + path + "': '" + name + "' has the wrong type");
    }
  };
  T5Config c;
  const std::string type = field("model_type", std::string(), false);
  if (!type.empty() && type != "t5" && type != "umt5") {
    throw InputError("config '" + path + "' describes a '" + type + "' model, not T5: pass the folder of a T5 encoder");
  }
  c.vocab_size = field("vocab_size", c.vocab_size, true);
  c.d_model = field("d_model", c.d_model, true);
  c.d_kv = field("d_kv", c.d_kv, true);
  c.d_ff = field("d_ff", c.d_ff, true);
  c.num_layers = field("num_layers", c.num_layers, true);
  c.num_heads = field("num_heads", c.num_heads, true);
  c.num_buckets = field("relative_attention_num_buckets", c.num_buckets, false);
  c.max_distance = field("relative_attention_max_distance", c.max_distance, false);
  c.eps = field("layer_norm_epsilon", c.eps, false);
  const std::string ff = field("feed_forward_proj", std::string("relu"), false);
  if (ff != "gated-gelu" && ff != "relu") {
    throw InputError("T5 config '" + path + "': feed_forward_proj '" + ff + "' is not supported (T5 v1.1's 'gated-gelu' or v1.0's 'relu')");
  }
  c.gated = ff == "gated-gelu";
  if (c.vocab_size < 1 || c.d_model < 1 || c.d_kv < 1 || c.d_ff < 1 || c.num_layers < 1 || c.num_heads < 1 || c.num_buckets < 2 ||
      c.max_distance < 2 || !(c.eps > 0)) {
    throw InputError("T5 config '" + path + "' has a non-positive size");
  }
  return c;
}

at::Tensor relative_position_buckets(int64_t q_len, int64_t k_len, int64_t num_buckets, int64_t max_distance) {
  const at::Tensor rel = at::arange(k_len, at::kLong).unsqueeze(0) - at::arange(q_len, at::kLong).unsqueeze(1);
  const int64_t half = num_buckets / 2;  // bidirectional: keys after the query use the upper half
  const int64_t exact = half / 2;
  const at::Tensor upper = (rel > 0).to(at::kLong) * half;
  const at::Tensor distance = rel.abs();
  // Distances from `exact` up to max_distance share log-spaced buckets; beyond, the last one.
  const at::Tensor large = (exact + (at::log(distance.to(at::kFloat) / static_cast<double>(exact)) /
                                     std::log(static_cast<double>(max_distance) / static_cast<double>(exact)) *
                                     static_cast<double>(half - exact))
                                        .to(at::kLong))
                               .clamp_max(half - 1);
  return upper + at::where(distance < exact, distance, large);
}

namespace {

std::string layer_name(int64_t block, int layer, const std::string& rest) {
  return "encoder.block." + std::to_string(block) + ".layer." + std::to_string(layer) + "." + rest;
}

// Every weight of the encoder but the token embedding, by Hugging Face name.
std::map<std::string, std::vector<int64_t>> weight_shapes(const T5Config& c) {
  const int64_t inner = c.num_heads * c.d_kv;
  std::map<std::string, std::vector<int64_t>> expected;
  for (int64_t b = 0; b < c.num_layers; ++b) {
    for (const char* p : {"q", "k", "v"}) expected[layer_name(b, 0, std::string("SelfAttention.") + p + ".weight")] = {inner, c.d_model};
    expected[layer_name(b, 0, "SelfAttention.o.weight")] = {c.d_model, inner};
    expected[layer_name(b, 0, "layer_norm.weight")] = {c.d_model};
    if (c.gated) {
      expected[layer_name(b, 1, "DenseReluDense.wi_0.weight")] = {c.d_ff, c.d_model};
      expected[layer_name(b, 1, "DenseReluDense.wi_1.weight")] = {c.d_ff, c.d_model};
    } else {
      expected[layer_name(b, 1, "DenseReluDense.wi.weight")] = {c.d_ff, c.d_model};
    }
    expected[layer_name(b, 1, "DenseReluDense.wo.weight")] = {c.d_model, c.d_ff};
    expected[layer_name(b, 1, "layer_norm.weight")] = {c.d_model};
  }
  expected[layer_name(0, 0, "SelfAttention.relative_attention_bias.weight")] = {c.num_buckets, c.num_heads};
  expected["encoder.final_layer_norm.weight"] = {c.d_model};
  return expected;
}

}  // namespace

T5Encoder::T5Encoder(const std::string& folder, const at::Device& device, at::ScalarType dtype) : device_(device), dtype_(dtype) {
  if (!fs::is_directory(folder)) {
    const std::string what = fs::exists(folder) ? "is a file, not a folder" : "does not exist";
    const std::string parent = fs::path(folder).parent_path().string();
    const std::string hint = fs::exists(folder) && !parent.empty() ? " (the folder holding it is '" + parent + "')" : "";
    throw InputError("T5 encoder folder '" + folder + "' " + what + hint + ": pass a Hugging Face T5 encoder folder (config.json and "
                     "model*.safetensors, e.g. FLUX.1-dev's text_encoder_2/)");
  }
  config_ = read_t5_config((fs::path(folder) / "config.json").string());
  const T5Config& c = config_;
  const std::map<std::string, std::vector<int64_t>> expected = weight_shapes(c);
  model::TensorMap stored = model::read_weights(folder);
  // The token embedding is tied between "shared" and "encoder.embed_tokens"; a file may hold either.
  const auto embed = stored.count("encoder.embed_tokens.weight") ? stored.find("encoder.embed_tokens.weight") : stored.find("shared.weight");
  std::string problems;
  if (embed == stored.end()) {
    problems += "\n  missing: shared.weight (or encoder.embed_tokens.weight)";
  } else if (embed->second.dim() != 2 || embed->second.size(1) != c.d_model || embed->second.size(0) < c.vocab_size) {
    problems += "\n  " + embed->first + ": shape " + c10::str(embed->second.sizes()) + ", expected [" + std::to_string(c.vocab_size) + ", " +
                std::to_string(c.d_model) + "]";
  }
  for (const auto& [name, shape] : expected) {
    const auto it = stored.find(name);
    if (it == stored.end()) {
      problems += "\n  missing: " + name;
    } else if (it->second.sizes() != at::IntArrayRef(shape)) {
      problems += "\n  " + name + ": shape " + c10::str(it->second.sizes()) + ", expected " + c10::str(at::IntArrayRef(shape));
    }
  }
  if (!problems.empty()) {
    throw InputError("'" + folder + "' does not hold the T5 encoder its config.json describes (" + std::to_string(c.num_layers) +
                     " blocks, d_model " + std::to_string(c.d_model) + "):" + problems);
  }
  const at::TensorOptions to = at::TensorOptions().device(device_).dtype(dtype_);
  for (const auto& [name, shape] : expected) weights_[name] = stored.at(name).to(to);
  weights_["embed"] = embed->second.to(to);
}

T5Encoder T5Encoder::random(const T5Config& config, const at::Device& device, at::ScalarType dtype, uint64_t seed) {
  T5Encoder e(config, device, dtype);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const at::TensorOptions to = at::TensorOptions().device(device).dtype(dtype);
  auto draw = [&](const std::vector<int64_t>& shape, bool norm) {
    return norm ? at::ones(shape, to) : at::normal(0.0, 0.05, shape, gen).to(to);
  };
  for (const auto& [name, shape] : weight_shapes(config)) e.weights_[name] = draw(shape, name.find("layer_norm") != std::string::npos);
  e.weights_["embed"] = draw({config.vocab_size, config.d_model}, false);
  return e;
}

int64_t T5Encoder::parameter_count() const {
  int64_t n = 0;
  for (const auto& [name, w] : weights_) n += w.numel();
  return n;
}

// T5's layer norm: the mean square in fp32, the normalised value cast back to the weights' dtype.
at::Tensor T5Encoder::rms_norm(const at::Tensor& x, const std::string& weight_name) const {
  const at::Tensor x32 = x.to(at::kFloat);
  const at::Tensor y = x32 * at::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + config_.eps);
  return weight(weight_name) * y.to(dtype_);
}

at::Tensor T5Encoder::encode(const at::Tensor& ids_in) const {
  c10::InferenceMode inference;
  const T5Config& c = config_;
  if (ids_in.dim() != 2 || ids_in.scalar_type() != at::kLong) throw InputError("T5 input ids must be [N, L] int64");
  const at::Tensor ids = ids_in.to(device_);
  if (ids.numel() > 0 && (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= c.vocab_size)) {
    throw InputError("T5 input ids outside the vocabulary [0, " + std::to_string(c.vocab_size) + "): is the tokenizer this encoder's?");
  }
  const int64_t n = ids.size(0), len = ids.size(1);
  // [1, heads, L, L]: block 0's bias table, used by every block.
  const at::Tensor buckets = relative_position_buckets(len, len, c.num_buckets, c.max_distance).to(device_);
  const at::Tensor bias = at::embedding(weight(layer_name(0, 0, "SelfAttention.relative_attention_bias.weight")), buckets)
                              .permute({2, 0, 1})
                              .unsqueeze(0);
  at::Tensor h = at::embedding(weight("embed"), ids);
  for (int64_t b = 0; b < c.num_layers; ++b) {
    auto w = [&](int layer, const char* rest) { return weight(layer_name(b, layer, rest)); };
    const at::Tensor x = rms_norm(h, layer_name(b, 0, "layer_norm.weight"));
    auto heads = [&](const at::Tensor& t) { return t.view({n, len, c.num_heads, c.d_kv}).transpose(1, 2); };
    const at::Tensor q = heads(at::linear(x, w(0, "SelfAttention.q.weight")));
    const at::Tensor k = heads(at::linear(x, w(0, "SelfAttention.k.weight")));
    const at::Tensor v = heads(at::linear(x, w(0, "SelfAttention.v.weight")));
    // No 1/sqrt(d) scaling: T5 folds it into its weights' initialisation.
    const at::Tensor a = at::scaled_dot_product_attention(q, k, v, bias, 0.0, false, 1.0);
    h = h + at::linear(a.transpose(1, 2).reshape({n, len, c.num_heads * c.d_kv}), w(0, "SelfAttention.o.weight"));
    const at::Tensor f = rms_norm(h, layer_name(b, 1, "layer_norm.weight"));
    const at::Tensor inner = c.gated ? at::gelu(at::linear(f, w(1, "DenseReluDense.wi_0.weight")), "tanh") *
                                           at::linear(f, w(1, "DenseReluDense.wi_1.weight"))
                                     : at::relu(at::linear(f, w(1, "DenseReluDense.wi.weight")));
    h = h + at::linear(inner, w(1, "DenseReluDense.wo.weight"));
  }
  return rms_norm(h, "encoder.final_layer_norm.weight");
}

}  // namespace ov::text
