#define BOOST_TEST_MODULE gpu
// GPU-only checks (built in CUDA builds, run on a machine with a GPU): each fused kernel against the ATen
// composition it replaces, a training step that synchronises the host with the device once, and
// --deterministic's repeatable backward. Float8's: test_gpu_float8.cpp.
#include "mpi_fixture.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/util/Exception.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "openvid/comm/process_groups.h"
#include "openvid/data/synthetic.h"
#include "openvid/kernels/fused.h"
#include "openvid/kernels/launch.h"
#include "openvid/kernels/noise.h"
#include "openvid/kernels/stream.h"
#include "openvid/model/block_ops.h"
#include "openvid/model/dit.h"
#include "openvid/model/gradient_slots.h"
#include "openvid/model/rope.h"
#include "openvid/parallel/sharded_model.h"
#include "openvid/runtime/mpi_session.h"
#include "openvid/runtime/universe.h"
#include "openvid/train/objective.h"
#include "openvid/train/optimizer.h"
#include "openvid/train/setup.h"
#include "openvid/train/trainer.h"
#include "gpu_checks.h"
#include "tiny_model.h"

namespace {

// Counts the synchronising CUDA operations LibTorch reports (sync debug mode "warn").
struct SyncCounter : c10::WarningHandler {
  void process(const c10::Warning& w) override {
    if (w.msg().find("synchroniz") != std::string::npos) ++count;
  }
  int count = 0;
};

}  // namespace

BOOST_AUTO_TEST_CASE(fused_adamw_matches_the_aten_path) {
  BOOST_REQUIRE(at::hasCUDA() && ov::kernels::available());
  for (at::ScalarType grad_dtype : {at::kFloat, at::kBFloat16}) {
    at::Generator g = at::make_generator<at::CPUGeneratorImpl>(1);
    // Segments of awkward sizes (tails, more than one chunk), bf16 compute copies, decay on and off.
    const std::vector<int64_t> sizes = {1, 7, 8193, 100000, 3};
    ov::train::AdamOptions fused_options, aten_options;
    aten_options.fused = false;
    ov::train::AdamW fused(fused_options), aten(aten_options);
    std::vector<at::Tensor> params_f, params_a, grads, copies_f, copies_a;
    for (size_t i = 0; i < sizes.size(); ++i) {
      const at::Tensor p = at::normal(0, 1, {sizes[i]}, g).to(kCuda);
      params_f.push_back(p.clone());
      params_a.push_back(p.clone());
      grads.push_back(at::zeros({sizes[i]}, at::TensorOptions().dtype(grad_dtype).device(kCuda)));
      copies_f.push_back(at::full({sizes[i]}, 7, at::TensorOptions().dtype(at::kBFloat16).device(kCuda)));  // poisoned
      copies_a.push_back(copies_f.back().clone());
      const ov::train::ParamRule rule{0.5 + 0.1 * static_cast<double>(i), i % 2 ? 0.0 : 0.05};
      fused.add_segment("s" + std::to_string(i), params_f.back(), grads.back(), rule, {}, {}, copies_f.back());
      aten.add_segment("s" + std::to_string(i), params_a.back(), grads.back(), rule, {}, {}, copies_a.back());
    }
    const at::Tensor control = at::tensor({1.f, 0.75f}).to(kCuda);
    for (int step = 0; step < 3; ++step) {
      for (auto& gr : grads) gr.copy_(at::normal(0, 1, gr.sizes(), g));
      fused.step(1e-2 * (step + 1), control);
      aten.step(1e-2 * (step + 1), control);
    }
    const std::string tag = std::string(c10::toString(grad_dtype)) + " gradients: ";
    for (size_t i = 0; i < sizes.size(); ++i) {
      BOOST_CHECK_MESSAGE(relative_error(params_f[i], params_a[i]) < 1e-6, tag << "segment " << i);
      BOOST_CHECK_MESSAGE(at::equal(copies_f[i].cpu(), params_f[i].to(at::kBFloat16).cpu()), tag << "copy " << i);  // all written
    }
    BOOST_CHECK_EQUAL(fused.steps(), 3);
    const at::Tensor before = params_f[2].clone();
    fused.step(1e-2, at::tensor({0.f, 1.f}).to(kCuda));  // skipped on the device
    BOOST_CHECK(at::equal(params_f[2], before));
    BOOST_CHECK_EQUAL(fused.steps(), 3);
  }
}

