#define BOOST_TEST_MODULE train
#include <boost/test/unit_test.hpp>

#include <ATen/ATen.h>

#include <cmath>
#include <set>

#include "openvid/model/safetensors.h"
#include "openvid/runtime/error.h"
#include "openvid/runtime/files.h"
#include "openvid/train/objective.h"
#include "openvid/train/optimizer.h"

using namespace ov::train;

BOOST_AUTO_TEST_CASE(mup_adam_rules_by_hand) {
  const struct {
    const char* name;
    std::vector<int64_t> shape;
    double lr, wd;
  } cases[] = {
      {"blocks.0.qkv.weight", {3072, 1024}, 32.0 / 1024, 0.1},          // k = 1024
      {"blocks.0.mlp.2.weight", {1024, 4096}, 32.0 / 4096, 0.4},        // k = 4096
      {"blocks.0.qkv.bias", {3072}, 0.01, 0},                           // bias
      {"blocks.3.norm2.weight", {1024}, 0.01, 0},                       // norm
      {"final_norm.weight", {1024}, 0.01, 0},                           // norm
      {"blocks.2.lambda_param", {1}, 0.01, 0},                          // lambda
      {"patch_embed.weight", {1024, 16, 2, 2, 2}, 0.01, 0},             // replaces k = 2
      {"blocks.0.context_kv.weight", {2048, 4096}, 0.01, 0},            // replaces rule 1
      {"time_embed.0.weight", {4096, 1024}, 0.1 * 32.0 / 1024, 0.1},    // time x 0.1
      {"time_embed.2.bias", {1024}, 0.001, 0},                          // bias, then time
      {"blocks.1.adaLN_modulation.1.weight", {9216, 1024}, 0.1 * 32.0 / 1024, 0.1},  // modulation x 0.1
      {"final_modulation.1.bias", {2048}, 0.001, 0},
      {"register_tokens", {1, 16, 1024}, 32.0 / 1024, 0.1},
  };
  for (const auto& c : cases) {
    const ParamRule r = mup_adam_rule(c.name, c.shape, 0.1);
    BOOST_CHECK_MESSAGE(std::abs(r.lr_mult - c.lr) < 1e-15 && std::abs(r.weight_decay - c.wd) < 1e-15,
                        c.name << ": lr x " << r.lr_mult << " wd " << r.weight_decay << ", expected " << c.lr << " and " << c.wd);
  }
}

BOOST_AUTO_TEST_CASE(schedules_by_hand) {
  BOOST_CHECK_EQUAL(lr_multiplier(ov::LrSchedule::kCosine, 0, 100, 20), 0.0);  // the first update uses multiplier 0
  BOOST_CHECK_EQUAL(lr_multiplier(ov::LrSchedule::kLinear, 5, 100, 20), 0.25);
  BOOST_CHECK_EQUAL(lr_multiplier(ov::LrSchedule::kLinear, 20, 100, 20), 1.0);
  BOOST_CHECK_EQUAL(lr_multiplier(ov::LrSchedule::kLinear, 60, 100, 20), 0.5);
  BOOST_CHECK_EQUAL(lr_multiplier(ov::LrSchedule::kLinear, 100, 100, 20), 0.0);
  BOOST_CHECK_EQUAL(lr_multiplier(ov::LrSchedule::kLinear, 130, 100, 20), 0.0);
  BOOST_CHECK_CLOSE(lr_multiplier(ov::LrSchedule::kCosine, 60, 100, 20), 0.5, 1e-12);
  BOOST_CHECK_CLOSE(lr_multiplier(ov::LrSchedule::kCosine, 40, 100, 20), 0.5 * (1 + std::cos(M_PI / 4)), 1e-12);
  BOOST_CHECK_EQUAL(lr_multiplier(ov::LrSchedule::kConstant, 7, 100, 20), 0.35);
  BOOST_CHECK_EQUAL(lr_multiplier(ov::LrSchedule::kConstant, 70, 100, 20), 1.0);
}

