#define BOOST_TEST_MODULE encoders
#include <boost/test/unit_test.hpp>

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <filesystem>
#include <fstream>

#include "openvid/model/safetensors.h"
#include "openvid/runtime/error.h"
#include "openvid/text/t5_encoder.h"
#include "openvid/video/latent_codec.h"
#include "test_util.h"

// The encoders of preprocessing and sampling (LibTorch alone, built everywhere) against what Hugging Face
// `transformers` and PyTorch computed for the committed fixtures (tests/fixtures/make_text_fixtures.py,
// make_video_fixtures.py); on a machine with a GPU, also on the GPU.
namespace {

namespace fs = std::filesystem;
using ov::test::error_of;
using ov::test::has;
using ov::test::TempDir;
const std::string kFixture = std::string(OPENVID_FIXTURES_DIR) + "/t5_tiny";

const ov::model::TensorMap& expected() {
  static const ov::model::TensorMap t = ov::model::read_safetensors(kFixture + "/expected.safetensors").tensors;
  return t;
}

}  // namespace

BOOST_AUTO_TEST_CASE(encoder_fp32_matches_transformers) {
  const ov::text::T5Encoder enc(kFixture, at::kCPU, at::kFloat);
  BOOST_TEST(enc.config().num_layers == 2);
  BOOST_TEST(enc.config().gated);
  const at::Tensor want = expected().at("hidden_fp32");
  const at::Tensor got = enc.encode(expected().at("ids").narrow(0, 0, want.size(0)));
  BOOST_REQUIRE(got.sizes() == want.sizes());
  const double err = (got - want).abs().max().item<double>();
  const double scale = want.abs().max().item<double>();
  BOOST_TEST_MESSAGE("largest |openvid - transformers| in fp32: " << err << " (values up to " << scale << ")");
  // Relative to the values: fp32 on another CPU than the one that made the fixture takes other kernel paths
  // and differs by tens of ulps after two layers (1.2e-5 at values up to 3.9 on an AMD EPYC); a wrong
  // operation is off by 1e-2 or more.
  BOOST_TEST(err < 1e-5 * scale);
}

BOOST_AUTO_TEST_CASE(encoder_bf16_tracks_transformers) {
  const ov::text::T5Encoder enc(kFixture, at::kCPU, at::kBFloat16);
  const at::Tensor want = expected().at("hidden_bf16").to(at::kFloat);
  const at::Tensor fp32 = expected().at("hidden_fp32");
  const at::Tensor got = enc.encode(expected().at("ids").narrow(0, 0, want.size(0))).to(at::kFloat);
  const double err = (got - want).abs().max().item<double>();
  const double bf16_vs_fp32 = (want - fp32).abs().max().item<double>();
  BOOST_TEST_MESSAGE("bf16: largest |openvid - transformers| " << err << ", transformers' own bf16 - fp32 " << bf16_vs_fp32);
  // Both round in bf16 at different points (their attention kernels differ): within bf16's own error.
  BOOST_TEST(err <= bf16_vs_fp32);
  BOOST_TEST((got - fp32).abs().mean().item<double>() < 1e-2);
}

BOOST_AUTO_TEST_CASE(relative_position_buckets_follow_t5) {
  // 32 buckets, distance 128: |d| < 8 exact; keys after the query in the upper half; far ones share bucket 15 (31).
  const at::Tensor b = ov::text::relative_position_buckets(1, 300, 32, 128);
  BOOST_TEST(b[0][0].item<int64_t>() == 0);
  BOOST_TEST(b[0][3].item<int64_t>() == 16 + 3);
  BOOST_TEST(b[0][299].item<int64_t>() == 31);
  const at::Tensor back = ov::text::relative_position_buckets(300, 1, 32, 128);
  BOOST_TEST(back[5][0].item<int64_t>() == 5);
  BOOST_TEST(back[299][0].item<int64_t>() == 15);
  // 8 + floor(log(d / 8) / log(16) * 8) for 8 <= d < 128: d = 16 -> 10, d = 64 -> 14.
  BOOST_TEST(back[16][0].item<int64_t>() == 10);
  BOOST_TEST(back[64][0].item<int64_t>() == 14);
}

BOOST_AUTO_TEST_CASE(t5_bad_inputs_name_the_file) {
  std::string e;
  e = error_of([] { ov::text::T5Encoder("/nonexistent/text_encoder_2", at::kCPU, at::kFloat); });
  BOOST_TEST(has(e, "/nonexistent/text_encoder_2"));
  // A file of the folder (the tokenizer model) where the folder is wanted: said so, with the folder.
  const std::string t5 = std::string(OPENVID_FIXTURES_DIR) + "/t5_tiny";
  e = error_of([&] { ov::text::T5Encoder(t5 + "/spiece.model", at::kCPU, at::kFloat); });
  BOOST_TEST(has(e, "is a file, not a folder (the folder holding it is '" + t5 + "')"), e);
  BOOST_TEST(!has(e, "does not exist"), e);
  // A folder whose weights are not the config's (a DiT checkpoint beside a T5 config).
  TempDir d;
  fs::copy_file(kFixture + "/config.json", d.path / "config.json");
  fs::copy_file(std::string(OPENVID_FIXTURES_DIR) + "/mup_adam.safetensors", d.path / "model.safetensors");
  e = error_of([&] { ov::text::T5Encoder(d.path.string(), at::kCPU, at::kFloat); });
  BOOST_TEST(has(e, "does not hold the T5 encoder"));
  BOOST_TEST(has(e, "missing: encoder.block.0.layer.0.SelfAttention.q.weight"));
  // A config of another model.
  std::ofstream(d.path / "config.json") << R"({"model_type": "clip_text_model", "vocab_size": 10})";
  e = error_of([&] { ov::text::T5Encoder(d.path.string(), at::kCPU, at::kFloat); });
  BOOST_TEST(has(e, "not T5"));
  // Ids the vocabulary does not have (another tokenizer's).
  const ov::text::T5Encoder enc(kFixture, at::kCPU, at::kFloat);
  e = error_of([&] { enc.encode(at::full({1, 4}, 100000, at::kLong)); });
  BOOST_TEST(has(e, "outside the vocabulary"));
}