BOOST_AUTO_TEST_CASE(gpu_noise_is_the_cpu_noise) {
  BOOST_REQUIRE(at::hasCUDA() && ov::kernels::available());
  const int64_t B = 3, C = 4, F = 5, H = 6, W = 10;
  at::Tensor keys = at::empty({B, F}, at::kLong);
  at::Tensor want = at::empty({B, C, F, H, W});
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t f = 0; f < F; ++f) keys[b][f] = static_cast<int64_t>(ov::train::noise_key(11, 2, b, f + 3));
    want[b].copy_(ov::train::draw_noise(11, 2, b, C, 3, F, H, W));
  }
  at::Tensor got = at::full({B, C, F, H, W}, std::nanf(""), at::TensorOptions().device(kCuda));  // poisoned
  const at::Tensor k = keys.to(kCuda);
  ov::kernels::gaussian_noise(got.data_ptr<float>(), reinterpret_cast<const uint64_t*>(k.data_ptr<int64_t>()), B, C, F, H, W,
                              ov::kernels::current_stream(kCuda));
  BOOST_CHECK_LE((got.cpu() - want).abs().max().item<double>(), 1e-6);
}

// The fused block operations against their ATen compositions computed in fp32 from the same (bf16) values:
// outputs and every input's gradient within bf16 rounding (relative L2 error < 1e-2), on shapes with odd
// token counts, both RoPE layouts' register rows, with and without the value residual and norm weights.
namespace {

struct Leaf {
  at::Tensor bf16, fp32;  // the same values; both require grad
};

Leaf leaf(at::IntArrayRef shape, at::Generator& g, double scale = 1.0, double shift = 0.0) {
  const at::Tensor v = (at::normal(0, 1, shape, g) * scale + shift).to(at::kBFloat16);
  return {v.to(kCuda).requires_grad_(), v.to(at::kFloat).to(kCuda).requires_grad_()};
}

// Modulation rows [B, 1, D] as chunks of one [B, 1, n*D] tensor, as the block makes them.
at::Tensor chunk_of(const at::Tensor& mod, int64_t k, int64_t D) { return mod.narrow(2, k * D, D); }

void check_close(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  BOOST_REQUIRE_MESSAGE(got.defined() && want.defined(), what << " is undefined");
  const double err = relative_error(got, want);
  BOOST_CHECK_MESSAGE(err < 1e-2, what << ": relative error " << err);
  BOOST_CHECK_MESSAGE(at::isfinite(got).all().item<bool>(), what << " has non-finite values");
}

}  // namespace

