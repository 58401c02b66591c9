#pragma once
// Universe: the one object that owns this process's place in the job (after LAMMPS's Universe). Built
// once from MPI_COMM_WORLD; knows world rank/size, host, node-local rank, the device to use, the mesh
// dp x fs x cp and the MPI sub-communicators of each group. Other layers derive from it (comm/ builds
// tensor collectives on its communicators; data/ partitions reads by its data rank).
#include <mpi.h>

#include <string>

#include "openvid/runtime/placement.h"

#include "openvid/runtime/device.h"
#include "openvid/runtime/mesh.h"

namespace ov {

class Universe {
 public:
  // Collective over `world` (every rank calls it once, early). An invalid mesh or device request ends
  // the job cleanly on every rank (CollectiveExit with a message saying what to change).
  static Universe create(MPI_Comm world, int fs, int cp, DeviceRequest device = DeviceRequest::kAuto);
  // One process playing world rank 0 of a job of `world_size` ranks (--emulate_world): the mesh is that
  // job's and this process its rank 0; the MPI world and groups hold this process alone (the tensor groups
  // are comm/emulated_communicator.h's stand-ins, made by ProcessGroups::emulate). Collective over `world`,
  // which must hold one process (else every rank exits 2 saying so).
  static Universe emulate(MPI_Comm world, int world_size, int fs, int cp, DeviceRequest device = DeviceRequest::kAuto);
  bool emulated() const { return emulated_; }

  Universe(Universe&& other) noexcept;
  Universe& operator=(Universe&& other) noexcept;
  Universe(const Universe&) = delete;
  Universe& operator=(const Universe&) = delete;
  ~Universe();  // frees the sub-communicators (local, non-blocking); skipped after MPI_Finalize

  int rank() const { return rank_; }
  int size() const { return mesh_.world_size(); }
  const std::string& host() const { return host_; }
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  int num_nodes() const { return num_nodes_; }
  const DeviceChoice& device() const { return device_; }

  const Mesh& mesh() const { return mesh_; }
  MeshCoord coord() const { return mesh_.coord(rank_); }
  int data_rank() const { return mesh_.data_rank(rank_); }
  int num_data_ranks() const { return mesh_.num_data_ranks(); }

  MPI_Comm world() const { return world_; }
  MPI_Comm node() const { return node_; }    // ranks sharing this node's memory
  MPI_Comm shard() const { return shard_; }  // FSDP group: fs*cp ranks
  MPI_Comm cp() const { return cp_; }        // context-parallel group; also the "same data" group
  MPI_Comm dp() const { return dp_; }        // replicas of this rank's shard

  // One line describing this rank, e.g.
  // "rank 3/4 host=n01 local=3/4 device=cpu mesh(dp,fs,cp)=(0,1,1) data_rank=1/2 shard=[0,1,2,3] cp=[2,3] dp=[3]"
  std::string describe() const;
  // This rank's host, node-local rank and device, as one string for gather_strings (read by place_of).
  std::string place() const;

 private:
  Universe(MPI_Comm world, Mesh mesh) : world_(world), mesh_(mesh) {}
  static Universe build(MPI_Comm world, const Mesh& mesh, int rank, DeviceRequest request);
  void release() noexcept;

  MPI_Comm world_ = MPI_COMM_NULL;
  Mesh mesh_;
  int rank_ = 0;
  std::string host_;
  int local_rank_ = 0, local_size_ = 1, num_nodes_ = 1;
  bool emulated_ = false;
  DeviceChoice device_;
  MPI_Comm node_ = MPI_COMM_NULL, shard_ = MPI_COMM_NULL, cp_ = MPI_COMM_NULL, dp_ = MPI_COMM_NULL;
};

// Collective over `world`: this rank's device for `request` by the binding rule of runtime/device.h (all GPUs
// visible: the node-local rank's; one per task: its own), made the thread's current CUDA device. Ranks of
// one node on one physical GPU end the job with one message (exit 2) unless `sharing` allows it (inference
// tools that need no NCCL). Universe::create uses it; so do the tools without a Universe.
enum class GpuSharing { kRefuse, kAllow };
DeviceChoice choose_device(MPI_Comm world, DeviceRequest request, GpuSharing sharing = GpuSharing::kRefuse);
// The same with the node's communicator (ranks sharing memory) already split.
DeviceChoice choose_device(MPI_Comm world, MPI_Comm node, DeviceRequest request, GpuSharing sharing = GpuSharing::kRefuse);

// A Universe::place() string back as a RankPlace.
RankPlace place_of(const std::string& place);

}  // namespace ov
