#define BOOST_TEST_MODULE model
#include <boost/test/unit_test.hpp>

#include <ATen/ATen.h>

#include <cmath>

#include "openvid/config/options.h"
#include "openvid/model/dit.h"
#include "openvid/model/flops.h"
#include "openvid/model/gradient_slots.h"
#include "openvid/model/linear.h"
#include "openvid/model/recompute.h"
#include "openvid/model/rope.h"
#include "openvid/model/safetensors.h"
#include "openvid/model/state_dict.h"
#include "openvid/runtime/error.h"
#include "tiny_model.h"

using ov::model::DiT;
using ov::model::DiTConfig;
using ov::RopeLayout;
using ov::model::TokenWindow;

namespace {

DiTConfig tiny(bool affine = false, RopeLayout layout = RopeLayout::kAligned) { return tiny_model_config(affine, layout); }

struct Batch {
  at::Tensor x, text, t, probe;
};

Batch batch(const DiTConfig& c, uint64_t seed, at::ScalarType dtype = at::kFloat, int64_t frames = 4,
            int64_t height = 4, int64_t width = 6) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto opt = at::TensorOptions().dtype(dtype);
  return {at::normal(0, 1, {2, c.in_channels, frames, height, width}, g, opt),
          at::normal(0, 1, {2, 6, c.text_dim}, g, opt), at::rand({2}, g, opt),
          at::normal(0, 1, {2, c.in_channels, frames, height, width}, g, opt)};
}


double rel_err(const at::Tensor& a, const at::Tensor& b) {
  const double ref = b.to(at::kDouble).norm().item<double>();
  const double diff = (a.to(at::kDouble) - b.to(at::kDouble)).norm().item<double>();
  return ref > 0 ? diff / ref : diff;
}

std::string fixture(const std::string& name, const std::string& file) {
  return std::string(OPENVID_FIXTURES_DIR) + "/" + name + "/" + file;
}

}  // namespace

BOOST_AUTO_TEST_CASE(parameter_names_follow_the_reference) {
  DiT plain(tiny(false));
  const auto names = ov::model::state_dict(*plain);
  for (const char* n : {"patch_embed.weight", "patch_embed.bias", "register_tokens", "time_embed.0.weight",
                        "time_embed.2.bias", "blocks.0.qkv.weight", "blocks.0.attn_proj.weight",
                        "blocks.2.lambda_param", "blocks.1.q_cross.weight", "blocks.1.context_kv.weight",
                        "blocks.1.cross_proj.weight", "blocks.0.mlp.0.weight", "blocks.0.mlp.2.bias",
                        "blocks.0.adaLN_modulation.1.weight", "final_modulation.1.bias",
                        "final_proj.weight", "final_proj.bias"}) {
    BOOST_CHECK_MESSAGE(names.count(n), "missing parameter " << n);
  }
  BOOST_CHECK(!names.count("blocks.0.qkv.bias"));
  BOOST_CHECK(!names.count("blocks.0.norm1.weight"));
  BOOST_CHECK(!names.count("final_norm.weight"));  // as the reference: the final norm's weight follows the flag
  BOOST_CHECK(!names.count("blocks.0.attn_proj.bias"));
  DiT affine(tiny(true));
  const auto with_bias = ov::model::state_dict(*affine);
  for (const char* n : {"blocks.0.qkv.bias", "blocks.0.q_cross.bias", "blocks.0.context_kv.bias", "blocks.0.norm1.weight",
                        "blocks.2.norm3.weight", "final_norm.weight"}) {
    BOOST_CHECK_MESSAGE(with_bias.count(n), "missing parameter " << n);
  }
  BOOST_CHECK(with_bias.at("patch_embed.weight").sizes() == at::IntArrayRef({32, 4, 2, 2, 2}));
  BOOST_CHECK(with_bias.at("register_tokens").sizes() == at::IntArrayRef({1, 4, 32}));
  BOOST_CHECK(with_bias.at("blocks.0.adaLN_modulation.1.weight").sizes() == at::IntArrayRef({9 * 32, 32}));
  BOOST_CHECK(with_bias.at("final_proj.weight").sizes() == at::IntArrayRef({2 * 2 * 2 * 4, 32}));
}

