#include "openvid/train/tensorboard.h"

#include <unistd.h>

#include <boost/crc.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "openvid/runtime/error.h"

namespace ov::train {
namespace {

// ---- protobuf's wire format: the few kinds of field the messages below use --------------------------------

void varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}
void key(std::string& out, int field, int wire_type) { varint(out, static_cast<uint64_t>(field) << 3 | static_cast<uint64_t>(wire_type)); }
template <typename T>
void fixed(std::string& out, T v) {  // little-endian, as every machine openvid runs on
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}
void bytes_field(std::string& out, int field, const std::string& bytes) {
  key(out, field, 2);
  varint(out, bytes.size());
  out += bytes;
}
void varint_field(std::string& out, int field, uint64_t v) {
  key(out, field, 0);
  varint(out, v);
}

double now() { return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count(); }

// Event { double wall_time = 1; int64 step = 2; oneof { string file_version = 3; Summary summary = 5;
// SessionLog session_log = 7; } }
std::string event(int64_t step, int field, const std::string& payload) {
  std::string e;
  key(e, 1, 1);
  fixed(e, now());
  varint_field(e, 2, static_cast<uint64_t>(step));
  bytes_field(e, field, payload);
  return e;
}

// Summary { repeated Value value = 1; }, Value { string tag = 1; float simple_value = 2; Image image = 4; }
std::string summary(const std::string& tag, int field, const std::string& value) {
  std::string v;
  bytes_field(v, 1, tag);
  if (field == 2) {
    key(v, 2, 5);
    v += value;
  } else {
    bytes_field(v, field, value);
  }
  std::string s;
  bytes_field(s, 1, v);
  return s;
}

uint32_t masked_crc(const char* data, size_t n) {
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;  // CRC-32C
  crc.process_bytes(data, n);
  const uint32_t c = crc.checksum();
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

}  // namespace

TensorBoardWriter::TensorBoardWriter(const std::string& dir, int64_t resumed_at) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error("cannot create the TensorBoard directory '" + dir + "': " + ec.message());
  char host[256] = "host";
  ::gethostname(host, sizeof(host) - 1);
  path_ = dir + "/events.out.tfevents." + std::to_string(static_cast<int64_t>(now())) + "." + host + "." + std::to_string(::getpid()) +
          ".openvid";
  out_.open(path_, std::ios::binary | std::ios::trunc);
  if (!out_) throw Error("cannot create the TensorBoard events file '" + path_ + "'");
  record(event(0, 3, "brain.Event:2"));
  if (resumed_at > 0) {
    std::string session_log;
    varint_field(session_log, 1, 1);  // SessionLog { status = START }
    record(event(resumed_at, 7, session_log));
  }
  flush();
}

void TensorBoardWriter::scalar(const std::string& tag, int64_t step, double value) {
  std::string f;
  fixed(f, static_cast<float>(value));
  record(event(step, 5, summary(tag, 2, f)));
}

void TensorBoardWriter::image(const std::string& tag, int64_t step, const std::string& png, int width, int height) {
  std::string img;  // Image { int32 height = 1; int32 width = 2; int32 colorspace = 3; bytes encoded_image_string = 4; }
  varint_field(img, 1, static_cast<uint64_t>(height));
  varint_field(img, 2, static_cast<uint64_t>(width));
  varint_field(img, 3, 3);  // RGB
  bytes_field(img, 4, png);
  record(event(step, 5, summary(tag, 4, img)));
}

void TensorBoardWriter::record(const std::string& data) {
  const uint64_t n = data.size();
  char header[12];
  std::memcpy(header, &n, 8);
  const uint32_t length_crc = masked_crc(header, 8);
  std::memcpy(header + 8, &length_crc, 4);
  const uint32_t data_crc = masked_crc(data.data(), data.size());
  out_.write(header, 12);
  out_.write(data.data(), static_cast<std::streamsize>(data.size()));
  out_.write(reinterpret_cast<const char*>(&data_crc), 4);
}

void TensorBoardWriter::flush() {
  out_.flush();
  if (!out_) throw Error("writing the TensorBoard events file '" + path_ + "' failed (disk full?)");
}

}  // namespace ov::train
