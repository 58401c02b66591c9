#pragma once
// PNG files from RGB images, with no image library: the PNG container (signature, IHDR, IDAT, IEND, each
// chunk with Boost.CRC's CRC-32) around the rows, compressed by zlib where openvid was built with it and
// else stored in uncompressed deflate blocks (valid PNG, larger). For the contact sheets of samples drawn
// during training and their TensorBoard images; the trainer links no FFmpeg.
#include <ATen/core/Tensor.h>

#include <string>

namespace ov::video {

// uint8 RGB [H, W, 3] -> the bytes of a PNG file.
std::string encode_png(const at::Tensor& rgb);

// A grid of frames: videos [N, 3, F, H, W] in [-1, 1] -> uint8 RGB [N * h, columns * w, 3], row n holding
// `columns` frames of video n evenly spaced from first to last, each scaled to at most `max_width` pixels
// wide (aspect kept).
at::Tensor contact_sheet(const at::Tensor& videos, int64_t columns = 8, int64_t max_width = 256);

}  // namespace ov::video