BOOST_AUTO_TEST_CASE(parameter_count_and_shapes_match_the_module) {
  for (bool affine : {false, true}) {
    for (int depth : {1, 3}) {
      DiTConfig c = tiny(affine);
      c.depth = depth;
      DiT m(c);
      int64_t n = 0;
      ov::model::ParameterShapes registered;
      for (const auto& p : m->named_parameters()) {
        n += p.value().numel();
        registered.push_back({p.key(), p.value().sizes().vec()});
      }
      BOOST_CHECK_EQUAL(ov::model::parameter_count(c), n);
      BOOST_CHECK(ov::model::parameter_shapes(c) == registered);  // names, shapes and order
    }
  }
}

BOOST_AUTO_TEST_CASE(flops_by_hand) {
  // D=32, 1 block, head_dim 16, 4 registers, C=4, Dc=24, latent 4x4x6 -> N = 2*2*3 = 12, L = 16, Lc = 6, P = 32:
  // block: qkv 98304 + attention 32768 + attn_proj 32768 + q_cross 32768 + context_kv 18432 + cross attention
  // 12288 + cross_proj 32768 + MLP 262144 + adaLN 18432 = 540672; outside: patch_embed 24576 + time_embed 16384
  // + final_modulation 4096 + final_proj 24576 = 69632.
  DiTConfig c = tiny();
  c.depth = 1;
  BOOST_CHECK_EQUAL(ov::model::forward_flops(c, 4, 4, 6, 6), 610304.0);
  BOOST_CHECK_EQUAL(ov::model::training_flops(c, 4, 4, 6, 6), 3 * 610304.0);
}

BOOST_AUTO_TEST_CASE(initial_output_is_zero_and_moves_after_one_step) {
  const DiTConfig c = tiny();
  DiT model(c);
  model->initialize(7);
  const Batch b = batch(c, 1);
  const at::Tensor v = model->forward(b.x, b.text, b.t);
  BOOST_CHECK(v.sizes() == b.x.sizes());
  BOOST_CHECK_EQUAL(v.abs().max().item<float>(), 0.0f);
  // One SGD step on the rectified-flow style target: the output must become non-zero.
  at::mse_loss(v, b.probe).backward();
  {
    at::NoGradGuard no_grad;
    for (auto& p : model->parameters())
      if (p.grad().defined()) p.sub_(0.1 * p.grad());
  }
  BOOST_CHECK_GT(model->forward(b.x, b.text, b.t).abs().max().item<float>(), 0.0f);
}

BOOST_AUTO_TEST_CASE(initialisation_is_deterministic_and_scaled) {
  DiTConfig c = tiny();
  DiT a(c), b(c);
  a->initialize(3);
  b->initialize(3);
  const auto sa = ov::model::state_dict(*a), sb = ov::model::state_dict(*b);
  for (const auto& [name, t] : sa) BOOST_CHECK_MESSAGE(at::equal(t, sb.at(name)), name);
  BOOST_CHECK(at::equal(sa.at("blocks.1.lambda_param"), at::full({1}, 0.5)));
  BOOST_CHECK_EQUAL(sa.at("final_proj.weight").abs().max().item<float>(), 0.0f);
  BOOST_CHECK_EQUAL(sa.at("blocks.0.adaLN_modulation.1.weight").abs().max().item<float>(), 0.0f);
  // Linear weights: U(+-1/sqrt(fan_in)) * init_std_factor; qkv has fan_in 32.
  const double bound = 0.1 / std::sqrt(32.0);
  const float qkv_max = sa.at("blocks.0.qkv.weight").abs().max().item<float>();
  BOOST_CHECK_LE(qkv_max, bound);
  BOOST_CHECK_GT(qkv_max, 0.9 * bound);
  // The conv weight is 5-D: not scaled (bound 1/sqrt(4*8)).
  BOOST_CHECK_GT(sa.at("patch_embed.weight").abs().max().item<float>(), 0.9 / std::sqrt(32.0));
  DiT other(c);
  other->initialize(4);
  BOOST_CHECK(!at::equal(ov::model::state_dict(*other).at("blocks.0.qkv.weight"), sa.at("blocks.0.qkv.weight")));
}

