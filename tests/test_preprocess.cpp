#define BOOST_TEST_MODULE preprocess
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <fstream>

#include "openvid/preprocess/buckets.h"
#include "openvid/preprocess/clip_list.h"
#include "test_util.h"

using ov::test::error_of;
using ov::test::has;
using ov::test::TempDir;
namespace pp = ov::preprocess;

BOOST_AUTO_TEST_CASE(csv_follows_rfc4180) {
  TempDir d;
  std::ofstream(d.file("a.csv"), std::ios::binary) << "video,caption,score\r\n"
                                                      "a.mp4,\"one, two\",1.5\r\n"
                                                      "b.mp4,\"say \"\"hi\"\"\nthen go\",2\n"
                                                      "\n"
                                                      "c.mp4,,3";  // no final line break
  const auto rows = pp::read_csv(d.file("a.csv"));
  BOOST_REQUIRE_EQUAL(rows.size(), 4u);
  BOOST_TEST(rows[1][1] == "one, two");
  BOOST_TEST(rows[2][1] == "say \"hi\"\nthen go");
  BOOST_TEST(rows[3][1] == "");
  BOOST_TEST(rows[3][2] == "3");
  // Each row's first line: the quoted line break makes b.mp4 two lines, the blank line one more.
  std::vector<int64_t> lines;
  pp::read_csv(d.file("a.csv"), &lines);
  BOOST_TEST(lines == (std::vector<int64_t>{1, 2, 3, 6}), boost::test_tools::per_element());
  std::ofstream(d.file("bad.csv")) << "video,caption\na.mp4,\"open\nb.mp4,x\n";
  BOOST_TEST(has(error_of([&] { pp::read_csv(d.file("bad.csv")); }), "the quote opened on line 2 is never closed"));
  std::ofstream(d.file("bad2.csv")) << "video,caption\na.mp4,ab\"c\n";
  BOOST_TEST(has(error_of([&] { pp::read_csv(d.file("bad2.csv")); }), "line 2: a quote inside an unquoted field"));
}

BOOST_AUTO_TEST_CASE(columns_and_filters) {
  TempDir d;
  std::ofstream(d.file("c.csv")) << "video,caption,aesthetic score\n"
                                    "a.mp4,a cat,5.0\nb.mp4,a dog,3.0\nc.mp4,a cow,n/a\n,no video,5\nd.mp4,short row\n";
  const pp::ClipList l = pp::read_clip_list(d.file("c.csv"), "video", "caption", {pp::parse_filter("aesthetic score >= 4")});
  BOOST_REQUIRE_EQUAL(l.clips.size(), 1u);
  BOOST_TEST(l.clips[0].video == "a.mp4");
  BOOST_TEST(l.clips[0].row == 1);
  BOOST_REQUIRE_EQUAL(l.filtered_out.size(), 4u);
  BOOST_TEST(has(l.filtered_out[0].second, "filtered out by 'aesthetic score >= 4' (3.0)"));
  BOOST_TEST(has(l.filtered_out[1].second, "is not a number: 'n/a'"));
  BOOST_TEST(has(l.filtered_out[2].second, "no video path"));
  BOOST_TEST(has(l.filtered_out[3].second, "2 fields"));
  // A missing column names the columns there are.
  const std::string e = error_of([&] { pp::read_clip_list(d.file("c.csv"), "path", "caption", {}); });
  BOOST_TEST(has(e, "no column 'path' (--video_column)"));
  BOOST_TEST(has(e, "'video', 'caption', 'aesthetic score'"));
  BOOST_TEST(has(error_of([] { pp::parse_filter("score ~ 3"); }), "is not COLUMN OP NUMBER"));
  BOOST_TEST(has(error_of([] { pp::parse_filter("score >= high"); }), "is not COLUMN OP NUMBER"));
  BOOST_TEST(pp::parse_filter("motion score<0.5").op == "<");
}

BOOST_AUTO_TEST_CASE(buckets_the_model_cannot_patch_are_named) {
  // A causal encoder's 1 + k latent frames: 17 and 5 do not divide by a time patch of 2; 61 does not by a patch of 2.
  const std::vector<pp::LatentShape> buckets{{16, 60, 80}, {17, 60, 80}, {16, 61, 80}, {5, 8, 8}};
  const ov::data::PatchMisfits m = ov::data::patch_misfits(buckets, 2, 2);
  BOOST_TEST(m.time == "t17_h60_w80 (17 frames), t5_h8_w8 (5 frames)");
  BOOST_TEST(m.space == "t16_h61_w80 (61x80)");
  BOOST_TEST(ov::data::patch_misfits(buckets, 1, 1).empty());
  const std::string w = pp::patch_warning(buckets, 2, 2);
  BOOST_TEST(has(w, "--bucket t17_h60_w80 (17 frames), t5_h8_w8 (5 frames): latent frames not a multiple of the model's time patch 2"));
  BOOST_TEST(has(w, "e.g. --bucket 16x60x80"));  // the first misfit, rounded down to whole patches
  BOOST_TEST(has(w, "--bucket t16_h61_w80 (61x80): latent height or width not a multiple of the model's patch 2"));
  BOOST_TEST(std::count(w.begin(), w.end(), '\n') == 2);
  BOOST_TEST(pp::patch_warning({{16, 60, 80}}, 2, 2).empty());
  BOOST_TEST(has(pp::patch_warning({{1, 60, 80}}, 2, 4), "e.g. --bucket 4x60x80"));  // never rounded to zero frames
}

BOOST_AUTO_TEST_CASE(buckets_by_aspect_then_length) {
  const std::vector<pp::LatentShape> buckets{{16, 60, 80}, {8, 60, 80}, {16, 64, 64}, {4, 48, 96}};
  const ov::video::Compression c;  // 4x8x8: 16 latent frames = 61 video frames
  ov::video::VideoInfo v;
  v.width = 1280, v.height = 720, v.fps = 30, v.frames = 300;
  // 16:9 lies between 4:3 (log distance 0.29) and 2:1 (0.12): the 2:1 bucket.
  BOOST_TEST(pp::choose_bucket(buckets, c, {}, v).index == 3);
  v.width = 640, v.height = 480;
  BOOST_TEST(pp::choose_bucket(buckets, c, {}, v).index == 0);  // 4:3, the longer of the two 4:3 buckets
  v.frames = 40;  // 61 frames do not fit, 29 do
  BOOST_TEST(pp::choose_bucket(buckets, c, {}, v).index == 1);
  v.frames = 10;
  const pp::BucketChoice none = pp::choose_bucket(buckets, c, {}, v);
  BOOST_TEST(none.index == -1);
  BOOST_TEST(has(none.reason, "too short for every bucket"));
  // Sampling: stride 2 doubles the time a bucket needs; a target rate sets it.
  const auto t = pp::frame_times({2, 0, 0.5}, 30, 3);
  BOOST_TEST(t[0] == 0.5);
  BOOST_TEST(std::abs(t[2] - (0.5 + 4 / 30.0)) < 1e-12);
  BOOST_TEST(std::abs(pp::frame_times({1, 8, 0}, 30, 3)[2] - 0.25) < 1e-12);
}
