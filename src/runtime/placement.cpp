#include "openvid/runtime/placement.h"

#include <algorithm>
#include <map>
#include <set>

namespace ov {

std::string rank_ranges(const std::vector<int>& r) {
  std::string out;
  for (size_t i = 0; i < r.size();) {
    size_t j = i;
    while (j + 1 < r.size() && r[j + 1] == r[j] + 1) ++j;
    out += (out.empty() ? "" : ",") + std::to_string(r[i]) + (j > i ? "-" + std::to_string(r[j]) : "");
    i = j + 1;
  }
  return out;
}

std::vector<std::string> placement_summary(const std::vector<RankPlace>& ranks, const std::vector<std::string>& per_rank_lines,
                                           size_t per_rank_up_to) {
  if (ranks.size() <= per_rank_up_to) return per_rank_lines;
  // Hosts in the order of their first rank.
  std::vector<std::string> hosts;
  std::map<std::string, std::vector<int>> of_host;
  for (size_t i = 0; i < ranks.size(); ++i) {
    auto& list = of_host[ranks[i].host];
    if (list.empty()) hosts.push_back(ranks[i].host);
    list.push_back(static_cast<int>(i));
  }
  std::set<size_t> counts;
  for (const auto& [host, list] : of_host) counts.insert(list.size());
  bool gpu_per_local = true, all_cpu = true, own_gpu = true;
  for (const RankPlace& p : ranks) {
    gpu_per_local = gpu_per_local && p.device == "cuda:" + std::to_string(p.local_rank);
    all_cpu = all_cpu && p.device == "cpu";
    own_gpu = own_gpu && p.device == "cuda:0";  // one GPU visible per task (no two ranks share it: checked at start-up)
  }
  std::vector<std::string> lines;
  std::string first = std::to_string(hosts.size()) + " host(s), ";
  first += counts.size() == 1 ? std::to_string(*counts.begin()) + " ranks each"
                              : std::to_string(*counts.begin()) + " to " + std::to_string(*counts.rbegin()) + " ranks per host (uneven)";
  first += gpu_per_local ? "; each rank on cuda:<its node-local rank>"
           : own_gpu     ? "; each rank on the one GPU its task sees (cuda:0)"
           : all_cpu     ? "; every rank on the CPU"
                         : "; devices differ from rank to rank (see placement.txt in the run directory)";
  lines.push_back(first);
  // The hosts' ranks: the first three and the last, with how many are left out.
  std::string list;
  const size_t shown_head = 3;
  for (size_t h = 0; h < hosts.size(); ++h) {
    if (h == shown_head && hosts.size() > shown_head + 1) {
      list += ", ... (" + std::to_string(hosts.size() - shown_head - 1) + " more)";
      h = hosts.size() - 1;
    }
    list += (list.empty() ? "" : ", ") + hosts[h] + ": ranks " + rank_ranges(of_host[hosts[h]]);
  }
  lines.push_back(list);
  return lines;
}

}  // namespace ov