// Finite differences in float64 against autograd, for a few elements of every parameter.
BOOST_AUTO_TEST_CASE(gradients_match_finite_differences) {
  DiTConfig c = tiny(true);
  c.width = 16;
  c.head_dim = 8;
  c.depth = 2;
  c.text_dim = 8;
  c.registers = 2;
  c.in_channels = 2;
  DiT model(c);
  model->to(at::kDouble);
  model->set_compute_dtype(at::kDouble);
  randomize_parameters(*model, 11);
  const Batch b = batch(c, 5, at::kDouble, 2, 4, 4);
  auto f = [&] { return (model->forward(b.x, b.text, b.t, {1, 2, 3}) * b.probe).sum(); };
  f().backward();
  int checked = 0;
  for (const auto& item : model->named_parameters()) {
    at::Tensor p = item.value();
    const at::Tensor grad = p.grad().defined() ? p.grad().clone() : at::zeros_like(p);
    const int64_t n = p.numel();
    for (int64_t k : {int64_t{0}, n / 2, n - 1}) {
      const double eps = 1e-6;
      double up = 0, down = 0;
      {
        at::NoGradGuard no_grad;
        at::Tensor flat = p.view({-1});
        const double orig = flat[k].item<double>();
        flat[k] = orig + eps;
        up = f().item<double>();
        flat[k] = orig - eps;
        down = f().item<double>();
        flat[k] = orig;
      }
      const double fd = (up - down) / (2 * eps), ag = grad.view({-1})[k].item<double>();
      BOOST_CHECK_MESSAGE(std::abs(fd - ag) <= 1e-6 + 1e-6 * std::abs(ag),
                          item.key() << "[" << k << "]: finite difference " << fd << " vs autograd " << ag);
      ++checked;
    }
  }
  BOOST_CHECK_GT(checked, 60);
}

BOOST_AUTO_TEST_CASE(recomputed_blocks_give_identical_gradients) {
  for (const RopeLayout layout : {RopeLayout::kAligned, RopeLayout::kSeed}) {
    const DiTConfig c = tiny(true, layout);
    DiT model(c);
    randomize_parameters(*model, 21);
    const Batch b = batch(c, 9);
    auto grads = [&](int every) {
      model->set_block_runner(ov::model::recompute_every(every));
      model->zero_grad();
      const at::Tensor v = model->forward(b.x, b.text, b.t, {2, 1, 0});
      (v * b.probe).sum().backward();
      std::vector<at::Tensor> g{v.detach()};
      for (const auto& p : model->parameters()) g.push_back(p.grad().defined() ? p.grad().clone() : at::Tensor());
      return g;
    };
    const auto plain = grads(0);
    for (int every : {1, 2}) {  // every block, every other block
      const auto recomputed = grads(every);
      BOOST_REQUIRE_EQUAL(plain.size(), recomputed.size());
      int compared = 0;
      for (size_t i = 0; i < plain.size(); ++i) {
        BOOST_CHECK_EQUAL(plain[i].defined(), recomputed[i].defined());
        if (plain[i].defined() && recomputed[i].defined()) {
          BOOST_CHECK_MESSAGE(at::equal(plain[i], recomputed[i]),
                              ov::to_string(layout) << " every " << every << ": tensor " << i << " differs");
          ++compared;
        }
      }
      BOOST_CHECK_GT(compared, 40);
    }
  }
}

BOOST_AUTO_TEST_CASE(bf16_compute_stays_close_to_fp32) {
  const DiTConfig c = tiny();
  DiT model(c);
  randomize_parameters(*model, 4);
  const Batch b = batch(c, 2);
  const at::Tensor ref = model->forward(b.x, b.text, b.t);
  model->set_compute_dtype(at::kBFloat16);
  const at::Tensor v = model->forward(b.x, b.text, b.t);
  BOOST_CHECK(v.scalar_type() == at::kFloat);
  const double err = rel_err(v, ref);
  BOOST_CHECK_MESSAGE(err < 3e-2 && err > 0, "bf16 vs fp32 relative error " << err);
  (v * b.probe).sum().backward();
  BOOST_CHECK(model->parameters()[0].grad().scalar_type() == at::kFloat);  // fp32 master gradients
}

