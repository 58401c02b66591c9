#pragma once
// The rectified-flow objective (as the reference trainer's): per sample t = shift(sigmoid(z)), z ~ N(0, 1);
// x_t = (1 - t) x + t noise; target v = x - noise; loss = mean of (v - model(x_t))^2 in fp32; with
// probability caption_dropout the text is zeros.
//
// Every draw is a function of (run seed, step, global sample index) -- or (run seed, step) for the RoPE
// offsets -- never of the rank: the same global batch trains the same way on any layout, and a resume
// repeats the draws. Noise is drawn frame by frame from (seed, step, sample, frame), so a context-
// parallel rank draws exactly its slice of the sample's noise, and only that slice.
#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>

#include "openvid/data/device_batch.h"
#include "openvid/model/rope.h"

namespace ov::train {

// a*t / (1 + (a-1)*t)
double shift_timestep(double t, double shift);

struct SampleDraw {
  double t = 0;               // shifted timestep in (0, 1)
  bool drop_caption = false;  // replace the text states by zeros
};
SampleDraw draw_sample(uint64_t seed, int64_t step, int64_t sample, double shift, double caption_dropout);

// The key of the noise stream of one frame of a sample (kernels/philox.h): element (c, h, w) of the frame is
// element (c * H + h) * W + w of the stream.
uint64_t noise_key(uint64_t seed, int64_t step, int64_t sample, int64_t frame);

// Noise of frames [t_begin, t_begin + t_count) of the sample: [C, t_count, H, W] fp32 on the CPU.
at::Tensor draw_noise(uint64_t seed, int64_t step, int64_t sample, int64_t channels, int64_t t_begin, int64_t t_count,
                      int64_t height, int64_t width);

// RoPE window start for a token grid (t, h, w) on the 128^3 grid, uniform in [0, 128 - n] per axis.
std::array<int64_t, 3> draw_rope_offset(uint64_t seed, int64_t step, int64_t t_tokens, int64_t h_tokens, int64_t w_tokens);

// The inputs and target of one micro-batch, from clean latents x [B, C, T, H, W] (this rank's frames),
// noise like x, and per-sample t [B].
struct FlowExample {
  at::Tensor x_t;     // model input
  at::Tensor target;  // velocity target x - noise
};
FlowExample make_example(const at::Tensor& x, const at::Tensor& noise, const at::Tensor& t);

// The step number evaluation draws use: fixed across the run and across runs.
constexpr int64_t kEvalStep = -1;

// A sample's identity for random draws: unique in the dataset, independent of the layout.
int64_t sample_key(int64_t bucket, int64_t index);

struct ObjectiveSettings {
  uint64_t seed = 0;
  double timestep_shift = 8;
  double caption_dropout = 0.01;
  int64_t patch = 2, time_patch = 2;
};

// One micro-batch as the model and the loss take it, on the batch's device.
struct FlowBatch {
  at::Tensor x_t, target;  // [b, C, t_count, H, W]
  at::Tensor t;            // [b] fp32 timesteps
  at::Tensor text;         // [b, Lc, Dc], zeros where the caption was dropped
  at::Tensor weight;       // [b, 1, 1, 1, 1]: 1 for real samples, 0 for the padding of an evaluation batch
  model::TokenWindow window;  // this rank's tokens and the step's RoPE offset
};

// Samples [first, first + count) of this rank's batch: the per-sample draws of `step` (kEvalStep:
// evaluation draws, no caption dropout, RoPE offset 0), the noised inputs and the velocity target.
// Positions at or past `valid` are padding and get weight 0.
FlowBatch make_flow_batch(const data::DeviceBatch& batch, int64_t first, int64_t count, int64_t step, int64_t valid,
                          const ObjectiveSettings& settings);

// Sum of squared errors in fp32 divided by `global_elements` (the element count of the whole global
// batch): summed over ranks and micro-batches it is the mean over the global batch, whatever the layout.
at::Tensor flow_loss(const at::Tensor& prediction, const at::Tensor& target, double global_elements);

}  // namespace ov::train
