#pragma once
// The video autoencoder as TorchScript files with the contract of NVIDIA's Cosmos continuous video
// tokenizers (e.g. Cosmos-0.1-Tokenizer-CV4x8x8, whose files are encoder.jit and decoder.jit):
//   encoder: video [B, 3, 1 + tf * k, H, W] in [-1, 1]  ->  latent [B, C, 1 + k, H / sf, W / sf]
//            (a tensor, or a tuple whose first element is the latent)
//   decoder: latent [B, C, 1 + k, h, w]  ->  video [B, 3, 1 + tf * k, h * sf, w * sf] in [-1, 1]
// with tf the temporal and sf the spatial compression (4 and 8 for CV4x8x8). The modules run in the
// dtype given (bf16 on GPUs, as the reference encodes; fp32 on CPUs); outputs are checked against the
// contract, and the latent is returned in fp32.
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>

namespace torch::jit {
struct Module;
}

namespace ov::video {

struct Compression {
  int64_t temporal = 4, spatial = 8;
  // Video frames that make `latent_frames` latent frames: 1 + temporal * (latent_frames - 1).
  int64_t video_frames(int64_t latent_frames) const { return 1 + temporal * (latent_frames - 1); }
};

class LatentCodec {
 public:
  enum class Part { kEncoder, kDecoder };
  // Loads a TorchScript file onto `device` in `dtype`. Throws InputError naming the file when it is missing
  // or not a TorchScript module.
  LatentCodec(const std::string& path, Part part, Compression compression, const at::Device& device, at::ScalarType dtype);
  ~LatentCodec();
  LatentCodec(LatentCodec&&) noexcept;

  // Encoder: [B, 3, F, H, W] -> [B, C, 1 + (F - 1) / tf, H / sf, W / sf] fp32. Decoder: the inverse shapes,
  // output fp32 in [-1, 1]. Throws InputError when the module fails or its output breaks the contract.
  at::Tensor run(const at::Tensor& input) const;

  // A trial call on zeros of one latent [1, channels, frames, height, width] (or the video it decodes to /
  // is encoded from), before anything is written. Throws InputError naming the file and what went wrong,
  // and, when the file keeps the other part's contract on the same shapes (a decoder given for the
  // encoder, or the reverse), says so and what to pass.
  void check(int64_t frames, int64_t height, int64_t width, int64_t channels) const;

  const std::string& path() const { return path_; }
  const Compression& compression() const { return compression_; }

 private:
  at::Tensor apply(const at::Tensor& input, Part as) const;  // run() under `as`'s contract

  std::unique_ptr<torch::jit::Module> module_;
  std::string path_;
  Part part_;
  Compression compression_;
  at::Device device_;
  at::ScalarType dtype_;
};

}  // namespace ov::video
