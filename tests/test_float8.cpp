#define BOOST_TEST_MODULE float8
#include <boost/test/unit_test.hpp>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <set>
#include <string>

#include "openvid/model/float8.h"
#include "openvid/model/float8_conversion.h"
#include "openvid/model/linear.h"
#include "tiny_model.h"

namespace f8 = ov::model::float8;
namespace ops = ov::model::ops;

namespace {

at::Tensor normal(std::vector<int64_t> sizes, uint64_t seed, double std = 1.0) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::normal(0, std, sizes, g, at::TensorOptions().dtype(at::kFloat));
}

// The dequantised values of x's tensorwise cast: what a float8 product multiplies, built from ATen's casts.
at::Tensor dequantised(const at::Tensor& x) {
  const at::Tensor amax = x.abs().max().reshape({1});
  const float s = 448.f / std::max(amax.item<float>(), 1e-12f);
  const at::Tensor q = (x.to(at::kFloat) * s).clamp(-448, 448).to(at::kFloat8_e4m3fn);
  return q.to(at::kFloat) * (1.f / s);
}

double relative_error(const at::Tensor& got, const at::Tensor& want) {
  return (got.to(at::kFloat) - want.to(at::kFloat)).abs().max().item<double>() / want.abs().max().item<double>();
}

}  // namespace

BOOST_AUTO_TEST_CASE(scales_come_from_amax_as_computed_by_hand) {
  at::Tensor x = normal({5, 32}, 1).clamp(-3, 3);
  x[2][7] = -3.5f;  // amax 3.5: s = 448 / 3.5 = 128 exactly
  const at::Tensor amax = f8::amax(x);
  BOOST_TEST(amax.item<float>() == 3.5f);
  const f8::Cast c = f8::cast(x, amax, true, true);
  BOOST_TEST(c.inv_scale.item<float>() == 1.f / 128.f);
  // Each value is x * 128 rounded to e4m3 (ATen's cast, round to nearest even), the largest exactly -448.
  BOOST_TEST(c.rows.to(at::kFloat)[2][7].item<float>() == -448.f);
  BOOST_TEST(at::equal(c.rows.to(at::kFloat), (x * 128).to(at::kFloat8_e4m3fn).to(at::kFloat)));
  // A scale that is not a power of two: one fp32 division, 448 / amax.
  const at::Tensor y = x * 0.7f;
  const f8::Cast cy = f8::cast(y, f8::amax(y), true, false);
  const float s = 448.f / y.abs().max().item<float>();
  BOOST_TEST(cy.inv_scale.item<float>() == 1.f / s);
}

BOOST_AUTO_TEST_CASE(the_transposed_copy_pads_the_tokens_to_a_multiple_of_16_with_zeros) {
  const at::Tensor x = normal({21, 48}, 2);
  const f8::Cast c = f8::cast(x, f8::amax(x), true, true);
  BOOST_TEST(f8::padded_rows(21) == 32);
  BOOST_TEST((c.transposed.sizes() == at::IntArrayRef{48, 32}));
  BOOST_TEST(at::equal(c.transposed.to(at::kFloat).narrow(1, 0, 21), c.rows.to(at::kFloat).t()));
  BOOST_TEST(c.transposed.to(at::kFloat).narrow(1, 21, 11).abs().sum().item<float>() == 0.f);
}

BOOST_AUTO_TEST_CASE(zero_and_non_finite_tensors_divide_by_nothing) {
  const at::Tensor zero = at::zeros({4, 16});
  const f8::Cast c = f8::cast(zero, f8::amax(zero), true, true);
  BOOST_TEST(std::isfinite(c.inv_scale.item<float>()));
  BOOST_TEST(c.rows.to(at::kFloat).abs().sum().item<float>() == 0.f);
  // A linear layer of zero input gives its bias, exactly.
  const at::Tensor w = normal({32, 16}, 3), b = normal({32}, 4);
  BOOST_TEST(at::equal(ops::float8_linear(zero, w, b), b.expand({4, 32})));
  // NaN or inf in the input: the output is non-finite (the trainer's non-finite-step path takes it from there).
  at::Tensor bad = normal({4, 16}, 5);
  bad[1][3] = std::nanf("");
  BOOST_TEST(!at::isfinite(ops::float8_linear(bad, w, b)).all().item<bool>());
  bad[1][3] = INFINITY;
  BOOST_TEST(!at::isfinite(ops::float8_linear(bad, w, b)).all().item<bool>());
}

