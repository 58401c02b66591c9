#define BOOST_TEST_MODULE resume_note
// What a resume says it changes (train::resume_changes), for the options that only a GPU run can change, so
// that no CPU job test reaches them: the float8 recipe.
#include <boost/test/unit_test.hpp>

#include <string>

#include "openvid/config/options.h"
#include "openvid/data/sampler.h"
#include "openvid/train/resume.h"

namespace {

std::string changes(const ov::Options& before, const ov::Options& now) {
  ov::train::CheckpointState st;
  st.next_step = 4;
  st.optimizer_steps = 4;
  st.data_ranks = 1;
  st.options_ini = ov::to_ini(before);
  const ov::data::Sampler sampler({16}, 1, now.batch_size, 0.0);
  return ov::train::resume_changes(st, now, 1, sampler, false);
}

ov::Options fp8(ov::Float8Recipe recipe) {
  ov::Options o;
  o.batch_size = 2;
  o.precision = ov::Precision::kFp8;
  o.fp8_recipe = recipe;
  return o;
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_float8_recipe_change_is_noted) {
  const std::string c = changes(fp8(ov::Float8Recipe::kTensorwise), fp8(ov::Float8Recipe::kTensorwiseGwHp));
  BOOST_TEST_MESSAGE(c);
  BOOST_TEST(c.find("float8 recipe tensorwise -> tensorwise_with_gw_hp") != std::string::npos);
  BOOST_TEST(changes(fp8(ov::Float8Recipe::kTensorwise), fp8(ov::Float8Recipe::kTensorwise)).find("recipe") == std::string::npos);
  // From bf16, the precision's change is the note; the recipe only matters between float8 runs.
  ov::Options bf16 = fp8(ov::Float8Recipe::kTensorwise);
  bf16.precision = ov::Precision::kBf16;
  const std::string p = changes(bf16, fp8(ov::Float8Recipe::kTensorwiseGwHp));
  BOOST_TEST(p.find("precision bf16 -> fp8") != std::string::npos);
  BOOST_TEST(p.find("recipe") == std::string::npos);
}
