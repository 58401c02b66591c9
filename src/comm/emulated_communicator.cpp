#include "openvid/comm/emulated_communicator.h"

#include <ATen/ops/empty.h>

#include <algorithm>
#include <optional>
#include <thread>

#include "openvid/kernels/clock.h"
#include "openvid/runtime/error.h"

#ifdef OPENVID_TORCH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "timed_op.h"
#endif

namespace ov::comm {
namespace {

using Clock = std::chrono::steady_clock;

// A transfer "on the wire" of the CPU path: it ends at `end`; wait() sleeps until then.
class HostWork final : public Work::Impl {
 public:
  HostWork(Clock::time_point end, std::shared_ptr<Communicator::Timing> timing) : end_(end), timing_(std::move(timing)) {}
  void wait() override {
    const Clock::time_point now = Clock::now();
    if (now >= end_) return;
    std::this_thread::sleep_until(end_);
    timing_->waited_ms += std::chrono::duration<double, std::milli>(end_ - now).count();
  }
  std::optional<Clock::time_point> ends_at() const override { return end_; }

 private:
  Clock::time_point end_;
  std::shared_ptr<Communicator::Timing> timing_;
};

#ifdef OPENVID_TORCH_CUDA
// The GPU path's completion: the caller's stream (at wait() time) waits for the stand-in's end.
class DeviceWork final : public Work::Impl {
 public:
  DeviceWork(std::shared_ptr<TimedOp> op, int device, std::vector<at::Tensor> keep)
      : op_(std::move(op)), device_(device), keep_(std::move(keep)) {}
  void wait() override {
    const auto index = static_cast<c10::DeviceIndex>(device_);
    c10::cuda::CUDAGuard guard(index);
    const cudaStream_t caller = c10::cuda::getCurrentCUDAStream(index).stream();
    if (op_->mark == nullptr) op_->mark = TimedOp::record(caller);
    OV_CUDA_CHECK(cudaStreamWaitEvent(caller, op_->end, 0));
  }
  void* device_event() const override { return op_->end; }

 private:
  std::shared_ptr<TimedOp> op_;
  int device_;
  std::vector<at::Tensor> keep_;  // until the caller's stream is ordered after the stand-in
};
#endif

class EmulatedCommunicator final : public Communicator {
 public:
  EmulatedCommunicator(std::string name, int size, Backend backend, int cuda_device, EmulatedLink link, std::chrono::milliseconds timeout)
      : Communicator(std::move(name), 0, size, timeout), backend_(backend), device_(cuda_device), link_(link) {
    if (backend_ == Backend::kNccl) {
#ifdef OPENVID_TORCH_CUDA
      if (device_ < 0) throw Error("group '" + this->name() + "': an emulated NCCL group needs a CUDA device");
      if (!kernels::available()) {
        throw Error("--emulate_world on a GPU needs openvid's CUDA kernels (this build has none: configure with a CUDA toolkit)");
      }
      c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_));
      stream_ = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, static_cast<c10::DeviceIndex>(device_));
      stamp_ = at::empty({1}, at::TensorOptions().dtype(at::kLong).device(at::kCUDA, static_cast<c10::DeviceIndex>(device_)));
#else
      throw Error("group '" + this->name() + "': emulated collectives on a GPU need a CUDA build of LibTorch");
#endif
    }
  }

  Backend backend() const override { return backend_; }

  Work all_reduce(const at::Tensor& t, ReduceOp op) override { return start_all_reduce(t, op, Work()); }

  Work all_gather(const at::Tensor& out, const at::Tensor& in) override {
    check_args("all_gather", in, &out);
    check_numel("all_gather", "output", out, in.numel() * size());
    count(kAllGather, out);
    const bool keep = link_.peer_chunks == EmulatedLink::PeerChunks::kKept;
    return run(Collective::kAllGather, out, {in, out}, [out, in, keep, n = size(), own = is_own_chunk(out, in)] {
      const at::Tensor rows = out.view({n, in.numel()}), chunk = in.view({1, in.numel()});
      if (!own) rows.narrow(0, 0, 1).copy_(chunk);  // this rank's chunk is row 0
      if (!keep) rows.narrow(0, 1, n - 1).copy_(chunk.expand({n - 1, in.numel()}));
    });
  }

  Work reduce_scatter(const at::Tensor& out, const at::Tensor& in, ReduceOp op) override {
    check_args("reduce_scatter", in, &out);
    check_numel("reduce_scatter", "input", in, out.numel() * size());
    count(kReduceScatter, in);
    return run(Collective::kReduceScatter, in, {in, out}, [out, in, op, n = size()] {
      const at::Tensor mine = in.view({-1}).narrow(0, 0, out.numel()).view(out.sizes());  // rank 0's chunk
      if (op == ReduceOp::kSum) out.copy_(mine.mul(n));
      else out.copy_(mine);
    });
  }

  bool starts_after() const override { return true; }

  Work all_reduce_after(const Work& after, const at::Tensor& t, ReduceOp op) override {
    const bool gpu = backend_ == Backend::kNccl;
    if (gpu ? after.device_event() == nullptr : !after.ends_at()) {
      throw Error("all_reduce_after on emulated group '" + name() + "': the collective to follow is not one of an emulated group on " +
                  (gpu ? "this GPU" : "the CPU"));
    }
    return start_all_reduce(t, op, after);
  }

  Work broadcast(const at::Tensor& t, int root) override {
    check_args("broadcast", t);
    check_root("broadcast", root);
    count(kBroadcast, t);
    return run(Collective::kBroadcast, t, {t}, [] {});
  }

  void barrier() override { check_usable("barrier"); }

  Timing timing() override {
#ifdef OPENVID_TORCH_CUDA
    if (stream_) {
      c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_));
      ops_.resolve(*timing_);
    }