// Forward and both gradients against the products of the dequantised casts (fp32 in and out, so that only the
// summation order differs).
BOOST_AUTO_TEST_CASE(the_float8_linear_equals_its_emulation_forward_and_backward) {
  const int64_t in = 64, out = 48;
  const at::Tensor x = normal({2, 13, in}, 6).requires_grad_(true);  // 26 tokens: padded to 32 for the weight gradient
  const at::Tensor w = normal({out, in}, 7, 0.1).requires_grad_(true);
  const at::Tensor b = normal({out}, 8).requires_grad_(true);
  const at::Tensor g = normal({2, 13, out}, 9);
  const at::Tensor y = ops::float8_linear(x, w, b);
  y.backward(g);

  const at::Tensor xd = dequantised(x.detach()), wd = dequantised(w.detach()), gd = dequantised(g);
  BOOST_TEST(relative_error(y, at::matmul(xd, wd.t()) + b.detach()) < 1e-6);
  BOOST_TEST(relative_error(x.grad(), at::matmul(gd, wd)) < 1e-6);
  BOOST_TEST(relative_error(w.grad(), gd.reshape({-1, out}).t().mm(xd.reshape({-1, in}))) < 1e-6);
  BOOST_TEST(relative_error(b.grad(), g.sum(at::IntArrayRef{0, 1})) < 1e-6);
  // And float8 is an approximation of the linear layer: a few percent of it, not more.
  BOOST_TEST(relative_error(y, at::linear(x.detach(), w.detach(), b.detach())) < 0.08);

  // An input without a gradient (kept as is and cast again in backward): the same weight gradient, to the bit.
  const at::Tensor w2 = w.detach().clone().requires_grad_(true);
  ops::float8_linear(x.detach(), w2, at::Tensor()).backward(g);
  BOOST_TEST(at::equal(w2.grad(), w.grad()));
}

BOOST_AUTO_TEST_CASE(the_float8_mlp_equals_its_emulation_forward_and_backward) {
  const int64_t d = 32, hidden = 128;
  const at::Tensor x = normal({3, 7, d}, 10).requires_grad_(true);
  const at::Tensor w1 = normal({hidden, d}, 11, 0.2).requires_grad_(true), b1 = normal({hidden}, 12, 0.1).requires_grad_(true);
  const at::Tensor w2 = normal({d, hidden}, 13, 0.1).requires_grad_(true), b2 = normal({d}, 14, 0.1).requires_grad_(true);
  const at::Tensor g = normal({3, 7, d}, 15);
  ops::float8_gelu_mlp(x, w1, b1, w2, b2).backward(g);
  const at::Tensor y = ops::float8_gelu_mlp(x.detach(), w1.detach(), b1.detach(), w2.detach(), b2.detach());

  // Emulation: each product of dequantised casts, GELU in between, in fp32.
  const at::Tensor xd = dequantised(x.detach()).reshape({-1, d}), w1d = dequantised(w1.detach()), w2d = dequantised(w2.detach());
  const at::Tensor a = xd.mm(w1d.t()) + b1.detach();
  const at::Tensor h = at::gelu(a), hd = dequantised(h);
  BOOST_TEST(relative_error(y.reshape({-1, d}), hd.mm(w2d.t()) + b2.detach()) < 1e-6);
  const at::Tensor g2 = g.reshape({-1, d}), gd = dequantised(g2);
  const at::Tensor da = at::gelu_backward(gd.mm(w2d), a);
  const at::Tensor dad = dequantised(da);
  BOOST_TEST(relative_error(w2.grad(), gd.t().mm(hd)) < 1e-6);
  BOOST_TEST(relative_error(b2.grad(), g2.sum(0)) < 1e-6);
  BOOST_TEST(relative_error(b1.grad(), da.sum(0)) < 1e-6);
  BOOST_TEST(relative_error(w1.grad(), dad.t().mm(xd)) < 1e-6);
  BOOST_TEST(relative_error(x.grad().reshape({-1, d}), dad.mm(w1d)) < 1e-6);
}

