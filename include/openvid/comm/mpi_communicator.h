#pragma once
// MPI backend of the collectives: CPU tensors, non-blocking MPI collectives (MPI_I*), waits polled
// against the group's timeout. 16-bit float reductions use MPI operators defined here (MPI has no
// bfloat16/half arithmetic) that accumulate each pair in fp32, as NCCL does.
#include <mpi.h>

#include "openvid/comm/communicator.h"

namespace ov::comm {

class MpiCommunicator final : public Communicator {
 public:
  // Collective over `group`: duplicates it, so this communicator's traffic never matches anybody
  // else's messages on the same ranks.
  MpiCommunicator(MPI_Comm group, std::string name, std::chrono::milliseconds timeout);
  ~MpiCommunicator() override;

  Backend backend() const override { return Backend::kMpi; }
  Work all_reduce(const at::Tensor& t, ReduceOp op) override;
  Work all_gather(const at::Tensor& out, const at::Tensor& in) override;
  Work reduce_scatter(const at::Tensor& out, const at::Tensor& in, ReduceOp op) override;
  Work broadcast(const at::Tensor& t, int root) override;
  void barrier() override;
  void finalize() override;

  MPI_Comm mpi_comm() const { return comm_; }

 private:
  class PendingRequest;
  MpiCommunicator(MPI_Comm dup, std::string name, std::chrono::milliseconds timeout, int);
  void check_device(const char* op, const at::Tensor& t) const override;
  template <typename Start>
  Work start(const char* op, std::vector<at::Tensor> keep, at::Tensor average, Start&& mpi_call);

  MPI_Comm comm_ = MPI_COMM_NULL;
  uint64_t seq_ = 0;
};

}  // namespace ov::comm
