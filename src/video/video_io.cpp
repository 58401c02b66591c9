#include "openvid/video/video_io.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>

#include "openvid/runtime/error.h"
#include "ffmpeg_objects.h"

namespace ov::video {
namespace {

using namespace ffmpeg;

// The clockwise turn (0, 90, 180 or 270 degrees) that shows a stream upright: its display matrix (phones
// write one), else its 'rotate' tag (older muxers, Matroska); other angles go to the nearest quarter turn.
int display_rotation(const AVStream* st) {
  const int32_t* matrix = nullptr;
#if LIBAVFORMAT_VERSION_INT >= AV_VERSION_INT(60, 15, 100)
  const AVPacketSideData* sd =
      av_packet_side_data_get(st->codecpar->coded_side_data, st->codecpar->nb_coded_side_data, AV_PKT_DATA_DISPLAYMATRIX);
  if (sd != nullptr && sd->size >= 9 * sizeof(int32_t)) matrix = reinterpret_cast<const int32_t*>(sd->data);
#else
  size_t size = 0;
  const uint8_t* data = av_stream_get_side_data(st, AV_PKT_DATA_DISPLAYMATRIX, &size);
  if (data != nullptr && size >= 9 * sizeof(int32_t)) matrix = reinterpret_cast<const int32_t*>(data);
#endif
  double clockwise = 0;
  if (matrix != nullptr) {
    const double ccw = av_display_rotation_get(matrix);  // counterclockwise, NaN for a degenerate matrix
    if (std::isfinite(ccw)) clockwise = -ccw;
  } else if (const AVDictionaryEntry* tag = av_dict_get(st->metadata, "rotate", nullptr, 0)) {
    clockwise = std::strtod(tag->value, nullptr);
  }
  const long quarters = std::lround(clockwise / 90.0) % 4;
  return static_cast<int>((quarters + 4) % 4) * 90;
}

}  // namespace

// ---- reading ----------------------------------------------------------------------------------------

struct VideoReader::State {
  FormatInput fmt;
  CodecContext dec;
  Scaler sws;
  int stream = -1;
};

VideoReader::VideoReader(const std::string& path, int threads) : s_(std::make_unique<State>()), path_(path) {
  quiet_ffmpeg();
  int rc = avformat_open_input(&s_->fmt.p, path.c_str(), nullptr, nullptr);
  if (rc < 0) throw InputError("video '" + path + "' cannot be opened: " + av_error(rc));
  if ((rc = avformat_find_stream_info(s_->fmt.p, nullptr)) < 0) throw InputError("video '" + path + "' is unreadable: " + av_error(rc));
  // A still image under a video's name (FFmpeg reads images through its image demuxers: png_pipe, image2, ...).
  const std::string format = s_->fmt.p->iformat != nullptr ? s_->fmt.p->iformat->name : "";
  if (format == "image2" || (format.size() > 5 && format.compare(format.size() - 5, 5, "_pipe") == 0)) {
    throw InputError("video '" + path + "' is not a video: it holds a still image (" + format + ")");
  }
  const AVCodec* codec = nullptr;
  s_->stream = av_find_best_stream(s_->fmt.p, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
  if (s_->stream < 0 || codec == nullptr) {
    throw InputError("video '" + path + "' has no decodable video stream (" + av_error(s_->stream) + ")");
  }
  const AVStream* st = s_->fmt.p->streams[s_->stream];
  s_->dec.p = avcodec_alloc_context3(codec);
  OV_CHECK(s_->dec.p != nullptr, "avcodec_alloc_context3");
  s_->dec.p->thread_count = std::max(0, threads);
  if ((rc = avcodec_parameters_to_context(s_->dec.p, st->codecpar)) < 0 || (rc = avcodec_open2(s_->dec.p, codec, nullptr)) < 0) {
    throw InputError("video '" + path + "': its " + codec->name + " decoder cannot be opened: " + av_error(rc));
  }
  info_.rotation = display_rotation(st);
  const bool quarter = info_.rotation % 180 != 0;  // shown with its axes swapped
  info_.width = quarter ? st->codecpar->height : st->codecpar->width;
  info_.height = quarter ? st->codecpar->width : st->codecpar->height;
  info_.codec = codec->name;
  const AVRational rate = st->avg_frame_rate.num > 0 ? st->avg_frame_rate : st->r_frame_rate;
  info_.fps = rate.num > 0 && rate.den > 0 ? av_q2d(rate) : 0.0;
  if (st->duration > 0) info_.duration = static_cast<double>(st->duration) * av_q2d(st->time_base);
  else if (s_->fmt.p->duration > 0) info_.duration = static_cast<double>(s_->fmt.p->duration) / AV_TIME_BASE;
  info_.frames = st->nb_frames > 0 ? st->nb_frames : static_cast<int64_t>(info_.duration * info_.fps);
  if (info_.width <= 0 || info_.height <= 0) throw InputError("video '" + path + "' has no frame size");
}

VideoReader::~VideoReader() = default;

at::Tensor VideoReader::read(const std::vector<double>& seconds, int width, int height) {
  OV_CHECK(width > 0 && height > 0 && std::is_sorted(seconds.begin(), seconds.end()), "VideoReader::read: sorted times, positive size");
  const auto n = static_cast<int64_t>(seconds.size());
  at::Tensor out = at::empty({n, height, width, 3}, at::kByte);
  if (n == 0) return out;
  const AVStream* st = s_->fmt.p->streams[s_->stream];
  const double tb = av_q2d(st->time_base);
  const double half_period = 0.5 / (info_.fps > 0 ? info_.fps : 25.0);
  Frame frame;
  Packet packet;
  std::vector<uint8_t> rgb;
  int rgb_w = 0, rgb_h = 0, rgb_stride = 0;
  int64_t first_pts = AV_NOPTS_VALUE, decoded = 0, next = 0;
  double last_time = 0;
  // Scales a decoded frame so that, turned upright (info_.rotation), it covers width x height (display aspect
  // kept); crop_into then turns its centre into out[k].
  const int rotation = info_.rotation;
  const bool quarter = rotation % 180 != 0;
  auto convert = [&](const AVFrame* f) {
    AVRational sar = f->sample_aspect_ratio.num > 0 ? f->sample_aspect_ratio : st->codecpar->sample_aspect_ratio;
    const double display_w = f->width * (sar.num > 0 && sar.den > 0 ? av_q2d(sar) : 1.0);
    const double upright_w = quarter ? f->height : display_w, upright_h = quarter ? display_w : f->height;
    const double scale = std::max(static_cast<double>(width) / upright_w, static_cast<double>(height) / upright_h);
    rgb_w = std::max(quarter ? height : width, static_cast<int>(std::lround(display_w * scale)));  // stored orientation
    rgb_h = std::max(quarter ? width : height, static_cast<int>(std::lround(f->height * scale)));
    const int flags = rgb_w * rgb_h < f->width * f->height ? SWS_AREA : SWS_BICUBIC;
    s_->sws.p = sws_getCachedContext(s_->sws.p, f->width, f->height, static_cast<AVPixelFormat>(f->format), rgb_w, rgb_h, AV_PIX_FMT_RGB24,
                                     flags, nullptr, nullptr, nullptr);
    if (s_->sws.p == nullptr) throw InputError("video '" + path_ + "': no conversion from its pixel format to RGB");
    rgb_stride = 3 * rgb_w;
    rgb.resize(static_cast<size_t>(rgb_stride) * rgb_h);
    uint8_t* dst[4] = {rgb.data(), nullptr, nullptr, nullptr};
    int dst_stride[4] = {rgb_stride, 0, 0, 0};
    sws_scale(s_->sws.p, f->data, f->linesize, 0, f->height, dst, dst_stride);
  };
  auto crop_into = [&](int64_t k) {
    const int up_w = quarter ? rgb_h : rgb_w, up_h = quarter ? rgb_w : rgb_h;
    const int x0 = (up_w - width) / 2, y0 = (up_h - height) / 2;
    uint8_t* o = out[k].data_ptr<uint8_t>();
    if (rotation == 0) {
      for (int y = 0; y < height; ++y) std::memcpy(o + static_cast<size_t>(y) * width * 3, rgb.data() + static_cast<size_t>(y0 + y) * rgb_stride + 3 * x0, 3 * static_cast<size_t>(width));
      return;
    }
    for (int y = 0; y < height; ++y) {
      for (int x = 0; x < width; ++x) {
        const int yu = y0 + y, xu = x0 + x;  // upright pixel -> stored pixel (yc, xc) of the scaled frame
        const int yc = rotation == 90 ? rgb_h - 1 - xu : rotation == 180 ? rgb_h - 1 - yu : xu;
        const int xc = rotation == 90 ? yu : rotation == 180 ? rgb_w - 1 - xu : rgb_w - 1 - yu;
        std::memcpy(o + (static_cast<size_t>(y) * width + x) * 3, rgb.data() + static_cast<size_t>(yc) * rgb_stride + 3 * xc, 3);
      }
    }
  };
  // Gives the frame to every target time it is the nearest frame of; true once all are filled.
  auto take = [&](const AVFrame* f) {
    const int64_t pts = f->best_effort_timestamp != AV_NOPTS_VALUE ? f->best_effort_timestamp : f->pts;
    if (first_pts == AV_NOPTS_VALUE) first_pts = pts == AV_NOPTS_VALUE ? 0 : pts;
    last_time = pts == AV_NOPTS_VALUE ? static_cast<double>(decoded) * 2 * half_period : static_cast<double>(pts - first_pts) * tb;
    ++decoded;
    bool converted = false;
    while (next < n && seconds[static_cast<size_t>(next)] < last_time + half_period) {
      if (!converted) convert(f);
      converted = true;
      crop_into(next++);
    }
    return next == n;
  };
  auto drain = [&]() {
    while (true) {
      const int rc = avcodec_receive_frame(s_->dec.p, frame.p);
      if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF) return false;
      if (rc < 0) throw InputError("video '" + path_ + "': decoding failed after " + std::to_string(decoded) + " frames: " + av_error(rc));
      const bool done = take(frame.p);
      av_frame_unref(frame.p);
      if (done) return true;
    }
  };
  bool done = false;
  while (!done) {
    const int rc = av_read_frame(s_->fmt.p, packet.p);
    if (rc == AVERROR_EOF) break;
    if (rc < 0) throw InputError("video '" + path_ + "': reading failed after " + std::to_string(decoded) + " frames: " + av_error(rc));
    if (packet.p->stream_index == s_->stream) {
      const int sent = avcodec_send_packet(s_->dec.p, packet.p);
      if (sent < 0 && sent != AVERROR(EAGAIN)) {
        av_packet_unref(packet.p);
        throw InputError("video '" + path_ + "' is corrupt after " + std::to_string(decoded) + " frames: " + av_error(sent));
      }
      done = drain();
    }
    av_packet_unref(packet.p);
  }
  if (!done) {
    avcodec_send_packet(s_->dec.p, nullptr);  // flush the decoder's delayed frames
    done = drain();
  }
  // How far short of the header's duration the frames may end in a whole file: three frames (the duration
  // counts the last frame's own); where only the container gives it, its longest stream (audio running on
  // past the video) may set it: then 0.5 s or 5%.
  const bool own_duration = st->duration > 0;
  const double slack = own_duration ? std::max(0.1, 6 * half_period) : std::max({0.5, 6 * half_period, 0.05 * info_.duration});
  if (!done) {
    if (info_.duration > last_time + slack) {  // the header promised more: the file was cut short
      throw InputError("video '" + path_ + "' is truncated: its frames end at " + std::to_string(last_time) + " s (" + std::to_string(decoded) +
                       " frames) of the " + std::to_string(info_.duration) + " s its header gives, and the frame at " +
                       std::to_string(seconds.back()) + " s is needed");
    }
    throw InputError("video '" + path_ + "' is too short: " + std::to_string(decoded) + " frames (" + std::to_string(last_time) +
                     " s), the frame at " + std::to_string(seconds.back()) + " s is needed");
  }
  // The frames needed are there; does the rest of the file reach the end its header gives? A seek near the
  // end and the packets after it (no decoding) tell a file cut short from a whole one.
  const int64_t start = st->start_time != AV_NOPTS_VALUE ? st->start_time : 0;
  const auto target = start + static_cast<int64_t>(std::max(0.0, info_.duration - 1.0) / tb);
  // Where the file cannot seek (no index), telling would mean reading all of it: then nothing is said.
  if (info_.duration > 0 && av_seek_frame(s_->fmt.p, s_->stream, target, AVSEEK_FLAG_BACKWARD) >= 0) {
    double end = -1;
    int rc = 0;
    while ((rc = av_read_frame(s_->fmt.p, packet.p)) >= 0) {
      if (packet.p->stream_index == s_->stream && packet.p->pts != AV_NOPTS_VALUE) {
        end = std::max(end, static_cast<double>(packet.p->pts - start + std::max<int64_t>(packet.p->duration, 0)) * tb);
      }
      av_packet_unref(packet.p);
    }
    if (end < info_.duration - slack) {
      truncation_ = "truncated: its data end at " + (end < 0 ? std::string("an unknown time") : std::to_string(end) + " s") + " of the " +
                    std::to_string(info_.duration) + " s its header gives (" + (rc == AVERROR_EOF ? "end of file" : av_error(rc)) +
                    "); the frames used decode";
    }
  }
  return out;
}

at::Tensor to_unit_range(const at::Tensor& frames) {
  OV_CHECK(frames.dim() == 4 && frames.size(3) == 3 && frames.scalar_type() == at::kByte, "to_unit_range takes uint8 [F, H, W, 3]");
  return frames.permute({3, 0, 1, 2}).to(at::kFloat).div(127.5).sub(1.0);
}

at::Tensor to_rgb_frames(const at::Tensor& video) {
  OV_CHECK(video.dim() == 4 && video.size(0) == 3, "to_rgb_frames takes [3, F, H, W]");
  return video.to(at::kFloat).clamp(-1, 1).add(1).mul(127.5).round().to(at::kByte).permute({1, 2, 3, 0}).contiguous().cpu();
}

}  // namespace ov::video
