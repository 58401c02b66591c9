#define BOOST_TEST_MODULE video
#include <boost/test/unit_test.hpp>

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "openvid/preprocess/buckets.h"
#include "openvid/runtime/error.h"
#include "openvid/video/video_io.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;

using ov::test::error_of;
using ov::test::has;
using ov::test::TempDir;

// Frame i of the test clip: red rises left to right, blue top to bottom, green marks the frame (8 * i).
at::Tensor test_frame(int i, int width, int height) {
  const at::Tensor x = at::linspace(0, 255, width).view({1, width}).expand({height, width});
  const at::Tensor y = at::linspace(0, 255, height).view({height, 1}).expand({height, width});
  return at::stack({x, at::full({height, width}, 8.0 * i), y}, 2).round().to(at::kByte).contiguous();
}

void write_clip(const std::string& path, int frames, int width, int height, int fps) {
  ov::video::VideoWriter w(path, width, height, fps);
  for (int i = 0; i < frames; ++i) w.write(test_frame(i, width, height));
  w.finish();
}


}  // namespace

BOOST_AUTO_TEST_CASE(writes_and_reads_chosen_frames) {
  TempDir d;
  const std::string clip = d.file("clip.mp4");
  write_clip(clip, 30, 96, 64, 24);
  ov::video::VideoReader r(clip);
  BOOST_TEST(r.info().width == 96);
  BOOST_TEST(r.info().height == 64);
  BOOST_TEST(std::abs(r.info().fps - 24) < 1e-6);
  BOOST_TEST(r.info().frames == 30);
  // Frames 0, 4, 8, 12 by time (nearest frame), the same frame twice, read at the clip's size.
  const at::Tensor f = r.read({0.0, 4 / 24.0, 8 / 24.0 + 0.01, 12 / 24.0 - 0.01, 12 / 24.0}, 96, 64);
  BOOST_REQUIRE(f.sizes() == at::IntArrayRef({5, 64, 96, 3}));
  const std::vector<int> frame_of{0, 4, 8, 12, 12};
  for (int k = 0; k < 5; ++k) {
    BOOST_TEST_CONTEXT("read " << k) {
      const double green = f[k].select(2, 1).to(at::kFloat).mean().item<double>();
      BOOST_TEST(std::abs(green - 8.0 * frame_of[static_cast<size_t>(k)]) < 3.0);
      const double err = (f[k].to(at::kFloat) - test_frame(frame_of[static_cast<size_t>(k)], 96, 64).to(at::kFloat)).abs().mean().item<double>();
      BOOST_TEST(err < 3.0);  // lossy, but close
    }
  }
}

BOOST_AUTO_TEST_CASE(resizes_to_cover_and_crops_the_centre) {
  TempDir d;
  const std::string clip = d.file("wide.mp4");
  write_clip(clip, 4, 96, 64, 24);
  // 96x64 covering 32x32: scaled to 48x32, then the middle 32 columns (from column 8).
  const at::Tensor f = ov::video::VideoReader(clip).read({0.0}, 32, 32)[0].to(at::kFloat);
  const at::Tensor red = f.select(2, 0).mean(0), blue = f.select(2, 2).mean(1);
  const double step = 255.0 / 47;  // red per scaled column
  BOOST_TEST(std::abs(red[0].item<double>() - 8 * step) < 8.0);
  BOOST_TEST(std::abs(red[31].item<double>() - 39 * step) < 8.0);
  BOOST_TEST(std::abs(blue[0].item<double>() - 0.0) < 8.0);  // every row kept: top to bottom
  BOOST_TEST(std::abs(blue[31].item<double>() - 255.0) < 8.0);
  // A tall target from the wide clip: 96x64 already covers 16x64, so its middle 16 columns (red ~127).
  const at::Tensor tall = ov::video::VideoReader(clip).read({0.0}, 16, 64)[0].to(at::kFloat);
  BOOST_TEST(std::abs(tall.select(2, 0).mean().item<double>() - 127.5) < 8.0);
}

