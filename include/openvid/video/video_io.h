#pragma once
// Video files through FFmpeg's libraries (libavformat, libavcodec, libswscale): reading chosen frames of
// a clip as RGB, resized to cover a target size and centre-cropped, and writing RGB frames to a video
// file (H.264 when the library has an encoder for it, else MPEG-4 Part 2). Failures throw InputError
// naming the file and FFmpeg's reason.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ov::video {

struct VideoInfo {
  int width = 0, height = 0;  // as shown: upright, after the stream's rotation
  int rotation = 0;           // clockwise degrees (0, 90, 180, 270) that show the stored frames upright
  double fps = 0;        // average frame rate of the stream
  double duration = 0;   // seconds (the stream's, else the container's)
  int64_t frames = 0;    // as the container says, else duration x fps (rounded down)
  std::string codec;
};

class VideoReader {
 public:
  // Opens the file and its best video stream, decoding with `threads` threads (0: as many as cores).
  // Throws InputError if it cannot be opened or decoded.
  explicit VideoReader(const std::string& path, int threads = 1);
  ~VideoReader();
  VideoReader(const VideoReader&) = delete;
  VideoReader& operator=(const VideoReader&) = delete;

  const VideoInfo& info() const { return info_; }

  // Decodes from the start and returns, for each time in `seconds` (ascending, from the stream's first
  // frame), the frame shown at that time, turned upright (a phone's display matrix or 'rotate' tag), scaled
  // (aspect kept) to cover width x height and centre-cropped: uint8 RGB [frames, height, width, 3]. Throws
  // InputError if the clip ends before the last time.
  // A file cut short throws "is truncated" when a needed frame is missing; when all are there, read()
  // returns them and says here why the file is incomplete ("" for a whole file).
  at::Tensor read(const std::vector<double>& seconds, int width, int height);
  const std::string& truncation() const { return truncation_; }

 private:
  struct State;
  std::unique_ptr<State> s_;
  std::string path_;
  VideoInfo info_;
  std::string truncation_;
};

class VideoWriter {
 public:
  // Creates `path` (the container from its extension: .mp4, .mkv, .avi) for width x height frames (even
  // sizes) at `fps`. `codec` empty: libx264 if present, else mpeg4. Frames are stored in 4:2:0.
  // display_rotation (clockwise degrees) marks the stored frames to be shown turned, as phones do (a
  // display matrix and a 'rotate' tag): the tests' portrait clips.
  VideoWriter(const std::string& path, int width, int height, int fps, const std::string& codec = "", int display_rotation = 0);
  ~VideoWriter();  // finishes the file if finish() was not called (errors then only logged)
  VideoWriter(const VideoWriter&) = delete;
  VideoWriter& operator=(const VideoWriter&) = delete;

  // One frame: uint8 RGB [height, width, 3] (contiguous, CPU).
  void write(const at::Tensor& rgb);
  // Flushes the encoder and writes the trailer.
  void finish();
  const std::string& codec() const { return codec_; }

 private:
  struct State;
  std::unique_ptr<State> s_;
  std::string path_, codec_;
  int64_t next_pts_ = 0;
};

// Frames [F, H, W, 3] uint8 RGB -> [3, F, H, W] float in [-1, 1] (the video encoder's input).
at::Tensor to_unit_range(const at::Tensor& frames);
// The inverse: [3, F, H, W] in [-1, 1] (clamped) -> [F, H, W, 3] uint8.
at::Tensor to_rgb_frames(const at::Tensor& video);

}  // namespace ov::video
