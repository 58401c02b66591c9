#include "openvid/data/manifest.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "openvid/runtime/error.h"

namespace ov::data {
using nlohmann::json;

int64_t Manifest::total_samples() const {
  int64_t n = 0;
  for (const Bucket& b : buckets) n += b.count;
  return n;
}

std::string Manifest::shard_path(const std::string& file) const { return (std::filesystem::path(directory) / file).string(); }

std::string bucket_name(int64_t frames, int64_t height, int64_t width) {
  return "t" + std::to_string(frames) + "_h" + std::to_string(height) + "_w" + std::to_string(width);
}

PatchMisfits patch_misfits(const std::vector<std::array<int64_t, 3>>& shapes, int64_t patch, int64_t time_patch) {
  PatchMisfits m;
  for (const auto& [t, h, w] : shapes) {
    const std::string name = bucket_name(t, h, w);
    if (t % time_patch != 0) m.time += (m.time.empty() ? "" : ", ") + name + " (" + std::to_string(t) + " frames)";
    if (h % patch != 0 || w % patch != 0) {
      m.space += (m.space.empty() ? "" : ", ") + name + " (" + std::to_string(h) + "x" + std::to_string(w) + ")";
    }
  }
  return m;
}

Manifest read_manifest(const std::string& path) {
  std::filesystem::path p(path);
  if (std::filesystem::is_directory(p)) p /= kManifestName;
  const std::string where = "dataset manifest '" + p.string() + "'";
  if (!std::filesystem::exists(p)) {
    throw InputError(where + " does not exist (give --dataset the dataset's directory or its " +
                     std::string(kManifestName) + "; openvid_make_dataset writes one)");
  }
  std::ifstream in(p, std::ios::binary);
  char magic[4] = {};
  if (in.read(magic, 4) && std::string(magic, 4) == "\x89HDF") {
    throw InputError("'" + p.string() + "' is an HDF5 shard of a dataset, not its manifest: give --dataset the dataset's directory or its " +
                     std::string(kManifestName) + ", which lists every shard (docs/dataset.md)");
  }
  in.clear();
  in.seekg(0);
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw InputError(where + " is not valid JSON: " + e.what());
  }
  Manifest m;
  m.directory = p.parent_path().string();
  try {
    if (j.value("format", std::string()) != kFormatName) {
      throw InputError(where + " is not an openvid dataset (format is " + j.value("format", json("missing")).dump() +
                       ", expected \"" + kFormatName + "\")");
    }
    m.format_version = j.at("format_version").get<int>();
    if (m.format_version != kFormatVersion) {
      throw InputError(where + " has format version " + std::to_string(m.format_version) + "; this openvid reads version " +
                       std::to_string(kFormatVersion) + " (convert the dataset, or use a matching openvid)");
    }
    m.latent_channels = j.at("latent_channels").get<int64_t>();
    m.text_tokens = j.at("text_tokens").get<int64_t>();
    m.text_dim = j.at("text_dim").get<int64_t>();
    m.caption_bytes = j.at("caption_bytes").get<int64_t>();
    m.latent_encoder = j.value("latent_encoder", std::string());
    m.text_encoder = j.value("text_encoder", std::string());
    m.latent_scale = j.value("latent_scale", 1.0);
    m.latent_shift = j.value("latent_shift", 0.0);
    for (const json& jb : j.at("buckets")) {
      Bucket b;
      b.name = jb.at("name").get<std::string>();
      b.frames = jb.at("frames").get<int64_t>();
      b.height = jb.at("height").get<int64_t>();
      b.width = jb.at("width").get<int64_t>();
      b.count = jb.at("count").get<int64_t>();
      int64_t sum = 0;
      for (const json& js : jb.at("shards")) {
        b.shards.push_back({js.at("file").get<std::string>(), js.at("count").get<int64_t>()});
        sum += b.shards.back().count;
      }
      if (b.frames < 1 || b.height < 1 || b.width < 1 || b.count < 0) {
        throw InputError(where + ": bucket '" + b.name + "' has an invalid shape or count");
      }
      if (sum != b.count) {
        throw InputError(where + ": bucket '" + b.name + "' counts " + std::to_string(b.count) + " samples but its shards hold " +
                         std::to_string(sum));
      }
      m.buckets.push_back(std::move(b));
    }
  } catch (const json::exception& e) {
    throw InputError(where + " lacks a field or has one of the wrong type: " + e.what());
  }
  if (m.latent_channels < 1 || m.text_tokens < 1 || m.text_dim < 1 || m.caption_bytes < 1) {
    throw InputError(where + ": latent_channels, text_tokens, text_dim and caption_bytes must be positive");
  }
  if (m.buckets.empty()) throw InputError(where + " lists no buckets");
  return m;
}

void write_manifest(const Manifest& m) {
  json j = {{"format", kFormatName},          {"format_version", m.format_version}, {"latent_channels", m.latent_channels},
            {"text_tokens", m.text_tokens},   {"text_dim", m.text_dim},             {"caption_bytes", m.caption_bytes},
            {"latent_encoder", m.latent_encoder}, {"text_encoder", m.text_encoder}, {"latent_scale", m.latent_scale},
            {"latent_shift", m.latent_shift}};
  json buckets = json::array();
  for (const Bucket& b : m.buckets) {
    json shards = json::array();
    for (const ShardPart& s : b.shards) shards.push_back({{"file", s.file}, {"count", s.count}});
    buckets.push_back({{"name", b.name}, {"frames", b.frames}, {"height", b.height}, {"width", b.width},
                       {"count", b.count}, {"shards", shards}});
  }
  j["buckets"] = buckets;
  const std::filesystem::path target = std::filesystem::path(m.directory) / kManifestName;
  const std::filesystem::path tmp = std::filesystem::path(m.directory) / (std::string(".") + kManifestName + ".tmp");
  {
    std::ofstream out(tmp);
    out << j.dump(2) << "\n";
    if (!out) throw Error("cannot write '" + tmp.string() + "'");
  }
  std::filesystem::rename(tmp, target);
}

}  // namespace ov::data
