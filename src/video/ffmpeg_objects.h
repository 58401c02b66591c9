#pragma once
// FFmpeg for video_io's reader and writer (not a public header): its C headers, the error text of a return
// code, and its objects held by owners that free them with their own free functions.
extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/display.h>
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>
}

#include <string>

namespace ov::video::ffmpeg {


// FFmpeg's own log stays quiet: every failure is reported once, by the exception naming the file.
inline void quiet_ffmpeg() { av_log_set_level(AV_LOG_QUIET); }

inline std::string av_error(int code) {
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

}  // namespace ov::video::ffmpeg