BOOST_AUTO_TEST_CASE(bad_inputs_are_rejected_with_shapes_in_the_message) {
  const DiTConfig c = tiny();
  DiT model(c);
  const Batch b = batch(c, 1);
  BOOST_CHECK_THROW(model->forward(b.x.narrow(2, 0, 3), b.text, b.t), ov::InputError);  // T not a multiple of 2
  BOOST_CHECK_THROW(model->forward(b.x, b.text.narrow(2, 0, 8), b.t), ov::InputError);   // wrong text width
  BOOST_CHECK_THROW(model->forward(b.x, b.text, b.t, {127, 0, 0}), ov::InputError);     // 127 + 2 time tokens > 128
  DiTConfig bad = c;
  bad.width = 40;
  BOOST_CHECK_THROW([&] { DiT m(bad); }(), ov::InputError);
}

// ---- RoPE ---------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(rope_aligned_gives_each_token_its_own_position) {
  TokenWindow w;
  w.t = 3, w.h = 2, w.w = 4;
  w.offset = {5, 6, 7};
  const int64_t head_dim = 32, r = 16;
  auto [cos, sin] = ov::model::rope_tables(head_dim, 3, w, RopeLayout::kAligned);
  BOOST_CHECK(cos.sizes() == at::IntArrayRef({3 + 24, r}));
  BOOST_CHECK(at::equal(cos.narrow(0, 0, 3), at::ones({3, r})));
  BOOST_CHECK(at::equal(sin.narrow(0, 0, 3), at::zeros({3, r})));
  const at::Tensor ft = ov::model::rope_axis_angles(r), fs = ov::model::rope_axis_angles(r / 2);
  for (int64_t hi = 0; hi < 2; ++hi)
    for (int64_t wi = 0; wi < 4; ++wi)
      for (int64_t ti = 0; ti < 3; ++ti) {
        const int64_t token = 3 + (hi * 4 + wi) * 3 + ti;
        const at::Tensor ang = at::cat({ft[ti + 5], fs[hi + 6], fs[wi + 7]});
        BOOST_CHECK(at::equal(cos[token], at::cos(ang)));
        BOOST_CHECK(at::equal(sin[token], at::sin(ang)));
      }
  // Offsets are honoured: the window at (5,6,7) is the part of a window at 0 that starts there.
  TokenWindow big;
  big.t = 10, big.h = 10, big.w = 12;
  auto [cos0, sin0] = ov::model::rope_tables(head_dim, 0, big, RopeLayout::kAligned);
  const int64_t same = (1 * 4 + 2) * 3 + 1;                // token (h=1, w=2, t=1) of the offset window
  const int64_t there = ((1 + 6) * 12 + (2 + 7)) * 10 + (1 + 5);  // the same position in the window at 0
  BOOST_CHECK(at::equal(cos[3 + same], cos0[there]));
  BOOST_CHECK(at::equal(sin[3 + same], sin0[there]));
}

BOOST_AUTO_TEST_CASE(rope_seed_matches_a_hand_written_table) {
  // head_dim 16 -> r = 8: time frequencies 100^(-2j/8) = 1, 0.316228, 0.1, 0.0316228; space 100^(-4j/8) = 1, 0.1.
  // Grid T'=2, H'=1, W'=2. Tokens (h, w, t order): (w0,t0), (w0,t1), (w1,t0), (w1,t1). The seed layout gives
  // token i the i-th position in (t, h, w) order: (t0,w0), (t0,w1), (t1,w0), (t1,w1).
  TokenWindow w;
  w.t = 2, w.h = 1, w.w = 2;
  auto [cos, sin] = ov::model::rope_tables(16, 2, w, RopeLayout::kSeed);
  const double tf[4] = {1, 0.316227766, 0.1, 0.0316227766}, sf[2] = {1, 0.1};
  const double pos[4][2] = {{0, 0}, {0, 1}, {1, 0}, {1, 1}};  // (t, w) per token; h = 0
  for (int i = 0; i < 4; ++i) {
    double angles[8];
    for (int j = 0; j < 4; ++j) angles[j] = pos[i][0] * tf[j];
    angles[4] = angles[5] = 0;  // h = 0
    for (int j = 0; j < 2; ++j) angles[6 + j] = pos[i][1] * sf[j];
    for (int j = 0; j < 8; ++j) {
      BOOST_CHECK_CLOSE(cos[2 + i][j].item<double>() + 2, std::cos(angles[j]) + 2, 1e-4);
      BOOST_CHECK_CLOSE(sin[2 + i][j].item<double>() + 2, std::sin(angles[j]) + 2, 1e-4);
    }
  }
  // The reference's registers: cos 1 and sin 1.
  BOOST_CHECK(at::equal(cos.narrow(0, 0, 2), at::ones({2, 8})));
  BOOST_CHECK(at::equal(sin.narrow(0, 0, 2), at::ones({2, 8})));
}

