#include "openvid/data/shard_writer.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "openvid/data/hdf5.h"
#include "openvid/data/manifest.h"
#include "openvid/runtime/error.h"
#include "openvid/runtime/files.h"

namespace ov::data {

std::string utf8_prefix(const std::string& text, size_t bytes) {
  if (text.size() <= bytes) return text;
  size_t n = bytes;
  while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;  // text[n] continues a character: back off
  return text.substr(0, n);
}

namespace {

// Fixed-length byte strings, NUL-padded, in one buffer.
std::vector<char> fixed_strings(const std::vector<std::string>& values, size_t bytes) {
  std::vector<char> buf(values.size() * bytes, '\0');
  for (size_t i = 0; i < values.size(); ++i) {
    const std::string v = utf8_prefix(values[i], bytes);
    std::memcpy(buf.data() + i * bytes, v.data(), v.size());
  }
  return buf;
}

void write_all(hid_t dset, hid_t type, const void* data) { OV_H5(H5Dwrite(dset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), "H5Dwrite"); }

}  // namespace

void write_shard_attributes(int64_t file, const Provenance& provenance) {
  write_string_attr(file, "format", kFormatName);
  write_int64_attr(file, "format_version", kFormatVersion);
  write_string_attr(file, "latent_encoder", provenance.latent_encoder);
  write_string_attr(file, "text_encoder", provenance.text_encoder);
  write_double_attr(file, "latent_scale", provenance.latent_scale);
  write_double_attr(file, "latent_shift", provenance.latent_shift);
}

int64_t create_bucket_group(int64_t buckets_group, int64_t frames, int64_t height, int64_t width) {
  const std::string name = bucket_name(frames, height, width);
  const hid_t g = OV_H5(H5Gcreate2(buckets_group, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "H5Gcreate2 " + name);
  write_int64_attr(g, "frames", frames);
  write_int64_attr(g, "height", height);
  write_int64_attr(g, "width", width);
  return g;
}

void write_shard(const std::string& path, const std::vector<ShardRows>& rows, const Provenance& provenance, int64_t caption_bytes) {
  for (const ShardRows& r : rows) {
    const int64_t n = r.latents.size(0);
    if (r.latents.dim() != 5 || r.latents.size(2) != r.frames || r.latents.size(3) != r.height || r.latents.size(4) != r.width ||
        r.text.dim() != 3 || r.text.size(0) != n || static_cast<int64_t>(r.captions.size()) != n ||
        static_cast<int64_t>(r.source_ids.size()) != n || n == 0) {
      throw InputError("shard '" + path + "': bucket " + bucket_name(r.frames, r.height, r.width) + " has rows of inconsistent shapes");
    }
  }
  silence_hdf5_errors();
  const std::string tmp = path + ".tmp";
  try {
    {
      H5Id file(OV_H5(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), "creating '" + tmp + "'"), H5Fclose);
      write_shard_attributes(file, provenance);
      const H5Id half = ieee_half_type();
      const H5Id caption_type = fixed_string_type(static_cast<size_t>(caption_bytes));
      H5Id buckets(OV_H5(H5Gcreate2(file, "buckets", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "H5Gcreate2 buckets"), H5Gclose);
      for (const ShardRows& r : rows) {
        const H5Id g(create_bucket_group(buckets, r.frames, r.height, r.width), H5Gclose);
        auto dims = [](const at::Tensor& t) {
          std::vector<hsize_t> d;
          for (int64_t s : t.sizes()) d.push_back(static_cast<hsize_t>(s));
          return d;
        };
        const at::Tensor lat = r.latents.to(at::kCPU, at::kHalf).contiguous(), txt = r.text.to(at::kCPU, at::kHalf).contiguous();
        write_all(create_contiguous_dataset(g, "latents", half, dims(lat)), half, lat.data_ptr());
        write_all(create_contiguous_dataset(g, "text", half, dims(txt)), half, txt.data_ptr());
        const auto n = static_cast<hsize_t>(r.captions.size());
        write_all(create_contiguous_dataset(g, "captions", caption_type, {n}), caption_type,
                  fixed_strings(r.captions, static_cast<size_t>(caption_bytes)).data());
        size_t id_bytes = 1;
        for (const std::string& s : r.source_ids) id_bytes = std::max(id_bytes, s.size());
        const H5Id id_type = fixed_string_type(id_bytes);
        write_all(create_contiguous_dataset(g, "source_ids", id_type, {n}), id_type, fixed_strings(r.source_ids, id_bytes).data());
      }
      OV_H5(H5Fflush(file, H5F_SCOPE_GLOBAL), "H5Fflush");
    }
    fsync_path(tmp);
    std::filesystem::rename(tmp, path);
    fsync_path(std::filesystem::path(path).parent_path().string());
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
}

}  // namespace ov::data
