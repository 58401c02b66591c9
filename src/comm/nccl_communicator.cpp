#include "openvid/comm/nccl_communicator.h"

#include "openvid/runtime/error.h"

#ifndef OPENVID_HAVE_NCCL

namespace ov::comm {
bool nccl_compiled() { return false; }
std::unique_ptr<Communicator> make_nccl_communicator(MPI_Comm, std::string name, int,
                                                     std::chrono::milliseconds) {
  throw Error("group '" + name + "': this build of openvid has no NCCL backend (configure with a CUDA "
              "LibTorch and NCCL, or -DOPENVID_WITH_NCCL=ON); use --backend mpi");
}
}  // namespace ov::comm

#else  // OPENVID_HAVE_NCCL

#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <list>
#include <sstream>
#include <thread>
#include <vector>

#include "nccl_watchdog.h"
#include "timed_op.h"
#include "openvid/kernels/cuda_check.h"
#include "openvid/runtime/mpi_session.h"

#ifdef OPENVID_TORCH_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

namespace ov::comm {

bool nccl_compiled() { return true; }

namespace {

ncclDataType_t nccl_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kHalf: return ncclFloat16;
    case at::kBFloat16: return ncclBfloat16;
    case at::kInt: return ncclInt32;
    case at::kLong: return ncclInt64;
    case at::kChar: return ncclInt8;
    case at::kByte:
    case at::kBool: return ncclUint8;
    default: throw Error(std::string("the NCCL backend does not support dtype ") + c10::toString(t));
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kAvg: return ncclAvg;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMin: return ncclMin;
  }
  return ncclSum;
}

// Switches the current CUDA device for a scope (LibTorch's guard needs its CUDA build; this does not).
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    OV_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) OV_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceScope() { cudaSetDevice(previous_); }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = 0;
};

std::string seconds(std::chrono::milliseconds ms) {
  return std::to_string(std::chrono::duration_cast<std::chrono::seconds>(ms).count()) + " s";
}

}  // namespace

// A completion event shared by the Work that waits for it and the watchdog that watches it.
std::shared_ptr<CUevent_st> shared_event(cudaEvent_t e) {
  return std::shared_ptr<CUevent_st>(e, [](cudaEvent_t ev) { cudaEventDestroy(ev); });
}