BOOST_AUTO_TEST_CASE(rope_time_slices_are_rows_of_the_full_table) {
  // What a context-parallel rank computes for its time slice is exactly its tokens' rows of the full table.
  for (RopeLayout layout : {RopeLayout::kAligned, RopeLayout::kSeed}) {
    TokenWindow full;
    full.t = 4, full.h = 2, full.w = 3;
    full.offset = {1, 2, 3};
    auto [cos, sin] = ov::model::rope_tables(16, 2, full, layout);
    TokenWindow part = full;
    part.t_begin = 2;
    part.t_count = 2;
    auto [pcos, psin] = ov::model::rope_tables(16, 2, part, layout);
    std::vector<int64_t> rows{0, 1};
    for (int64_t hw = 0; hw < 6; ++hw)
      for (int64_t t = 2; t < 4; ++t) rows.push_back(2 + hw * 4 + t);
    const at::Tensor idx = at::tensor(rows, at::kLong);
    BOOST_CHECK(at::equal(pcos, cos.index_select(0, idx)));
    BOOST_CHECK(at::equal(psin, sin.index_select(0, idx)));
  }
}

// ---- parity with the independent reference (tools/reference_dit.py) ------------------------------------

BOOST_AUTO_TEST_CASE(parity_with_the_reference_implementation) {
  for (const std::string name : {"dit_aligned", "dit_seed"}) {
    const ov::Options o = ov::parse_command_line({"--config", fixture(name, "model.ini")}).options;
    DiT model(o.model);
    ov::model::load_state_dict(*model, ov::model::read_weights(fixture(name, "weights.safetensors")), name);
    const auto in = ov::model::read_safetensors(fixture(name, "inputs.safetensors")).tensors;
    const auto expected = ov::model::read_safetensors(fixture(name, "expected.safetensors")).tensors;
    const at::Tensor off = in.at("rope_offset");
    const at::Tensor v = model->forward(in.at("x"), in.at("text"), in.at("t"),
                                        {off[0].item<int64_t>(), off[1].item<int64_t>(), off[2].item<int64_t>()});
    (v * in.at("probe")).sum().backward();
    BOOST_CHECK_LT(rel_err(v, expected.at("v")), 1e-5);
    int compared = 0;
    for (const auto& item : model->named_parameters()) {
      const at::Tensor g = item.value().grad().defined() ? item.value().grad() : at::zeros_like(item.value());
      const double err = rel_err(g, expected.at(item.key()));
      // 1e-4: a scalar's gradient (lambda_param) sums many terms that partly cancel; in fp32 against float64
      // it moves by ~2e-5 with the CPU kernels MKL picks (MKL_CBWR=COMPATIBLE). A wrong gradient is off by O(1).
      BOOST_CHECK_MESSAGE(err < 1e-4, name << " " << item.key() << ": relative error " << err);
      ++compared;
    }
    BOOST_CHECK_EQUAL(compared + 1, static_cast<int>(expected.size()));
  }
}

