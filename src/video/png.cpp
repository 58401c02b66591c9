#include "openvid/video/png.h"

#include <ATen/ATen.h>

#include <boost/crc.hpp>
#include <cstring>

#if OPENVID_HAVE_ZLIB
#include <zlib.h>
#endif

#include "openvid/runtime/error.h"

namespace ov::video {
namespace {

void be32(std::string& out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out += static_cast<char>((v >> s) & 0xFF);
}

void chunk(std::string& out, const char type[4], const std::string& data) {
  be32(out, static_cast<uint32_t>(data.size()));
  std::string body(type, 4);
  body += data;
  boost::crc_32_type crc;
  crc.process_bytes(body.data(), body.size());
  out += body;
  be32(out, crc.checksum());
}

// A zlib stream of `raw`: compressed when zlib is there, else stored blocks (at most 65535 bytes each).
std::string zlib_stream(const std::string& raw) {
#if OPENVID_HAVE_ZLIB
  uLongf size = compressBound(static_cast<uLong>(raw.size()));
  std::string out(size, '\0');
  if (compress2(reinterpret_cast<Bytef*>(out.data()), &size, reinterpret_cast<const Bytef*>(raw.data()), static_cast<uLong>(raw.size()), 6) != Z_OK) {
    throw Error("PNG: zlib could not compress the image");
  }
  out.resize(size);
  return out;
#else
  std::string out("\x78\x01", 2);  // deflate, 32 KiB window, no preset dictionary, fastest
  size_t at = 0;
  do {
    const size_t n = std::min<size_t>(65535, raw.size() - at);
    out += static_cast<char>(at + n == raw.size() ? 1 : 0);  // BFINAL, BTYPE 00 (stored)
    out += static_cast<char>(n & 0xFF);
    out += static_cast<char>(n >> 8);
    out += static_cast<char>(~n & 0xFF);
    out += static_cast<char>((~n >> 8) & 0xFF);
    out.append(raw, at, n);
    at += n;
  } while (at < raw.size());
  uint32_t a = 1, b = 0;  // Adler-32 of the uncompressed data
  for (unsigned char c : raw) {
    a = (a + c) % 65521;
    b = (b + a) % 65521;
  }
  be32(out, (b << 16) | a);
  return out;
#endif
}

}  // namespace

std::string encode_png(const at::Tensor& rgb_in) {
  OV_CHECK(rgb_in.dim() == 3 && rgb_in.size(2) == 3 && rgb_in.scalar_type() == at::kByte, "encode_png takes uint8 RGB [H, W, 3]");
  const at::Tensor rgb = rgb_in.cpu().contiguous();
  const auto h = static_cast<uint32_t>(rgb.size(0)), w = static_cast<uint32_t>(rgb.size(1));
  std::string raw;  // each row: filter type 0 (none), then its pixels
  raw.reserve(static_cast<size_t>(h) * (3 * w + 1));
  const auto* p = reinterpret_cast<const char*>(rgb.data_ptr<uint8_t>());
  for (uint32_t y = 0; y < h; ++y) {
    raw += '\0';
    raw.append(p + static_cast<size_t>(y) * 3 * w, 3 * static_cast<size_t>(w));
  }
  std::string png("\x89PNG\r\n\x1a\n", 8), ihdr;
  be32(ihdr, w);
  be32(ihdr, h);
  ihdr += std::string("\x08\x02\x00\x00\x00", 5);  // 8 bits, RGB, deflate, adaptive filtering, no interlace
  chunk(png, "IHDR", ihdr);
  chunk(png, "IDAT", zlib_stream(raw));
  chunk(png, "IEND", "");
  return png;
}

at::Tensor contact_sheet(const at::Tensor& videos, int64_t columns, int64_t max_width) {
  OV_CHECK(videos.dim() == 5 && videos.size(1) == 3, "contact_sheet takes videos [N, 3, F, H, W]");
  const int64_t f = videos.size(2), h = videos.size(3), w = videos.size(4);
  const int64_t picks = std::min(columns, f);
  const at::Tensor idx = at::linspace(0, static_cast<double>(f - 1), picks).round().to(at::kLong).to(videos.device());
  at::Tensor frames = videos.to(at::kFloat).index_select(2, idx).transpose(1, 2).flatten(0, 1);  // [N * picks, 3, H, W]
  if (w > max_width) {
    const int64_t nh = std::max<int64_t>(1, h * max_width / w);
    frames = at::upsample_bilinear2d(frames, {nh, max_width}, false);
  }
  const int64_t n = videos.size(0), fh = frames.size(2), fw = frames.size(3);
  // [N, picks, 3, h, w] -> [N, h, picks, w, 3] -> [N * h, picks * w, 3]
  const at::Tensor grid = frames.view({n, picks, 3, fh, fw}).permute({0, 3, 1, 4, 2}).reshape({n * fh, picks * fw, 3});
  return grid.clamp(-1, 1).add(1).mul(127.5).round().to(at::kByte).cpu().contiguous();
}

}  // namespace ov::video
