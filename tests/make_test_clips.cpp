// Writes the end-to-end preprocessing test's inputs into a folder: short clips (written with openvid's
// VideoWriter, so no ffmpeg program is needed), broken files, and an OpenVid-1M-style clips.csv naming
// them along with a missing file and rows the filters drop. With --bench, N clips of one size and length
// and their clips.csv, for bench/preprocess_bench.sh.
//
//   make_test_clips DIR
//   make_test_clips DIR --bench N WIDTH HEIGHT FRAMES
//   make_test_clips --probe FILE        (prints "WIDTHxHEIGHT FRAMES frames FPS fps CODEC[, shown turned R degrees
//                                        clockwise]", read with libavformat; the size upright)
#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>

#include "openvid/video/png.h"
#include "openvid/video/video_io.h"

namespace {

// A moving square of one colour on grey: frame i shifts it by i pixels. `rotation`: shown turned clockwise.
void write_clip(const std::string& path, int width, int height, int frames, int r, int g, int b, int rotation = 0) {
  ov::video::VideoWriter w(path, width, height, 24, "", rotation);
  for (int i = 0; i < frames; ++i) {
    at::Tensor f = at::full({height, width, 3}, 128, at::kByte);
    const int x = (i * 2) % (width / 2), y = height / 4;
    f.narrow(0, y, height / 2).narrow(1, x, width / 2).copy_(at::tensor({r, g, b}, at::kByte));
    w.write(f);
  }
  w.finish();
}

// `path` cut to `fraction` of its bytes, as an interrupted copy or download leaves a file.
void cut_short(const std::string& path, double fraction) {
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size() * fraction));
}

}  // namespace

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  if (argc == 3 && std::string(argv[1]) == "--probe") {
    try {
      ov::video::VideoReader r(argv[2]);
      // Decode every frame: the count is what a player shows, not only what the header claims.
      std::vector<double> times;
      for (int64_t i = 0; i < r.info().frames; ++i) times.push_back(static_cast<double>(i) / r.info().fps);
      const at::Tensor f = r.read(times, r.info().width, r.info().height);
      std::cout << r.info().width << "x" << r.info().height << " " << f.size(0) << " frames " << r.info().fps << " fps " << r.info().codec
                << (r.info().rotation != 0 ? ", shown turned " + std::to_string(r.info().rotation) + " degrees clockwise" : "") << "\n";
    } catch (const std::exception& e) {
      std::cerr << e.what() << "\n";
      return 1;
    }
    return 0;
  }
  if (argc == 7 && std::string(argv[2]) == "--bench") {
    const fs::path dir = argv[1];
    fs::create_directories(dir);
    const int n = std::stoi(argv[3]), w = std::stoi(argv[4]), h = std::stoi(argv[5]), frames = std::stoi(argv[6]);
    std::ofstream csv(dir / "clips.csv");
    csv << "video,caption,aesthetic score,motion score,temporal consistency score,camera motion,frame,fps,seconds\n";
    for (int i = 0; i < n; ++i) {
      const std::string name = "clip_" + std::to_string(i) + ".mp4";
      write_clip((dir / name).string(), w, h, frames, (i * 37) % 256, (i * 91) % 256, (i * 53) % 256);
      csv << name << ",\"a square of colour " << i << " slides to the right over grey, seen from a fixed camera\",5,1,1,static,"
          << frames << ",24," << frames / 24.0 << "\n";
    }
    std::cout << "wrote " << n << " clips of " << w << "x" << h << ", " << frames << " frames, to " << dir.string() << "\n";
    return 0;
  }
  if (argc != 2) {
    std::cerr << "usage: make_test_clips DIR | make_test_clips DIR --bench N WIDTH HEIGHT FRAMES\n";
    return 2;
  }
  const fs::path dir = argv[1];
  fs::create_directories(dir / "sub");
  write_clip((dir / "square_red.mp4").string(), 64, 64, 40, 230, 30, 30);
  write_clip((dir / "wide_green.mp4").string(), 96, 64, 40, 30, 230, 30);
  write_clip((dir / "tall_blue.mp4").string(), 64, 96, 40, 30, 30, 230);
  write_clip((dir / "sub" / "nested_yellow.mp4").string(), 80, 80, 30, 230, 230, 30);
  // A phone's portrait clip: landscape frames stored, shown turned 90 degrees clockwise (its display matrix).
  write_clip((dir / "phone_portrait.mp4").string(), 96, 64, 40, 230, 30, 230, 90);
  write_clip((dir / "short.mp4").string(), 64, 64, 3, 200, 200, 200);
  // Cut short (Matroska: the header first, then the frames): half of it still holds the frames a bucket needs.
  write_clip((dir / "cut_half.mkv").string(), 64, 64, 120, 30, 230, 230);
  cut_short((dir / "cut_half.mkv").string(), 0.5);
  write_clip((dir / "low_score.mp4").string(), 64, 64, 40, 10, 10, 10);
  {
    std::ofstream corrupt(dir / "corrupt.mp4", std::ios::binary);
    for (int i = 0; i < 4096; ++i) corrupt.put(static_cast<char>((i * 7919) % 251));
  }
  std::ofstream(dir / "empty.mp4").close();
  {  // a still image under a video's name
    const std::string png = ov::video::encode_png(at::full({48, 64, 3}, 120, at::kByte));
    std::ofstream(dir / "photo.mp4", std::ios::binary).write(png.data(), static_cast<std::streamsize>(png.size()));
  }
  std::string lengthy = "A very long caption:";
  for (int i = 0; i < 400; ++i) lengthy += " the red square slides slowly to the right over a grey background";
  std::ofstream csv(dir / "clips.csv");
  csv << "video,caption,aesthetic score,motion score,temporal consistency score,camera motion,frame,fps,seconds\n"
      << "square_red.mp4,\"" << lengthy << "\",5.2,1.1,0.98,static,40,24,1.67\n"
      << "wide_green.mp4,\"A green square, \"\"wide\"\" shot\",4.8,1.0,0.97,static,40,24,1.67\n"
      << "tall_blue.mp4,Un carré bleu très élégant — 東京,4.5,1.0,0.97,pan,40,24,1.67\n"
      << "sub/nested_yellow.mp4,\"A yellow square\nover two lines\",4.9,1.0,0.97,static,30,24,1.25\n"
      << "short.mp4,too short a clip,5.0,1.0,0.97,static,3,24,0.13\n"
      << "corrupt.mp4,random bytes,5.0,1.0,0.97,static,40,24,1.67\n"
      << "empty.mp4,an empty file,5.0,1.0,0.97,static,40,24,1.67\n"
      << "photo.mp4,a photo renamed,5.0,1.0,0.97,static,40,24,1.67\n"
      << "missing.mp4,a file that is not there,5.0,1.0,0.97,static,40,24,1.67\n"
      << "low_score.mp4,an ugly clip,3.1,1.0,0.97,static,40,24,1.67\n"
      << "square_red.mp4,no score,n/a,1.0,0.97,static,40,24,1.67\n"
      << "phone_portrait.mp4,a magenta square held upright,4.6,1.0,0.97,static,40,24,1.67\n"
      << "cut_half.mkv,half a copy,4.6,1.0,0.97,static,120,24,5\n";
  std::cout << "wrote test clips and clips.csv to " << dir.string() << "\n";
  return 0;
}
