#include "openvid/video/video_io.h"

#include <ATen/ATen.h>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>
}

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iostream>

#include "openvid/runtime/error.h"

namespace ov::video {
namespace {

// FFmpeg's own log stays quiet: every failure is reported once, by the exception naming the file.
void quiet_ffmpeg() { av_log_set_level(AV_LOG_QUIET); }

std::string av_error(int code) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
  av_strerror(code, buf, sizeof(buf));
  return buf;
}

// FFmpeg's objects, each released by its own free function.
struct FormatInput {
  AVFormatContext* p = nullptr;
  ~FormatInput() { avformat_close_input(&p); }
};
struct CodecContext {
  AVCodecContext* p = nullptr;
  ~CodecContext() { avcodec_free_context(&p); }
};
struct Frame {
  AVFrame* p = av_frame_alloc();
  ~Frame() { av_frame_free(&p); }
};
struct Packet {
  AVPacket* p = av_packet_alloc();
  ~Packet() { av_packet_free(&p); }
};
struct Scaler {
  SwsContext* p = nullptr;
  ~Scaler() { sws_freeContext(p); }
};

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
  info_.width = st->codecpar->width;
  info_.height = st->codecpar->height;
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
  // Scales a decoded frame to cover width x height (display aspect kept), then crops its centre into out[k].
  auto convert = [&](const AVFrame* f) {
    AVRational sar = f->sample_aspect_ratio.num > 0 ? f->sample_aspect_ratio : st->codecpar->sample_aspect_ratio;
    const double display_w = f->width * (sar.num > 0 && sar.den > 0 ? av_q2d(sar) : 1.0);
    const double scale = std::max(static_cast<double>(width) / display_w, static_cast<double>(height) / f->height);
    rgb_w = std::max(width, static_cast<int>(std::lround(display_w * scale)));
    rgb_h = std::max(height, static_cast<int>(std::lround(f->height * scale)));
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
    const int x0 = (rgb_w - width) / 2, y0 = (rgb_h - height) / 2;
    uint8_t* o = out[k].data_ptr<uint8_t>();
    for (int y = 0; y < height; ++y) std::memcpy(o + static_cast<size_t>(y) * width * 3, rgb.data() + static_cast<size_t>(y0 + y) * rgb_stride + 3 * x0, 3 * static_cast<size_t>(width));
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
  if (!done) {
    throw InputError("video '" + path_ + "' is too short: " + std::to_string(decoded) + " frames (" + std::to_string(last_time) +
                     " s), the frame at " + std::to_string(seconds.back()) + " s is needed");
  }
  return out;
}

// ---- writing ----------------------------------------------------------------------------------------

struct VideoWriter::State {
  AVFormatContext* fmt = nullptr;
  CodecContext enc;
  AVStream* stream = nullptr;
  Scaler sws;
  Frame frame;
  Packet packet;
  bool finished = false;
  ~State() {
    if (fmt != nullptr) {
      if (!(fmt->oformat->flags & AVFMT_NOFILE)) avio_closep(&fmt->pb);
      avformat_free_context(fmt);
    }
  }
};

VideoWriter::VideoWriter(const std::string& path, int width, int height, int fps, const std::string& codec)
    : s_(std::make_unique<State>()), path_(path) {
  quiet_ffmpeg();
  if (width <= 0 || height <= 0 || width % 2 || height % 2 || fps <= 0) {
    throw InputError("video '" + path + "': frames must have even, positive sizes and a positive frame rate (got " + std::to_string(width) +
                     "x" + std::to_string(height) + " at " + std::to_string(fps) + " fps)");
  }
  int rc = avformat_alloc_output_context2(&s_->fmt, nullptr, nullptr, path.c_str());
  if (rc < 0 || s_->fmt == nullptr) throw InputError("video '" + path + "': no container format for its extension (" + av_error(rc) + ")");
  const AVCodec* c = nullptr;
  for (const std::string& name : codec.empty() ? std::vector<std::string>{"libx264", "mpeg4"} : std::vector<std::string>{codec}) {
    if ((c = avcodec_find_encoder_by_name(name.c_str())) != nullptr) break;
  }
  if (c == nullptr) throw InputError("video '" + path + "': FFmpeg has no encoder " + (codec.empty() ? "libx264 or mpeg4" : codec));
  codec_ = c->name;
  s_->enc.p = avcodec_alloc_context3(c);
  AVCodecContext* e = s_->enc.p;
  e->width = width;
  e->height = height;
  e->pix_fmt = AV_PIX_FMT_YUV420P;
  e->time_base = AVRational{1, fps};
  e->framerate = AVRational{fps, 1};
  e->gop_size = 12;
  if (codec_ == "libx264") {
    av_opt_set(e->priv_data, "crf", "18", 0);
    av_opt_set(e->priv_data, "preset", "medium", 0);
  } else {
    e->flags |= AV_CODEC_FLAG_QSCALE;  // near-constant quality: the test videos' pixels must survive
    e->global_quality = FF_QP2LAMBDA * 2;
  }
  if (s_->fmt->oformat->flags & AVFMT_GLOBALHEADER) e->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  if ((rc = avcodec_open2(e, c, nullptr)) < 0) throw InputError("video '" + path + "': the " + codec_ + " encoder cannot be opened: " + av_error(rc));
  s_->stream = avformat_new_stream(s_->fmt, nullptr);
  OV_CHECK(s_->stream != nullptr, "avformat_new_stream");
  s_->stream->time_base = e->time_base;
  avcodec_parameters_from_context(s_->stream->codecpar, e);
  if (!(s_->fmt->oformat->flags & AVFMT_NOFILE) && (rc = avio_open(&s_->fmt->pb, path.c_str(), AVIO_FLAG_WRITE)) < 0) {
    throw InputError("video '" + path + "' cannot be created: " + av_error(rc));
  }
  if ((rc = avformat_write_header(s_->fmt, nullptr)) < 0) throw InputError("video '" + path + "': writing the header failed: " + av_error(rc));
  s_->frame.p->format = e->pix_fmt;
  s_->frame.p->width = width;
  s_->frame.p->height = height;
  if (av_frame_get_buffer(s_->frame.p, 0) < 0) throw Error("video '" + path + "': out of memory for a frame");
}

namespace {

// Sends one frame (or the flush, for nullptr) and writes every packet the encoder has ready.
void encode(AVFormatContext* fmt, AVCodecContext* enc, AVStream* stream, AVFrame* frame, AVPacket* packet, const std::string& path) {
  int rc = avcodec_send_frame(enc, frame);
  if (rc < 0) throw Error("video '" + path + "': encoding failed: " + av_error(rc));
  while ((rc = avcodec_receive_packet(enc, packet)) >= 0) {
    if (packet->duration == 0) packet->duration = 1;  // one frame (readers derive the frame rate from it)
    av_packet_rescale_ts(packet, enc->time_base, stream->time_base);
    packet->stream_index = stream->index;
    rc = av_interleaved_write_frame(fmt, packet);
    if (rc < 0) throw Error("video '" + path + "': writing failed: " + av_error(rc));
  }
  if (rc != AVERROR(EAGAIN) && rc != AVERROR_EOF) throw Error("video '" + path + "': encoding failed: " + av_error(rc));
}

}  // namespace

void VideoWriter::write(const at::Tensor& rgb_in) {
  AVCodecContext* e = s_->enc.p;
  OV_CHECK(!s_->finished, "VideoWriter::write after finish");
  if (rgb_in.dim() != 3 || rgb_in.size(0) != e->height || rgb_in.size(1) != e->width || rgb_in.size(2) != 3 || rgb_in.scalar_type() != at::kByte) {
    throw InputError("video '" + path_ + "': a frame must be uint8 RGB [" + std::to_string(e->height) + ", " + std::to_string(e->width) + ", 3]");
  }
  const at::Tensor rgb = rgb_in.cpu().contiguous();
  if (av_frame_make_writable(s_->frame.p) < 0) throw Error("video '" + path_ + "': out of memory for a frame");
  s_->sws.p = sws_getCachedContext(s_->sws.p, e->width, e->height, AV_PIX_FMT_RGB24, e->width, e->height, e->pix_fmt, SWS_BICUBIC, nullptr,
                                   nullptr, nullptr);
  const uint8_t* src[4] = {rgb.data_ptr<uint8_t>(), nullptr, nullptr, nullptr};
  const int src_stride[4] = {3 * e->width, 0, 0, 0};
  sws_scale(s_->sws.p, src, src_stride, 0, e->height, s_->frame.p->data, s_->frame.p->linesize);
  s_->frame.p->pts = next_pts_++;
  if (e->flags & AV_CODEC_FLAG_QSCALE) s_->frame.p->quality = e->global_quality;
  encode(s_->fmt, e, s_->stream, s_->frame.p, s_->packet.p, path_);
}

void VideoWriter::finish() {
  if (s_->finished) return;
  s_->finished = true;
  encode(s_->fmt, s_->enc.p, s_->stream, nullptr, s_->packet.p, path_);
  const int rc = av_write_trailer(s_->fmt);
  if (rc < 0) throw Error("video '" + path_ + "': writing the trailer failed: " + av_error(rc));
}

VideoWriter::~VideoWriter() {
  try {
    finish();
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
  }
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
