#define BOOST_TEST_MODULE text
#include <boost/test/unit_test.hpp>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "openvid/model/safetensors.h"
#include "openvid/runtime/error.h"
#include "openvid/text/tokenizer.h"
#include "openvid/video/latent_codec.h"
#include "test_util.h"

// tests/fixtures/t5_tiny is made by tests/fixtures/make_text_fixtures.py: a tiny T5 v1.1 encoder in Hugging
// Face's sharded layout, its SentencePiece model, and what `transformers` and `sentencepiece` computed (the
// encoder's own tests: test_encoders.cpp).
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





// libsentencepiece and LibTorch define the same global flag; loaded in the wrong order, sentencepiece's
// start-up overwrote LibTorch memory and the first TorchScript call hung (cmake/OpenvidDependencies.cmake).
BOOST_AUTO_TEST_CASE(tokenizer_and_torchscript_share_a_process) {
  const ov::text::Tokenizer tok(kFixture);
  const std::string codec = std::string(OPENVID_FIXTURES_DIR) + "/video_codec/encoder.jit";
  const ov::video::LatentCodec enc(codec, ov::video::LatentCodec::Part::kEncoder, {}, at::kCPU, at::kFloat);
  BOOST_TEST(enc.run(at::zeros({1, 3, 5, 16, 16})).size(1) == 16);
  BOOST_TEST(tok.encode("a cat", 4).size() == 4u);
}

BOOST_AUTO_TEST_CASE(tokenizer_bad_inputs_name_the_file) {
  std::string e = error_of([] { ov::text::Tokenizer("/nonexistent/spiece.model"); });
  BOOST_TEST(has(e, "/nonexistent/spiece.model"));
  BOOST_TEST(has(e, "does not exist"));
  // A file of the wrong kind as the tokenizer.
  e = error_of([] { ov::text::Tokenizer(kFixture + "/config.json"); });
  BOOST_TEST(has(e, "is not a SentencePiece model"));
}
