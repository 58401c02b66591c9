#pragma once
// One clip of openvid_preprocess's list: decoded (FFmpeg, turned upright), its bucket chosen and its frames
// taken, or the reason it is skipped (missing, not a video, unreadable, too short, truncated), never an
// exception for a bad file. The job (pipeline.h) runs it one clip ahead of the encoders, on its own thread.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>

#include "openvid/preprocess/clip_list.h"
#include "openvid/preprocess/pipeline.h"

namespace ov::preprocess {

struct Skip {
  int64_t row = 0, line = 0;  // the CSV record and its first line in the file
  std::string video, kind, reason;
};

// One clip after decoding: its bucket and video [3, F, H, W] in [-1, 1], or why it is skipped.
struct Decoded {
  int bucket = -1;
  at::Tensor video;
  std::optional<Skip> skip;
  std::string note;  // kept, but worth a line in the report (a truncated file whose needed frames decode)
  double seconds = 0;
};

Decoded decode_clip(const Clip& clip, const PreprocessOptions& options);

}  // namespace ov::preprocess
