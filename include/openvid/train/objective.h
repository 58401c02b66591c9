#pragma once
// The rectified-flow objective (SPEC.md "Objective"): per sample t = shift(sigmoid(z)), z ~ N(0, 1);
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

namespace ov::train {

// a*t / (1 + (a-1)*t)
double shift_timestep(double t, double shift);

struct SampleDraw {
  double t = 0;               // shifted timestep in (0, 1)
  bool drop_caption = false;  // replace the text states by zeros
};
SampleDraw draw_sample(uint64_t seed, int64_t step, int64_t sample, double shift, double caption_dropout);

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

// Sum of squared errors in fp32 divided by `global_elements` (the element count of the whole global
// batch): summed over ranks and micro-batches it is the mean over the global batch, whatever the layout.
at::Tensor flow_loss(const at::Tensor& prediction, const at::Tensor& target, double global_elements);

}  // namespace ov::train
