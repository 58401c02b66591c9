#pragma once
// Writing one shard file of the dataset format (docs/dataset.md) from this process alone, for jobs whose
// ranks each produce their own files (openvid_preprocess). The file appears under its name only once it is
// complete: it is written as "<path>.tmp", flushed to disk, then renamed.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace ov::data {

// One bucket's rows of a shard.
struct ShardRows {
  int64_t frames = 0, height = 0, width = 0;  // the latent shape of the bucket
  at::Tensor latents;                         // [N, C, frames, height, width], any float dtype (stored as IEEE half)
  at::Tensor text;                            // [N, Lc, Dc], any float dtype (stored as IEEE half)
  std::vector<std::string> captions;          // N; cut to the caption length at a UTF-8 character boundary
  std::vector<std::string> source_ids;        // N
};

struct Provenance {
  std::string latent_encoder, text_encoder;
  double latent_scale = 1.0, latent_shift = 0.0;
};

// The parts every shard file has, for writers of shards (this one and the collective synthetic writer):
// the root attributes (format, version, provenance), and a bucket's group under /buckets with its shape.
void write_shard_attributes(int64_t file, const Provenance& provenance);
int64_t create_bucket_group(int64_t buckets_group, int64_t frames, int64_t height, int64_t width);  // an open group id: close with H5Gclose

// Writes `rows` (buckets with at least one row) to `path`. Throws ov::Error on I/O failure (the temporary
// file is removed) and InputError on rows of inconsistent shapes.
void write_shard(const std::string& path, const std::vector<ShardRows>& rows, const Provenance& provenance, int64_t caption_bytes);

// `text` cut to at most `bytes` bytes without splitting a UTF-8 character.
std::string utf8_prefix(const std::string& text, size_t bytes);

}  // namespace ov::data
