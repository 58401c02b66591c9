#include "openvid/runtime/universe.h"

#include <ATen/Context.h>

#include <optional>
#include <sstream>
#include <utility>

#include "openvid/runtime/error.h"
#include "openvid/runtime/mpi_session.h"

namespace ov {

namespace {

std::string join(const std::vector<int>& v) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < v.size(); ++i) os << (i ? "," : "") << v[i];
  os << "]";
  return os.str();
}

MPI_Comm split(MPI_Comm parent, int color, int key) {
  MPI_Comm out = MPI_COMM_NULL;
  OV_MPI_CHECK(MPI_Comm_split(parent, color, key, &out));
  OV_MPI_CHECK(MPI_Comm_set_errhandler(out, MPI_ERRORS_RETURN));
  return out;
}

}  // namespace

DeviceChoice choose_device(MPI_Comm world, MPI_Comm node, DeviceRequest request, GpuSharing sharing) {
  int rank = 0, local_rank = 0, local_size = 1;
  OV_MPI_CHECK(MPI_Comm_rank(world, &rank));
  OV_MPI_CHECK(MPI_Comm_rank(node, &local_rank));
  OV_MPI_CHECK(MPI_Comm_size(node, &local_size));
  const std::string host = host_name();
  const int visible = request == DeviceRequest::kCpu ? 0 : visible_gpus();
  std::string error;
  if (request == DeviceRequest::kCuda && visible == 0) {
    error = "--device cuda was asked for, but " +
            std::string(at::hasCUDA() ? "no CUDA device is visible on host " + host : "this build of LibTorch has no CUDA support") +
            "; use --device cpu or auto";
  }
  DeviceChoice device;
  if (visible > 0) device = DeviceChoice{DeviceKind::kCuda, gpu_for_rank(visible, local_rank, local_size)};
  // Every rank of the node reports (those on the CPU with no GPU), so that the collective matches.
  const std::string mine = device.kind == DeviceKind::kCuda ? std::to_string(device.index) + "\t" + gpu_uuid(device.index) : "";
  const std::vector<std::string> ranks = gather_strings(node, std::to_string(rank) + "\t" + mine);
  if (local_rank == 0 && error.empty() && sharing == GpuSharing::kRefuse) {
    std::vector<RankGpu> gpus;
    for (size_t i = 0; i < ranks.size(); ++i) {
      const size_t a = ranks[i].find('\t'), b = ranks[i].find('\t', a + 1);
      if (b == std::string::npos) continue;  // a rank on the CPU
      gpus.push_back(RankGpu{std::stoi(ranks[i].substr(0, a)), static_cast<int>(i), std::stoi(ranks[i].substr(a + 1, b - a - 1)),
                             ranks[i].substr(b + 1)});
    }
    error = gpu_sharing_error(host, gpus);
  }
  agree_on_errors(world, error);
  // Current on this thread before anything touches CUDA: LibTorch's current stream, openvid's kernels and
  // every allocation without a device guard then go to this rank's GPU, and no rank opens a context on
  // another's.
  if (device.kind == DeviceKind::kCuda) make_current_gpu(device.index);
  return device;
}

DeviceChoice choose_device(MPI_Comm world, DeviceRequest request, GpuSharing sharing) {
  int rank = 0;
  OV_MPI_CHECK(MPI_Comm_rank(world, &rank));
  MPI_Comm node = MPI_COMM_NULL;
  OV_MPI_CHECK(MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node));
  const DeviceChoice device = choose_device(world, node, request, sharing);
  MPI_Comm_free(&node);
  return device;
}

Universe Universe::create(MPI_Comm world, int fs, int cp, DeviceRequest request) {
  int rank = 0, size = 1;
  OV_MPI_CHECK(MPI_Comm_rank(world, &rank));
  OV_MPI_CHECK(MPI_Comm_size(world, &size));
  // The verdict is the same on every rank; agreeing on it keeps the exit clean and the message single.
  std::optional<Mesh> mesh;
  all_ranks_check(world, [&] { mesh = Mesh::make(size, fs, cp); });
  return build(world, *mesh, rank, request);
}