// tests/fixtures/video_codec: a tiny TorchScript pair with the Cosmos CV4x8x8 interface
// (tests/fixtures/make_video_fixtures.py), and what PyTorch computed with it.
BOOST_AUTO_TEST_CASE(torchscript_codec_follows_the_contract) {
  const std::string dir = std::string(OPENVID_FIXTURES_DIR) + "/video_codec";
  const auto want = ov::model::read_safetensors(dir + "/expected.safetensors").tensors;
  using ov::video::LatentCodec;
  const LatentCodec enc(dir + "/encoder.jit", LatentCodec::Part::kEncoder, {}, at::kCPU, at::kFloat);
  const at::Tensor z = enc.run(want.at("video"));  // [1, 3, 5, 16, 24] -> [1, 16, 2, 2, 3]
  BOOST_REQUIRE(z.sizes() == at::IntArrayRef({1, 16, 2, 2, 3}));
  BOOST_TEST((z - want.at("latent")).abs().max().item<double>() < 1e-6);
  const LatentCodec dec(dir + "/decoder.jit", LatentCodec::Part::kDecoder, {}, at::kCPU, at::kFloat);
  BOOST_TEST((dec.run(z) - want.at("decoded")).abs().max().item<double>() < 1e-6);
  // Frames that are not 1 + 4k, sizes that are not multiples of 8, a module whose output breaks the contract
  // (the decoder used as the encoder), files that are not TorchScript.
  BOOST_TEST(has(error_of([&] { enc.run(at::zeros({1, 3, 4, 16, 24})); }), "1 + 4k"));
  BOOST_TEST(has(error_of([&] { enc.run(at::zeros({1, 3, 5, 12, 24})); }), "multiples of 8"));
  const LatentCodec wrong(dir + "/decoder.jit", LatentCodec::Part::kEncoder, {}, at::kCPU, at::kFloat);
  BOOST_TEST(!error_of([&] { wrong.run(want.at("video")); }).empty());
  BOOST_TEST(has(error_of([&] { LatentCodec(dir + "/expected.safetensors", LatentCodec::Part::kEncoder, {}, at::kCPU, at::kFloat); }),
                 "is not a TorchScript module"));
  BOOST_TEST(has(error_of([&] { LatentCodec(dir + "/missing.jit", LatentCodec::Part::kEncoder, {}, at::kCPU, at::kFloat); }), "does not exist"));
}

BOOST_AUTO_TEST_CASE(encoders_on_the_gpu) {
  if (torch::cuda::device_count() == 0) {
    BOOST_TEST_MESSAGE("no GPU: skipped");
    return;
  }
  const at::Device gpu(at::kCUDA, 0);
  const at::Tensor ids = expected().at("ids").narrow(0, 0, expected().at("hidden_fp32").size(0));
  const at::Tensor fp32 = expected().at("hidden_fp32");
  const double err32 = (ov::text::T5Encoder(kFixture, gpu, at::kFloat).encode(ids).cpu() - fp32).abs().max().item<double>();
  const double err16 = (ov::text::T5Encoder(kFixture, gpu, at::kBFloat16).encode(ids).cpu().to(at::kFloat) - fp32).abs().max().item<double>();
  const double bf16_vs_fp32 = (expected().at("hidden_bf16").to(at::kFloat) - fp32).abs().max().item<double>();
  BOOST_TEST_MESSAGE("T5 on the GPU: fp32 " << err32 << ", bf16 " << err16 << " from transformers' fp32 (its own bf16: " << bf16_vs_fp32 << ")");
  BOOST_TEST(err32 < 1e-4);  // TF32 is off in LibTorch's matmuls by default; cuBLAS sums in another order
  BOOST_TEST(err16 <= 1.5 * bf16_vs_fp32);
  const std::string dir = std::string(OPENVID_FIXTURES_DIR) + "/video_codec";
  const auto want = ov::model::read_safetensors(dir + "/expected.safetensors").tensors;
  const ov::video::LatentCodec enc(dir + "/encoder.jit", ov::video::LatentCodec::Part::kEncoder, {}, gpu, at::kFloat);
  BOOST_TEST((enc.run(want.at("video")).cpu() - want.at("latent")).abs().max().item<double>() < 1e-4);
}