BOOST_AUTO_TEST_CASE(fused_block_operations_match_their_aten_compositions) {
  namespace ops = ov::model::ops;
  BOOST_REQUIRE(at::hasCUDA() && ops::fused_kernels_enabled());
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(5);
  const int64_t B = 2, L = 37, H = 3, Dh = 32;
  // The residual-stream kernels at a narrow width and past 4096 (two vectors per thread).
  for (const auto& [D, affine] : {std::pair<int64_t, bool>{H * Dh, false}, {H * Dh, true}, {4160, true}}) {
    // modulated RMSNorm alone, the gated residual alone, and both at one junction
    const Leaf x = leaf({B, L, D}, g, 2.0, 0.5), y = leaf({B, L, D}, g), mod = leaf({B, 1, 3 * D}, g, 0.3), w = leaf({D}, g, 0.2, 1.0);
    const at::Tensor p1 = at::normal(0, 1, {B, L, D}, g).to(kCuda), p2 = at::normal(0, 1, {B, L, D}, g).to(kCuda);
    const std::string tag = "D " + std::to_string(D) + (affine ? " with norm weight: " : ": ");
    for (int kind = 0; kind < 4; ++kind) {  // 0: norm, 1: residual, 2: both, 3: norm passing its input on
      for (const Leaf* l : {&x, &y, &mod, &w}) {
        l->bf16.mutable_grad() = at::Tensor();
        l->fp32.mutable_grad() = at::Tensor();
      }
      auto run = [&](bool fused, const at::Tensor& xx, const at::Tensor& yy, const at::Tensor& mm, const at::Tensor& ww) {
        const at::Tensor gate = chunk_of(mm, 2, D), weight = affine ? ww : at::Tensor();
        const at::ScalarType dt = xx.scalar_type();
        std::pair<at::Tensor, at::Tensor> r;
        if (kind == 0) {
          r.second = fused ? ops::modulated_rms_norm(xx, weight, chunk_of(mm, 0, D), chunk_of(mm, 1, D), dt)
                           : ops::reference::modulated_rms_norm(xx, weight, chunk_of(mm, 0, D), chunk_of(mm, 1, D), dt);
        } else if (kind == 1) {
          r.first = fused ? ops::gated_residual(xx, yy, gate) : ops::reference::gated_residual(xx, yy, gate);
        } else if (kind == 2) {
          r = fused ? ops::residual_then_norm(xx, yy, gate, weight, chunk_of(mm, 0, D), chunk_of(mm, 1, D))
                    : ops::reference::residual_then_norm(xx, yy, gate, weight, chunk_of(mm, 0, D), chunk_of(mm, 1, D));
        } else {  // the reference: x itself and its norm (autograd sums x's two gradients)
          r = fused ? ops::norm_keeping_input(xx, weight, chunk_of(mm, 0, D), chunk_of(mm, 1, D))
                    : std::pair{xx, ops::reference::modulated_rms_norm(xx, weight, chunk_of(mm, 0, D), chunk_of(mm, 1, D), dt)};
        }
        at::Tensor loss = at::zeros({}, at::TensorOptions().device(kCuda));
        if (r.first.defined()) loss = loss + (r.first.to(at::kFloat) * p1).sum();
        if (r.second.defined()) loss = loss + (r.second.to(at::kFloat) * p2).sum();
        loss.backward();
        return r;
      };
      const auto got = run(true, x.bf16, y.bf16, mod.bf16, w.bf16);
      const auto want = run(false, x.fp32, y.fp32, mod.fp32, w.fp32);
      const std::string k = tag + (kind == 0 ? "norm " : kind == 1 ? "residual " : kind == 2 ? "residual+norm " : "norm keeping input ");
      if (kind > 0) check_close(got.first, want.first, k + "x_new");
      if (kind != 1) check_close(got.second, want.second, k + "h");
      check_close(x.bf16.grad(), x.fp32.grad(), k + "dx");
      if (kind == 1 || kind == 2) check_close(y.bf16.grad(), y.fp32.grad(), k + "dy");
      check_close(mod.bf16.grad(), mod.fp32.grad(), k + "d(shift, scale, gate)");
      if (affine && kind != 1) check_close(w.bf16.grad(), w.fp32.grad(), k + "dweight");
    }
  }
  const int64_t D = H * Dh;
  for (bool residual : {false, true}) {  // heads, RoPE, value residual
    for (ov::RopeLayout layout : {ov::RopeLayout::kAligned, ov::RopeLayout::kSeed}) {
      ov::model::TokenWindow w;
      w.t = 3, w.h = 2, w.w = 5, w.offset = {4, 9, 1};  // 30 video tokens + 7 registers = 37
      auto [cos, sin] = ov::model::rope_tables(ov::model::rope_axis_tables(Dh, kCuda), 7, w, layout);
      const Leaf qkv = leaf({B, L, 3 * D}, g), v0 = leaf({B, H, L, Dh}, g), lam = leaf({1}, g, 0.1, 0.6);
      const at::Tensor p = at::normal(0, 1, {3, B, H, L, Dh}, g).to(kCuda);
      const ops::Heads out = ops::attention_heads(qkv.bf16, H, Dh, cos, sin, residual ? v0.bf16 : at::Tensor(), lam.bf16);
      const ops::Heads ref = ops::reference::attention_heads(qkv.fp32, H, Dh, cos, sin, residual ? v0.fp32 : at::Tensor(), lam.fp32);
      const std::string tag = std::string(residual ? "residual " : "") + ov::to_string(layout) + " ";
      check_close(out.q, ref.q, tag + "q");
      check_close(out.k, ref.k, tag + "k");
      check_close(out.v, ref.v, tag + "v");
      ((out.q.to(at::kFloat) * p[0]).sum() + (out.k.to(at::kFloat) * p[1]).sum() + (out.v.to(at::kFloat) * p[2]).sum()).backward();
      ((ref.q * p[0]).sum() + (ref.k * p[1]).sum() + (ref.v * p[2]).sum()).backward();
      check_close(qkv.bf16.grad(), qkv.fp32.grad(), tag + "dqkv");
      if (residual) {
        check_close(v0.bf16.grad(), v0.fp32.grad(), tag + "dv0");
        check_close(lam.bf16.grad(), lam.fp32.grad(), tag + "dlambda");
      }
    }
  }
  {  // the MLP that recomputes its GELU
    const Leaf x = leaf({B, L, D}, g), w1 = leaf({4 * D, D}, g, 0.1), b1 = leaf({4 * D}, g, 0.1), w2 = leaf({D, 4 * D}, g, 0.1),
               b2 = leaf({D}, g, 0.1);
    const at::Tensor probe = at::normal(0, 1, {B, L, D}, g).to(kCuda);
    const at::Tensor out = ops::gelu_mlp(x.bf16, w1.bf16, b1.bf16, w2.bf16, b2.bf16);
    const at::Tensor ref = ops::reference::gelu_mlp(x.fp32, w1.fp32, b1.fp32, w2.fp32, b2.fp32);
    check_close(out, ref, "mlp output");
    (out.to(at::kFloat) * probe).sum().backward();
    (ref * probe).sum().backward();
    for (const auto& [name, l] : {std::pair{"dx", &x}, std::pair{"dw1", &w1}, std::pair{"db1", &b1}, std::pair{"dw2", &w2}, std::pair{"db2", &b2}}) {
      check_close(l->bf16.grad(), l->fp32.grad(), std::string("mlp ") + name);
    }
  }
}

