// Host-side glue of the kernels: compiled in every build (with or without CUDA), so that call sites need no
// #ifdef: without the kernels, available() is false and a launch throws.
#include <ATen/record_function.h>

#include "openvid/kernels/range.h"
#include "openvid/kernels/stream.h"

#ifdef OPENVID_TORCH_CUDA
#include <c10/cuda/CUDAStream.h>
#endif
#ifdef OPENVID_HAVE_KERNELS
#include <nvtx3/nvToolsExt.h>
#endif

#include "openvid/kernels/adamw.h"
#include "openvid/kernels/noise.h"
#include "openvid/runtime/error.h"

namespace ov::kernels {

Stream current_stream(const c10::Device& device) {
#ifdef OPENVID_TORCH_CUDA
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
#endif

}  // namespace ov::kernels
