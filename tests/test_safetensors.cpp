#define BOOST_TEST_MODULE safetensors
#include <boost/test/unit_test.hpp>

#include <ATen/ATen.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "openvid/model/dit.h"
#include "openvid/model/safetensors.h"
#include "openvid/model/state_dict.h"
#include "openvid/runtime/error.h"
#include "test_util.h"
#include "tiny_model.h"

using ov::model::TensorMap;

namespace {

using ov::test::error_of;
using ov::test::has;
using ov::test::TempDir;

// A file with a hand-written header, to say things our writer never would.
void write_raw(const std::string& path, const std::string& header, size_t data_bytes) {
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = header.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << header;
  out << std::string(data_bytes, '\0');
}

}  // namespace

BOOST_AUTO_TEST_CASE(round_trip_of_every_dtype) {
  TempDir dir;
  TensorMap in;
  int i = 0;
  for (at::ScalarType t : {at::kDouble, at::kFloat, at::kHalf, at::kBFloat16, at::kLong, at::kInt, at::kShort,
                           at::kChar, at::kByte, at::kBool}) {
    in["t" + std::to_string(i++) + "." + c10::toString(t)] = (at::arange(24, at::kFloat).reshape({2, 3, 4}) - 7).to(t);
  }
  in["scalar"] = at::full({}, 3.5);
  in["empty"] = at::zeros({0, 3});
  const std::string path = dir.file("all.safetensors");
  ov::model::write_safetensors(path, in, {{"format", "pt"}, {"note", "round trip"}});
  const auto out = ov::model::read_safetensors(path);
  BOOST_CHECK_EQUAL(out.tensors.size(), in.size());
  for (const auto& [name, t] : in) {
    const at::Tensor& r = out.tensors.at(name);
    BOOST_CHECK_MESSAGE(r.scalar_type() == t.scalar_type() && r.sizes() == t.sizes() && at::equal(r, t), name);
  }
  BOOST_CHECK_EQUAL(out.metadata.at("note"), "round trip");
  // The header is padded so the data starts 8-byte aligned.
  std::ifstream f(path, std::ios::binary);
  uint64_t header_len = 0;
  f.read(reinterpret_cast<char*>(&header_len), 8);
  BOOST_CHECK_EQUAL(header_len % 8, 0u);
  // Nothing is left behind by the atomic write.
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path)) files += e.is_regular_file() ? 1 : 0;
  BOOST_CHECK_EQUAL(files, 1);
}

BOOST_AUTO_TEST_CASE(truncated_files_are_named_and_explained) {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  ov::model::write_safetensors(path, {{"a", at::ones({100})}});
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 5);
  std::string e = error_of([&] { ov::model::read_safetensors(path); });
  BOOST_CHECK_MESSAGE(has(e, path) && has(e, "truncated"), e);
  std::filesystem::resize_file(path, 4);
  e = error_of([&] { ov::model::read_safetensors(path); });
  BOOST_CHECK_MESSAGE(has(e, "too short"), e);
  e = error_of([&] { ov::model::read_safetensors(dir.file("missing.safetensors")); });
  BOOST_CHECK_MESSAGE(has(e, "cannot be opened"), e);
}

BOOST_AUTO_TEST_CASE(headers_that_lie_are_rejected) {
  TempDir dir;
  const std::string p = dir.file("bad.safetensors");
  write_raw(p, R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}})", 8);
  std::string e = error_of([&] { ov::model::read_safetensors(p); });
  BOOST_CHECK_MESSAGE(has(e, "'a' claims 8 bytes but its shape and dtype need 16"), e);
  write_raw(p, R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 4);
  e = error_of([&] { ov::model::read_safetensors(p); });
  BOOST_CHECK_MESSAGE(has(e, "describes 16 bytes of data but the file holds 4"), e);
  write_raw(p, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12);
  e = error_of([&] { ov::model::read_safetensors(p); });
  BOOST_CHECK_MESSAGE(has(e, "overlaps"), e);
  write_raw(p, R"({"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", 2);
  e = error_of([&] { ov::model::read_safetensors(p); });
  BOOST_CHECK_MESSAGE(has(e, "unsupported dtype \"F8_E4M3\""), e);
  write_raw(p, R"({"a": not json)", 0);
  e = error_of([&] { ov::model::read_safetensors(p); });
  BOOST_CHECK_MESSAGE(has(e, "not valid JSON"), e);
  {
    std::ofstream out(p, std::ios::binary);
    const uint64_t huge = 1ull << 40;
    out.write(reinterpret_cast<const char*>(&huge), 8);
    out << "{}";
  }
  e = error_of([&] { ov::model::read_safetensors(p); });
  BOOST_CHECK_MESSAGE(has(e, "header length"), e);
}

