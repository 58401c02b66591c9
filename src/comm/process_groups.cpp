#include "openvid/comm/process_groups.h"

#include "openvid/comm/host_copy.h"
#include "openvid/comm/mpi_communicator.h"
#include "openvid/comm/nccl_communicator.h"
#include "openvid/runtime/error.h"

namespace ov::comm {

Backend resolve_backend(BackendRequest requested, const DeviceChoice& device) {
  const bool on_gpu = device.kind == DeviceKind::kCuda;
  switch (requested) {
    case BackendRequest::kAuto: return on_gpu && nccl_compiled() ? Backend::kNccl : Backend::kMpi;
    case BackendRequest::kMpi: return Backend::kMpi;
    case BackendRequest::kNccl: break;
  }
  if (!nccl_compiled()) {
    throw InputError("--backend nccl: this build has no NCCL backend (rebuild with a CUDA LibTorch and "
                     "NCCL), or use --backend mpi");
  }
  if (!on_gpu) throw InputError("--backend nccl needs a CUDA device, but this rank runs on the CPU");
  return Backend::kNccl;
}

namespace {
std::unique_ptr<Communicator> make(Backend backend, MPI_Comm group, const char* name, const Universe& u,
                                   std::chrono::milliseconds timeout) {
  if (backend == Backend::kNccl) return make_nccl_communicator(group, name, u.device().index, timeout);
  return std::make_unique<MpiCommunicator>(group, name, timeout);
}
}  // namespace

ProcessGroups ProcessGroups::create(const Universe& universe, Backend backend,
                                    std::chrono::milliseconds timeout) {
  ProcessGroups g;
  g.backend_ = backend;
  g.world_ = make(backend, universe.world(), "world", universe, timeout);
  g.shard_ = make(backend, universe.shard(), "shard", universe, timeout);
  g.cp_ = make(backend, universe.cp(), "cp", universe, timeout);
  g.dp_ = make(backend, universe.dp(), "dp", universe, timeout);
  return g;
}

void ProcessGroups::finalize() {
  for (auto* c : {&dp_, &cp_, &shard_, &world_}) {
    if (*c) (*c)->finalize();
  }
}

}  // namespace ov::comm

#include <ATen/ops/full.h>

namespace ov::comm {

void verify_groups(ProcessGroups& groups, const Universe& universe) {
  const Mesh& mesh = universe.mesh();
  const int me = universe.rank();
  const at::Device device = universe.device().kind == DeviceKind::kCuda
                                ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(universe.device().index))
                                : at::Device(at::kCPU);
  auto expect = [](const std::vector<int>& ranks) {
    int64_t s = 0;
    for (int r : ranks) s += r;
    return s;
  };
  std::vector<int> all(static_cast<size_t>(mesh.world_size()));
  for (int r = 0; r < mesh.world_size(); ++r) all[static_cast<size_t>(r)] = r;
  const struct {
    Communicator& comm;
    int64_t expected;
    int size;
  } checks[] = {
      {groups.world(), expect(all), mesh.world_size()},
      {groups.shard(), expect(mesh.shard_group(me)), mesh.shard_size()},
      {groups.cp(), expect(mesh.cp_group(me)), mesh.cp()},
      {groups.dp(), expect(mesh.dp_group(me)), mesh.dp()},
  };
  for (const auto& c : checks) {
    at::Tensor t = at::full({1}, static_cast<int64_t>(me), at::TensorOptions().dtype(at::kLong).device(device));
    c.comm.all_reduce(t, ReduceOp::kSum).wait();
    const int64_t got = to_host(t).item<int64_t>();
    if (got != c.expected || c.comm.size() != c.size) {
      throw Error("group '" + c.comm.name() + "' is mis-wired on world rank " + std::to_string(me) + ": size " +
                  std::to_string(c.comm.size()) + " (expected " + std::to_string(c.size) + "), rank sum " +
                  std::to_string(got) + " (expected " + std::to_string(c.expected) + ")");
    }
  }
}

}  // namespace ov::comm