// The GELU kernels against ATen's bf16 GELU: the forward bit for bit; the backward's input gradient within
// bf16 rounding of ATen's, its bias gradient the column sums of that gradient as stored, and its input buffer
// holding ATen's GELU output afterwards, bit for bit (the next linear's weight gradient reads it). Rows past
// a chunk and columns past a block's width.
BOOST_AUTO_TEST_CASE(gelu_kernels_match_aten) {
  BOOST_REQUIRE(at::hasCUDA() && ov::kernels::available());
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(11);
  const int64_t rows = 150, cols = 2056;  // 150 = 2 x 64 + 22 rows; 2056 = 257 vectors of 8
  const at::Tensor a = at::normal(0, 2, {rows, cols}, g).to(at::kBFloat16).to(kCuda);
  const at::Tensor da = at::normal(0, 1, {rows, cols}, g).to(at::kBFloat16).to(kCuda);
  auto bits = [](const at::Tensor& t) { return static_cast<ov::kernels::bf16_t*>(t.data_ptr()); };
  const ov::kernels::Stream stream = ov::kernels::current_stream(kCuda);

  const at::Tensor h = at::full_like(a, std::nan(""));
  ov::kernels::gelu_forward(bits(a), bits(h), a.numel(), stream);
  const at::Tensor want_h = at::gelu(a);
  BOOST_CHECK_MESSAGE(at::equal(h, want_h), "GELU forward differs from ATen's in "
                                                << (h != want_h).sum().item<int64_t>() << " of " << h.numel() << " elements");

  const at::Tensor da_out = da.clone(), a_out = a.clone();
  const at::Tensor db = at::full({cols}, std::nan(""), a.options().dtype(at::kFloat));
  const at::Tensor workspace = at::empty({ov::kernels::gelu_backward_workspace(rows, cols)}, db.options());
  ov::kernels::gelu_backward_recompute(bits(da_out), bits(a_out), db.data_ptr<float>(), workspace.data_ptr<float>(), rows, cols, stream);
  BOOST_CHECK_MESSAGE(at::equal(a_out, want_h), "recomputed GELU output differs from ATen's in "
                                                    << (a_out != want_h).sum().item<int64_t>() << " elements");
  const at::Tensor want_da = at::gelu_backward(da.to(at::kFloat), a.to(at::kFloat));
  const double err = relative_error(da_out, want_da);
  BOOST_CHECK_MESSAGE(err < 4e-3, "GELU input gradient: relative error " << err);
  const double bias_err = relative_error(db, da_out.to(at::kFloat).sum(0));
  BOOST_CHECK_MESSAGE(bias_err < 1e-5, "bias gradient vs the column sums of the stored gradient: relative error " << bias_err);
}

