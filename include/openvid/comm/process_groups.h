#pragma once
// The tensor communicators of one Universe: world, shard (FSDP, fs*cp), cp and dp, on one backend.
#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "openvid/comm/communicator.h"
#include "openvid/comm/network_model.h"
#include "openvid/runtime/universe.h"

namespace ov::comm {

class ProcessGroups {
 public:
  // Collective over the universe's world: creates world, shard, cp and dp communicators, in that order.
  static ProcessGroups create(const Universe& universe, Backend backend, std::chrono::milliseconds timeout);
  // For an emulated universe (Universe::emulate): the same four groups, of the emulated mesh's sizes, as
  // stand-ins (comm/emulated_communicator.h) timed by `network`; a group lies inside a node when the mesh
  // places it there on nodes of `gpus_per_node` GPUs.
  static ProcessGroups emulate(const Universe& universe, Backend backend, std::chrono::milliseconds timeout, const Network& network,
                               int gpus_per_node);

  Backend backend() const { return backend_; }
  Communicator& world() { return *world_; }
  Communicator& shard() { return *shard_; }
  Communicator& cp() { return *cp_; }
  Communicator& dp() { return *dp_; }
  // Bytes each group has moved on this rank so far (Communicator::total_traffic), as (name, bytes) in the
  // order world, shard, cp, dp.
  std::vector<std::pair<std::string, int64_t>> bytes_moved() const;
  // "world 24 B (all_reduce 24 B); shard 12.6 MB (all_gather 6.3 MB, reduce_scatter 6.3 MB)": this rank's
  // traffic since the groups were made divided by `steps`, the groups that moved nothing left out.
  std::string traffic_line(int64_t steps) const;
  // Each group's timing on this rank so far (Communicator::timing: resolves what has fired), in the same order.
  std::vector<std::pair<std::string, Communicator::Timing>> timing();

  // Collective over the world: finalizes every group (dp, cp, shard, world) in the same order on all ranks.
  void finalize();

 private:
  Backend backend_ = Backend::kMpi;
  std::unique_ptr<Communicator> world_, shard_, cp_, dp_;
};

}  // namespace ov::comm

namespace ov::comm {

// Collective over the world: every group all-reduces the world ranks of its members and compares the
// sum with what the mesh says; throws ov::Error naming the group on a mismatch. Run at start-up so a
// mis-wired launch (wrong rank order, broken NCCL) fails before any training work.
void verify_groups(ProcessGroups& groups, const Universe& universe);

}  // namespace ov::comm
