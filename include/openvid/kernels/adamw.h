#pragma once
// One fused AdamW pass over many segments of fp32 state (kernels/adamw.cu): reads each element's master,
// gradient and moments once, writes them back once, and writes the updated weight into the segment's
// compute copy (bf16 or fp32) in the same pass: 28 bytes per element with a bf16 copy.
#include <cstdint>

#include "openvid/kernels/launch.h"

namespace ov::kernels {

struct AdamSegment {
  float* param;
  const void* grad;  // fp32 or bf16 as the launch says
  float* exp_avg;
  float* exp_avg_sq;
  void* compute_copy;  // nullptr: none; else bf16 or fp32 as the launch says
  int64_t numel;
  double lr_mult;
  double weight_decay;
};

// The step's constants, converted as the ATen path converts its Scalars: products and bias corrections in
// double, each factor rounded to fp32 once.
struct AdamConstants {
  double lr;             // base learning rate (schedule applied)
  double beta1, beta2;   // for the bias corrections
  float ema1_weight;     // 1 - beta1 (lerp weight)
  float beta2_f;         // beta2
  float ema2_weight;     // 1 - beta2
  float eps;
};

enum class CopyKind : int { kNone = 0, kFloat = 1, kBFloat16 = 2 };

// Elements of a segment one CUDA block updates.
constexpr int64_t kAdamChunk = 8192;

// segments: device array; chunks: device array of (segment index, first element) pairs, kAdamChunk apart.
// grad: the gradients' dtype (kFloat or kBFloat16), copy: the compute copies' (or kNone).
// control (device, 2 floats): [apply (1/0), gradient factor]; steps (device, int64): applied updates
// before this one (bias correction uses steps + 1). Does not change *steps.
void fused_adamw(const AdamSegment* segments, const int64_t* chunks, int64_t num_chunks, CopyKind grad, CopyKind copy,
                 const AdamConstants& c, const float* control, const int64_t* steps, Stream stream);

}  // namespace ov::kernels