// On the GPU in bf16, where the fused MLP computes its weight gradients itself: with one backward per step the
// linear layers' and the MLP's gradients are written straight into the bf16 gradient slices, and equal the
// bf16 gradients the general path copies (into fp32) to the bit.
BOOST_AUTO_TEST_CASE(gradients_written_in_place_on_the_gpu_equal_the_copied_ones) {
  BOOST_REQUIRE(at::hasCUDA() && ov::model::ops::fused_kernels_enabled());
  ov::Universe u = ov::Universe::create(MPI_COMM_SELF, 1, 1, ov::DeviceRequest::kCpu);
  auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));
  auto [a, b] = twin_models(21);
  a->to(kCuda);
  b->to(kCuda);
  ov::parallel::ShardedModel copied(*a, groups.shard(), groups.dp(), ov::parallel::ShardingOptions{at::kBFloat16, true, false});
  ov::parallel::ShardedModel in_place(*b, groups.shard(), groups.dp(), ov::parallel::ShardingOptions{at::kBFloat16, true, true});
  a->set_compute_dtype(at::kBFloat16);
  b->set_compute_dtype(at::kBFloat16);
  const at::Tensor fc1 = b->named_parameters()["blocks.0.mlp.0.weight"];
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(3);
  for (int step = 0; step < 2; ++step) {
    const at::Tensor x = at::normal(0, 1, {2, 4, 4, 4, 6}, g).to(kCuda), text = at::normal(0, 1, {2, 5, 24}, g).to(kCuda);
    const at::Tensor t = at::rand({2}, g).to(kCuda), probe = at::normal(0, 1, {2, 4, 4, 4, 6}, g).to(kCuda);
    copied.arm();
    (a->forward(x, text, t).to(at::kFloat) * probe).sum().backward();
    copied.finish();
    in_place.arm();
    (b->forward(x, text, t).to(at::kFloat) * probe).sum().backward();
    BOOST_CHECK(!ov::model::take_gradient_slot(fc1).defined());  // the fused MLP's backward took its slot
    in_place.finish();
    for (int64_t k = 0; k < copied.num_units(); ++k) {
      BOOST_CHECK(in_place.slices(k).grad.scalar_type() == at::kBFloat16);
      BOOST_CHECK_MESSAGE(at::equal(in_place.slices(k).grad.to(at::kFloat), copied.slices(k).grad), "step " << step << " unit " << k);
    }
  }
}

