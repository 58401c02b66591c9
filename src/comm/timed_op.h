#pragma once
// One collective's timing on a CUDA stream, shared by the GPU communicators (the NCCL backend and the
// emulated groups): events at its start and end on the group's stream and where the caller's stream began
// waiting for it (recorded by wait()), resolved into Communicator::Timing once they have fired. Only for
// translation units built with CUDA.
#include <cuda_runtime.h>

#include <algorithm>
#include <list>
#include <memory>

#include "openvid/comm/communicator.h"
#include "openvid/kernels/cuda_check.h"

namespace ov::comm {

struct TimedOp {
  cudaEvent_t start = nullptr, end = nullptr, mark = nullptr;
  TimedOp() = default;
  TimedOp(const TimedOp&) = delete;
  TimedOp& operator=(const TimedOp&) = delete;
  ~TimedOp() {
    for (cudaEvent_t e : {start, end, mark})
      if (e != nullptr) cudaEventDestroy(e);
  }
  static cudaEvent_t record(cudaStream_t stream) {
    cudaEvent_t e = nullptr;
    OV_CUDA_CHECK(cudaEventCreate(&e));
    OV_CUDA_CHECK(cudaEventRecord(e, stream));
    return e;
  }
  static bool fired(cudaEvent_t e) {
    const cudaError_t q = cudaEventQuery(e);
    if (q == cudaErrorNotReady) {
      cudaGetLastError();  // not an error: clear it
      return false;
    }
    OV_CUDA_CHECK(q);
    return true;
  }
};

// Orders what is queued next on a group's `stream` after the work already queued on the caller's stream
// (which produced the inputs) and, when given, after `after` (another group's collective).
inline void follow(cudaStream_t stream, cudaStream_t caller, cudaEvent_t after = nullptr) {
  cudaEvent_t ready = nullptr;
  OV_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
  OV_CUDA_CHECK(cudaEventRecord(ready, caller));
  OV_CUDA_CHECK(cudaStreamWaitEvent(stream, ready, 0));
  OV_CUDA_CHECK(cudaEventDestroy(ready));
  if (after != nullptr) OV_CUDA_CHECK(cudaStreamWaitEvent(stream, after, 0));
}

// The collectives of one group whose timing is not resolved yet.
class TimedOps {
 public:
  // Adds `op` (its start and end recorded); past kMaxUnresolved (nobody asks for timing()), resolves what
  // has fired and drops the oldest rest.
  void add(std::shared_ptr<TimedOp> op, Communicator::Timing& timing) {
    ops_.push_back(std::move(op));
    if (ops_.size() <= kMaxUnresolved) return;
    resolve(timing);
    while (ops_.size() > kMaxUnresolved) ops_.pop_front();
  }
  // Adds to `timing` each op waited for whose events have fired: busy, start to end; waited, the caller's
  // stall from its wait to the end (negative: done before the caller waited).
  void resolve(Communicator::Timing& timing) {
    for (auto it = ops_.begin(); it != ops_.end();) {
      const TimedOp& op = **it;
      if (op.mark == nullptr || !TimedOp::fired(op.end) || !TimedOp::fired(op.mark)) {
        ++it;  // not waited for yet, or still running
        continue;
      }
      float busy = 0, stalled = 0;
      OV_CUDA_CHECK(cudaEventElapsedTime(&busy, op.start, op.end));
      OV_CUDA_CHECK(cudaEventElapsedTime(&stalled, op.mark, op.end));
      timing.busy_ms += busy;
      timing.waited_ms += std::max(0.0f, stalled);
      it = ops_.erase(it);
    }
  }

 private:
  std::list<std::shared_ptr<TimedOp>> ops_;
  static constexpr size_t kMaxUnresolved = 4096;
};

}  // namespace ov::comm
