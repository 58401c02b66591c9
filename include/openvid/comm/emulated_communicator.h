#pragma once
// Stand-in collectives for one process playing rank 0 of a larger job (--emulate_world N): a group of
// `size` ranks whose every other member computed exactly what this rank did. Each collective fills its
// output as those identical peers would make it (all-gather: copies of this rank's chunk, or what the
// output held, EmulatedLink::peer_chunks; reduce-scatter
// and all-reduce with a sum: `size` times this rank's values, with an average or max/min: its values;
// broadcast: unchanged) and then lasts as long as comm/network_model.h says the collective of that many
// bytes over that group takes; traffic() and timing() count as the real backends do. So a step's
// compute, memory and overlap are real (the state is rank 0's shards, the buffers are full size, the
// kernels run) and only the wire is modelled.
//
//  * CUDA tensors: each collective runs on the communicator's own stream, after the caller's stream (an
//    event), as NCCL's do: the fill (ATen on that stream), then a kernel holding the stream until the
//    modelled time has passed since the stream reached the collective (kernels/clock.h); wait() makes the
//    caller's stream wait for it. timing() resolves events like the NCCL backend.
//  * CPU tensors: the fill at once on the host; the transfer "runs" from its start (after the group's
//    previous one, as a stream would) for the modelled time, and wait() sleeps until it ends.
#include <chrono>
#include <memory>
#include <string>

#include "openvid/comm/communicator.h"
#include "openvid/comm/network_model.h"

namespace ov::comm {

struct EmulatedLink {
  Network network;
  bool across_nodes = false;  // the group spans nodes: the network's rate, else NVLink's
  // What an all-gather leaves in the peers' chunks of its output: copies of this rank's chunk, or what the
  // output held (the shard group's: each unit's gathered buffer starts as the job's initial weights, which
  // every rank builds whole, so the model computed with stays the job's initial one, not tiles of one chunk).
  enum class PeerChunks { kCopies, kKept } peer_chunks = PeerChunks::kCopies;
};

// `backend` is what backend() reports (the one the job resolved: the trainer stages tensors for it);
// `cuda_device` the GPU whose tensors it takes (-1: CPU tensors).
std::unique_ptr<Communicator> make_emulated_communicator(std::string name, int size, Backend backend, int cuda_device,
                                                         EmulatedLink link, std::chrono::milliseconds timeout);

}  // namespace ov::comm
