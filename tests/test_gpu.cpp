#define BOOST_TEST_MODULE gpu
// GPU-only checks (built in CUDA builds, run on a machine with a GPU): each fused kernel against the ATen
// composition it replaces, and a training step that synchronises the host with the device once.
#include "mpi_fixture.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/util/Exception.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "openvid/comm/process_groups.h"
#include "openvid/data/synthetic.h"
#include "openvid/kernels/launch.h"
#include "openvid/kernels/noise.h"
#include "openvid/kernels/stream.h"
#include "openvid/runtime/mpi_session.h"
#include "openvid/train/objective.h"
#include "openvid/train/optimizer.h"
#include "openvid/train/trainer.h"

namespace {

const at::Device kCuda(at::kCUDA, 0);

double relative_error(const at::Tensor& got, const at::Tensor& want) {
  return (got.to(at::kDouble).cpu() - want.to(at::kDouble).cpu()).norm().item<double>() /
         std::max(want.to(at::kDouble).cpu().norm().item<double>(), 1e-30);
}

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
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(1);
  // Segments of awkward sizes (tails, more than one chunk), bf16 compute copies, decay on and off.
  const std::vector<int64_t> sizes = {1, 7, 8193, 100000, 3};
  ov::train::AdamOptions fused_options, aten_options;
  aten_options.fused = false;
  ov::train::AdamW fused(fused_options), aten(aten_options);
  std::vector<at::Tensor> params_f, params_a, grads, copies_f, copies_a;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const at::Tensor p = at::normal(0, 1, {sizes[i]}, g).to(kCuda), grad = at::normal(0, 1, {sizes[i]}, g).to(kCuda);
    params_f.push_back(p.clone());
    params_a.push_back(p.clone());
    grads.push_back(grad);
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
  for (size_t i = 0; i < sizes.size(); ++i) {
    BOOST_CHECK_LT(relative_error(params_f[i], params_a[i]), 1e-6);
    BOOST_CHECK_LT(relative_error(copies_f[i], copies_a[i]), 1e-2);
    BOOST_CHECK(at::equal(copies_f[i].cpu(), params_f[i].to(at::kBFloat16).cpu()));  // every element written
  }
  BOOST_CHECK_EQUAL(fused.steps(), 3);
  const at::Tensor before = params_f[2].clone();
  fused.step(1e-2, at::tensor({0.f, 1.f}).to(kCuda));  // skipped on the device
  BOOST_CHECK(at::equal(params_f[2], before));
  BOOST_CHECK_EQUAL(fused.steps(), 3);
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

// After the first step (plans, caches), a training step makes the host wait for the device once: when
// it reads the step's loss, gradient norm and stop flag.
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
    BOOST_CHECK_LE(counter.count, 3);
  }
  groups.finalize();
  std::filesystem::remove_all(dir);
}
