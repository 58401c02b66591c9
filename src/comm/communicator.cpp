#include "openvid/comm/communicator.h"

#include <sstream>

#include "openvid/runtime/error.h"

namespace ov::comm {

const char* to_string(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kAvg: return "avg";
    case ReduceOp::kMax: return "max";
    case ReduceOp::kMin: return "min";
  }
  return "?";
}

const char* to_string(Backend b) { return b == Backend::kMpi ? "mpi" : "nccl"; }

Work& Work::operator=(Work&& other) noexcept {
  if (this != &other) {
    if (impl_) impl_->wait();
    impl_ = std::move(other.impl_);
  }
  return *this;
}

Work::~Work() {
  if (impl_) impl_->wait();
}

void Work::wait() {
  if (!impl_) return;
  std::unique_ptr<Impl> impl = std::move(impl_);
  impl->wait();
}

Work Communicator::all_reduce_after(const Work&, const at::Tensor&, ReduceOp) {
  throw Error("all_reduce_after on group '" + name_ + "': this backend cannot order a collective after another group's on the device");
}

void Communicator::check_usable(const char* op) const {
  if (!failure_.empty()) {
    throw Error(std::string(op) + " on group '" + name_ + "': the group has failed earlier: " + failure_);
  }
}

void Communicator::check_args(const char* op, const at::Tensor& in, const at::Tensor* out) const {
  check_usable(op);
  for (const at::Tensor* t : {&in, out}) {
    if (t == nullptr) continue;
    const char* what = t == &in ? (out != nullptr ? "input" : "tensor") : "output";
    if (!t->defined()) throw Error(std::string(op) + " on group '" + name_ + "': " + what + " is undefined");
    if (!t->is_contiguous()) throw Error(std::string(op) + " on group '" + name_ + "': " + what + " must be contiguous");
    check_device(op, *t);
  }
  if (out != nullptr && in.scalar_type() != out->scalar_type()) {
    throw Error(std::string(op) + " on group '" + name_ + "': input and output dtypes differ (" +
                std::string(c10::toString(in.scalar_type())) + " vs " + c10::toString(out->scalar_type()) + ")");
  }
}

bool Communicator::is_own_chunk(const at::Tensor& out, const at::Tensor& in) const {
  const auto* base = static_cast<const char*>(out.data_ptr());
  return in.data_ptr() == base + static_cast<int64_t>(rank_) * in.numel() * static_cast<int64_t>(in.element_size());
}

void Communicator::check_numel(const char* op, const char* what, const at::Tensor& t, int64_t expected) const {
  if (t.numel() != expected) {
    std::ostringstream os;
    os << op << " on group '" << name_ << "' (" << size_ << " ranks): " << what << " has " << t.numel()
       << " elements, expected " << expected;
    throw Error(os.str());
  }
}

void Communicator::check_root(const char* op, int root) const {
  if (root < 0 || root >= size_) {
    throw Error(std::string(op) + " on group '" + name_ + "': root " + std::to_string(root) +
                " is not a rank of this group of " + std::to_string(size_));
  }
}

std::string Communicator::describe_op(const char* op, uint64_t seq) const {
  std::ostringstream os;
  os << op << " #" << seq << " on group '" << name_ << "' (rank " << rank_ << " of " << size_ << ")";
  return os.str();
}

const char* Communicator::kind_name(Kind k) {
  switch (k) {
    case kAllReduce: return "all_reduce";
    case kAllGather: return "all_gather";
    case kReduceScatter: return "reduce_scatter";
    case kBroadcast: return "broadcast";
    case kKinds: break;
  }
  return "?";
}

Communicator::Traffic Communicator::total_traffic() const {
  Traffic t;
  for (const Traffic& k : traffic_) t += k;
  return t;
}

void Communicator::count(Kind kind, const at::Tensor& buffer) {
  if (size_ < 2) return;
  ++traffic_[kind].calls;
  traffic_[kind].bytes += static_cast<int64_t>(buffer.nbytes());
}

}  // namespace ov::comm