#ifdef OPENVID_TORCH_CUDA
// Only in CUDA builds: the same model on the GPU (SDPA's flash/cuDNN kernels) agrees with the CPU.
BOOST_AUTO_TEST_CASE(cuda_forward_and_backward_agree_with_the_cpu) {
  BOOST_REQUIRE_MESSAGE(at::hasCUDA(), "CUDA build without a visible GPU");
  const DiTConfig c = tiny(true, RopeLayout::kSeed);
  DiT model(c);
  randomize_parameters(*model, 8);
  const Batch b = batch(c, 3);
  const at::Tensor ref = model->forward(b.x, b.text, b.t, {1, 2, 3});
  (ref * b.probe).sum().backward();
  const at::Tensor ref_grad = model->parameters()[0].grad().clone();
  model->zero_grad();
  model->to(at::Device(at::kCUDA, 0));
  const at::Device dev(at::kCUDA, 0);
  for (at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
    model->set_compute_dtype(dt);
    model->zero_grad();
    const at::Tensor v = model->forward(b.x.to(dev), b.text.to(dev), b.t.to(dev), {1, 2, 3});
    (v * b.probe.to(dev)).sum().backward();
    const double tol = dt == at::kFloat ? 1e-3 : 3e-2;  // fp32 matmuls may use TF32 on the GPU
    BOOST_CHECK_LT(rel_err(v.cpu(), ref), tol);
    BOOST_CHECK_LT(rel_err(model->parameters()[0].grad().cpu(), ref_grad), 5 * tol);
  }
}
#endif

// A linear layer's backward writes the weight's and the bias's gradients into their gradient slots: the
// parameter's .grad is then the slot itself (no copy), equal to the bit to ATen's own at::linear backward; a
// slot is handed out once until reset, and a parameter used twice gets the sum of its gradients.
BOOST_AUTO_TEST_CASE(linear_gradients_go_straight_into_their_slots) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(17);
  for (const std::vector<int64_t>& rows : {std::vector<int64_t>{5}, std::vector<int64_t>{3, 5}}) {
    std::vector<int64_t> in_shape = rows, out_shape = rows;
    in_shape.push_back(8);
    out_shape.push_back(6);
    const at::Tensor x0 = at::normal(0, 1, in_shape, gen), g = at::normal(0, 1, out_shape, gen);
    const at::Tensor w0 = at::normal(0, 1, {6, 8}, gen), b0 = at::normal(0, 1, {6}, gen);
    auto leaf = [](const at::Tensor& t) { return t.clone().set_requires_grad(true); };
    const at::Tensor x_ref = leaf(x0), w_ref = leaf(w0), b_ref = leaf(b0);
    (at::linear(x_ref, w_ref, b_ref) * g).sum().backward();

    const at::Tensor x = leaf(x0), w = leaf(w0), b = leaf(b0);
    const at::Tensor slot_w = at::full({6, 8}, NAN), slot_b = at::full({6}, NAN);
    ov::model::add_gradient_slot(w, slot_w);
    ov::model::add_gradient_slot(b, slot_b);
    (ov::model::ops::linear(x, w, b) * g).sum().backward();
    BOOST_CHECK(w.grad().data_ptr() == slot_w.data_ptr());
    BOOST_CHECK(b.grad().data_ptr() == slot_b.data_ptr());
    BOOST_CHECK(at::equal(slot_w, w_ref.grad()));
    BOOST_CHECK(at::equal(slot_b, b_ref.grad()));
    BOOST_CHECK(at::equal(x.grad(), x_ref.grad()));

    // Not reset: a fresh gradient, the same values.
    w.mutable_grad() = at::Tensor();
    b.mutable_grad() = at::Tensor();
    (ov::model::ops::linear(x, w, b) * g).sum().backward();
    BOOST_CHECK(w.grad().data_ptr() != slot_w.data_ptr());
    BOOST_CHECK(at::equal(w.grad(), w_ref.grad()));

    // Used twice in one backward: the first use gets the slot, autograd sums, .grad holds the sum.
    ov::model::reset_gradient_slots({w, b});
    w.mutable_grad() = at::Tensor();
    ((ov::model::ops::linear(x, w, b) + ov::model::ops::linear(2 * x, w, b)) * g).sum().backward();
    BOOST_CHECK(at::allclose(w.grad(), 3 * w_ref.grad(), 1e-5, 1e-5));
    ov::model::remove_gradient_slots({w, b});
  }
}
