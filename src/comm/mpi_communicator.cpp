#include "openvid/comm/mpi_communicator.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <chrono>
#include <limits>
#include <mutex>
#include <thread>

#include "openvid/runtime/mpi_session.h"

namespace ov::comm {
namespace {

// ---- 16-bit float reductions ---------------------------------------------------------------------
// MPI has no bfloat16/half types or arithmetic; these user operators combine element pairs in fp32
// and round back, which is what NCCL does for these types too.
template <typename T, ReduceOp Op>
void reduce16(void* in, void* inout, int* len, MPI_Datatype*) {
  const T* a = static_cast<const T*>(in);
  T* b = static_cast<T*>(inout);
  for (int i = 0; i < *len; ++i) {
    const float x = static_cast<float>(a[i]), y = static_cast<float>(b[i]);
    float r = 0.f;
    if constexpr (Op == ReduceOp::kMax) r = x > y ? x : y;
    else if constexpr (Op == ReduceOp::kMin) r = x < y ? x : y;
    else r = x + y;  // kSum and kAvg (divided afterwards)
    b[i] = static_cast<T>(r);
  }
}

struct Ops16 {
  MPI_Op bf16[3] = {MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL};  // sum, max, min
  MPI_Op f16[3] = {MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL};
};

const Ops16& ops16() {
  // Created once per process on first use; MPI frees user operators at MPI_Finalize.
  static Ops16 ops;
  static std::once_flag once;
  std::call_once(once, [] {
    OV_MPI_CHECK(MPI_Op_create(&reduce16<c10::BFloat16, ReduceOp::kSum>, 1, &ops.bf16[0]));
    OV_MPI_CHECK(MPI_Op_create(&reduce16<c10::BFloat16, ReduceOp::kMax>, 1, &ops.bf16[1]));
    OV_MPI_CHECK(MPI_Op_create(&reduce16<c10::BFloat16, ReduceOp::kMin>, 1, &ops.bf16[2]));
    OV_MPI_CHECK(MPI_Op_create(&reduce16<c10::Half, ReduceOp::kSum>, 1, &ops.f16[0]));
    OV_MPI_CHECK(MPI_Op_create(&reduce16<c10::Half, ReduceOp::kMax>, 1, &ops.f16[1]));
    OV_MPI_CHECK(MPI_Op_create(&reduce16<c10::Half, ReduceOp::kMin>, 1, &ops.f16[2]));
  });
  return ops;
}

MPI_Datatype mpi_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return MPI_FLOAT;
    case at::kDouble: return MPI_DOUBLE;
    case at::kInt: return MPI_INT32_T;
    case at::kLong: return MPI_INT64_T;
    case at::kShort: return MPI_INT16_T;
    case at::kChar: return MPI_INT8_T;
    case at::kByte: return MPI_UINT8_T;
    case at::kBool: return MPI_C_BOOL;
    case at::kBFloat16:
    case at::kHalf: return MPI_UINT16_T;  // moved as raw 16-bit words; reduced by ops16()
    default:
      throw Error(std::string("the MPI backend does not support dtype ") + c10::toString(t));
  }
}

MPI_Op mpi_op(ReduceOp op, at::ScalarType t) {
  const int idx = op == ReduceOp::kMax ? 1 : op == ReduceOp::kMin ? 2 : 0;
  if (t == at::kBFloat16) return ops16().bf16[idx];
  if (t == at::kHalf) return ops16().f16[idx];
  if (t == at::kBool) throw Error("reductions over bool tensors are not supported; use uint8");
  return op == ReduceOp::kMax ? MPI_MAX : op == ReduceOp::kMin ? MPI_MIN : MPI_SUM;
}

// MPI-3 counts are ints; a tensor bigger than that must be split by the caller (2^31 elements is
// 8 GiB of fp32 on a CPU rank, far past what the CPU backend is for).
int checked_count(int64_t n, const std::string& where) {
  if (n > std::numeric_limits<int>::max()) {
    throw Error(where + ": " + std::to_string(n) + " elements exceed the MPI count limit of 2^31-1");
  }
  return static_cast<int>(n);
}

}  // namespace

// A non-blocking MPI collective; wait() polls MPI_Test until done or the group's timeout, then
// finishes what MPI cannot do itself (the division of an average).
class MpiCommunicator::PendingRequest final : public Work::Impl {
 public:
  PendingRequest(std::string what, MPI_Request req, std::vector<at::Tensor> keep, at::Tensor average, int group_size,
                 std::chrono::milliseconds timeout, std::shared_ptr<Communicator::Timing> timing)
      : what_(std::move(what)),
        req_(req),
        keep_(std::move(keep)),
        average_(std::move(average)),
        group_size_(group_size),
        timeout_(timeout),
        timing_(std::move(timing)) {}

  void wait() override {
    // MPI progresses non-blocking collectives inside MPI_Test, which wait_or_abort polls.
    const auto t0 = std::chrono::steady_clock::now();
    wait_or_abort(req_, what_, std::chrono::duration<double>(timeout_).count());
    timing_->waited_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (average_.defined()) average_.div_(group_size_);
  }

