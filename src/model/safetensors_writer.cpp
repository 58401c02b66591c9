#include "openvid/model/safetensors_writer.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "openvid/runtime/error.h"

namespace ov::model {

SafetensorsWriter::SafetensorsWriter(std::string path, const TensorSpecs& entries, const Metadata& metadata) : path_(std::move(path)) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, spec] : entries) {
    int64_t numel = 1;
    for (int64_t d : spec.shape) numel *= d;
    const uint64_t bytes = static_cast<uint64_t>(numel) * c10::elementSize(spec.dtype);
    header[name] = {{"dtype", dtype_name(spec.dtype)}, {"shape", spec.shape}, {"data_offsets", {offset, offset + bytes}}};
    slots_[name] = Slot{spec, offset, bytes, false};
    offset += bytes;
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // keeps the data 8-byte aligned, as the reference writer does
  const uint64_t header_len = h.size();
  data_start_ = 8 + header_len;

  const std::filesystem::path target(path_);
  tmp_ = (target.parent_path() / ("." + target.filename().string() + ".tmp." + std::to_string(::getpid()))).string();
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd_ < 0) throw Error("cannot create '" + tmp_ + "': " + std::strerror(errno));
  write_at(&header_len, 8, 0);
  write_at(h.data(), h.size(), 8);
}

SafetensorsWriter::~SafetensorsWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void SafetensorsWriter::fail(const std::string& what) {
  if (fd_ >= 0) ::close(fd_);
  ::unlink(tmp_.c_str());
  fd_ = -1;
  throw Error(what);
}

void SafetensorsWriter::write_at(const void* data, uint64_t bytes, uint64_t offset) {
  const char* b = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t w = ::pwrite(fd_, b, bytes, static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("writing '" + tmp_ + "' failed: " + std::strerror(errno));
    }
    b += w;
    bytes -= static_cast<uint64_t>(w);
    offset += static_cast<uint64_t>(w);
  }
}

void SafetensorsWriter::write(const std::string& name, const at::Tensor& t) {
  OV_CHECK(fd_ >= 0, "SafetensorsWriter::write after commit or a failure ('" + path_ + "')");
  const auto it = slots_.find(name);
  OV_CHECK(it != slots_.end(), "tensor '" + name + "' was not declared for '" + path_ + "'");
  Slot& slot = it->second;
  OV_CHECK(!slot.written && t.scalar_type() == slot.spec.dtype && t.sizes().vec() == slot.spec.shape,
           "tensor '" + name + "' written twice, or not of its declared dtype and shape ('" + path_ + "')");
  const at::Tensor c = t.detach().to(at::kCPU).contiguous();
  write_at(c.data_ptr(), slot.bytes, data_start_ + slot.offset);
  slot.written = true;
}

void SafetensorsWriter::commit() {
  OV_CHECK(fd_ >= 0, "SafetensorsWriter::commit twice, or after a failure ('" + path_ + "')");
  for (const auto& [name, slot] : slots_) OV_CHECK(slot.written, "tensor '" + name + "' of '" + path_ + "' was never written");
  if (::fsync(fd_) != 0) fail("flushing '" + tmp_ + "' failed: " + std::strerror(errno));
  const int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) {
    ::unlink(tmp_.c_str());
    throw Error("flushing '" + tmp_ + "' failed: " + std::strerror(errno));
  }
  std::error_code ec;
  std::filesystem::rename(tmp_, path_, ec);
  if (ec) {
    ::unlink(tmp_.c_str());
    throw Error("renaming '" + tmp_ + "' to '" + path_ + "' failed: " + ec.message());
  }
}

void write_safetensors(const std::string& path, const TensorMap& tensors, const Metadata& metadata) {
  TensorSpecs specs;
  for (const auto& [name, t] : tensors) specs[name] = TensorSpec{t.scalar_type(), t.sizes().vec()};
  SafetensorsWriter writer(path, specs, metadata);
  for (const auto& [name, t] : tensors) writer.write(name, t);
  writer.commit();
}

}  // namespace ov::model