// After the first step (plans, caches), a training step makes the host wait for the device once: when
// it reads the step's loss, gradient norm and stop flag (the trainer counts its waits; LibTorch reports
// every synchronising operation of its own in sync-debug mode, and none may come from elsewhere).
BOOST_AUTO_TEST_CASE(a_training_step_synchronises_once) {
  BOOST_REQUIRE(at::hasCUDA());
  const std::string dir = (std::filesystem::temp_directory_path() / ("openvid_gpu_" + std::to_string(::getpid()))).string();
  ov::Options o;
  o.dataset = "fake";
  o.fake_samples = 16;
  o.fake_latent_shape = "4x8x8";
  o.fake_text_tokens = 8;
  o.run_dir = dir;
  o.batch_size = 4;
  o.max_steps = 6;
  o.warmup_steps = 1;
  o.evaluate_every = 0;
  o.device = ov::DeviceRequest::kCuda;
  o.model.width = 64;
  o.model.depth = 2;
  o.model.head_dim = 32;
  o.model.text_dim = 32;
  o.model.registers = 4;
  ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, 1, 1, ov::DeviceRequest::kCuda);
  auto groups = ov::comm::ProcessGroups::create(u, ov::comm::resolve_backend(ov::comm::BackendRequest::kAuto, u.device()),
                                                std::chrono::milliseconds(60000));
  {
    ov::train::Trainer trainer(o, u, groups);
    trainer.train_step(0);
    const int64_t waits_before = trainer.host_synchronisations();
    SyncCounter counter;
    c10::WarningUtils::WarningHandlerGuard guard(&counter);
    c10::cuda::warning_state().set_sync_debug_mode(c10::cuda::SyncDebugMode::L_WARN);
    for (int64_t s = 1; s < 4; ++s) {
      const int before = counter.count;
      // train_step reads the batch itself (the trainer's run loop has the prefetcher do that off the step).
      trainer.train_step(s);
      BOOST_TEST_MESSAGE("step " << s << ": " << counter.count - before << " synchronisations");
    }
    c10::cuda::warning_state().set_sync_debug_mode(c10::cuda::SyncDebugMode::L_DISABLED);
    const int64_t waits = trainer.host_synchronisations() - waits_before;
    BOOST_CHECK_EQUAL(waits, 3);
    // LibTorch either does not see the trainer's event wait (0) or sees exactly it (one per step).
    BOOST_CHECK_MESSAGE(counter.count == 0 || counter.count == waits,
                        counter.count << " synchronisations reported by LibTorch in 3 steps with " << waits << " waits of the trainer");
  }
  groups.finalize();
  std::filesystem::remove_all(dir);
}

// Every openvid kernel is launched through kernels::current_stream, which refuses tensors of any device
// but the calling thread's current one (a kernel runs on the current device, whatever its stream: launched
// for another GPU's tensors it would fault or race). On one GPU another device is an ordinal past the
// current one, refused before any CUDA call; with two GPUs a real operation on the second GPU's tensors,
// while the first is current, is refused too. And the rank's GPU is current after Universe::create.
BOOST_AUTO_TEST_CASE(a_launch_for_another_device_is_caught_by_the_guard) {
  BOOST_REQUIRE(at::hasCUDA() && ov::kernels::available());
  ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, 1, 1, ov::DeviceRequest::kCuda);
  BOOST_CHECK_EQUAL(ov::current_gpu(), u.device().index);
  BOOST_CHECK_EQUAL(static_cast<int>(c10::cuda::current_device()), u.device().index);
  const c10::Device mine(at::kCUDA, static_cast<c10::DeviceIndex>(u.device().index));
  BOOST_CHECK_NO_THROW(ov::kernels::current_stream(mine));
  try {
    ov::kernels::current_stream(c10::Device(at::kCUDA, static_cast<c10::DeviceIndex>(u.device().index + 1)));
    BOOST_ERROR("a launch for another device was not refused");
  } catch (const ov::Error& e) {
    BOOST_CHECK_MESSAGE(std::string(e.what()).find("is this thread's current device") != std::string::npos, e.what());
  }
  if (at::getNumGPUs() > 1) {
    const c10::Device other(at::kCUDA, static_cast<c10::DeviceIndex>((u.device().index + 1) % at::getNumGPUs()));
    const at::TensorOptions bf16 = at::TensorOptions().dtype(at::kBFloat16).device(other);
    const at::Tensor x = at::ones({2, 8, 64}, bf16), gate = at::ones({2, 1, 64}, bf16);
    BOOST_CHECK_THROW(ov::model::ops::gated_residual(x, x, gate), ov::Error);
    c10::cuda::CUDAGuard guard(other);  // with its device current, the same launch runs
    BOOST_CHECK_NO_THROW(ov::model::ops::gated_residual(x, x, gate));
  }
}

