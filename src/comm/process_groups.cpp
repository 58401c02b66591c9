#include "openvid/comm/process_groups.h"

#include "openvid/comm/emulated_communicator.h"
#include "openvid/comm/host_copy.h"
#include "openvid/comm/mpi_communicator.h"
#include "openvid/comm/nccl_communicator.h"
#include "openvid/runtime/error.h"

#include <algorithm>
#include <iomanip>
#include <sstream>

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

ProcessGroups ProcessGroups::emulate(const Universe& universe, Backend backend, std::chrono::milliseconds timeout,
                                     const Network& network, int gpus_per_node) {
  if (!universe.emulated()) throw Error("ProcessGroups::emulate needs an emulated universe (Universe::emulate)");
  const Mesh& mesh = universe.mesh();
  const int device = universe.device().kind == DeviceKind::kCuda ? universe.device().index : -1;
  using Peers = EmulatedLink::PeerChunks;
  const auto group = [&](const char* name, int ranks, int stride, Peers peers) {
    return make_emulated_communicator(name, ranks, backend, device, EmulatedLink{network, !group_within_node(ranks, stride, gpus_per_node), peers},
                                      timeout);
  };
  ProcessGroups g;
  g.backend_ = backend;
  g.world_ = group("world", mesh.world_size(), 1, Peers::kCopies);
  g.shard_ = group("shard", mesh.shard_size(), 1, Peers::kKept);  // the parameters' gathers: the peers' chunks stay the initial weights
  g.cp_ = group("cp", mesh.cp(), 1, Peers::kCopies);              // keys and values: copies of this rank's
  g.dp_ = group("dp", mesh.dp(), mesh.shard_size(), Peers::kCopies);
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
  if (universe.emulated()) {  // stand-ins: nothing is wired; their sizes must be the mesh's
    const std::pair<Communicator*, int> sizes[] = {{&groups.world(), mesh.world_size()}, {&groups.shard(), mesh.shard_size()},
                                                   {&groups.cp(), mesh.cp()}, {&groups.dp(), mesh.dp()}};
    for (const auto& [c, n] : sizes) OV_CHECK(c->size() == n, "emulated group '" + c->name() + "' has the wrong size");
    return;
  }
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

std::vector<std::pair<std::string, int64_t>> ProcessGroups::bytes_moved() const {
  return {{"world", world_->total_traffic().bytes},
          {"shard", shard_->total_traffic().bytes},
          {"cp", cp_->total_traffic().bytes},
          {"dp", dp_->total_traffic().bytes}};
}

std::vector<std::pair<std::string, Communicator::Timing>> ProcessGroups::timing() {
  return {{"world", world_->timing()}, {"shard", shard_->timing()}, {"cp", cp_->timing()}, {"dp", dp_->timing()}};
}

std::string ProcessGroups::traffic_line(int64_t steps) const {
  const auto size = [](double bytes) {
    std::ostringstream os;
    os << std::setprecision(3);
    if (bytes >= 1e9) os << bytes / 1e9 << " GB";
    else if (bytes >= 1e6) os << bytes / 1e6 << " MB";
    else if (bytes >= 1e3) os << bytes / 1e3 << " kB";
    else os << bytes << " B";
    return os.str();
  };
  const double n = static_cast<double>(std::max<int64_t>(steps, 1));
  std::string line;
  const std::pair<const char*, const Communicator*> groups[] = {{"world", world_.get()}, {"shard", shard_.get()}, {"cp", cp_.get()}, {"dp", dp_.get()}};
  for (const auto& [name, c] : groups) {
    if (c->total_traffic().bytes == 0) continue;
    std::string kinds;
    for (int k = 0; k < Communicator::kKinds; ++k) {
      const Communicator::Traffic& t = c->traffic(static_cast<Communicator::Kind>(k));
      if (t.bytes > 0) kinds += (kinds.empty() ? "" : ", ") + std::string(Communicator::kind_name(static_cast<Communicator::Kind>(k))) + " " + size(t.bytes / n);
    }
    line += (line.empty() ? "" : "; ") + std::string(name) + " " + size(c->total_traffic().bytes / n) + " (" + kinds + ")";
  }
  return line.empty() ? "none" : line;
}

}  // namespace ov::comm