// Against torch.optim.AdamW with the reference's muP groups (tools/reference_optimizer.py), also run as shards:
// every parameter split in two segments must give the same result.
BOOST_AUTO_TEST_CASE(adamw_matches_torch_and_shards_equal_whole) {
  const auto fx = ov::model::read_safetensors(std::string(OPENVID_FIXTURES_DIR) + "/mup_adam.safetensors").tensors;
  for (bool sharded : {false, true}) {
    AdamW opt({0.95, 0.99, 1e-8});
    std::map<std::string, std::pair<at::Tensor, at::Tensor>> state;  // name -> (param, grad)
    for (const auto& [key, t] : fx) {
      if (key.rfind("init.", 0) != 0) continue;
      const std::string name = key.substr(5);
      at::Tensor p = t.clone(), g = at::zeros_like(p);
      const ParamRule r = mup_adam_rule(name, p.sizes(), 0.1);
      const at::Tensor want = fx.at("rule." + name);
      BOOST_CHECK_CLOSE(r.lr_mult, want[0].item<double>(), 1e-12);
      BOOST_CHECK_CLOSE(r.weight_decay + 1, want[1].item<double>() + 1, 1e-12);
      if (sharded && p.numel() > 1) {
        const int64_t half = p.numel() / 2;
        opt.add_segment(name + "#0", p.view({-1}).narrow(0, 0, half), g.view({-1}).narrow(0, 0, half), r);
        opt.add_segment(name + "#1", p.view({-1}).narrow(0, half, p.numel() - half), g.view({-1}).narrow(0, half, p.numel() - half), r);
      } else {
        opt.add_segment(name, p, g, r);
      }
      state[name] = {p, g};
    }
    BOOST_REQUIRE_EQUAL(state.size(), 16u);
    for (int step = 0; step < 3; ++step) {
      for (auto& [name, pg] : state) pg.second.copy_(fx.at("grad" + std::to_string(step) + "." + name));
      opt.step(1e-3 * lr_multiplier(ov::LrSchedule::kLinear, step, 25, 20));
    }
    for (const auto& [name, pg] : state) {
      const at::Tensor want = fx.at("final." + name);
      const double err = (pg.first - want).abs().max().item<double>() / want.abs().max().item<double>();
      BOOST_CHECK_MESSAGE(err < 1e-6, (sharded ? "sharded " : "") << name << ": relative error " << err);
    }
    BOOST_CHECK_EQUAL(opt.steps(), 3);
  }
}

// A skipped step (control[0] = 0: non-finite gradients) changes nothing and is not counted; a gradient
// factor (clipping) is the same as scaling the gradients first.
BOOST_AUTO_TEST_CASE(adamw_control_skips_and_scales) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const at::Tensor p0 = at::normal(0, 1, {64}, gen), g0 = at::normal(0, 1, {64}, gen);
  at::Tensor p = p0.clone(), g = g0.clone(), q = p0.clone(), h = g0 * 0.25f, copy = at::zeros({64}, at::kBFloat16);
  AdamW a({0.95, 0.99, 1e-8}), b({0.95, 0.99, 1e-8});
  a.add_segment("w", p, g, {1.0, 0.1}, {}, {}, copy);
  b.add_segment("w", q, h, {1.0, 0.1});
  a.step(1e-2, at::tensor({0.f, 1.f}));
  BOOST_CHECK(at::equal(p, p0));
  BOOST_CHECK_EQUAL(a.steps(), 0);
  a.step(1e-2, at::tensor({1.f, 0.25f}));
  b.step(1e-2);
  BOOST_CHECK_EQUAL(a.steps(), 1);
  BOOST_CHECK(at::allclose(p, q, 1e-6, 1e-7));
  BOOST_CHECK(at::equal(copy, p.to(at::kBFloat16)));  // the compute copy holds the update
}

// A file that cannot be written whole says why (a full disk while writing a checkpoint's trainer.json).
BOOST_AUTO_TEST_CASE(durable_writes_report_the_reason) {
  try {
    ov::write_file_durably("/dev/full", std::string(1 << 16, 'x'));
    BOOST_ERROR("writing to /dev/full succeeded");
  } catch (const ov::Error& e) {
    const std::string m = e.what();
    BOOST_CHECK_MESSAGE(m.find("/dev/full") != std::string::npos && m.find("No space left on device") != std::string::npos, m);
  }
}