// --fp8_recipe tensorwise_with_gw_hp: the forward and the input gradient are the tensorwise recipe's to the bit;
// the weight gradient is the bf16 layer's own (ops::linear's), to the bit, with and without an input gradient.
BOOST_AUTO_TEST_CASE(the_gw_hp_recipe_takes_the_weight_gradient_from_the_linear_layer) {
  const auto hp = ov::Float8Recipe::kTensorwiseGwHp;
  const int64_t in = 64, out = 48;
  const at::Tensor x0 = normal({2, 13, in}, 31), w0 = normal({out, in}, 32, 0.1), b0 = normal({out}, 33), g = normal({2, 13, out}, 34);
  for (bool input_grad : {true, false}) {
    BOOST_TEST_CONTEXT("input gradient " << input_grad) {
      const at::Tensor xt = x0.clone().requires_grad_(input_grad), xh = x0.clone().requires_grad_(input_grad),
                       xl = x0.clone().requires_grad_(input_grad);
      const at::Tensor wt = w0.clone().requires_grad_(true), wh = w0.clone().requires_grad_(true), wl = w0.clone().requires_grad_(true);
      const at::Tensor bt = b0.clone().requires_grad_(true), bh = b0.clone().requires_grad_(true), bl = b0.clone().requires_grad_(true);
      const at::Tensor yt = ops::float8_linear(xt, wt, bt), yh = ops::float8_linear(xh, wh, bh, hp);
      BOOST_TEST(at::equal(yt, yh));
      yt.backward(g);
      yh.backward(g);
      ops::linear(xl, wl, bl).backward(g);
      BOOST_TEST(at::equal(wh.grad(), wl.grad()));
      BOOST_TEST(at::equal(bh.grad(), bt.grad()));
      BOOST_TEST(!at::equal(wt.grad(), wl.grad()));  // the tensorwise recipe's is float8's
      if (input_grad) BOOST_TEST(at::equal(xh.grad(), xt.grad()));
    }
  }
}

BOOST_AUTO_TEST_CASE(the_gw_hp_mlp_takes_its_weight_gradients_from_the_bf16_gradients) {
  const int64_t d = 32, hidden = 128;
  const at::Tensor x0 = normal({3, 7, d}, 40), w10 = normal({hidden, d}, 41, 0.2), b10 = normal({hidden}, 42, 0.1);
  const at::Tensor w20 = normal({d, hidden}, 43, 0.1), b20 = normal({d}, 44, 0.1), g = normal({3, 7, d}, 45);
  auto leaves = [&] {
    std::vector<at::Tensor> p;
    for (const at::Tensor& t : {x0, w10, b10, w20, b20}) p.push_back(t.clone().requires_grad_(true));
    return p;
  };
  const std::vector<at::Tensor> t = leaves(), h = leaves();
  const at::Tensor yt = ops::float8_gelu_mlp(t[0], t[1], t[2], t[3], t[4]);
  const at::Tensor yh = ops::float8_gelu_mlp(h[0], h[1], h[2], h[3], h[4], ov::Float8Recipe::kTensorwiseGwHp);
  BOOST_TEST(at::equal(yt, yh));
  yt.backward(g);
  yh.backward(g);
  for (size_t i : {0, 2, 4}) BOOST_TEST(at::equal(h[i].grad(), t[i].grad()));  // the input's and the biases' gradients

  // Emulation: fc1's output from the float8 forward, GELU's output and input gradient at full precision.
  const at::Tensor x = x0.reshape({-1, d}), xd = dequantised(x), w1d = dequantised(w10), w2d = dequantised(w20), g2 = g.reshape({-1, d});
  const at::Tensor a = xd.mm(w1d.t()) + b10;
  const at::Tensor da = at::gelu_backward(dequantised(g2).mm(w2d), a);
  BOOST_TEST(relative_error(h[3].grad(), g2.t().mm(at::gelu(a))) < 1e-6);
  BOOST_TEST(relative_error(h[1].grad(), da.t().mm(x)) < 1e-6);
  BOOST_TEST(relative_error(t[1].grad(), da.t().mm(x)) > 1e-4);  // float8's, in the tensorwise recipe
}