// --deterministic: attention's backward (ATen's flash kernel sums dQ over key blocks with atomics unless told
// not to) gives the same gradients to the bit, run after run, at a sequence long enough for many key blocks.
BOOST_AUTO_TEST_CASE(deterministic_runs_repeat_attention_backward_to_the_bit) {
  BOOST_REQUIRE(at::hasCUDA());
  const ov::Universe u = ov::Universe::create(MPI_COMM_SELF, 1, 1, ov::DeviceRequest::kCuda);
  ov::Options o;
  o.deterministic = true;
  o.precision = ov::Precision::kBf16;
  ov::train::compute_setup(o, u);
  BOOST_CHECK(at::globalContext().deterministicAlgorithms());
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(51);
  auto input = [&] { return at::normal(0, 1, {2, 8, 4096, 128}, g).to(kCuda).to(at::kBFloat16).requires_grad_(true); };
  const at::Tensor q = input(), k = input(), v = input(), gy = at::normal(0, 1, {2, 8, 4096, 128}, g).to(kCuda).to(at::kBFloat16);
  std::vector<at::Tensor> first;
  for (int run = 0; run < 4; ++run) {
    for (const at::Tensor& t : {q, k, v}) t.mutable_grad() = at::Tensor();
    at::scaled_dot_product_attention(q, k, v).backward(gy);
    if (run == 0) {
      first = {q.grad().clone(), k.grad().clone(), v.grad().clone()};
      continue;
    }
    BOOST_CHECK_MESSAGE(at::equal(q.grad(), first[0]) && at::equal(k.grad(), first[1]) && at::equal(v.grad(), first[2]),
                        "run " << run << ": attention's gradients differ from the first run's");
  }
  // And every op of the model's forward and backward has a deterministic kernel (strict mode would throw).
  ov::model::DiT m = twin_models(52).first;
  m->to(kCuda);
  m->set_compute_dtype(at::kBFloat16);
  const at::Tensor x = at::normal(0, 1, {2, 4, 4, 8, 8}, g).to(kCuda), text = at::normal(0, 1, {2, 5, 24}, g).to(kCuda);
  const at::Tensor t = at::rand({2}, g).to(kCuda), probe = at::normal(0, 1, {2, 4, 4, 8, 8}, g).to(kCuda);
  std::vector<at::Tensor> grads;
  for (int run = 0; run < 2; ++run) {
    m->zero_grad();
    BOOST_CHECK_NO_THROW((m->forward(x, text, t).to(at::kFloat) * probe).sum().backward());
    for (size_t i = 0; i < m->parameters().size(); ++i) {
      const at::Tensor gi = m->parameters()[i].grad();
      if (run == 0) grads.push_back(gi.defined() ? gi.clone() : gi);
      else if (gi.defined()) BOOST_CHECK(at::equal(gi, grads[i]));
    }
  }
  at::globalContext().setDeterministicAlgorithms(false, false);
}
