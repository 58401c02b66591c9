#define BOOST_TEST_MODULE gpu_float8
// GPU-only checks of float8 training (built in CUDA builds, run on a machine with a GPU): the cast kernels
// against their ATen composition, the float8 layers of both recipes against the CPU path, and a float8 model's
// gradients against the bf16 model's.
#include "mpi_fixture.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <utility>

#include "openvid/comm/process_groups.h"
#include "openvid/kernels/float8.h"
#include "openvid/kernels/fused.h"
#include "openvid/kernels/stream.h"
#include "openvid/model/block_ops.h"
#include "openvid/model/dit.h"
#include "openvid/model/float8.h"
#include "openvid/model/float8_conversion.h"
#include "openvid/parallel/sharded_model.h"
#include "openvid/runtime/universe.h"
#include "gpu_checks.h"
#include "tiny_model.h"

// The float8 kernels against the ATen composition they replace, run on the CPU: the amax, every byte of the
// row-major and the padded transposed copies, and the dequantisation scale, equal.
BOOST_AUTO_TEST_CASE(float8_casts_match_their_aten_composition) {
  BOOST_REQUIRE(at::hasCUDA() && ov::model::ops::fused_kernels_enabled());
  namespace f8 = ov::model::float8;
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(31);
  // Rows not a multiple of 64 (nor 16), columns a multiple of 16 but not of 64; the bench's token count.
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{150, 2064}, {16416, 1024}, {7, 48}};
  for (const auto& [rows, cols] : shapes) {
    BOOST_TEST_CONTEXT(rows << " x " << cols) {
      const at::Tensor x = at::normal(0, 3, {rows, cols}, g).to(at::kBFloat16);
      const at::Tensor xg = x.to(kCuda);
      const at::Tensor amax = f8::amax(xg), want_amax = f8::reference::amax(x);
      BOOST_CHECK_EQUAL(amax.item<float>(), want_amax.item<float>());
      const f8::Cast c = f8::cast(xg, amax, true, true), want = f8::reference::cast(x, want_amax, true, true);
      const at::Tensor r = c.rows.cpu().to(at::kFloat), wr = want.rows.to(at::kFloat);
      BOOST_CHECK_MESSAGE(at::equal(r, wr), "row-major cast differs in " << (r != wr).sum().item<int64_t>() << " of " << r.numel());
      const at::Tensor t = c.transposed.cpu().to(at::kFloat), wt = want.transposed.to(at::kFloat);
      BOOST_REQUIRE(t.sizes() == wt.sizes());
      BOOST_CHECK_MESSAGE(at::equal(t, wt), "transposed cast differs in " << (t != wt).sum().item<int64_t>() << " of " << t.numel());
      BOOST_CHECK_EQUAL(c.inv_scale.item<float>(), want.inv_scale.item<float>());
      const f8::Cast only_t = f8::cast(xg, amax, false, true);  // the transposed copy alone is the same
      BOOST_CHECK(!only_t.rows.defined());
      BOOST_CHECK(at::equal(only_t.transposed.cpu().to(at::kFloat), wt));
      // Of GELU's output, read from its input: as ATen's GELU (on the GPU, the same erf) then the cast.
      const at::Tensor gelu_amax = f8::amax(xg, f8::Input::kGelu);
      BOOST_CHECK_EQUAL(gelu_amax.item<float>(), f8::reference::amax(xg, f8::Input::kGelu).item<float>());
      const f8::Cast cg = f8::cast(xg, gelu_amax, true, true, f8::Input::kGelu);
      const f8::Cast wg = f8::reference::cast(xg, gelu_amax, true, true, f8::Input::kGelu);
      for (const auto& [got, expect] : {std::pair{cg.rows, wg.rows}, std::pair{cg.transposed, wg.transposed}}) {
        const at::Tensor a = got.cpu().to(at::kFloat), b = expect.cpu().to(at::kFloat);
        BOOST_CHECK_MESSAGE(at::equal(a, b), "GELU cast differs in " << (a != b).sum().item<int64_t>() << " of " << a.numel());
      }
    }
  }
  at::Tensor bad = at::normal(0, 1, {64, 32}, g).to(at::kBFloat16);
  bad[5][9] = std::nanf("");
  BOOST_CHECK(std::isnan(f8::amax(bad.to(kCuda)).item<float>()));
  const at::Tensor zero = at::zeros({64, 32}, at::TensorOptions(kCuda).dtype(at::kBFloat16));
  const f8::Cast z = f8::cast(zero, f8::amax(zero), true, false);
  BOOST_CHECK(std::isfinite(z.inv_scale.item<float>()));
  BOOST_CHECK_EQUAL(z.rows.to(at::kFloat).abs().sum().item<float>(), 0.f);
}

