#pragma once
// Where the ranks of a job run, said in a few lines whatever the job's size: per rank up to a handful of
// ranks, beyond that per host (ranks per host, the device rule, the hosts' rank ranges, first and last).
#include <string>
#include <vector>

namespace ov {

struct RankPlace {
  std::string host;
  int local_rank = 0;  // among the ranks of its host
  std::string device;  // "cpu" or "cuda:N"
};

// `ranks[i]` is world rank i. At most `per_rank_up_to` ranks are listed one line each (the caller's
// `per_rank_lines`); larger jobs get at most four lines.
std::vector<std::string> placement_summary(const std::vector<RankPlace>& ranks, const std::vector<std::string>& per_rank_lines,
                                           size_t per_rank_up_to = 8);

// "0-7", "0,2,4-6": sorted ranks as ranges.
std::string rank_ranges(const std::vector<int>& sorted_ranks);

}  // namespace ov
