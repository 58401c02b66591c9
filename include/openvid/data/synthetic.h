#pragma once
// Synthetic datasets in the real format, for the quick start, tests and benchmarks, with structure a
// text-conditioned model can learn: sample i belongs to class i % classes; its latent is the class's
// per-channel mean plus noise (std 0.3), its text states the class's fixed states plus noise (std 0.1).
// A model that reads the text can predict the mean; one without it (--caption_dropout 1) cannot, so its
// loss stays higher. Every value is a function of (seed, bucket, sample), so a reader's output can be
// checked against synthetic_sample() without keeping the data.
#include <ATen/core/Tensor.h>
#include <mpi.h>

#include <array>
#include <string>
#include <vector>

#include "openvid/data/manifest.h"

namespace ov::data {

struct SyntheticSpec {
  std::string directory;
  std::vector<std::array<int64_t, 3>> shapes;  // (frames, height, width) per bucket
  int64_t samples_per_bucket = 64;
  int64_t channels = 16, text_tokens = 512, text_dim = 4096, caption_bytes = 128;
  int shards = 1;
  uint64_t seed = 0;
  int64_t classes = 8;  // >= 1
};

// Collective over `comm`: writes the dataset (shards with every bucket split evenly over them; each rank
// writes its share of the rows with collective MPI-IO) and, on rank 0, the manifest. Returns the manifest.
Manifest write_synthetic_dataset(MPI_Comm comm, const SyntheticSpec& spec);

struct SyntheticSample {
  at::Tensor latent;  // [C, T, H, W] half
  at::Tensor text;    // [Lc, Dc] half
  std::string caption;
  int64_t label = 0;  // its class
};
SyntheticSample synthetic_sample(const SyntheticSpec& spec, int64_t bucket, int64_t index);

// "16x32x32" -> {16, 32, 32}; throws InputError naming `option` otherwise.
std::array<int64_t, 3> parse_latent_shape(const std::string& text, const std::string& option);

}  // namespace ov::data
