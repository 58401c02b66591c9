// Host-side glue of the kernels: compiled in every build (with or without CUDA), so that call sites need no
// #ifdef: without the kernels, available() is false and a launch throws.
#include <ATen/record_function.h>

#include "openvid/kernels/range.h"
#include "openvid/kernels/stream.h"

#ifdef OPENVID_TORCH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#endif
#ifdef OPENVID_HAVE_KERNELS
#include <nvtx3/nvToolsExt.h>
#endif

#include "openvid/kernels/adamw.h"
#include "openvid/kernels/clock.h"
#include "openvid/kernels/float8.h"
#include "openvid/kernels/fused.h"
#include "openvid/kernels/noise.h"
#include "openvid/runtime/error.h"

namespace ov::kernels {

Stream current_stream(const c10::Device& device) {
#ifdef OPENVID_TORCH_CUDA
  // A kernel runs on the calling thread's current device, whatever stream it is given: launched there for
  // tensors of another GPU it would fault or race. Every launch goes through here, so it is refused instead.
  const c10::DeviceIndex current = c10::cuda::current_device();
  if (!device.is_cuda() || device.index() != current) {
    throw Error("an openvid kernel was launched for tensors on " + device.str() + " while cuda:" + std::to_string(current) +
                " is this thread's current device (each rank makes its GPU current at start-up; a thread that launches "
                "kernels must make the tensors' device current first, e.g. with c10::cuda::CUDAGuard)");
  }
  return c10::cuda::getCurrentCUDAStream(device.index()).stream();
#else
  static_cast<void>(device);
  return nullptr;
#endif
}

Range::Range(const std::string& name) {
#ifdef OPENVID_HAVE_KERNELS
  nvtxRangePushA(name.c_str());
#endif
  record_ = std::make_unique<at::RecordFunction>(at::RecordScope::USER_SCOPE);
  if (record_->isActive()) record_->before(name);
}

Range::~Range() {
  record_.reset();
#ifdef OPENVID_HAVE_KERNELS
  nvtxRangePop();
#endif
}

#ifdef OPENVID_HAVE_KERNELS
bool available() { return true; }
#else
bool available() { return false; }

namespace {
[[noreturn]] void missing(const char* kernel) {
  throw Error(std::string("kernel ") + kernel + " called, but this build has no CUDA kernels (configure with a CUDA toolkit)");
}
}  // namespace

void fused_adamw(const AdamSegment*, const int64_t*, int64_t, CopyKind, CopyKind, const AdamConstants&, const float*, const int64_t*,
                 Stream) {
  missing("fused_adamw");
}
void gaussian_noise(float*, const uint64_t*, int64_t, int64_t, int64_t, int64_t, int64_t, Stream) { missing("gaussian_noise"); }
void stamp_time(int64_t*, Stream) { missing("stamp_time"); }
void spin_until(const int64_t*, int64_t, Stream) { missing("spin_until"); }
// The fused block operations: never reached (fused_kernels_enabled() is false), but linked.
bool residual_stream_fits(int64_t) { return false; }
int64_t residual_stream_workspace(int64_t, int64_t, int64_t) { return 0; }
void residual_norm_forward(const bf16_t*, const bf16_t*, RowVector, bf16_t*, const bf16_t*, RowVector, RowVector, bf16_t*, float*, int64_t,
                           int64_t, int64_t, float, Stream) {
  missing("residual_norm_forward");
}
void residual_norm_backward(const bf16_t*, const bf16_t*, const bf16_t*, const float*, const bf16_t*, RowVector, const bf16_t*, RowVector,
                            bf16_t*, bf16_t*, ColumnSum, ColumnSum, ColumnSum, float*, int64_t, int64_t, int64_t, Stream) {
  missing("residual_norm_backward");
}
void rope_split_forward(const bf16_t*, const float*, const float*, const bf16_t*, const bf16_t*, bf16_t*, bf16_t*, bf16_t*, bf16_t*, int64_t,
                        int64_t, int64_t, int64_t, Stream) {
  missing("rope_split_forward");
}
int64_t rope_split_blocks(int64_t, int64_t, int64_t, int64_t) { return 0; }
void rope_split_backward(const bf16_t*, HeadStrides, const bf16_t*, HeadStrides, const bf16_t*, HeadStrides, const float*, const float*,
                         const bf16_t*, const bf16_t*, const bf16_t*, bf16_t*, bf16_t*, float*, int64_t, int64_t, int64_t, int64_t, Stream) {
  missing("rope_split_backward");
}
void gelu_forward(const bf16_t*, bf16_t*, int64_t, Stream) { missing("gelu_forward"); }
int64_t gelu_backward_workspace(int64_t, int64_t) { return 0; }
void gelu_backward_recompute(bf16_t*, bf16_t*, float*, float*, int64_t, int64_t, Stream) { missing("gelu_backward_recompute"); }
void float8_amax(const bf16_t*, int64_t, Float8Input, float*, Stream) { missing("float8_amax"); }
void float8_cast(const bf16_t*, int64_t, int64_t, Float8Input, const float*, fp8_t*, fp8_t*, int64_t, float*, Stream) {
  missing("float8_cast");
}
#endif

}  // namespace ov::kernels
