#include "openvid/train/batching.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "openvid/model/flops.h"
#include "openvid/runtime/error.h"

namespace ov::train {

int64_t sample_tokens(const ModelConfig& m, const data::Bucket& b) {
  return (b.frames / m.time_patch) * (b.height / m.patch) * (b.width / m.patch) + m.registers;
}

BucketBatches bucket_batches(const Options& o, const data::Manifest& m) {
  BucketBatches out;
  if (o.batch_tokens <= 0) {
    out.per_rank.assign(m.buckets.size(), o.batch_size);
    return out;
  }
  const int64_t accum = o.grad_accum;
  // A sample's cost: its tokens; (attention) tokens + tokens^2 / c with c the median bucket's tokens, where
  // the linear and the quadratic term agree: attention's share grows with the sequence; (flops) its tokens
  // times its FLOPs per token over the median bucket's.
  std::vector<int64_t> tokens_of;
  for (const data::Bucket& b : m.buckets) tokens_of.push_back(sample_tokens(o.model, b));
  std::vector<int64_t> sorted = tokens_of;
  std::sort(sorted.begin(), sorted.end());
  const double c = sorted.empty() ? 1.0 : static_cast<double>(sorted[(sorted.size() - 1) / 2]);
  const bool attention = o.batch_cost == "attention", flops = o.batch_cost == "flops";
  // FLOPs per token of each bucket and of the median bucket (the median of the buckets by tokens).
  std::vector<double> per_token;
  for (size_t i = 0; i < m.buckets.size(); ++i) {
    const data::Bucket& b = m.buckets[i];
    per_token.push_back(model::forward_flops(o.model, b.frames, b.height, b.width, m.text_tokens) / static_cast<double>(tokens_of[i]));
  }
  double median_per_token = 1.0;
  for (size_t i = 0; i < m.buckets.size(); ++i)
    if (static_cast<double>(tokens_of[i]) == c) median_per_token = per_token[i];
  const auto cost = [&](size_t i) {
    const double t = static_cast<double>(tokens_of[i]);
    if (attention) return static_cast<int64_t>(std::ceil(t + t * t / c));
    if (flops) return static_cast<int64_t>(std::ceil(t * per_token[i] / median_per_token));
    return tokens_of[i];
  };
  std::string oversized, skipped;
  int64_t needed = 0;  // the smallest budget that takes one (grad_accum) sample(s) of every bucket
  nlohmann::ordered_json buckets = nlohmann::ordered_json::array();
  std::ostringstream table;
  table << "batches by token budget (--batch_tokens " << o.batch_tokens << " per data rank"
        << (attention ? ", cost tokens + tokens^2/" + std::to_string(static_cast<int64_t>(c)) : std::string())
        << (flops ? ", cost tokens x FLOPs per token / the median bucket's" : "") << "):";
  for (size_t i = 0; i < m.buckets.size(); ++i) {
    const data::Bucket& b = m.buckets[i];
    const int64_t tokens = tokens_of[i], each = cost(i);
    const int64_t n = o.batch_tokens / each / accum * accum;
    needed = std::max(needed, each * accum);
    if (n == 0) {
      const std::string what = b.name + " (" + (attention || flops ? "cost " + std::to_string(each) + " for " : std::string()) + std::to_string(tokens) +
                               " tokens" + (accum > 1 ? " x --grad_accum " + std::to_string(accum) : "") + ")";
      (o.skip_oversized_buckets ? skipped : oversized) += (oversized.empty() && skipped.empty() ? "" : ", ") + what;
    }
    out.per_rank.push_back(n);
    table << (i == 0 ? " " : ", ") << b.name << " " << n << " x " << tokens << " tokens" << (each != tokens ? " (cost " + std::to_string(each) + ")" : "");
    buckets.push_back({{"bucket", b.name}, {"tokens_per_sample", tokens}, {"cost_per_sample", each}, {"samples_per_data_rank", n},
                       {"tokens_per_data_rank", n * tokens}});
  }
  if (!oversized.empty()) {
    throw InputError("--batch_tokens " + std::to_string(o.batch_tokens) + " is smaller than one sample of bucket(s) " + oversized +
                     ": give --batch_tokens " + std::to_string(needed) + " or more, or --skip_oversized_buckets to leave them out");
  }
  if (std::none_of(out.per_rank.begin(), out.per_rank.end(), [](int64_t n) { return n > 0; })) {
    throw InputError("--batch_tokens " + std::to_string(o.batch_tokens) + " leaves every bucket out: give --batch_tokens " +
                     std::to_string(needed) + " or more");
  }
  if (!skipped.empty()) table << "; left out (--skip_oversized_buckets): " << skipped;
  out.table = table.str();
  out.json = nlohmann::ordered_json{{"batch_tokens", o.batch_tokens}, {"batch_cost", o.batch_cost}, {"median_tokens", c},
                                    {"grad_accum", accum}, {"buckets", buckets}}.dump(1) + "\n";
  return out;
}

}  // namespace ov::train
