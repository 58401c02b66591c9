#include "openvid/comm/network_model.h"

#include <algorithm>
#include <cmath>

namespace ov::comm {

double collective_seconds(Collective kind, double bytes, int ranks, bool across_nodes, const Network& net) {
  if (ranks <= 1 || bytes <= 0) return 0;
  const double n = ranks, bandwidth = (across_nodes ? net.network_gbps : net.nvlink_gbps) * 1e9;
  const double latency = (across_nodes ? net.network_latency_us : net.nvlink_latency_us) * 1e-6;
  double share = (n - 1) / n, steps = n - 1;  // ring: each rank sends this share of the buffer, in this many steps
  if (kind == Collective::kAllReduce) {
    // NCCL picks a ring or a (double binary) tree; the tree's depth is log2(n) each way, and it sends the
    // whole buffer up and down: what is small and wide goes by the tree.
    const double ring = 2 * steps * latency + 2 * share * bytes / bandwidth;
    const double tree = 2 * std::ceil(std::log2(n)) * latency + 2 * bytes / bandwidth;
    return std::min(ring, tree);
  }
  if (kind == Collective::kBroadcast) share = 1;
  return steps * latency + share * bytes / bandwidth;
}

bool group_within_node(int ranks, int stride, int gpus_per_node) {
  if (gpus_per_node <= 0) return true;
  return ranks * stride <= gpus_per_node && gpus_per_node % (ranks * stride) == 0;
}

}  // namespace ov::comm
