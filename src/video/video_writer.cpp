#include <ATen/ATen.h>

#include <cstring>
#include <iostream>
#include <vector>

#include "openvid/runtime/error.h"
#include "openvid/video/video_io.h"
#include "ffmpeg_objects.h"

namespace ov::video {

using namespace ffmpeg;

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

VideoWriter::VideoWriter(const std::string& path, int width, int height, int fps, const std::string& codec, int display_rotation)
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
  if (display_rotation % 360 != 0) {  // as a phone writes it: a display matrix (MP4, MOV), and the older 'rotate' tag (Matroska keeps only that)
    int32_t matrix[9];
    // FFmpeg's pair is asymmetric: _set takes the clockwise angle, _get returns the counterclockwise one.
    av_display_rotation_set(matrix, static_cast<double>(display_rotation));
#if LIBAVFORMAT_VERSION_INT >= AV_VERSION_INT(60, 15, 100)
    AVPacketSideData* sd = av_packet_side_data_new(&s_->stream->codecpar->coded_side_data, &s_->stream->codecpar->nb_coded_side_data,
                                                   AV_PKT_DATA_DISPLAYMATRIX, sizeof(matrix), 0);
    OV_CHECK(sd != nullptr, "av_packet_side_data_new");
    std::memcpy(sd->data, matrix, sizeof(matrix));
#else
    uint8_t* sd = av_stream_new_side_data(s_->stream, AV_PKT_DATA_DISPLAYMATRIX, sizeof(matrix));
    OV_CHECK(sd != nullptr, "av_stream_new_side_data");
    std::memcpy(sd, matrix, sizeof(matrix));
#endif
    av_dict_set(&s_->stream->metadata, "rotate", std::to_string(display_rotation).c_str(), 0);
  }
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

}  // namespace ov::video
