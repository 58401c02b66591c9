#pragma once
// Drawn samples to pictures and videos, one renderer for the trainer's samples (--sample_every with
// --sample_decoder) and openvid_sample alike: the stored latents go back through the video decoder one
// sample at a time (memory: one video), each is written as an MP4 file where openvid is built with FFmpeg,
// and one contact sheet of them all comes back as PNG bytes.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>

#include "openvid/video/latent_codec.h"

namespace ov::video {

struct RenderOptions {
  double latent_scale = 1, latent_shift = 0;  // the dataset's: stored = (encoder output - shift) * scale (docs/dataset.md)
  int fps = 24;
  int64_t sheet_frames = 8;                   // frames per sample in the contact sheet
  int64_t sheet_max_width = 256;              // pixels per frame there, at most
};

struct RenderedSheet {
  std::string png;  // the contact sheet's PNG bytes
  int width = 0, height = 0;
};

// True when this build writes video files (FFmpeg found at configure time).
bool can_write_videos();

// latents [B, C, T, H, W] as stored, on any device. Sample i is written to mp4_path(i) when videos can be
// written and the path is not empty. Throws InputError when the decoder breaks its contract.
RenderedSheet render_samples(const LatentCodec& decoder, const at::Tensor& latents, const RenderOptions& options,
                             const std::function<std::string(int64_t)>& mp4_path);

}  // namespace ov::video
