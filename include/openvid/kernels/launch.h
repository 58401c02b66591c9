#pragma once
// The project's CUDA kernels (src/kernels/*.cu), as plain functions over device pointers: no ATen in the
// .cu files, so that nvcc compiles them quickly and without LibTorch's headers. The ATen-facing code
// (model/, train/) checks `kernels::available()` and the tensors' device, and keeps an ATen composition as
// the CPU path and as the reference each kernel is tested against on the GPU.
//
// Every launch is checked (OV_CUDA_CHECK in kernels/check.cuh): a failed launch throws ov::Error naming the
// kernel, file and line. Streams are passed as CUstream_st* (cudaStream_t) so that no CUDA header is needed
// here.
#include <cstdint>

struct CUstream_st;

namespace ov::kernels {

using Stream = CUstream_st*;

// True when this build compiled the kernels (a CUDA toolkit was found at configure time).
bool available();

}  // namespace ov::kernels