// A phone's portrait clip: frames stored turned (landscape) with a display rotation (an MP4's display
// matrix; a Matroska file's 'rotate' tag). Read upright, at the upright size, and bucketed by the upright
// aspect. The stored frames are the upright test frame turned counterclockwise by the rotation (at::rot90),
// so the check does not share the reader's own index arithmetic.
BOOST_AUTO_TEST_CASE(rotated_clips_are_read_upright) {
  TempDir d;
  const int width = 64, height = 96;  // upright: portrait
  for (const std::string container : {"mp4", "mkv"}) {
    for (int rotation : {90, 180, 270}) {
      BOOST_TEST_CONTEXT(container << ", rotated " << rotation) {
        const std::string clip = d.file("phone" + std::to_string(rotation) + "." + container);
        {
          const at::Tensor stored = at::rot90(test_frame(3, width, height), rotation / 90, {0, 1}).contiguous();
          ov::video::VideoWriter w(clip, static_cast<int>(stored.size(1)), static_cast<int>(stored.size(0)), 24, "", rotation);
          for (int i = 0; i < 3; ++i) w.write(stored);
          w.finish();
        }
        ov::video::VideoReader r(clip);
        BOOST_TEST(r.info().rotation == rotation);
        BOOST_TEST(r.info().width == width);
        BOOST_TEST(r.info().height == height);
        const at::Tensor f = r.read({0.0}, width, height)[0].to(at::kFloat);
        const double err = (f - test_frame(3, width, height).to(at::kFloat)).abs().mean().item<double>();
        BOOST_TEST(err < 3.0);
        // Cover and crop in upright terms: 64x96 covering 32x32 is scaled to 32x48, then rows 8..39 are kept.
        const at::Tensor small = ov::video::VideoReader(clip).read({0.0}, 32, 32)[0].to(at::kFloat);
        const at::Tensor red = small.select(2, 0).mean(0), blue = small.select(2, 2).mean(1);
        const double step = 255.0 / 47;  // blue per scaled row
        BOOST_TEST(std::abs(red[0].item<double>() - 0.0) < 10.0);
        BOOST_TEST(std::abs(red[31].item<double>() - 255.0) < 10.0);
        BOOST_TEST(std::abs(blue[0].item<double>() - 8 * step) < 10.0);
        BOOST_TEST(std::abs(blue[31].item<double>() - 39 * step) < 10.0);
        // The bucket follows the upright aspect: portrait 8x12 latents (x8 pixels), not landscape 12x8.
        const std::vector<ov::preprocess::LatentShape> buckets{{2, 8, 12}, {2, 12, 8}};
        BOOST_TEST(ov::preprocess::choose_bucket(buckets, ov::video::Compression{1, 8}, {}, r.info()).index == 1);
      }
    }
  }
}

// A file cut short (a copy that stopped half-way): the frames it still has are read, and the reader says
// that it is truncated; a frame past its end is "truncated", not "too short". A whole file says nothing.
BOOST_AUTO_TEST_CASE(truncated_files_are_told_apart) {
  TempDir d;
  const std::string whole = d.file("whole.mkv"), cut = d.file("cut.mkv");
  write_clip(whole, 48, 64, 64, 24);  // 2 s; Matroska: header first, frames in clusters after it
  {
    std::ifstream in(whole, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(cut, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  }
  const std::vector<double> early{0.0, 0.1, 0.2};
  {
    ov::video::VideoReader r(whole);
    r.read(early, 32, 32);
    BOOST_TEST(r.truncation().empty(), r.truncation());
  }
  ov::video::VideoReader r(cut);
  BOOST_TEST(std::abs(r.info().duration - 2.0) < 0.1);  // the header still promises the whole clip
  const at::Tensor f = r.read(early, 64, 64);
  BOOST_TEST(has(r.truncation(), "truncated: its data end at"), r.truncation());
  BOOST_TEST(std::abs(f[2].select(2, 1).to(at::kFloat).mean().item<double>() - 8.0 * 5) < 3.0);  // frame 5 (0.2 s), intact
  const std::string late = error_of([&] { ov::video::VideoReader(cut).read({0.0, 1.9}, 64, 64); });
  BOOST_TEST(has(late, "is truncated: its frames end at"), late);
}

BOOST_AUTO_TEST_CASE(unit_range_round_trip) {
  const at::Tensor frames = at::randint(0, 256, {3, 8, 10, 3}, at::kByte);
  const at::Tensor v = ov::video::to_unit_range(frames);
  BOOST_REQUIRE(v.sizes() == at::IntArrayRef({3, 3, 8, 10}));
  BOOST_TEST(v.min().item<double>() >= -1.0);
  BOOST_TEST(v.max().item<double>() <= 1.0);
  BOOST_TEST(at::equal(ov::video::to_rgb_frames(v), frames));
}

BOOST_AUTO_TEST_CASE(bad_videos_are_reported_with_their_name) {
  TempDir d;
  // Missing, empty, not a video, cut off in the middle, too short for the frames asked.
  std::string e = error_of([&] { ov::video::VideoReader(d.file("missing.mp4")); });
  BOOST_TEST(has(e, "missing.mp4"));
  BOOST_TEST(has(e, "cannot be opened"));
  std::ofstream(d.file("empty.mp4")).close();
  BOOST_TEST(has(error_of([&] { ov::video::VideoReader(d.file("empty.mp4")); }), "empty.mp4"));
  std::ofstream(d.file("text.mp4")) << "this is not a video\n";
  BOOST_TEST(!error_of([&] { ov::video::VideoReader(d.file("text.mp4")); }).empty());
  const std::string clip = d.file("clip.mp4");
  write_clip(clip, 24, 64, 64, 24);
  {
    const auto size = fs::file_size(clip);
    fs::copy_file(clip, d.file("cut.mp4"));
    fs::resize_file(d.file("cut.mp4"), size / 2);
    e = error_of([&] { ov::video::VideoReader(d.file("cut.mp4")).read({0.0, 0.9}, 32, 32); });
    BOOST_TEST(has(e, "cut.mp4"));
  }
  e = error_of([&] { ov::video::VideoReader(clip).read({0.0, 2.0}, 32, 32); });
  BOOST_TEST(has(e, "too short"));
  BOOST_TEST(has(e, "24 frames"));
  // Odd sizes cannot be written in 4:2:0.
  BOOST_TEST(has(error_of([&] { ov::video::VideoWriter(d.file("odd.mp4"), 31, 32, 24); }), "even"));
}