BOOST_AUTO_TEST_CASE(sharded_sets_load_through_their_index) {
  TempDir dir;
  ov::model::write_safetensors(dir.file("model-00001-of-00002.safetensors"), {{"a", at::ones({2})}, {"b", at::zeros({3})}});
  ov::model::write_safetensors(dir.file("model-00002-of-00002.safetensors"), {{"c", at::full({1}, 7.0)}});
  std::ofstream(dir.file("model.safetensors.index.json"))
      << R"({"metadata": {"total_size": 24}, "weight_map": {"a": "model-00001-of-00002.safetensors",
            "b": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"}})";
  for (const std::string& where : {dir.file("model.safetensors.index.json"), dir.path.string()}) {
    const TensorMap m = ov::model::read_weights(where);
    BOOST_CHECK_EQUAL(m.size(), 3u);
    BOOST_CHECK_EQUAL(m.at("c").item<float>(), 7.0f);
  }
  std::ofstream(dir.file("broken.index.json")) << R"({"weight_map": {"a": "model-00003-of-00002.safetensors"}})";
  const std::string e = error_of([&] { ov::model::read_weights(dir.file("broken.index.json")); });
  BOOST_CHECK_MESSAGE(has(e, "model-00003-of-00002.safetensors") && has(e, "does not exist"), e);
}

BOOST_AUTO_TEST_CASE(loading_reports_every_mismatch_at_once) {
  ov::model::DiT model(tiny_model_config());
  TensorMap w = ov::model::state_dict(*model);
  for (auto& [name, t] : w) t = t.clone();
  w["rope.freqs_hwt_cos"] = at::ones({2});  // the reference's tables: ignored
  w["blocks.0.qkv.weight"] = w["blocks.0.qkv.weight"].to(at::kBFloat16);  // floating dtypes convert
  BOOST_CHECK_NO_THROW(ov::model::load_state_dict(*model, w, "good.safetensors"));

  TensorMap bad = w;
  bad.erase("blocks.1.cross_proj.weight");
  bad.erase("final_proj.bias");
  bad["blocks.0.qkv.bias"] = at::zeros({96});
  bad["blocks.0.attn_proj.weight"] = at::zeros({32, 16});
  bad["register_tokens"] = at::zeros({1, 4, 32}, at::kInt);
  const std::string before = c10::str(ov::model::state_dict(*model).at("final_proj.weight").sum().item<float>());
  const std::string e = error_of([&] { ov::model::load_state_dict(*model, bad, "bad.safetensors"); });
  BOOST_CHECK_MESSAGE(has(e, "'bad.safetensors'"), e);
  BOOST_CHECK_MESSAGE(has(e, "missing (2): blocks.1.cross_proj.weight [32, 32], final_proj.bias [32]"), e);
  BOOST_CHECK_MESSAGE(has(e, "unexpected (1): blocks.0.qkv.bias [96]"), e);
  BOOST_CHECK_MESSAGE(has(e, "wrong shape (1): blocks.0.attn_proj.weight [32, 16] in the file vs [32, 32] in the model"), e);
  BOOST_CHECK_MESSAGE(has(e, "not a floating dtype (1): register_tokens"), e);
  BOOST_CHECK_MESSAGE(has(e, "train_bias_and_rms = true"), e);
}