Universe Universe::emulate(MPI_Comm world, int world_size, int fs, int cp, DeviceRequest request) {
  int size = 1;
  OV_MPI_CHECK(MPI_Comm_size(world, &size));
  std::optional<Mesh> mesh;
  all_ranks_check(world, [&] {
    if (size != 1) {
      throw InputError("--emulate_world " + std::to_string(world_size) + " makes one process play rank 0 of that job, but " +
                       std::to_string(size) + " were launched: launch one (mpirun -np 1, or no mpirun)");
    }
    if (fs >= 1 && cp >= 1 && world_size % (fs * cp) != 0) {
      throw InputError("--emulate_world " + std::to_string(world_size) + " is not divisible by fs*cp = " + std::to_string(fs) + "*" +
                       std::to_string(cp) + " = " + std::to_string(fs * cp) + ": emulate a multiple of " + std::to_string(fs * cp) +
                       " ranks, or choose --fs and --cp whose product divides " + std::to_string(world_size));
    }
    mesh = Mesh::make(world_size, fs, cp);
  });
  Universe u = build(world, *mesh, 0, request);
  u.emulated_ = true;
  return u;
}

Universe Universe::build(MPI_Comm world, const Mesh& mesh, int rank, DeviceRequest request) {
  Universe u(world, mesh);
  u.rank_ = rank;
  u.host_ = host_name();

  // Node-local rank: ranks that can share memory are on one node.
  OV_MPI_CHECK(MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &u.node_));
  OV_MPI_CHECK(MPI_Comm_set_errhandler(u.node_, MPI_ERRORS_RETURN));
  OV_MPI_CHECK(MPI_Comm_rank(u.node_, &u.local_rank_));
  OV_MPI_CHECK(MPI_Comm_size(u.node_, &u.local_size_));
  u.num_nodes_ = agree_int(world, u.local_rank_ == 0 ? 1 : 0, MPI_SUM, "counting the nodes (Universe::create)");

  u.device_ = choose_device(world, u.node_, request);

  // (Emulated: the launched world is this process alone, and so is each group.)
  u.shard_ = split(world, u.mesh_.shard_color(rank), rank);
  u.cp_ = split(world, u.mesh_.cp_color(rank), rank);
  u.dp_ = split(world, u.mesh_.dp_color(rank), rank);
  return u;
}

Universe::Universe(Universe&& other) noexcept
    : world_(other.world_),
      mesh_(other.mesh_),
      rank_(other.rank_),
      host_(std::move(other.host_)),
      local_rank_(other.local_rank_),
      local_size_(other.local_size_),
      num_nodes_(other.num_nodes_),
      emulated_(other.emulated_),
      device_(other.device_),
      node_(std::exchange(other.node_, MPI_COMM_NULL)),
      shard_(std::exchange(other.shard_, MPI_COMM_NULL)),
      cp_(std::exchange(other.cp_, MPI_COMM_NULL)),
      dp_(std::exchange(other.dp_, MPI_COMM_NULL)) {}

Universe& Universe::operator=(Universe&& other) noexcept {
  if (this != &other) {
    release();
    world_ = other.world_;
    mesh_ = other.mesh_;
    rank_ = other.rank_;
    host_ = std::move(other.host_);
    local_rank_ = other.local_rank_;
    local_size_ = other.local_size_;
    num_nodes_ = other.num_nodes_;
    emulated_ = other.emulated_;
    device_ = other.device_;
    node_ = std::exchange(other.node_, MPI_COMM_NULL);
    shard_ = std::exchange(other.shard_, MPI_COMM_NULL);
    cp_ = std::exchange(other.cp_, MPI_COMM_NULL);
    dp_ = std::exchange(other.dp_, MPI_COMM_NULL);
  }
  return *this;
}

Universe::~Universe() { release(); }

void Universe::release() noexcept {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  for (MPI_Comm* c : {&node_, &shard_, &cp_, &dp_}) {
    if (*c != MPI_COMM_NULL) MPI_Comm_free(c);
  }
}

std::string Universe::describe() const {
  const MeshCoord c = coord();
  std::ostringstream os;
  os << "rank " << rank_ << "/" << size() << " host=" << host_ << " local=" << local_rank_ << "/"
     << local_size_ << " device=" << device_.str() << " mesh(dp,fs,cp)=(" << c.dp << "," << c.fs << ","
     << c.cp << ") data_rank=" << data_rank() << "/" << num_data_ranks()
     << " shard=" << join(mesh_.shard_group(rank_)) << " cp=" << join(mesh_.cp_group(rank_))
     << " dp=" << join(mesh_.dp_group(rank_)) << (emulated_ ? " (emulated: the other ranks are stand-ins)" : "");
  return os.str();
}

std::string Universe::place() const { return host_ + "\t" + std::to_string(local_rank_) + "\t" + device_.str(); }

RankPlace place_of(const std::string& place) {
  const size_t a = place.find('\t'), b = place.find('\t', a + 1);
  OV_CHECK(a != std::string::npos && b != std::string::npos, "malformed placement record '" + place + "'");
  return RankPlace{place.substr(0, a), std::stoi(place.substr(a + 1, b - a - 1)), place.substr(b + 1)};
}

}  // namespace ov
