#pragma once
// The one family of checks for CUDA runtime calls and kernel launches (kernels, the NCCL backend): a failure
// throws ov::Error naming the call, the file and the line. Only for translation units built with CUDA.
#include <cuda_runtime.h>

#include <string>

#include "openvid/runtime/error.h"

#define OV_CUDA_CHECK(call)                                                                                      \
  do {                                                                                                           \
    const cudaError_t ov_cuda_rc_ = (call);                                                                      \
    if (ov_cuda_rc_ != cudaSuccess) {                                                                            \
      throw ::ov::Error(std::string("CUDA call failed: ") + #call + ": " + cudaGetErrorString(ov_cuda_rc_) + " at " + \
                        __FILE__ + ":" + std::to_string(__LINE__));                                             \
    }                                                                                                            \
  } while (0)

// After a <<<...>>> launch: reports a bad configuration or an earlier asynchronous error at once.
#define OV_CUDA_CHECK_LAUNCH() OV_CUDA_CHECK(cudaPeekAtLastError())
