#include "openvid/model/safetensors.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "openvid/runtime/error.h"

namespace ov::model {
namespace {

static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

using nlohmann::json;

constexpr uint64_t kMaxHeader = 100u << 20;  // the reference implementation's limit

const std::map<std::string, at::ScalarType>& dtype_by_name() {
  static const std::map<std::string, at::ScalarType> m = {
      {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf}, {"BF16", at::kBFloat16},
      {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
      {"U8", at::kByte},    {"BOOL", at::kBool}};
  return m;
}

[[noreturn]] void bad(const std::string& path, const std::string& what) {
  throw InputError("safetensors file '" + path + "': " + what);
}

struct Entry {
  std::string name;
  at::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

}  // namespace

std::string dtype_name(at::ScalarType t) {
  for (const auto& [name, type] : dtype_by_name())
    if (type == t) return name;
  throw Error(std::string("safetensors cannot store dtype ") + c10::toString(t));
}

namespace {

std::atomic<uint64_t> g_bytes_read{0};

// A file's checked header: its entries sorted by offset, its metadata, where the data starts.
struct Header {
  std::vector<Entry> entries;
  Metadata metadata;
  uint64_t data_start = 0;
};

Header read_header(const std::string& path, std::ifstream& in) {
  std::error_code ec;
  const uint64_t file_size = std::filesystem::file_size(path, ec);
  if (ec) bad(path, "cannot read its size: " + ec.message());
  if (file_size < 8) bad(path, "is " + std::to_string(file_size) + " bytes long: too short for a header (truncated?)");
  uint64_t header_len = 0;
  in.read(reinterpret_cast<char*>(&header_len), 8);
  if (header_len > kMaxHeader || header_len > file_size - 8) {
    bad(path, "header length " + std::to_string(header_len) + " exceeds the file (" + std::to_string(file_size) +
                  " bytes): truncated or not a safetensors file");
  }
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  json j;
  try {
    j = json::parse(header);
  } catch (const json::exception& e) {
    bad(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) bad(path, "header is not a JSON object");

  Header out;
  std::vector<Entry>& entries = out.entries;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) bad(path, "__metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) bad(path, "__metadata__ value of '" + m.key() + "' is not a string");
        out.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    const json& e = *it;
    const std::string& name = it.key();
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets")) {
      bad(path, "entry '" + name + "' lacks dtype, shape or data_offsets");
    }
    const auto d = dtype_by_name().find(e["dtype"].is_string() ? e["dtype"].get<std::string>() : "");
    if (d == dtype_by_name().end()) {
      bad(path, "entry '" + name + "' has unsupported dtype " + e["dtype"].dump() +
                    " (supported: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)");
    }
    Entry entry{name, d->second, {}, 0, 0};
    uint64_t numel = 1;
    if (!e["shape"].is_array()) bad(path, "entry '" + name + "' has a shape that is not a list");
    for (const json& s : e["shape"]) {
      if (!s.is_number_unsigned()) bad(path, "entry '" + name + "' has a negative or non-integer dimension");
      entry.shape.push_back(s.get<int64_t>());
      numel *= s.get<uint64_t>();
    }
    const json& off = e["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      bad(path, "entry '" + name + "' has malformed data_offsets");
    }
    entry.begin = off[0].get<uint64_t>();
    entry.end = off[1].get<uint64_t>();
    const uint64_t bytes = numel * c10::elementSize(entry.dtype);
    if (entry.end < entry.begin || entry.end - entry.begin != bytes) {
      bad(path, "entry '" + name + "' claims " + std::to_string(entry.end - entry.begin) + " bytes but its shape and dtype need " +
                    std::to_string(bytes));
    }
    entries.push_back(std::move(entry));
  }
  // The data must be covered exactly: sorted by offset, each entry starts where the previous ended.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  uint64_t expected_begin = 0;
  for (const Entry& e : entries) {
    if (e.begin != expected_begin) bad(path, "entry '" + e.name + "' overlaps another or leaves a gap in the data");
    expected_begin = e.end;
  }
  const uint64_t data_len = file_size - 8 - header_len;
  if (expected_begin != data_len) {
    bad(path, "header describes " + std::to_string(expected_begin) + " bytes of data but the file holds " +
                  std::to_string(data_len) + (expected_begin > data_len ? " (truncated)" : " (trailing bytes)"));
  }
  out.data_start = 8 + header_len;
  return out;
}

// Reads `bytes` at `offset` of the data of entry `e` into `dst`.
void read_bytes(const std::string& path, std::ifstream& in, const Header& h, const Entry& e, uint64_t offset, uint64_t bytes, void* dst) {
  in.seekg(static_cast<std::streamoff>(h.data_start + e.begin + offset));
  in.read(static_cast<char*>(dst), static_cast<std::streamsize>(bytes));
  if (!in) bad(path, "read of entry '" + e.name + "' failed (truncated?)");
  g_bytes_read += bytes;
}

std::ifstream open_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) bad(path, "cannot be opened (" + std::string(std::strerror(errno)) + ")");
  return in;
}

}  // namespace

