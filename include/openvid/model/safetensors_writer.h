#pragma once
// A safetensors file written one tensor at a time. The entries (names, dtypes, shapes) are declared up
// front, so the header and each tensor's place in the file are known before any data, and each tensor is
// written when it is at hand, in any order: a sharded model's full weights one unit at a time, without the
// whole model in memory anywhere. commit() checks that every tensor was written, fsyncs and renames the
// temporary file into place (atomically); a writer destroyed without commit() removes it.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "openvid/model/safetensors.h"

namespace ov::model {

struct TensorSpec {
  at::ScalarType dtype = at::kFloat;
  std::vector<int64_t> shape;
};
using TensorSpecs = std::map<std::string, TensorSpec>;  // in name order, as the file stores them

class SafetensorsWriter {
 public:
  // Creates `path`'s temporary file and writes the header. Throws ov::Error on I/O failure.
  SafetensorsWriter(std::string path, const TensorSpecs& entries, const Metadata& metadata = {});
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // `t` (any device, any layout) in the dtype and shape declared for `name`, written at its place.
  void write(const std::string& name, const at::Tensor& t);
  // Every declared tensor written: fsync, rename to `path`.
  void commit();

 private:
  struct Slot {
    TensorSpec spec;
    uint64_t offset = 0, bytes = 0;
    bool written = false;
  };
  [[noreturn]] void fail(const std::string& what);
  void write_at(const void* data, uint64_t bytes, uint64_t offset);

  std::string path_, tmp_;
  int fd_ = -1;
  uint64_t data_start_ = 0;
  std::map<std::string, Slot> slots_;
};

}  // namespace ov::model
