#pragma once
// How many samples of each shape bucket a step takes. With --batch_size, every bucket takes that many per
// data rank. With --batch_tokens N (per data rank), each bucket takes the most samples whose video tokens
// (registers included) fit N, a multiple of --grad_accum: steps over buckets of different shapes then cost
// about the same, and the budget, not the largest bucket, sets the memory. The loss stays the mean over a
// step's samples, so the learning rate needs no change. --batch_cost attention counts a sample as
// tokens + tokens^2 / c instead, c the median bucket's tokens (where the two terms agree), for attention's
// share of the work growing with the sequence. --batch_cost flops weighs a sample's tokens by the model's
// forward FLOPs per token for its shape (model/flops.h: attention, cross-attention and the products at this
// width) relative to the median bucket's, so the budget still reads as tokens at the median bucket while the
// balance between the linear and the quadratic work follows the model's width instead of a fixed c.
#include <cstdint>
#include <string>
#include <vector>

#include "openvid/config/options.h"
#include "openvid/data/manifest.h"

namespace ov::train {

// Video tokens of one sample of `bucket`, registers included.
int64_t sample_tokens(const ModelConfig& model, const data::Bucket& bucket);

struct BucketBatches {
  std::vector<int64_t> per_rank;  // per bucket, samples per data rank; 0: left out (--skip_oversized_buckets)
  std::string table;              // the start-up lines of a token budget ("" with --batch_size)
  std::string json;               // the same as JSON (written to the run directory as batch_sizes.json)
};

// Throws InputError naming the buckets one sample of which exceeds the budget and the smallest budget that
// takes them all (unless --skip_oversized_buckets leaves them out), or when no bucket is left.
BucketBatches bucket_batches(const Options& options, const data::Manifest& manifest);

}  // namespace ov::train
