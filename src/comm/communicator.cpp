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

void Communicator::check_usable(const char* op) const {
  if (!failure_.empty()) {
    throw Error(std::string(op) + " on group '" + name_ + "': the group has failed earlier: " + failure_);
  }
}

void Communicator::check_tensor(const char* op, const char* what, const at::Tensor& t) const {
  if (!t.defined()) throw Error(std::string(op) + " on group '" + name_ + "': " + what + " is undefined");
  if (!t.is_contiguous()) {
    throw Error(std::string(op) + " on group '" + name_ + "': " + what + " must be contiguous");
  }
}

void Communicator::check_same_dtype(const char* op, const at::Tensor& a, const at::Tensor& b) const {
  if (a.scalar_type() != b.scalar_type()) {
    throw Error(std::string(op) + " on group '" + name_ + "': input and output dtypes differ (" +
                std::string(c10::toString(a.scalar_type())) + " vs " + c10::toString(b.scalar_type()) + ")");
  }
}

void Communicator::check_numel(const char* op, const char* what, const at::Tensor& t, int64_t expected) const {
  if (t.numel() != expected) {
    std::ostringstream os;
    os << op << " on group '" << name_ << "' (" << size_ << " ranks): " << what << " has " << t.numel()
       << " elements, expected " << expected;
    throw Error(os.str());
  }
}

std::vector<int64_t> Communicator::displacements(const char* op, const std::vector<int64_t>& counts) const {
  if (static_cast<int>(counts.size()) != size_) {
    throw Error(std::string(op) + " on group '" + name_ + "': " + std::to_string(counts.size()) +
                " counts given for " + std::to_string(size_) + " ranks");
  }
  std::vector<int64_t> displs(counts.size(), 0);
  int64_t total = 0;
  for (size_t r = 0; r < counts.size(); ++r) {
    if (counts[r] < 0) throw Error(std::string(op) + " on group '" + name_ + "': negative count");
    displs[r] = total;
    total += counts[r];
  }
  return displs;
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

}  // namespace ov::comm