// The float8 linear and MLP on the GPU (kernels, cuBLASLt's float8 products, bf16 out) against the CPU path
// on the same values in fp32 (ATen's casts and _scaled_mm): equal up to bf16 rounding and summation order.
BOOST_AUTO_TEST_CASE(float8_layers_on_the_gpu_match_the_cpu_path) {
  BOOST_REQUIRE(at::hasCUDA() && ov::model::ops::fused_kernels_enabled());
  BOOST_REQUIRE(ov::model::float8_unsupported(kCuda).empty());
  namespace ops = ov::model::ops;
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(32);
  auto bf16 = [&](std::vector<int64_t> sizes, double std) { return at::normal(0, std, sizes, g).to(at::kBFloat16); };
  const at::Tensor x = bf16({2, 75, 256}, 1), w1 = bf16({1024, 256}, 0.05), b1 = bf16({1024}, 0.1), w2 = bf16({256, 1024}, 0.03),
                   b2 = bf16({256}, 0.1), gy = bf16({2, 75, 256}, 1);
  auto leaves = [](const std::vector<at::Tensor>& ts, const at::TensorOptions& o) {
    std::vector<at::Tensor> out;
    for (const at::Tensor& t : ts) out.push_back(t.to(o).detach().requires_grad_(true));
    return out;
  };
  const at::TensorOptions on_gpu = at::TensorOptions(kCuda).dtype(at::kBFloat16), on_cpu = at::TensorOptions().dtype(at::kFloat);
  for (auto [mlp, recipe] : {std::pair{false, ov::Float8Recipe::kTensorwise}, std::pair{true, ov::Float8Recipe::kTensorwise},
                             std::pair{false, ov::Float8Recipe::kTensorwiseGwHp}, std::pair{true, ov::Float8Recipe::kTensorwiseGwHp}}) {
    BOOST_TEST_CONTEXT((mlp ? "float8_gelu_mlp" : "float8_linear") << ", recipe " << ov::to_string(recipe)) {
      const std::vector<at::Tensor> gp = leaves({x, w1, b1, w2, b2}, on_gpu), cp = leaves({x, w1, b1, w2, b2}, on_cpu);
      auto run = [&, mlp = mlp, recipe = recipe](const std::vector<at::Tensor>& p) {
        return mlp ? ops::float8_gelu_mlp(p[0], p[1], p[2], p[3], p[4], recipe)
                   : ops::float8_linear(p[0], p[3].narrow(1, 0, 256).contiguous(), p[4], recipe);
      };
      const at::Tensor yg = run(gp), yc = run(cp);
      BOOST_CHECK(yg.scalar_type() == at::kBFloat16);
      yg.backward(gy.to(on_gpu));
      yc.backward(gy.to(on_cpu));
      const double tolerance = mlp ? 2e-2 : 1e-2;
      BOOST_CHECK_MESSAGE(relative_error(yg, yc) < tolerance, "output: relative error " << relative_error(yg, yc));
      for (size_t i = 0; i < gp.size(); ++i) {
        if (!cp[i].grad().defined()) continue;
        const double err = relative_error(gp[i].grad(), cp[i].grad());
        BOOST_CHECK_MESSAGE(err < tolerance, "gradient of input " << i << ": relative error " << err);
      }
    }
  }
}

// A bf16 DiT converted to float8 on the GPU: the conversion names what it converts and keeps, and its
// gradients are the bf16 model's within float8's error.
BOOST_AUTO_TEST_CASE(a_float8_model_trains_like_the_bf16_one) {
  BOOST_REQUIRE(at::hasCUDA() && ov::model::ops::fused_kernels_enabled());
  ov::Universe u = ov::Universe::create(MPI_COMM_SELF, 1, 1, ov::DeviceRequest::kCpu);
  auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));
  auto [a, b] = twin_models(22);
  const std::string line = ov::model::describe(ov::model::convert_to_float8(b, 0));
  BOOST_TEST_MESSAGE(line);
  BOOST_CHECK(line.find("qkv, attn_proj, q_cross, cross_proj, mlp") != std::string::npos);
  BOOST_CHECK(line.find("context_kv (in 24") != std::string::npos);
  a->to(kCuda);
  b->to(kCuda);
  ov::parallel::ShardedModel sa(*a, groups.shard(), groups.dp(), ov::parallel::ShardingOptions{at::kBFloat16, true, true});
  ov::parallel::ShardedModel sb(*b, groups.shard(), groups.dp(), ov::parallel::ShardingOptions{at::kBFloat16, true, true});
  a->set_compute_dtype(at::kBFloat16);
  b->set_compute_dtype(at::kBFloat16);
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(4);
  const at::Tensor x = at::normal(0, 1, {2, 4, 4, 4, 6}, g).to(kCuda), text = at::normal(0, 1, {2, 5, 24}, g).to(kCuda);
  const at::Tensor t = at::rand({2}, g).to(kCuda), probe = at::normal(0, 1, {2, 4, 4, 4, 6}, g).to(kCuda);
  sa.arm();
  (a->forward(x, text, t).to(at::kFloat) * probe).sum().backward();
  sa.finish();
  sb.arm();
  (b->forward(x, text, t).to(at::kFloat) * probe).sum().backward();
  sb.finish();
  for (int64_t k = 0; k < sa.num_units(); ++k) {
    const at::Tensor ga = sa.slices(k).grad.to(at::kFloat), gb = sb.slices(k).grad.to(at::kFloat);
    BOOST_CHECK(at::isfinite(gb).all().item<bool>());
    const double err = relative_error(gb, ga);
    BOOST_CHECK_MESSAGE(err < 0.15, "unit " << k << ": float8 gradients differ from bf16 ones by " << err);
    BOOST_CHECK_MESSAGE(err > 0, "unit " << k << ": float8 changed nothing");
  }
}
