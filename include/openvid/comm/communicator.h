#pragma once
// One interface for the collectives the trainer needs, over tensors, with two backends:
// MPI (CPU tensors; tests and CI) and NCCL (CUDA tensors; the GPU build). The training code is written
// against this interface only and never learns which backend runs it.
#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "openvid/comm/backend.h"

namespace ov::comm {

enum class ReduceOp { kSum, kAvg, kMax, kMin };

const char* to_string(ReduceOp op);

// A collective in flight. wait() completes it from the caller's point of view:
//  * MPI:  blocks the host until the transfer is done (bounded by the communicator's timeout; past it
//          the job is aborted with a message naming the collective and the group);
//  * NCCL: makes the caller's current CUDA stream wait for the transfer; the host does not block.
// The tensors given to the collective are kept alive until then. A Work dropped without wait() is
// waited for in its destructor, since its buffers must outlive the transfer.
class Work {
 public:
  class Impl {
   public:
    virtual ~Impl() = default;
    virtual void wait() = 0;
    // The CUDA event (a cudaEvent_t) that fires once the transfer is done, for another group's collective to
    // start after it on the device (Communicator::all_reduce_after); null where there is none (MPI).
    virtual void* device_event() const { return nullptr; }
    // When the transfer ends on the host's clock, where that is known when it starts (the CPU stand-ins of an
    // emulated rank, comm/emulated_communicator.h), for the same purpose; empty elsewhere.
    virtual std::optional<std::chrono::steady_clock::time_point> ends_at() const { return std::nullopt; }
  };

  Work() = default;
  explicit Work(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
  Work(Work&&) noexcept = default;
  Work& operator=(Work&& other) noexcept;
  Work(const Work&) = delete;
  Work& operator=(const Work&) = delete;
  ~Work();

  void wait();
  bool pending() const { return impl_ != nullptr; }
  void* device_event() const { return impl_ ? impl_->device_event() : nullptr; }
  std::optional<std::chrono::steady_clock::time_point> ends_at() const { return impl_ ? impl_->ends_at() : std::nullopt; }

 private:
  std::unique_ptr<Impl> impl_;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  const std::string& name() const { return name_; }
  int rank() const { return rank_; }
  int size() const { return size_; }
  std::chrono::milliseconds timeout() const { return timeout_; }
  virtual Backend backend() const = 0;

  // ---- Collectives. Every rank of this group calls each one, in the same order, with tensors of the
  // same dtype and the sizes stated. Tensors are contiguous and live where the backend works (MPI: CPU,
  // NCCL: this rank's CUDA device). Sizes are in elements; "flat" means the tensors are treated as 1-D.

  // In place: t = op over ranks of t.
  [[nodiscard]] virtual Work all_reduce(const at::Tensor& t, ReduceOp op) = 0;
  // out (flat) = concatenation over ranks of in; out.numel() == size() * in.numel(). In place when `in`
  // is this rank's own chunk of `out` (out.narrow(0, rank() * n, n)): nothing is copied for it.
  [[nodiscard]] virtual Work all_gather(const at::Tensor& out, const at::Tensor& in) = 0;
  // out = op over ranks of chunk rank() of in (flat); in.numel() == size() * out.numel().
  [[nodiscard]] virtual Work reduce_scatter(const at::Tensor& out, const at::Tensor& in, ReduceOp op) = 0;
  // In place: t = root's t.
  [[nodiscard]] virtual Work broadcast(const at::Tensor& t, int root) = 0;
  // all_reduce, started once both the caller's work so far and `after` (a pending collective of another group
  // on this device, which stays to be waited for) are done, without the caller waiting for `after`: ordered on
  // the device (NCCL, the GPU stand-ins) or on the stand-ins' clock (the CPU stand-ins), so only where
  // starts_after(); the MPI backend cannot start a transfer on a condition, and throws.
  virtual bool starts_after() const { return false; }
  [[nodiscard]] virtual Work all_reduce_after(const Work& after, const at::Tensor& t, ReduceOp op);
  // Returns once every rank of the group has entered it; blocks the host (bounded by the timeout).
  virtual void barrier() = 0;

  // Collective over the group: orderly shutdown (NCCL: ncclCommFinalize + destroy). Optional: the
  // destructor releases without blocking, which is also what an error path relies on.
  virtual void finalize() {}
  // Local: marks the group failed with `reason` and tears it down without waiting for peers (NCCL:
  // ncclCommAbort). Later calls throw ov::Error with the stored reason.
  virtual void abort(const std::string& reason) { failure_ = reason; }
  const std::string& failure() const { return failure_; }

  // What this rank's collectives on the group have moved since it was made: calls and bytes of each kind,
  // a collective's bytes being its buffer (all_reduce and broadcast: the tensor; all_gather: the gathered
  // output; reduce_scatter: the scattered input), counted when it starts. A group of one rank moves
  // nothing and counts nothing. Local; callers take differences (e.g. per step).
  struct Traffic {
    int64_t calls = 0, bytes = 0;
    Traffic& operator+=(const Traffic& o) {
      calls += o.calls;
      bytes += o.bytes;
      return *this;
    }
  };
  enum Kind { kAllReduce, kAllGather, kReduceScatter, kBroadcast, kKinds };
  static const char* kind_name(Kind k);
  const Traffic& traffic(Kind k) const { return traffic_[k]; }
  Traffic total_traffic() const;

  // How long this rank's collectives on the group took, as far as resolved (local; callers take
  // differences): `waited_ms`, how long the caller waited for them in wait(), the exposed communication
  // (MPI: the host blocked there; NCCL: the caller's stream stalled there until the transfer ended, from
  // events recorded at wait() and at the transfer's end); `busy_ms`, how long they ran (NCCL: events around
  // each on the group's stream; MPI: not measured, 0). NCCL resolves a collective once its events have
  // fired, without blocking: after a host synchronisation that follows the waits, all of them.
  struct Timing {
    double waited_ms = 0, busy_ms = 0;
  };
  virtual Timing timing() { return *timing_; }

 protected:
  Communicator(std::string name, int rank, int size, std::chrono::milliseconds timeout)
      : name_(std::move(name)), rank_(rank), size_(size), timeout_(timeout) {}

  // Argument checks shared by the backends; they throw ov::Error naming the collective and the group.
  // check_args: the group is usable, the tensors are defined, contiguous and on this backend's device
  // (check_device), and `out` (when given) has `in`'s dtype.
  void check_args(const char* op, const at::Tensor& in, const at::Tensor* out = nullptr) const;
  virtual void check_device(const char* op, const at::Tensor& t) const = 0;
  void check_usable(const char* op) const;
  void check_numel(const char* op, const char* what, const at::Tensor& t, int64_t expected) const;
  void check_root(const char* op, int root) const;
  // True when `in` is this rank's chunk of `out` (an in-place all_gather).
  bool is_own_chunk(const at::Tensor& out, const at::Tensor& in) const;
  // "all_reduce #12 on group 'dp' (rank 1 of 2)"
  std::string describe_op(const char* op, uint64_t seq) const;
  // Adds one collective of `kind` over `buffer` to traffic() (the backends call it once its arguments pass).
  void count(Kind kind, const at::Tensor& buffer);

  std::string failure_;
  // Shared with the Work of the MPI backend, which adds its host wait (a Work may outlive its group).
  std::shared_ptr<Timing> timing_ = std::make_shared<Timing>();

 private:
  std::string name_;
  int rank_;
  int size_;
  std::chrono::milliseconds timeout_;
  Traffic traffic_[kKinds];
};

}  // namespace ov::comm