uint64_t tensor_bytes_read() { return g_bytes_read.load(); }

SafetensorsFile read_safetensors(const std::string& path, Read what) {
  std::ifstream in = open_file(path);
  const Header h = read_header(path, in);
  SafetensorsFile out;
  out.metadata = h.metadata;
  for (const Entry& e : h.entries) {
    if (what == Read::kHeader) {
      out.tensors.emplace(e.name, at::empty(e.shape, at::TensorOptions().dtype(e.dtype).device(at::kMeta)));
      continue;
    }
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(e.dtype));
    read_bytes(path, in, h, e, 0, e.end - e.begin, t.data_ptr());
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

TensorMap read_ranges(const std::string& path, const ElementRanges& ranges) {
  std::ifstream in = open_file(path);
  const Header h = read_header(path, in);
  std::map<std::string, const Entry*> by_name;
  for (const Entry& e : h.entries) by_name[e.name] = &e;
  TensorMap out;
  for (const auto& [name, range] : ranges) {
    const auto it = by_name.find(name);
    if (it == by_name.end()) bad(path, "holds no tensor '" + name + "'");
    const Entry& e = *it->second;
    const auto [first, count] = range;
    const int64_t numel = static_cast<int64_t>((e.end - e.begin) / c10::elementSize(e.dtype));
    if (first < 0 || count < 0 || first + count > numel) {
      bad(path, "elements [" + std::to_string(first) + ", " + std::to_string(first + count) + ") of '" + name + "' are outside its " +
                    std::to_string(numel));
    }
    at::Tensor t = at::empty({count}, at::TensorOptions().dtype(e.dtype));
    const uint64_t size = c10::elementSize(e.dtype);
    read_bytes(path, in, h, e, static_cast<uint64_t>(first) * size, static_cast<uint64_t>(count) * size, t.data_ptr());
    out.emplace(name, std::move(t));
  }
  return out;
}

Metadata read_metadata(const std::string& path) {
  std::ifstream in = open_file(path);
  return read_header(path, in).metadata;
}

namespace {

// The file that `path` names: a .safetensors file, a sharded set's index (.json), or what a directory holds.
std::string weights_file(const std::string& path) {
  const std::filesystem::path p(path);
  if (!std::filesystem::is_directory(p)) return path;
  if (std::filesystem::exists(p / "model.safetensors")) return (p / "model.safetensors").string();
  if (std::filesystem::exists(p / "model.safetensors.index.json")) return (p / "model.safetensors.index.json").string();
  throw InputError("'" + path + "' holds neither model.safetensors nor model.safetensors.index.json");
}

bool is_index(const std::string& s) { return s.size() >= 5 && s.compare(s.size() - 5, 5, ".json") == 0; }

// A sharded set's index: shard file (full path) -> the tensor names it holds.
std::map<std::string, std::vector<std::string>> index_shards(const std::string& s) {
  std::ifstream in(s);
  if (!in) throw InputError("weights index '" + s + "' cannot be opened");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw InputError("weights index '" + s + "' is not valid JSON: " + e.what());
  }
  if (!j.contains("weight_map") || !j["weight_map"].is_object()) {
    throw InputError("weights index '" + s + "' has no weight_map object");
  }
  std::map<std::string, std::vector<std::string>> names_by_file;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    if (!it->is_string()) throw InputError("weights index '" + s + "': the shard of '" + it.key() + "' is not a file name");
    const std::filesystem::path shard = std::filesystem::path(s).parent_path() / it->get<std::string>();
    if (!std::filesystem::exists(shard)) throw InputError("weights index '" + s + "' names shard '" + shard.string() + "', which does not exist");
    names_by_file[shard.string()].push_back(it.key());
  }
  return names_by_file;
}

}  // namespace

TensorMap read_weights(const std::string& path, Read what) {
  const std::string s = weights_file(path);
  if (!is_index(s)) return read_safetensors(s, what).tensors;
  TensorMap out;
  for (const auto& [shard, names] : index_shards(s)) {
    SafetensorsFile f = read_safetensors(shard, what);
    for (const std::string& n : names) {
      auto t = f.tensors.find(n);
      if (t == f.tensors.end()) {
        throw InputError("weights index '" + s + "' puts '" + n + "' in '" + shard + "', which does not hold it");
      }
      out[n] = t->second;
    }
  }
  return out;
}

TensorMap read_weight_ranges(const std::string& path, const ElementRanges& ranges) {
  const std::string s = weights_file(path);
  if (!is_index(s)) return read_ranges(s, ranges);
  TensorMap out;
  for (const auto& [shard, names] : index_shards(s)) {
    ElementRanges here;
    for (const std::string& n : names) {
      if (const auto it = ranges.find(n); it != ranges.end()) here.insert(*it);
    }
    if (!here.empty()) out.merge(read_ranges(shard, here));
  }
  for (const auto& [name, range] : ranges) {
    if (!out.count(name)) throw InputError("weights index '" + s + "' names no shard for '" + name + "'");
  }
  return out;
}

}  // namespace ov::model