class NcclCommunicator final : public Communicator, private Watched {
 public:
  NcclCommunicator(MPI_Comm group, std::string name, int rank, int size, int device,
                   std::chrono::milliseconds timeout)
      : Communicator(std::move(name), rank, size, timeout), device_(device) {
    ncclUniqueId id{};
    if (rank == 0) check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    OV_MPI_CHECK(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, group));
    DeviceScope scope(device_);
    OV_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // init and enqueues return at once; progress is polled against the timeout
    check(ncclCommInitRankConfig(&comm_, size, id, rank, &config), "ncclCommInitRankConfig");
    wait_ready("ncclCommInitRankConfig");
    NcclWatchdog::instance().add(this, device_);
  }

  ~NcclCommunicator() override {
    NcclWatchdog::instance().remove(this);
    // Never blocks: a communicator not finalized is aborted (frees its resources without waiting).
    if (comm_ != nullptr) ncclCommAbort(comm_);
    if (token_ != nullptr) cudaFreeAsync(token_, stream_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  Backend backend() const override { return Backend::kNccl; }

  Timing timing() override {
    DeviceScope scope(device_);
    timed_.resolve(*timing_);
    return *timing_;
  }

  Work all_reduce(const at::Tensor& t, ReduceOp op) override {
    const char* name = "all_reduce";
    check_args(name, t);
    count(kAllReduce, t);
    return launch(name, {t}, [&] {
      return ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()),
                           nccl_type(t.scalar_type()), nccl_op(op), comm_, stream_);
    });
  }

  Work all_gather(const at::Tensor& out, const at::Tensor& in) override {
    const char* name = "all_gather";
    check_args(name, in, &out);  // in place when `in` is this rank's chunk of `out`: NCCL handles that itself
    check_numel(name, "output", out, in.numel() * size());
    count(kAllGather, out);
    return launch(name, {in, out}, [&] {
      return ncclAllGather(in.data_ptr(), out.data_ptr(), static_cast<size_t>(in.numel()),
                           nccl_type(in.scalar_type()), comm_, stream_);
    });
  }

  Work reduce_scatter(const at::Tensor& out, const at::Tensor& in, ReduceOp op) override {
    const char* name = "reduce_scatter";
    check_args(name, in, &out);
    check_numel(name, "input", in, out.numel() * size());
    count(kReduceScatter, in);
    return launch(name, {in, out}, [&] {
      return ncclReduceScatter(in.data_ptr(), out.data_ptr(), static_cast<size_t>(out.numel()),
                               nccl_type(in.scalar_type()), nccl_op(op), comm_, stream_);
    });
  }

  bool starts_after() const override { return true; }

  Work all_reduce_after(const Work& after, const at::Tensor& t, ReduceOp op) override {
    const char* name = "all_reduce";
    check_args(name, t);
    const auto event = static_cast<cudaEvent_t>(after.device_event());
    if (event == nullptr) throw Error("all_reduce_after on group '" + this->name() + "': the collective to wait for has no device event");
    count(kAllReduce, t);
    return launch(name, {t}, [&] {
      return ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()),
                           nccl_type(t.scalar_type()), nccl_op(op), comm_, stream_);
    }, event);
  }

  Work broadcast(const at::Tensor& t, int root) override {
    const char* name = "broadcast";
    check_args(name, t);
    check_root(name, root);
    count(kBroadcast, t);
    return launch(name, {t}, [&] {
      return ncclBroadcast(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()),
                           nccl_type(t.scalar_type()), root, comm_, stream_);
    });
  }

  void barrier() override {
    const char* name = "barrier";
    check_usable(name);
    DeviceScope scope(device_);
    if (token_ == nullptr) OV_CUDA_CHECK(cudaMallocAsync(&token_, sizeof(float), stream_));
    ++seq_;
    enqueue(name, [&] { return ncclAllReduce(token_, token_, 1, ncclFloat32, ncclSum, comm_, stream_); });
    cudaEvent_t done = record_done();
    host_wait(describe_op(name, seq_), done);
    cudaEventDestroy(done);
  }

  void finalize() override {
    if (comm_ == nullptr) return;
    NcclWatchdog::instance().remove(this);
    DeviceScope scope(device_);
    check(ncclCommFinalize(comm_), "ncclCommFinalize");
    wait_ready("ncclCommFinalize");
    ncclCommDestroy(comm_);
    comm_ = nullptr;
    if (token_ != nullptr) cudaFreeAsync(token_, stream_);
    token_ = nullptr;
    failure_ = "finalized";
  }

  void abort(const std::string& reason) override {
    NcclWatchdog::instance().remove(this);
    failure_ = reason;
    if (comm_ != nullptr) ncclCommAbort(comm_);
    comm_ = nullptr;
  }

 private:
  // ---- Watched (called from the watchdog's thread) ----
  std::string async_error() override {
    ncclComm_t comm = comm_;
    if (comm == nullptr) return "";
    ncclResult_t state = ncclSuccess;
    if (ncclCommGetAsyncError(comm, &state) != ncclSuccess || accepted(state)) return "";
    return "group '" + name() + "' (rank " + std::to_string(rank()) + " of " + std::to_string(size()) + ") failed: " +
           ncclGetErrorString(state) + " (" + ncclGetLastError(comm) + ")";
  }
  void abort_now(const std::string&) override {
    ncclComm_t comm = comm_;
    if (comm != nullptr) ncclCommAbort(comm);  // the process ends right after (MPI_Abort); may wait for the device
  }

 public:

 private:
  // Completion of one collective: the caller's stream (at wait() time) waits for the event.
  class StreamWork final : public Work::Impl {
   public:
    StreamWork(std::shared_ptr<CUevent_st> done, int device, std::vector<at::Tensor> keep, std::shared_ptr<TimedOp> timed)
        : done_(std::move(done)), device_(device), keep_(std::move(keep)), timed_(std::move(timed)) {}
    void wait() override {
      DeviceScope scope(device_);
      if (timed_->mark == nullptr) timed_->mark = TimedOp::record(current_stream(device_));
      OV_CUDA_CHECK(cudaStreamWaitEvent(current_stream(device_), done_.get(), 0));
    }
    void* device_event() const override { return done_.get(); }

   private:
    std::shared_ptr<CUevent_st> done_;  // destroyed by CUDA once fired, when the watchdog lets go too
    int device_;
    std::vector<at::Tensor> keep_;
    std::shared_ptr<TimedOp> timed_;
  };

  static cudaStream_t current_stream(int device) {
#ifdef OPENVID_TORCH_CUDA
    return c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();
#else
    static_cast<void>(device);
    return nullptr;  // the legacy default stream, which is what LibTorch's default stream is
#endif
  }

  static bool accepted(ncclResult_t rc) { return rc == ncclSuccess || rc == ncclInProgress; }

  void check_device(const char* op, const at::Tensor& t) const override {
    if (!t.is_cuda() || t.device().index() != device_) {
      throw Error(std::string(op) + " on group '" + name() + "': the NCCL backend takes tensors on cuda:" +
                  std::to_string(device_) + ", got one on " + t.device().str());
    }
  }

  void check(ncclResult_t rc, const char* what) {
    if (accepted(rc)) return;
    fail(std::string(what) + " failed: " + ncclGetErrorString(rc) +
         (comm_ != nullptr ? std::string(" (") + ncclGetLastError(comm_) + ")" : std::string()));
  }

  [[noreturn]] void fail(const std::string& reason) {
    const std::string message = "NCCL group '" + name() + "' (rank " + std::to_string(rank()) + " of " +
                                std::to_string(size()) + "): " + reason;
    abort(message);
    throw Error(message);
  }

  // Non-blocking mode: an NCCL call may return before its work is enqueued; poll until it is, or fail.
  void wait_ready(const std::string& what) {
    const auto deadline = std::chrono::steady_clock::now() + timeout();
    for (;;) {
      ncclResult_t state = ncclSuccess;
      check(ncclCommGetAsyncError(comm_, &state), "ncclCommGetAsyncError");
      if (state == ncclSuccess) return;
      if (state != ncclInProgress) check(state, what.c_str());
      if (std::chrono::steady_clock::now() > deadline) {
        fail(what + " did not complete within " + seconds(timeout()) + " (a peer rank may have died)");
      }
      std::this_thread::yield();
    }
  }

  template <typename Enqueue>
  void enqueue(const char* op, Enqueue&& fn) {
    check(fn(), op);
    wait_ready(describe_op(op, seq_));
  }

  cudaEvent_t record_done() {
    cudaEvent_t done = nullptr;
    OV_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    OV_CUDA_CHECK(cudaEventRecord(done, stream_));
    return done;
  }

  template <typename Enqueue>
  Work launch(const char* op, std::vector<at::Tensor> keep, Enqueue&& fn, cudaEvent_t after = nullptr) {
    DeviceScope scope(device_);
    ++seq_;
    follow(stream_, current_stream(device_), after);
    auto timed = std::make_shared<TimedOp>();
    timed->start = TimedOp::record(stream_);
    enqueue(op, std::forward<Enqueue>(fn));
    timed->end = TimedOp::record(stream_);
    const std::shared_ptr<CUevent_st> done = shared_event(record_done());
    NcclWatchdog::instance().track(this, done, describe_op(op, seq_), timeout());
    timed_.add(timed, *timing_);
    return Work(std::make_unique<StreamWork>(done, device_, std::move(keep), std::move(timed)));
  }

  // Blocks the host until `done` fires, watching for NCCL errors and the timeout.
  void host_wait(const std::string& what, cudaEvent_t done) {
    const auto deadline = std::chrono::steady_clock::now() + timeout();
    for (;;) {
      const cudaError_t q = cudaEventQuery(done);
      if (q == cudaSuccess) return;
      if (q != cudaErrorNotReady) OV_CUDA_CHECK(q);
      ncclResult_t state = ncclSuccess;
      check(ncclCommGetAsyncError(comm_, &state), "ncclCommGetAsyncError");
      if (!accepted(state)) check(state, what.c_str());
      if (std::chrono::steady_clock::now() > deadline) {
        // No ncclCommAbort here: it can wait for the stuck device work; the process ends with the job.
        abort_job(what + " did not complete within " + seconds(timeout()) +
                  ": a peer rank died, hangs, or called a different collective. Aborting the job");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  int device_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  void* token_ = nullptr;  // one float for barrier()
  uint64_t seq_ = 0;
  TimedOps timed_;  // collectives whose timing is not resolved yet
};

std::unique_ptr<Communicator> make_nccl_communicator(MPI_Comm group, std::string name, int cuda_device,
                                                     std::chrono::milliseconds timeout) {
  int rank = 0, size = 1;
  OV_MPI_CHECK(MPI_Comm_rank(group, &rank));
  OV_MPI_CHECK(MPI_Comm_size(group, &size));
  return std::make_unique<NcclCommunicator>(group, std::move(name), rank, size, cuda_device, timeout);
}

}  // namespace ov::comm

#endif  // OPENVID_HAVE_NCCL
