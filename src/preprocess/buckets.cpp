#include "openvid/preprocess/buckets.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace ov::preprocess {

std::vector<double> frame_times(const Sampling& s, double fps, int64_t count) {
  const double step = s.target_fps > 0 ? 1.0 / s.target_fps : static_cast<double>(s.stride) / (fps > 0 ? fps : 25.0);
  std::vector<double> t(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) t[static_cast<size_t>(i)] = s.start + static_cast<double>(i) * step;
  return t;
}

BucketChoice choose_bucket(const std::vector<LatentShape>& buckets, const video::Compression& compression, const Sampling& sampling,
                           const video::VideoInfo& info) {
  BucketChoice best;
  double best_distance = 0;
  const double aspect = static_cast<double>(info.width) / info.height;
  const double fps = info.fps > 0 ? info.fps : 25.0;
  // The clip's last frame index (its frame count when known, else from its duration).
  const double last_frame = static_cast<double>(info.frames > 0 ? info.frames : static_cast<int64_t>(info.duration * fps)) - 1;
  double longest_needed = 0;
  for (size_t i = 0; i < buckets.size(); ++i) {
    const auto [frames, height, width] = buckets[i];
    const double needed = frame_times(sampling, fps, compression.video_frames(frames)).back();
    longest_needed = i == 0 ? needed : std::min(longest_needed, needed);
    if (std::lround(needed * fps) > last_frame) continue;  // the nearest frame to the last time must exist
    const double distance = std::abs(std::log(aspect / (static_cast<double>(width) / height)));
    const auto [bf, bh, bw] = best.index < 0 ? LatentShape{0, 0, 0} : buckets[static_cast<size_t>(best.index)];
    const bool better = best.index < 0 || distance < best_distance - 1e-9 ||
                        (std::abs(distance - best_distance) <= 1e-9 && (frames > bf || (frames == bf && height * width > bh * bw)));
    if (better) {
      best.index = static_cast<int>(i);
      best_distance = distance;
    }
  }
  if (best.index < 0) {
    std::ostringstream why;
    why << "too short for every bucket: " << info.frames << " frames at " << fps << " fps, the shortest bucket needs a frame at "
        << longest_needed << " s";
    best.reason = why.str();
  }
  return best;
}

std::string patch_warning(const std::vector<LatentShape>& buckets, int64_t patch, int64_t time_patch) {
  const data::PatchMisfits misfits = data::patch_misfits(buckets, patch, time_patch);
  std::ostringstream out;
  const auto round = [](int64_t n, int64_t unit) { return std::max(unit, n / unit * unit); };
  for (const LatentShape& b : buckets) {  // one example of a shape that fits, from the first misfit
    if (b[0] % time_patch == 0 && b[1] % patch == 0 && b[2] % patch == 0) continue;
    const std::string fit = std::to_string(round(b[0], time_patch)) + "x" + std::to_string(round(b[1], patch)) + "x" +
                            std::to_string(round(b[2], patch));
    if (!misfits.time.empty()) {
      out << "preprocess: warning: --bucket " << misfits.time << ": latent frames not a multiple of the model's time patch " << time_patch
          << " (--model_time_patch; a video token spans " << time_patch << " latent frames), so openvid_mpi with --model_time_patch "
          << time_patch << " will refuse this dataset: use a multiple (e.g. --bucket " << fit
          << "), or give --model_time_patch as you will train\n";
    }
    if (!misfits.space.empty()) {
      out << "preprocess: warning: --bucket " << misfits.space << ": latent height or width not a multiple of the model's patch " << patch
          << " (--model_patch), so openvid_mpi with --model_patch " << patch << " will refuse this dataset: use multiples (e.g. --bucket "
          << fit << "), or give --model_patch as you will train\n";
    }
    break;
  }
  return out.str();
}

}  // namespace ov::preprocess