BOOST_AUTO_TEST_CASE(bf16_inputs_give_bf16_outputs_close_to_the_bf16_linear) {
  const at::Tensor x = normal({4, 9, 64}, 16).to(at::kBFloat16).requires_grad_(true);
  const at::Tensor w = normal({32, 64}, 17, 0.1).to(at::kBFloat16).requires_grad_(true);
  const at::Tensor y = ops::float8_linear(x, w, at::Tensor());
  BOOST_TEST(y.scalar_type() == at::kBFloat16);
  y.sum().backward();
  BOOST_TEST(w.grad().scalar_type() == at::kBFloat16);
  BOOST_TEST(relative_error(y, at::linear(x.detach(), w.detach())) < 0.08);
  BOOST_TEST(relative_error(w.grad(), at::ones({36, 32}, at::kBFloat16).t().mm(x.detach().reshape({-1, 64}))) < 0.08);
}

// The conversion: every block linear of a model at least --fp8_min_features wide, none of a narrower one, and
// the start line says which and why.
BOOST_AUTO_TEST_CASE(the_conversion_follows_the_model_width) {
  const ov::ModelConfig cfg = tiny_model_config();
  ov::model::DiT narrow(cfg), wide(cfg);
  const ov::model::Float8Conversion none = ov::model::convert_to_float8(narrow, cfg.width + 16);
  BOOST_TEST(none.converted.empty());
  BOOST_TEST(none.weights.empty());
  BOOST_TEST(ov::model::describe(none).find("model width " + std::to_string(cfg.width) + " under --fp8_min_features " +
                                            std::to_string(cfg.width + 16)) != std::string::npos);
  for (int64_t b = 0; b < narrow->num_blocks(); ++b) BOOST_TEST(!narrow->block(b)->float8(ov::model::BlockLinear::kQkv));
  const ov::model::Float8Conversion all = ov::model::convert_to_float8(wide, cfg.width);
  BOOST_TEST(!all.converted.empty());
  for (const std::string& kept : all.kept) BOOST_TEST(kept.find("multiples of 16") != std::string::npos);  // only misfits
  for (int64_t b = 0; b < wide->num_blocks(); ++b) BOOST_TEST(wide->block(b)->float8(ov::model::BlockLinear::kQkv));
  BOOST_TEST(ov::model::describe(all).find("(recipe tensorwise)") != std::string::npos);
}

