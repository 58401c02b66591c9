#define BOOST_TEST_MODULE text
#include <boost/test/unit_test.hpp>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "openvid/model/safetensors.h"
#include "openvid/runtime/error.h"
#include "openvid/text/t5_encoder.h"
#include "openvid/text/tokenizer.h"
#include "openvid/video/latent_codec.h"
#include "test_util.h"

// tests/fixtures/t5_tiny is made by tests/fixtures/make_text_fixtures.py: a tiny T5 v1.1 encoder in Hugging
// Face's sharded layout, its SentencePiece model, and what `transformers` and `sentencepiece` computed.
namespace {

namespace fs = std::filesystem;
const std::string kFixture = std::string(OPENVID_FIXTURES_DIR) + "/t5_tiny";
constexpr int64_t kLength = 512;

std::vector<std::string> captions() {
  std::ifstream in(kFixture + "/captions.json");
  return nlohmann::json::parse(in).get<std::vector<std::string>>();
}

const ov::model::TensorMap& expected() {
  static const ov::model::TensorMap t = ov::model::read_safetensors(kFixture + "/expected.safetensors").tensors;
  return t;
}

using ov::test::error_of;
using ov::test::has;
using ov::test::TempDir;

}  // namespace

BOOST_AUTO_TEST_CASE(token_ids_match_sentencepiece) {
  const ov::text::Tokenizer tok(kFixture);  // the folder: spiece.model inside
  const std::vector<std::string> texts = captions();
  const at::Tensor want = expected().at("ids");
  BOOST_REQUIRE_EQUAL(want.size(0), static_cast<int64_t>(texts.size()));
  const at::Tensor got = tok.encode(texts, kLength);
  for (size_t i = 0; i < texts.size(); ++i) {
    BOOST_TEST_CONTEXT("caption " << i << ": '" << texts[i].substr(0, 60) << "'") {
      BOOST_TEST(at::equal(got[static_cast<int64_t>(i)], want[static_cast<int64_t>(i)]));
    }
  }
  // The cases the fixture covers: the empty caption is EOS then padding; the long one is cut to 511 pieces
  // and EOS; characters outside the vocabulary become unknown (2), not errors.
  const auto empty = tok.encode("", kLength);
  BOOST_TEST(empty[0] == tok.eos_id());
  BOOST_TEST(empty[1] == tok.pad_id());
  bool cut = false;
  const auto lengthy = tok.encode(texts.back(), kLength, &cut);
  BOOST_TEST(cut);
  BOOST_TEST(lengthy[kLength - 1] == tok.eos_id());
  BOOST_TEST(lengthy[kLength - 2] != tok.pad_id());
  BOOST_TEST(at::any(got[3] == 2).item<bool>());  // the emoji caption
  BOOST_TEST(tok.encode("a cat", 3).size() == 3u);
}

BOOST_AUTO_TEST_CASE(encoder_fp32_matches_transformers) {
  const ov::text::T5Encoder enc(kFixture, at::kCPU, at::kFloat);
  BOOST_TEST(enc.config().num_layers == 2);
  BOOST_TEST(enc.config().gated);
  const at::Tensor want = expected().at("hidden_fp32");
  const at::Tensor got = enc.encode(expected().at("ids").narrow(0, 0, want.size(0)));
  BOOST_REQUIRE(got.sizes() == want.sizes());
  const double err = (got - want).abs().max().item<double>();
  BOOST_TEST_MESSAGE("largest |openvid - transformers| in fp32: " << err << " (values up to " << want.abs().max().item<double>() << ")");
  BOOST_TEST(err < 1e-5);
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

BOOST_AUTO_TEST_CASE(bad_inputs_name_the_file) {
  std::string e = error_of([] { ov::text::Tokenizer("/nonexistent/spiece.model"); });
  BOOST_TEST(has(e, "/nonexistent/spiece.model"));
  BOOST_TEST(has(e, "does not exist"));
  // A file of the wrong kind as the tokenizer.
  e = error_of([] { ov::text::Tokenizer(kFixture + "/config.json"); });
  BOOST_TEST(has(e, "is not a SentencePiece model"));
  e = error_of([] { ov::text::T5Encoder("/nonexistent/text_encoder_2", at::kCPU, at::kFloat); });
  BOOST_TEST(has(e, "/nonexistent/text_encoder_2"));
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

// libsentencepiece and LibTorch define the same global flag; loaded in the wrong order, sentencepiece's
// start-up overwrote LibTorch memory and the first TorchScript call hung (cmake/OpenvidDependencies.cmake).
BOOST_AUTO_TEST_CASE(tokenizer_and_torchscript_share_a_process) {
  const ov::text::Tokenizer tok(kFixture);
  const std::string codec = std::string(OPENVID_FIXTURES_DIR) + "/video_codec/encoder.jit";
  const ov::video::LatentCodec enc(codec, ov::video::LatentCodec::Part::kEncoder, {}, at::kCPU, at::kFloat);
  BOOST_TEST(enc.run(at::zeros({1, 3, 5, 16, 16})).size(1) == 16);
  BOOST_TEST(tok.encode("a cat", 4).size() == 4u);
}
