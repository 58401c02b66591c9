#pragma once
// The dataset index (dataset.json, docs/dataset.md): every bucket, its shape and count, and which shard
// files hold its rows. Plain data and JSON; no HDF5 or MPI here.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace ov::data {

constexpr const char* kFormatName = "openvid-latents";
constexpr int kFormatVersion = 1;
constexpr const char* kManifestName = "dataset.json";

struct ShardPart {
  std::string file;  // relative to the manifest's directory
  int64_t count = 0;
};

struct Bucket {
  std::string name;
  int64_t frames = 0, height = 0, width = 0;  // latent T, H, W
  int64_t count = 0;
  std::vector<ShardPart> shards;
};

struct Manifest {
  std::string directory;  // where the manifest lives; shard paths are relative to it
  int format_version = kFormatVersion;
  int64_t latent_channels = 16, text_tokens = 512, text_dim = 4096, caption_bytes = 512;
  std::string latent_encoder, text_encoder;
  double latent_scale = 1.0, latent_shift = 0.0;
  std::vector<Bucket> buckets;

  int64_t total_samples() const;
  std::string shard_path(const std::string& file) const;
};

// "t16_h64_w64"
std::string bucket_name(int64_t frames, int64_t height, int64_t width);

// The model's patch rule (docs/dataset.md): a video token covers `time_patch` latent frames and
// `patch` x `patch` latent pixels, so a bucket's frames must divide by time_patch and its height and width
// by patch. The shapes (bucket_name) that break each half of the rule, as comma-separated lists.
struct PatchMisfits {
  std::string time, space;  // e.g. "t17_h60_w80 (17 frames), t5_h8_w8 (5 frames)", "t16_h61_w80 (61x80)"
  bool empty() const { return time.empty() && space.empty(); }
};
PatchMisfits patch_misfits(const std::vector<std::array<int64_t, 3>>& shapes, int64_t patch, int64_t time_patch);

// Reads and checks a manifest (a dataset.json or the directory holding one). Throws InputError naming
// the file and the problem (missing, not JSON, other format or version, inconsistent counts).
Manifest read_manifest(const std::string& path);

// Writes `m` as m.directory/dataset.json (atomically).
void write_manifest(const Manifest& m);

}  // namespace ov::data
