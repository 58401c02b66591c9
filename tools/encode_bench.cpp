// openvid_encode_bench: how fast the preprocessing encoders run on this machine (one process).
//
//   openvid_encode_bench --t5 xxl --device cuda --batch 8            (T5 v1.1 XXL's shape, random weights)
//   openvid_encode_bench --t5 tests/fixtures/t5_tiny --video_encoder tests/fixtures/video_codec/encoder.jit
//
// Times the T5 encoder on `--batch` captions of `--tokens` tokens and, with --video_encoder, the video
// encoder on `--video_batch` clips of `--video_shape` (video frames x height x width), after `--warmup`
// calls: medians of `--iters` calls (CUDA events on GPUs, the host clock on CPUs), captions/s and clips/s.
#include <ATen/ATen.h>
#include <boost/program_options.hpp>
#include <c10/core/InferenceMode.h>
#include <torch/cuda.h>

#include <algorithm>
#include <iomanip>
#include <iostream>

#include "openvid/config/options.h"
#include "openvid/data/synthetic.h"
#include "openvid/runtime/error.h"
#include "openvid/text/t5_encoder.h"
#include "openvid/train/profiling.h"
#include "openvid/video/latent_codec.h"

namespace po = boost::program_options;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Milliseconds of `fn` per call: median over `iters` after `warmup`.
template <typename Fn>
double time_ms(const at::Device& device, int warmup, int iters, Fn&& fn) {
  ov::train::StepTimer timer(device);
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    timer.begin();
    fn();
    timer.end_phase("call");
    if (device.is_cuda()) torch::cuda::synchronize();
    ms.push_back(timer.read().back().second);
  }
  return median(ms);
}

int encode_bench(int argc, char** argv) {
  std::string t5, video_encoder, device_name, precision, video_shape;
  int64_t batch = 0, tokens = 0, video_batch = 0;
  int warmup = 0, iters = 0;
  po::options_description desc("openvid_encode_bench: the preprocessing encoders' speed on this machine");
  desc.add_options()("help,h", "print this help")
      ("t5", po::value(&t5)->default_value("xxl"), "a T5 encoder folder, or xxl / tiny for that shape with random weights")
      ("batch", po::value(&batch)->default_value(8), "captions per T5 call")
      ("tokens", po::value(&tokens)->default_value(512), "tokens per caption")
      ("video_encoder", po::value(&video_encoder)->default_value(""), "a TorchScript video encoder to time too")
      ("video_shape", po::value(&video_shape)->default_value("61x480x640"), "FRAMESxHEIGHTxWIDTH of a clip (video frames)")
      ("video_batch", po::value(&video_batch)->default_value(1), "clips per video encoder call")
      ("device", po::value(&device_name)->default_value("cpu"), "cpu | cuda")
      ("precision", po::value(&precision)->default_value("auto"), "auto (bf16 on GPUs) | fp32 | bf16")
      ("warmup", po::value(&warmup)->default_value(2), "calls left out")
      ("iters", po::value(&iters)->default_value(5), "calls timed");
  po::variables_map vm;
  ov::parse_tool_command_line(desc, argc, argv, vm);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (device_name != "cpu" && device_name != "cuda") throw ov::InputError("--device must be cpu or cuda");
  const at::Device device = device_name == "cuda" ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  if (device.is_cuda() && torch::cuda::device_count() == 0) throw ov::InputError("--device cuda, but no GPU is visible");
  const bool bf16 = precision == "bf16" || (precision == "auto" && device.is_cuda());
  const at::ScalarType dtype = bf16 ? at::kBFloat16 : at::kFloat;
  c10::InferenceMode inference;

  ov::text::T5Config xxl;  // the defaults are T5 v1.1 XXL's
  ov::text::T5Config tiny{128, 32, 8, 48, 2, 4, 32, 128, 1e-6, true};
  const ov::text::T5Encoder enc = t5 == "xxl" ? ov::text::T5Encoder::random(xxl, device, dtype)
                                  : t5 == "tiny" ? ov::text::T5Encoder::random(tiny, device, dtype)
                                                 : ov::text::T5Encoder(t5, device, dtype);
  const at::Tensor ids = at::randint(0, enc.config().vocab_size - 100, {batch, tokens}, at::kLong).to(device);
  const double t5_ms = time_ms(device, warmup, iters, [&] { (void)enc.encode(ids); });
  std::cout << std::fixed << std::setprecision(2) << "T5 encoder (" << t5 << ", " << enc.parameter_count() / 1e6 << "M parameters, "
            << (bf16 ? "bf16" : "fp32") << ", " << device << "): " << t5_ms << " ms per " << batch << " x " << tokens
            << " tokens = " << batch * 1000.0 / t5_ms << " captions/s\n";
  if (!video_encoder.empty()) {
    const auto s = ov::data::parse_latent_shape(video_shape, "--video_shape");
    const ov::video::LatentCodec codec(video_encoder, ov::video::LatentCodec::Part::kEncoder, {}, device, dtype);
    const at::Tensor clips = at::rand({video_batch, 3, s[0], s[1], s[2]}, at::TensorOptions().device(device)).mul(2).sub(1);
    const double v_ms = time_ms(device, warmup, iters, [&] { (void)codec.run(clips); });
    std::cout << "video encoder (" << video_encoder << ", " << video_shape << "): " << v_ms << " ms per " << video_batch << " clip(s) = "
              << video_batch * 1000.0 / v_ms << " clips/s\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return ov::run_tool_main("openvid_encode_bench", encode_bench, argc, argv); }