// The recipe reaches every block: converted with gw_hp, a model computes the tensorwise model's forward and every
// gradient but the float8 layers' weight gradients to the bit, and those differently.
BOOST_AUTO_TEST_CASE(the_recipe_reaches_every_block) {
  const ov::ModelConfig cfg = tiny_model_config(true);
  ov::model::DiT t(cfg), h(cfg);
  randomize_parameters(*t, 7);
  randomize_parameters(*h, 7);
  const ov::model::Float8Conversion ct = ov::model::convert_to_float8(t, 0);
  const ov::model::Float8Conversion ch = ov::model::convert_to_float8(h, 0, ov::Float8Recipe::kTensorwiseGwHp);
  BOOST_TEST(ov::model::describe(ch).find("(recipe tensorwise_with_gw_hp, weight gradients in bf16)") != std::string::npos);
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(8);
  const at::Tensor x = at::normal(0, 1, {2, 4, 4, 4, 6}, g), text = at::normal(0, 1, {2, 5, 24}, g), time = at::rand({2}, g);
  const at::Tensor probe = at::normal(0, 1, {2, 4, 4, 4, 6}, g);
  const at::Tensor yt = t->forward(x, text, time), yh = h->forward(x, text, time);
  BOOST_TEST(at::equal(yt, yh));
  (yt * probe).sum().backward();
  (yh * probe).sum().backward();
  const std::set<std::string> converted(ch.weights.begin(), ch.weights.end());
  BOOST_TEST(converted.size() == static_cast<size_t>(cfg.depth) * 6);  // qkv, attn_proj, q_cross, cross_proj, mlp.0, mlp.2; not context_kv (in 24)
  const auto pt = t->named_parameters(), ph = h->named_parameters();
  for (const auto& item : pt) {
    const at::Tensor &a = item.value().grad(), &b = ph[item.key()].grad();
    BOOST_TEST_CONTEXT(item.key()) {
      if (!a.defined()) {  // a parameter this forward does not use
        BOOST_TEST(!b.defined());
      } else if (converted.count(item.key())) {
        BOOST_TEST(!at::equal(a, b));
        BOOST_TEST(relative_error(b, a) < 0.15);
      } else {
        BOOST_TEST(at::equal(a, b));
      }
    }
  }
}

// What the gw_hp recipe buys: a DiT's float8 weight gradients against its fp32 ones (a model of width 64 as
// initialised, its zero-initialised gates and outputs given small values so that every gradient carries signal),
// on 136 tokens. The bf16 weight-gradient products leave only the forward's and the input gradients' float8
// error: every converted layer's weight gradient is closer to fp32's than the tensorwise recipe's.
BOOST_AUTO_TEST_CASE(the_gw_hp_recipe_brings_the_weight_gradients_closer_to_fp32) {
  ov::ModelConfig cfg = tiny_model_config(false);
  cfg.width = 64;
  cfg.head_dim = 32;
  cfg.depth = 2;
  cfg.text_dim = 64;
  cfg.in_channels = 16;
  ov::model::DiT ref(cfg), t(cfg), h(cfg);
  for (ov::model::DiT* m : {&ref, &t, &h}) {
    (*m)->initialize(3);
    at::Generator g = at::make_generator<at::CPUGeneratorImpl>(5);
    c10::NoGradGuard no_grad;
    for (at::Tensor& p : (*m)->parameters()) {
      if (p.abs().max().item<float>() == 0.f) p.copy_(at::normal(0, 0.02, p.sizes(), g));
    }
  }
  const ov::model::Float8Conversion converted = ov::model::convert_to_float8(t, 0);
  ov::model::convert_to_float8(h, 0, ov::Float8Recipe::kTensorwiseGwHp);
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(8);
  const at::Tensor x = at::normal(0, 1, {2, 16, 2, 16, 16}, g), text = at::normal(0, 1, {2, 32, 64}, g), time = at::rand({2}, g);
  const at::Tensor probe = at::normal(0, 1, {2, 16, 2, 16, 16}, g);
  for (ov::model::DiT* m : {&ref, &t, &h}) ((*m)->forward(x, text, time) * probe).sum().backward();
  const auto pr = ref->named_parameters(), pt = t->named_parameters(), ph = h->named_parameters();
  auto error = [](const at::Tensor& got, const at::Tensor& want) { return ((got - want).norm() / want.norm()).item<double>(); };
  BOOST_TEST(converted.weights.size() == 14u);  // 7 per block: context_kv (64 -> 512) too
  for (const std::string& name : converted.weights) {
    const at::Tensor& want = pr[name].grad();
    const double tensorwise = error(pt[name].grad(), want), gw_hp = error(ph[name].grad(), want);
    BOOST_TEST_MESSAGE(name << ": weight gradient's error against fp32: tensorwise " << tensorwise << ", gw_hp " << gw_hp);
    BOOST_TEST(gw_hp < tensorwise, name << ": " << gw_hp << " not below " << tensorwise);
    BOOST_TEST(tensorwise < 0.15);
  }
}