#endif
    return *timing_;
  }

 private:
  // An all-reduce, after `after` where it is pending: sums are the group's size times this rank's values.
  Work start_all_reduce(const at::Tensor& t, ReduceOp op, const Work& after) {
    check_args("all_reduce", t);
    count(kAllReduce, t);
    return run(
        Collective::kAllReduce, t, {t},
        [t, op, n = size()] {
          if (op == ReduceOp::kSum && t.scalar_type() != at::kBool) t.mul_(n);
        },
        after.device_event(), after.ends_at());
  }

  void check_device(const char* op, const at::Tensor& t) const override {
    const bool gpu = backend_ == Backend::kNccl;
    if (gpu ? (!t.is_cuda() || t.device().index() != device_) : !t.is_cpu()) {
      throw Error(std::string(op) + " on emulated group '" + name() + "': takes tensors on " +
                  (gpu ? "cuda:" + std::to_string(device_) : std::string("the CPU")) + ", got one on " + t.device().str());
    }
  }

  template <typename Fill>
  Work run(Collective kind, const at::Tensor& buffer, std::vector<at::Tensor> keep, Fill&& fill, void* after = nullptr,
           std::optional<Clock::time_point> after_end = std::nullopt) {
    if (size() < 2) return Work();
    const double seconds = collective_seconds(kind, static_cast<double>(buffer.nbytes()), size(), link_.across_nodes, link_.network);
#ifdef OPENVID_TORCH_CUDA
    if (backend_ == Backend::kNccl) {
      const auto index = static_cast<c10::DeviceIndex>(device_);
      c10::cuda::CUDAGuard guard(index);
      const cudaStream_t caller = c10::cuda::getCurrentCUDAStream(index).stream(), mine = stream_->stream();
      follow(mine, caller, static_cast<cudaEvent_t>(after));
      auto op = std::make_shared<TimedOp>();
      op->start = TimedOp::record(mine);
      kernels::stamp_time(stamp_.data_ptr<int64_t>(), mine);
      {
        c10::cuda::CUDAStreamGuard on(*stream_);
        fill();
      }
      kernels::spin_until(stamp_.data_ptr<int64_t>(), static_cast<int64_t>(seconds * 1e9), mine);
      op->end = TimedOp::record(mine);
      ops_.add(op, *timing_);
      return Work(std::make_unique<DeviceWork>(std::move(op), device_, std::move(keep)));
    }
#endif
    static_cast<void>(keep);  // the CPU path's fill is done before this returns
    static_cast<void>(after);
    fill();  // (what it reads was filled when the collective it follows started)
    const auto length = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
    // After the group's previous transfer, and after the collective it follows, if any.
    const Clock::time_point start = std::max({Clock::now(), busy_until_, after_end.value_or(Clock::time_point{})});
    busy_until_ = start + length;
    timing_->busy_ms += seconds * 1e3;
    return Work(std::make_unique<HostWork>(busy_until_, timing_));
  }

  Backend backend_;
  int device_;
  EmulatedLink link_;
  Clock::time_point busy_until_{};
#ifdef OPENVID_TORCH_CUDA
  std::optional<c10::cuda::CUDAStream> stream_;  // made only for GPU groups (a CPU group never touches CUDA)
  at::Tensor stamp_;  // the GPU time at which the stream reached the current collective (one: the stream runs them in turn)
  TimedOps ops_;  // collectives whose timing is not resolved yet
#endif
};

}  // namespace

std::unique_ptr<Communicator> make_emulated_communicator(std::string name, int size, Backend backend, int cuda_device,
                                                         EmulatedLink link, std::chrono::milliseconds timeout) {
  return std::make_unique<EmulatedCommunicator>(std::move(name), size, backend, cuda_device, link, timeout);
}

}  // namespace ov::comm
