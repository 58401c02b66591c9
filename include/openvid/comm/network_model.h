#pragma once
// The network model shared by the planner (train/plan_advice.h predicts a job's exposed communication with
// it) and the emulated ranks (comm/emulated_communicator.h make each collective last what it gives): a ring
// collective's time from its bytes, its ranks, and whether it crosses nodes (NVLink inside a node, the
// per-GPU network across nodes). A model, not a measurement: docs/planning.md says what it leaves out.
namespace ov::comm {

struct Network {
  double nvlink_gbps = 360, network_gbps = 45;           // bus bandwidth, GB/s
  double nvlink_latency_us = 10, network_latency_us = 20;  // per ring step
};

// Seconds of one collective of `bytes` (as comm::Communicator counts them: the all-gathered output, the
// reduce-scattered input, the all-reduced or broadcast buffer) over `ranks` ranks in a ring, inside one
// node or across nodes. A ring all-gather or reduce-scatter takes n-1 steps, each sending 1/n of the
// buffer; a (pipelined) broadcast n-1 steps of latency and the whole buffer; an all-reduce the faster of a
// ring (twice the all-gather's steps and bytes) and a tree (2 log2(n) steps of latency, twice the buffer),
// as NCCL chooses between them (a few bytes over 512 ranks: 0.4 ms by the tree, 20 ms by the ring).
enum class Collective { kAllGather, kReduceScatter, kAllReduce, kBroadcast };
double collective_seconds(Collective kind, double bytes, int ranks, bool across_nodes, const Network& net);

// Whether a group of `ranks` ranks spaced `stride` world ranks apart (the mesh's dp group: stride
// fs x cp) lies inside one node of `gpus_per_node` (0: all ranks on one node): its span fits one node and
// the node's size is a multiple of it, so no group straddles two nodes.
bool group_within_node(int ranks, int stride, int gpus_per_node);

}  // namespace ov::comm