BOOST_AUTO_TEST_CASE(draws_depend_on_seed_step_and_sample_only) {
  const SampleDraw a = draw_sample(7, 3, 11, 8.0, 0.01), b = draw_sample(7, 3, 11, 8.0, 0.01);
  BOOST_CHECK_EQUAL(a.t, b.t);
  BOOST_CHECK_NE(a.t, draw_sample(7, 3, 12, 8.0, 0.01).t);
  BOOST_CHECK_NE(a.t, draw_sample(7, 4, 11, 8.0, 0.01).t);
  BOOST_CHECK_NE(a.t, draw_sample(8, 3, 11, 8.0, 0.01).t);
  // Timesteps: logit-normal then shifted by 8 -> mostly near 1; caption dropout near 1%.
  double mean = 0;
  int dropped = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const SampleDraw d = draw_sample(1, 0, i, 8.0, 0.01);
    BOOST_REQUIRE(d.t > 0 && d.t < 1);
    mean += d.t / n;
    dropped += d.drop_caption;
  }
  BOOST_CHECK_GT(mean, 0.8);  // E[shift_8(sigmoid(z))] is about 0.86
  BOOST_CHECK_LT(mean, 0.92);
  BOOST_CHECK_GT(dropped, 120);
  BOOST_CHECK_LT(dropped, 290);
  BOOST_CHECK_CLOSE(shift_timestep(0.5, 8.0), 8.0 / 9.0, 1e-12);
  BOOST_CHECK_EQUAL(shift_timestep(0.0, 8.0), 0.0);
  BOOST_CHECK_EQUAL(shift_timestep(1.0, 8.0), 1.0);
}

BOOST_AUTO_TEST_CASE(a_cp_ranks_noise_is_its_slice_of_the_samples_noise) {
  const at::Tensor full = draw_noise(5, 2, 9, 4, 0, 8, 3, 5);
  BOOST_CHECK(full.sizes() == at::IntArrayRef({4, 8, 3, 5}));
  for (int64_t begin : {0, 2, 4, 6}) BOOST_CHECK(at::equal(draw_noise(5, 2, 9, 4, begin, 2, 3, 5), full.narrow(1, begin, 2)));
  BOOST_CHECK(!at::equal(draw_noise(5, 2, 10, 4, 0, 8, 3, 5), full));
  BOOST_CHECK(!at::equal(draw_noise(5, 3, 9, 4, 0, 8, 3, 5), full));
  BOOST_CHECK_LT(std::abs(full.mean().item<double>()), 0.2);
  BOOST_CHECK_LT(std::abs(full.std().item<double>() - 1), 0.2);
}

BOOST_AUTO_TEST_CASE(rope_offsets_fit_the_grid_and_follow_the_step) {
  std::set<int64_t> seen;
  for (int64_t step = 0; step < 200; ++step) {
    const auto o = draw_rope_offset(3, step, 8, 32, 120);
    BOOST_CHECK(o == draw_rope_offset(3, step, 8, 32, 120));
    BOOST_CHECK(o[0] >= 0 && o[0] <= 120 && o[1] >= 0 && o[1] <= 96 && o[2] >= 0 && o[2] <= 8);
    seen.insert(o[2]);
  }
  BOOST_CHECK_EQUAL(seen.size(), 9u);  // every start 0..8 of the 120-token axis occurs
  BOOST_CHECK(draw_rope_offset(3, 0, 128, 128, 128) == (std::array<int64_t, 3>{0, 0, 0}));
  BOOST_CHECK_THROW(draw_rope_offset(3, 0, 129, 1, 1), ov::InputError);
}

BOOST_AUTO_TEST_CASE(loss_splits_exactly_over_ranks) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(1);
  const at::Tensor x = at::normal(0, 1, {4, 2, 6, 3, 3}, g), noise = at::normal(0, 1, {4, 2, 6, 3, 3}, g);
  const at::Tensor t = at::tensor({0.1, 0.5, 0.9, 1.0});
  const FlowExample ex = make_example(x, noise, t);
  BOOST_CHECK(at::allclose(ex.x_t[3], noise[3]));  // t = 1: pure noise
  BOOST_CHECK(at::allclose(ex.target, x - noise));
  const at::Tensor pred = at::normal(0, 1, x.sizes(), g);
  const double whole = flow_loss(pred, ex.target, static_cast<double>(x.numel())).item<double>();
  BOOST_CHECK_CLOSE(whole, at::mse_loss(pred, ex.target).item<double>(), 1e-4);
  // Two data ranks x two cp ranks, each normalising by the global count: the parts add up to the mean.
  double parts = 0;
  for (int64_t b = 0; b < 4; b += 2)
    for (int64_t f = 0; f < 6; f += 3)
      parts += flow_loss(pred.narrow(0, b, 2).narrow(2, f, 3), ex.target.narrow(0, b, 2).narrow(2, f, 3), static_cast<double>(x.numel())).item<double>();
  BOOST_CHECK_CLOSE(parts, whole, 1e-4);
}
