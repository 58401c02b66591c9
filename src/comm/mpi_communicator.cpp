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

std::vector<int> int_counts(const std::vector<int64_t>& v, const std::string& where) {
  std::vector<int> out;
  out.reserve(v.size());
  for (int64_t x : v) out.push_back(checked_count(x, where));
  return out;
}

}  // namespace

// A non-blocking MPI collective; wait() polls MPI_Test until done or the group's timeout, then
// finishes what MPI cannot do itself (the division of an average).
class MpiCommunicator::PendingRequest final : public Work::Impl {
 public:
  PendingRequest(std::string what, MPI_Request req, std::vector<at::Tensor> keep, at::Tensor average,
                 std::vector<std::vector<int>> arrays, int group_size, std::chrono::milliseconds timeout)
      : what_(std::move(what)),
        req_(req),
        keep_(std::move(keep)),
        arrays_(std::move(arrays)),
        average_(std::move(average)),
        group_size_(group_size),
        timeout_(timeout) {}

  void wait() override {
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    int done = 0;
    // Spin briefly (small collectives finish in microseconds), then back off so a slow peer does not
    // burn a core; MPI progresses non-blocking collectives inside MPI_Test.
    for (int spins = 0;; ++spins) {
      OV_MPI_CHECK(MPI_Test(&req_, &done, MPI_STATUS_IGNORE));
      if (done) break;
      if (spins > 2000) {
        if (std::chrono::steady_clock::now() > deadline) {
          abort_job(what_ + " did not complete within " +
                    std::to_string(std::chrono::duration_cast<std::chrono::seconds>(timeout_).count()) +
                    " s: a peer rank died, hangs, or called a different collective. Aborting the job "
                    "(raise --collective_timeout if steps are legitimately this slow)");
        }
        std::this_thread::sleep_for(std::chrono::microseconds(spins > 20000 ? 1000 : 50));
      }
    }
    if (average_.defined()) average_.div_(group_size_);
  }

 private:
  std::string what_;
  MPI_Request req_;
  std::vector<at::Tensor> keep_;
  std::vector<std::vector<int>> arrays_;  // counts/displacements MPI reads until completion
  at::Tensor average_;
  int group_size_;
  std::chrono::milliseconds timeout_;
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

Work MpiCommunicator::track(const char* op, MPI_Request request, std::vector<at::Tensor> keep_alive,
                            at::Tensor average_over_size, std::vector<std::vector<int>> arrays) {
  return Work(std::make_unique<PendingRequest>(describe_op(op, seq_), request, std::move(keep_alive),
                                               std::move(average_over_size), std::move(arrays), size(),
                                               timeout()));
}

namespace {
void check_cpu(const Communicator& c, const char* op, const at::Tensor& t) {
  if (!t.device().is_cpu()) {
    throw Error(std::string(op) + " on group '" + c.name() + "': the MPI backend takes CPU tensors, got one on " +
                t.device().str() + " (use --backend nccl for CUDA tensors)");
  }
}
void check_avg(const Communicator& c, const char* op, ReduceOp rop, const at::Tensor& t) {
  if (rop == ReduceOp::kAvg && !at::isFloatingType(t.scalar_type())) {
    throw Error(std::string(op) + " on group '" + c.name() + "': avg needs a floating-point tensor");
  }
}
}  // namespace

Work MpiCommunicator::all_reduce(const at::Tensor& t, ReduceOp op) {
  const char* name = "all_reduce";
  check_usable(name);
  check_tensor(name, "tensor", t);
  check_cpu(*this, name, t);
  check_avg(*this, name, op, t);
  ++seq_;
  MPI_Request req = MPI_REQUEST_NULL;
  OV_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, t.data_ptr(), checked_count(t.numel(), describe_op(name, seq_)),
                              mpi_type(t.scalar_type()), mpi_op(op, t.scalar_type()), comm_, &req));
  return track(name, req, {t}, op == ReduceOp::kAvg ? t : at::Tensor());
}

Work MpiCommunicator::all_gather(const at::Tensor& out, const at::Tensor& in) {
  const char* name = "all_gather";
  check_usable(name);
  check_tensor(name, "input", in);
  check_tensor(name, "output", out);
  check_cpu(*this, name, in);
  check_cpu(*this, name, out);
  check_same_dtype(name, in, out);
  check_numel(name, "output", out, in.numel() * size());
  ++seq_;
  const MPI_Datatype type = mpi_type(in.scalar_type());
  const int n = checked_count(in.numel(), describe_op(name, seq_));
  MPI_Request req = MPI_REQUEST_NULL;
  OV_MPI_CHECK(MPI_Iallgather(in.data_ptr(), n, type, out.data_ptr(), n, type, comm_, &req));
  return track(name, req, {in, out});
}

