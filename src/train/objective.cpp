#include "openvid/train/objective.h"

#include <ATen/ATen.h>

#include <cmath>

#include "openvid/model/rope.h"
#include "openvid/kernels/noise.h"
#include "openvid/kernels/philox.h"
#include "openvid/kernels/stream.h"
#include "openvid/runtime/error.h"
#include "openvid/runtime/random.h"

namespace ov::train {
namespace {

// Stream tags, so draws of different kinds never share a seed.
constexpr uint64_t kSampleTag = 0x5a3d1e, kNoiseTag = 0x4e015e, kRopeTag = 0x40be;

}  // namespace

double shift_timestep(double t, double a) { return a * t / (1 + (a - 1) * t); }

SampleDraw draw_sample(uint64_t seed, int64_t step, int64_t sample, double shift, double caption_dropout) {
  std::mt19937_64 g(mix_seed(mix_seed(seed, kSampleTag), static_cast<uint64_t>(step), static_cast<uint64_t>(sample)));
  SampleDraw d;
  const double z = standard_normal(g);
  d.t = shift_timestep(1.0 / (1.0 + std::exp(-z)), shift);
  d.drop_caption = uniform01(g) < caption_dropout;
  return d;
}

uint64_t noise_key(uint64_t seed, int64_t step, int64_t sample, int64_t frame) {
  return mix_seed(mix_seed(mix_seed(seed, kNoiseTag), static_cast<uint64_t>(step), static_cast<uint64_t>(sample)), static_cast<uint64_t>(frame));
}

at::Tensor draw_noise(uint64_t seed, int64_t step, int64_t sample, int64_t channels, int64_t t_begin, int64_t t_count,
                      int64_t height, int64_t width) {
  at::Tensor out = at::empty({channels, t_count, height, width}, at::kFloat);
  float* o = out.data_ptr<float>();
  const int64_t plane = height * width;
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t f = 0; f < t_count; ++f) {
      const uint64_t key = noise_key(seed, step, sample, t_begin + f);
      for (int64_t p = 0; p < plane; ++p) *o++ = kernels::philox_normal(key, static_cast<uint64_t>(c * plane + p));
    }
  return out;
}

std::array<int64_t, 3> draw_rope_offset(uint64_t seed, int64_t step, int64_t t_tokens, int64_t h_tokens, int64_t w_tokens) {
  std::mt19937_64 g(mix_seed(mix_seed(seed, kRopeTag), static_cast<uint64_t>(step)));
  std::array<int64_t, 3> off{};
  const int64_t n[3] = {t_tokens, h_tokens, w_tokens};
  for (int i = 0; i < 3; ++i) {
    if (n[i] > model::kRopeGrid) throw InputError("a latent of " + std::to_string(n[i]) + " tokens along an axis exceeds the RoPE grid of 128");
    const uint64_t range = static_cast<uint64_t>(model::kRopeGrid - n[i] + 1);
    off[static_cast<size_t>(i)] = static_cast<int64_t>(static_cast<uint64_t>(uniform01(g) * static_cast<double>(range)) % range);
  }
  return off;
}

FlowExample make_example(const at::Tensor& x, const at::Tensor& noise, const at::Tensor& t) {
  const at::Tensor tt = t.to(x.scalar_type()).view({-1, 1, 1, 1, 1});
  return {(1 - tt) * x + tt * noise, x - noise};
}

int64_t sample_key(int64_t bucket, int64_t index) { return (bucket << 40) | index; }

FlowBatch make_flow_batch(const data::DeviceBatch& b, int64_t first, int64_t count, int64_t step, int64_t valid,
                          const ObjectiveSettings& s) {
  const bool train = step != kEvalStep;
  const int64_t C = b.latents.size(1), H = b.latents.size(3), W = b.latents.size(4);
  FlowBatch out;
  model::TokenWindow& w = out.window;
  w.t = b.frames / s.time_patch;
  w.h = H / s.patch;
  w.w = W / s.patch;
  w.t_begin = b.t_begin / s.time_patch;
  w.t_count = b.t_count / s.time_patch;
  w.offset = train ? draw_rope_offset(s.seed, step, w.t, w.h, w.w) : std::array<int64_t, 3>{0, 0, 0};

  // Per sample on the host: timestep, caption dropout, padding weight; and the noise streams' keys.
  at::Tensor host = at::empty({3, count}, at::kFloat);  // rows: t, keep text (0/1), weight
  at::Tensor keys = at::empty({count, b.t_count}, at::kLong);
  for (int64_t i = 0; i < count; ++i) {
    const int64_t k = first + i;
    const int64_t key = sample_key(b.bucket, b.samples[static_cast<size_t>(k)]);
    const SampleDraw d = draw_sample(s.seed, step, key, s.timestep_shift, train ? s.caption_dropout : 0.0);
    host[0][i] = static_cast<float>(d.t);
    host[1][i] = d.drop_caption ? 0.f : 1.f;
    host[2][i] = k < valid ? 1.f : 0.f;
    for (int64_t f = 0; f < b.t_count; ++f) keys[i][f] = static_cast<int64_t>(noise_key(s.seed, step, key, b.t_begin + f));
  }
  const at::Device device = b.latents.device();
  const at::Tensor per_sample = data::to_device_async(host, device);
  out.t = per_sample[0];
  out.text = b.text.narrow(0, first, count) * per_sample[1].view({-1, 1, 1}).to(b.text.scalar_type());
  out.weight = per_sample[2].view({-1, 1, 1, 1, 1});
  at::Tensor noise = at::empty({count, C, b.t_count, H, W}, b.latents.options().dtype(at::kFloat));
  if (device.is_cuda() && kernels::available()) {
    const at::Tensor device_keys = data::to_device_async(keys, device);
    kernels::gaussian_noise(noise.data_ptr<float>(), reinterpret_cast<const uint64_t*>(device_keys.data_ptr<int64_t>()), count, C,
                            b.t_count, H, W, kernels::current_stream(device));
  } else {
    for (int64_t i = 0; i < count; ++i) {
      const int64_t key = sample_key(b.bucket, b.samples[static_cast<size_t>(first + i)]);
      noise[i].copy_(draw_noise(s.seed, step, key, C, b.t_begin, b.t_count, H, W));
    }
  }
  const FlowExample ex = make_example(b.latents.narrow(0, first, count), noise, out.t);
  out.x_t = ex.x_t;
  out.target = ex.target;
  return out;
}

at::Tensor flow_loss(const at::Tensor& prediction, const at::Tensor& target, double global_elements) {
  return (prediction.to(at::kFloat) - target.to(at::kFloat)).pow(2).sum() / global_elements;
}

}  // namespace ov::train
