#pragma once
// Which shape bucket a clip goes to, and which of its frames are taken.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "openvid/data/manifest.h"
#include "openvid/video/latent_codec.h"
#include "openvid/video/video_io.h"

namespace ov::preprocess {

// Frame sampling: every `stride`-th source frame, or (target_fps > 0) frames `1 / target_fps` seconds
// apart, starting `start` seconds into the clip.
struct Sampling {
  int64_t stride = 1;
  double target_fps = 0;
  double start = 0;
};

// Times, in seconds from the clip's first frame, of `count` frames of a clip at `fps` frames per second.
std::vector<double> frame_times(const Sampling& s, double fps, int64_t count);

// A bucket is a latent shape (frames, height, width); the clip needs compression.video_frames(frames) video
// frames of (height x spatial, width x spatial) pixels.
using LatentShape = std::array<int64_t, 3>;

struct BucketChoice {
  int index = -1;      // into the bucket list; -1: none fits
  std::string reason;  // why none fits
};

// Among the buckets whose frames the clip is long enough for, the one nearest in aspect ratio (log
// distance), then with the most frames, then the largest area.
BucketChoice choose_bucket(const std::vector<LatentShape>& buckets, const video::Compression& compression, const Sampling& sampling,
                           const video::VideoInfo& info);

// Warning lines (each ending in a newline; "" when all is well) for buckets the trainer would refuse with a
// model of these patch sizes (data::patch_misfits): said at the start, not after hours of encoding.
std::string patch_warning(const std::vector<LatentShape>& buckets, int64_t patch, int64_t time_patch);

}  // namespace ov::preprocess