Work MpiCommunicator::all_gather_v(const at::Tensor& out, const at::Tensor& in,
                                   const std::vector<int64_t>& counts) {
  const char* name = "all_gather_v";
  check_usable(name);
  check_tensor(name, "input", in);
  check_tensor(name, "output", out);
  check_cpu(*this, name, in);
  check_cpu(*this, name, out);
  check_same_dtype(name, in, out);
  const std::vector<int64_t> displs = displacements(name, counts);
  check_numel(name, "input", in, counts[static_cast<size_t>(rank())]);
  check_numel(name, "output", out, displs.back() + counts.back());
  ++seq_;
  const std::string where = describe_op(name, seq_);
  const std::vector<int> c = int_counts(counts, where), d = int_counts(displs, where);
  const MPI_Datatype type = mpi_type(in.scalar_type());
  MPI_Request req = MPI_REQUEST_NULL;
  OV_MPI_CHECK(MPI_Iallgatherv(in.data_ptr(), c[static_cast<size_t>(rank())], type, out.data_ptr(), c.data(),
                               d.data(), type, comm_, &req));
  // MPI may read the count arrays until the operation completes: the request owns them.
  return track(name, req, {in, out}, {}, {c, d});
}

Work MpiCommunicator::reduce_scatter(const at::Tensor& out, const at::Tensor& in, ReduceOp op) {
  const char* name = "reduce_scatter";
  check_usable(name);
  check_tensor(name, "input", in);
  check_tensor(name, "output", out);
  check_cpu(*this, name, in);
  check_cpu(*this, name, out);
  check_same_dtype(name, in, out);
  check_avg(*this, name, op, out);
  check_numel(name, "input", in, out.numel() * size());
  ++seq_;
  MPI_Request req = MPI_REQUEST_NULL;
  OV_MPI_CHECK(MPI_Ireduce_scatter_block(in.data_ptr(), out.data_ptr(),
                                         checked_count(out.numel(), describe_op(name, seq_)),
                                         mpi_type(in.scalar_type()), mpi_op(op, in.scalar_type()), comm_, &req));
  return track(name, req, {in, out}, op == ReduceOp::kAvg ? out : at::Tensor());
}

Work MpiCommunicator::reduce_scatter_v(const at::Tensor& out, const at::Tensor& in,
                                       const std::vector<int64_t>& counts, ReduceOp op) {
  const char* name = "reduce_scatter_v";
  check_usable(name);
  check_tensor(name, "input", in);
  check_tensor(name, "output", out);
  check_cpu(*this, name, in);
  check_cpu(*this, name, out);
  check_same_dtype(name, in, out);
  check_avg(*this, name, op, out);
  const std::vector<int64_t> displs = displacements(name, counts);
  check_numel(name, "input", in, displs.back() + counts.back());
  check_numel(name, "output", out, counts[static_cast<size_t>(rank())]);
  ++seq_;
  std::vector<int> c = int_counts(counts, describe_op(name, seq_));
  MPI_Request req = MPI_REQUEST_NULL;
  OV_MPI_CHECK(MPI_Ireduce_scatter(in.data_ptr(), out.data_ptr(), c.data(), mpi_type(in.scalar_type()),
                                   mpi_op(op, in.scalar_type()), comm_, &req));
  return track(name, req, {in, out}, op == ReduceOp::kAvg ? out : at::Tensor(), {std::move(c)});
}

Work MpiCommunicator::broadcast(const at::Tensor& t, int root) {
  const char* name = "broadcast";
  check_usable(name);
  check_tensor(name, "tensor", t);
  check_cpu(*this, name, t);
  check_root(name, root);
  ++seq_;
  MPI_Request req = MPI_REQUEST_NULL;
  OV_MPI_CHECK(MPI_Ibcast(t.data_ptr(), checked_count(t.numel(), describe_op(name, seq_)),
                          mpi_type(t.scalar_type()), root, comm_, &req));
  return track(name, req, {t});
}

void MpiCommunicator::barrier() {
  const char* name = "barrier";
  check_usable(name);
  ++seq_;
  MPI_Request req = MPI_REQUEST_NULL;
  OV_MPI_CHECK(MPI_Ibarrier(comm_, &req));
  track(name, req, {}).wait();
}

}  // namespace ov::comm
