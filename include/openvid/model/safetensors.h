#pragma once
// safetensors files (https://github.com/huggingface/safetensors): 8-byte little-endian header length,
// a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}, then the raw
// little-endian data. Sharded sets come as "<name>.safetensors.index.json" with a "weight_map" from
// tensor name to shard file. Written by hand (no C++ library for the format is packaged in Debian): the
// format is a JSON header and raw bytes, and nlohmann-json does the JSON.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>

namespace ov::model {

using TensorMap = std::map<std::string, at::Tensor>;
using Metadata = std::map<std::string, std::string>;

struct SafetensorsFile {
  TensorMap tensors;  // CPU tensors in the stored dtype
  Metadata metadata;
};

// What to read: the tensors, or only the header (tensors on the meta device: names, dtypes and shapes,
// for checks before anything is loaded).
enum class Read { kData, kHeader };

// Reads one .safetensors file, checking every entry (dtype, shape, offsets against sizes and the file's
// length, no overlaps or holes). Throws InputError naming the file and the problem.
SafetensorsFile read_safetensors(const std::string& path, Read what = Read::kData);

// Reads weights from a .safetensors file, a sharded set's *.safetensors.index.json, or a directory that
// holds model.safetensors or model.safetensors.index.json.
TensorMap read_weights(const std::string& path, Read what = Read::kData);

// Parts of tensors: name -> (first element, element count), in the tensor's row-major order.
using ElementRanges = std::map<std::string, std::pair<int64_t, int64_t>>;

// Reads only the given ranges (1-D CPU tensors in the stored dtype), from one .safetensors file or from the
// weights `path` names (as read_weights). Throws InputError on a missing name or a range outside its tensor.
TensorMap read_ranges(const std::string& path, const ElementRanges& ranges);
TensorMap read_weight_ranges(const std::string& path, const ElementRanges& ranges);

// A file's metadata, without its tensors.
Metadata read_metadata(const std::string& path);

// Tensor bytes this process has read from safetensors files so far (tests check what a resume reads).
uint64_t tensor_bytes_read();

// The format's name of a dtype ("F32", "BF16", ...); throws ov::Error for dtypes it cannot store.
std::string dtype_name(at::ScalarType t);

// Writes `tensors` (any device; written as stored: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)
// atomically: a temporary file in the same directory, fsync, rename. Throws ov::Error on I/O failure.
// (A SafetensorsWriter, model/safetensors_writer.h, over the map: both write the same bytes.)
void write_safetensors(const std::string& path, const TensorMap& tensors, const Metadata& metadata = {});

}  // namespace ov::model
