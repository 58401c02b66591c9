#define BOOST_TEST_MODULE mesh
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdio>
#include <set>

#include "openvid/runtime/error.h"
#include "openvid/runtime/mesh.h"
#include "openvid/runtime/placement.h"

namespace {
std::string error_of(int world, int fs, int cp) {
  try {
    ov::Mesh::make(world, fs, cp);
  } catch (const ov::InputError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

BOOST_AUTO_TEST_CASE(coordinates_put_cp_fastest) {
  const ov::Mesh m = ov::Mesh::make(8, 2, 2);
  BOOST_CHECK_EQUAL(m.dp(), 2);
  BOOST_CHECK_EQUAL(m.shard_size(), 4);
  BOOST_CHECK_EQUAL(m.num_data_ranks(), 4);
  BOOST_CHECK(m.coord(5) == (ov::MeshCoord{1, 0, 1}));
  BOOST_CHECK(m.coord(6) == (ov::MeshCoord{1, 1, 0}));
  BOOST_CHECK(m.shard_group(5) == (std::vector<int>{4, 5, 6, 7}));
  BOOST_CHECK(m.cp_group(5) == (std::vector<int>{4, 5}));
  BOOST_CHECK(m.dp_group(5) == (std::vector<int>{1, 5}));
  BOOST_CHECK_EQUAL(m.data_rank(5), 2);
  BOOST_CHECK_EQUAL(m.data_rank(6), 3);
}

BOOST_AUTO_TEST_CASE(plain_ddp_and_pure_fsdp) {
  const ov::Mesh ddp = ov::Mesh::make(4, 1, 1);
  BOOST_CHECK_EQUAL(ddp.dp(), 4);
  BOOST_CHECK(ddp.dp_group(2) == (std::vector<int>{0, 1, 2, 3}));
  BOOST_CHECK(ddp.shard_group(2) == (std::vector<int>{2}));
  BOOST_CHECK_EQUAL(ddp.data_rank(3), 3);
  const ov::Mesh fsdp = ov::Mesh::make(4, 4, 1);
  BOOST_CHECK_EQUAL(fsdp.dp(), 1);
  BOOST_CHECK(fsdp.shard_group(1) == (std::vector<int>{0, 1, 2, 3}));
  BOOST_CHECK(fsdp.cp_group(1) == (std::vector<int>{1}));
  BOOST_CHECK_EQUAL(fsdp.num_data_ranks(), 4);
  const ov::Mesh cp = ov::Mesh::make(4, 1, 4);
  BOOST_CHECK_EQUAL(cp.num_data_ranks(), 1);
  BOOST_CHECK(cp.cp_group(3) == (std::vector<int>{0, 1, 2, 3}));
}

// For every valid layout: coordinates round-trip, each kind of group partitions the world with the right
// size, groups agree with the split colours, and a cp group and a dp group meet in exactly one rank.
BOOST_AUTO_TEST_CASE(groups_partition_the_world_for_every_layout) {
  int layouts = 0;
  for (int world = 1; world <= 16; ++world) {
    for (int fs = 1; fs <= world; ++fs) {
      for (int cp = 1; cp <= world; ++cp) {
        if (world % (fs * cp) != 0) continue;
        ++layouts;
        const ov::Mesh m = ov::Mesh::make(world, fs, cp);
        std::set<std::vector<int>> shards, cps, dps;
        std::set<int> data_ranks;
        for (int r = 0; r < world; ++r) {
          BOOST_CHECK_EQUAL(m.rank_of(m.coord(r)), r);
          const auto s = m.shard_group(r), c = m.cp_group(r), d = m.dp_group(r);
          BOOST_CHECK_EQUAL(static_cast<int>(s.size()), fs * cp);
          BOOST_CHECK_EQUAL(static_cast<int>(c.size()), cp);
          BOOST_CHECK_EQUAL(static_cast<int>(d.size()), world / (fs * cp));
          for (int o : s) BOOST_CHECK_EQUAL(m.shard_color(o), m.shard_color(r));
          for (int o : c) {
            BOOST_CHECK_EQUAL(m.cp_color(o), m.cp_color(r));
            BOOST_CHECK_EQUAL(m.data_rank(o), m.data_rank(r));  // a cp group shares its data
          }
          for (int o : d) BOOST_CHECK_EQUAL(m.dp_color(o), m.dp_color(r));
          std::vector<int> meet;
          std::set_intersection(c.begin(), c.end(), d.begin(), d.end(), std::back_inserter(meet));
          BOOST_CHECK(meet == std::vector<int>{r});
          shards.insert(s);
          cps.insert(c);
          dps.insert(d);
          data_ranks.insert(m.data_rank(r));
        }
        BOOST_CHECK_EQUAL(static_cast<int>(shards.size()), world / (fs * cp));
        BOOST_CHECK_EQUAL(static_cast<int>(cps.size()), world / cp);
        BOOST_CHECK_EQUAL(static_cast<int>(dps.size()), fs * cp);
        BOOST_CHECK_EQUAL(static_cast<int>(data_ranks.size()), m.num_data_ranks());
      }
    }
  }
  BOOST_CHECK_GT(layouts, 50);
}

BOOST_AUTO_TEST_CASE(invalid_layouts_say_what_to_change) {
  std::string e = error_of(3, 2, 1);
  BOOST_CHECK_MESSAGE(e.find("world size 3 is not divisible by fs*cp = 2*1 = 2") != std::string::npos, e);
  BOOST_CHECK_MESSAGE(e.find("launch a multiple of 2 ranks") != std::string::npos, e);
  e = error_of(8, 3, 2);
  BOOST_CHECK_MESSAGE(e.find("fs*cp = 3*2 = 6") != std::string::npos, e);
  BOOST_CHECK_MESSAGE(error_of(4, 0, 1).find("--fs must be >= 1") != std::string::npos, error_of(4, 0, 1));
  BOOST_CHECK_MESSAGE(error_of(4, 1, 0).find("--cp must be >= 1") != std::string::npos, error_of(4, 1, 0));
  BOOST_CHECK(error_of(4, 2, 2).empty());
  BOOST_CHECK_THROW(ov::Mesh::make(4, 2, 2).coord(4), ov::Error);
}

BOOST_AUTO_TEST_CASE(placement_summary_stays_short_at_512_ranks) {
  std::vector<ov::RankPlace> ranks;
  std::vector<std::string> lines;
  for (int r = 0; r < 512; ++r) {
    char host[16];
    std::snprintf(host, sizeof(host), "n%03d", r / 8 + 1);
    ranks.push_back({host, r % 8, "cuda:" + std::to_string(r % 8)});
    lines.push_back("rank " + std::to_string(r));
  }
  std::vector<std::string> s = ov::placement_summary(ranks, lines);
  BOOST_REQUIRE_EQUAL(s.size(), 2u);
  BOOST_CHECK_EQUAL(s[0], "64 host(s), 8 ranks each; each rank on cuda:<its node-local rank>");
  BOOST_CHECK_EQUAL(s[1], "n001: ranks 0-7, n002: ranks 8-15, n003: ranks 16-23, ... (60 more), n064: ranks 504-511");
  BOOST_CHECK_LT(s[0].size() + s[1].size(), 200u);
  // One GPU per task (srun --gpus-per-task=1): every rank sees its own as cuda:0.
  std::vector<ov::RankPlace> per_task = ranks;
  for (ov::RankPlace& p : per_task) p.device = "cuda:0";
  BOOST_CHECK_EQUAL(ov::placement_summary(per_task, lines)[0], "64 host(s), 8 ranks each; each rank on the one GPU its task sees (cuda:0)");
  // A misplaced rank and an uneven host are called out, not hidden.
  ranks[9].device = "cuda:0";
  ranks[511].host = "n065";
  s = ov::placement_summary(ranks, lines);
  BOOST_CHECK_EQUAL(s[0], "65 host(s), 1 to 8 ranks per host (uneven); devices differ from rank to rank (see placement.txt in the run directory)");
  // Small jobs: one line per rank.
  ranks.resize(4);
  lines.resize(4);
  BOOST_CHECK(ov::placement_summary(ranks, lines) == lines);
  BOOST_CHECK_EQUAL(ov::rank_ranges({0, 2, 4, 5, 6}), "0,2,4-6");
}