 private:
  std::string what_;
  MPI_Request req_;
  std::vector<at::Tensor> keep_;
  at::Tensor average_;
  int group_size_;
  std::chrono::milliseconds timeout_;
  std::shared_ptr<Communicator::Timing> timing_;
};

namespace {
MPI_Comm duplicate(MPI_Comm group) {
  MPI_Comm dup = MPI_COMM_NULL;
  OV_MPI_CHECK(MPI_Comm_dup(group, &dup));
  OV_MPI_CHECK(MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN));
  return dup;
}
int rank_in(MPI_Comm c) {
  int r = 0;
  OV_MPI_CHECK(MPI_Comm_rank(c, &r));
  return r;
}
int size_of(MPI_Comm c) {
  int s = 1;
  OV_MPI_CHECK(MPI_Comm_size(c, &s));
  return s;
}
}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm group, std::string name, std::chrono::milliseconds timeout)
    : MpiCommunicator(duplicate(group), std::move(name), timeout, 0) {}

MpiCommunicator::MpiCommunicator(MPI_Comm dup, std::string name, std::chrono::milliseconds timeout, int)
    : Communicator(std::move(name), rank_in(dup), size_of(dup), timeout), comm_(dup) {}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);  // local: frees once traffic ends
}

void MpiCommunicator::finalize() {
  if (comm_ != MPI_COMM_NULL) OV_MPI_CHECK(MPI_Comm_free(&comm_));
  failure_ = "finalized";
}

void MpiCommunicator::check_device(const char* op, const at::Tensor& t) const {
  if (!t.device().is_cpu()) {
    throw Error(std::string(op) + " on group '" + name() + "': the MPI backend takes CPU tensors, got one on " +
                t.device().str() + " (use --backend nccl for CUDA tensors)");
  }
}

// Every collective ends here: numbered, started (non-blocking), and tracked with the tensors it uses.
// `average`: divide it by the group size on completion (MPI has no average).
template <typename Start>
Work MpiCommunicator::start(const char* op, std::vector<at::Tensor> keep, at::Tensor average, Start&& mpi_call) {
  if (average.defined() && !at::isFloatingType(average.scalar_type())) {
    throw Error(std::string(op) + " on group '" + name() + "': avg needs a floating-point tensor");
  }
  ++seq_;
  const std::string what = describe_op(op, seq_);
  MPI_Request req = MPI_REQUEST_NULL;
  const int rc = mpi_call(what, &req);
  if (rc != MPI_SUCCESS) detail::throw_mpi_failed(rc, op, __FILE__, __LINE__);
  return Work(std::make_unique<PendingRequest>(what, req, std::move(keep), std::move(average), size(), timeout(), timing_));
}

Work MpiCommunicator::all_reduce(const at::Tensor& t, ReduceOp op) {
  check_args("all_reduce", t);
  count(kAllReduce, t);
  return start("all_reduce", {t}, op == ReduceOp::kAvg ? t : at::Tensor(), [&](const std::string& what, MPI_Request* req) {
    return MPI_Iallreduce(MPI_IN_PLACE, t.data_ptr(), checked_count(t.numel(), what), mpi_type(t.scalar_type()),
                          mpi_op(op, t.scalar_type()), comm_, req);
  });
}

Work MpiCommunicator::all_gather(const at::Tensor& out, const at::Tensor& in) {
  check_args("all_gather", in, &out);
  check_numel("all_gather", "output", out, in.numel() * size());
  count(kAllGather, out);
  // MPI forbids overlapping send and receive buffers: an in-place gather says so with MPI_IN_PLACE.
  const void* send = is_own_chunk(out, in) ? MPI_IN_PLACE : in.data_ptr();
  return start("all_gather", {in, out}, {}, [&](const std::string& what, MPI_Request* req) {
    const MPI_Datatype type = mpi_type(in.scalar_type());
    const int n = checked_count(in.numel(), what);
    return MPI_Iallgather(send, n, type, out.data_ptr(), n, type, comm_, req);
  });
}

Work MpiCommunicator::reduce_scatter(const at::Tensor& out, const at::Tensor& in, ReduceOp op) {
  check_args("reduce_scatter", in, &out);
  check_numel("reduce_scatter", "input", in, out.numel() * size());
  count(kReduceScatter, in);
  return start("reduce_scatter", {in, out}, op == ReduceOp::kAvg ? out : at::Tensor(), [&](const std::string& what, MPI_Request* req) {
    return MPI_Ireduce_scatter_block(in.data_ptr(), out.data_ptr(), checked_count(out.numel(), what), mpi_type(in.scalar_type()),
                                     mpi_op(op, in.scalar_type()), comm_, req);
  });
}

Work MpiCommunicator::broadcast(const at::Tensor& t, int root) {
  check_args("broadcast", t);
  check_root("broadcast", root);
  count(kBroadcast, t);
  return start("broadcast", {t}, {}, [&](const std::string& what, MPI_Request* req) {
    return MPI_Ibcast(t.data_ptr(), checked_count(t.numel(), what), mpi_type(t.scalar_type()), root, comm_, req);
  });
}

void MpiCommunicator::barrier() {
  check_usable("barrier");
  start("barrier", {}, {}, [&](const std::string&, MPI_Request* req) { return MPI_Ibarrier(comm_, req); }).wait();
}

}  // namespace ov::comm
