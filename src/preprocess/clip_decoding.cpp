#include "openvid/preprocess/clip_decoding.h"

#include <chrono>
#include <filesystem>

#include "openvid/runtime/error.h"
#include "openvid/video/video_io.h"

namespace ov::preprocess {

namespace fs = std::filesystem;

Decoded decode_clip(const Clip& clip, const PreprocessOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  Decoded d;
  auto skip = [&](const char* kind, const std::string& reason) {
    d.skip = Skip{clip.row, clip.line, clip.video, kind, reason};
    d.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return d;
  };
  const fs::path path = fs::path(clip.video).is_absolute() ? fs::path(clip.video) : fs::path(o.video_root) / clip.video;
  if (!fs::is_regular_file(path)) return skip("missing", "no file '" + path.string() + "'");
  try {
    video::VideoReader reader(path.string(), o.decode_threads);
    const BucketChoice choice = choose_bucket(o.buckets, o.compression, o.sampling, reader.info());
    if (choice.index < 0) return skip("too short", choice.reason);
    const LatentShape& b = o.buckets[static_cast<size_t>(choice.index)];
    const std::vector<double> times = frame_times(o.sampling, reader.info().fps, o.compression.video_frames(b[0]));
    const at::Tensor rgb = reader.read(times, static_cast<int>(b[2] * o.compression.spatial), static_cast<int>(b[1] * o.compression.spatial));
    d.bucket = choice.index;
    d.video = video::to_unit_range(rgb);
    d.note = reader.truncation();
  } catch (const InputError& e) {
    const std::string what = e.what();
    const bool not_video = what.find("is not a video") != std::string::npos || what.find("has no decodable video stream") != std::string::npos;
    const bool truncated = what.find("is truncated") != std::string::npos;
    return skip(not_video ? "not a video" : truncated ? "truncated" : what.find("too short") != std::string::npos ? "too short" : "unreadable", what);
  }
  d.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return d;
}

}  // namespace ov::preprocess
