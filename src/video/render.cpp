#include "openvid/video/render.h"

#include <ATen/ATen.h>

#include <vector>

#include "openvid/video/png.h"
#if OPENVID_HAVE_FFMPEG
#include "openvid/video/video_io.h"
#endif

namespace ov::video {

#if OPENVID_HAVE_FFMPEG
bool can_write_videos() { return true; }
#else
bool can_write_videos() { return false; }
#endif

RenderedSheet render_samples(const LatentCodec& decoder, const at::Tensor& latents, const RenderOptions& o,
                             const std::function<std::string(int64_t)>& mp4_path) {
  std::vector<at::Tensor> videos;
  for (int64_t i = 0; i < latents.size(0); ++i) {
    const at::Tensor video = decoder.run(latents.narrow(0, i, 1).div(o.latent_scale).add(o.latent_shift))[0];  // [3, F, H, W] in [-1, 1]
    videos.push_back(video);
#if OPENVID_HAVE_FFMPEG
    const std::string path = mp4_path ? mp4_path(i) : std::string();
    if (!path.empty()) {
      const at::Tensor frames = to_rgb_frames(video);  // [F, H, W, 3]
      VideoWriter w(path, static_cast<int>(frames.size(2)), static_cast<int>(frames.size(1)), o.fps);
      for (int64_t f = 0; f < frames.size(0); ++f) w.write(frames[f]);
      w.finish();
    }
#else
    static_cast<void>(mp4_path);  // no video files without FFmpeg: the contact sheet alone
#endif
  }
  const at::Tensor sheet = contact_sheet(at::stack(videos), o.sheet_frames, o.sheet_max_width);
  return RenderedSheet{encode_png(sheet), static_cast<int>(sheet.size(1)), static_cast<int>(sheet.size(0))};
}

}  // namespace ov::video
