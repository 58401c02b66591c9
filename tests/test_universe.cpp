#define BOOST_TEST_MODULE universe
#include "mpi_fixture.h"

#include <ATen/Context.h>

#include "openvid/runtime/error.h"
#include "openvid/runtime/mpi_session.h"
#include "openvid/runtime/universe.h"

namespace {

// World ranks of the members of `comm`, in comm rank order.
std::vector<int> members(MPI_Comm comm) {
  int size = 0;
  MPI_Comm_size(comm, &size);
  const int me = ov::world_rank();
  std::vector<int> out(static_cast<size_t>(size));
  MPI_Allgather(&me, 1, MPI_INT, out.data(), 1, MPI_INT, comm);
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(sub_communicators_match_the_mesh_for_every_layout) {
  const int world = ov::world_size(), me = ov::world_rank();
  for (auto [fs, cp] : layouts_for(world)) {
    BOOST_TEST_CONTEXT("world " << world << " fs " << fs << " cp " << cp) {
      ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, fs, cp, ov::DeviceRequest::kCpu);
      const ov::Mesh& m = u.mesh();
      BOOST_CHECK_EQUAL(u.rank(), me);
      BOOST_CHECK_EQUAL(u.size(), world);
      BOOST_CHECK_EQUAL(m.dp() * m.fs() * m.cp(), world);
      BOOST_CHECK(members(u.shard()) == m.shard_group(me));
      BOOST_CHECK(members(u.cp()) == m.cp_group(me));
      BOOST_CHECK(members(u.dp()) == m.dp_group(me));
      BOOST_CHECK_EQUAL(u.data_rank(), m.data_rank(me));
      BOOST_CHECK_EQUAL(u.device().str(), "cpu");
      BOOST_CHECK(u.describe().find("rank " + std::to_string(me) + "/" + std::to_string(world)) == 0);
    }
  }
}

BOOST_AUTO_TEST_CASE(node_local_ranks_are_consistent) {
  ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, 1, 1, ov::DeviceRequest::kCpu);
  BOOST_CHECK_GE(u.local_rank(), 0);
  BOOST_CHECK_LT(u.local_rank(), u.local_size());
  BOOST_CHECK(members(u.node()).size() == static_cast<size_t>(u.local_size()));
  int total_local = 0;
  const int leader_local_size = u.local_rank() == 0 ? u.local_size() : 0;
  MPI_Allreduce(&leader_local_size, &total_local, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  BOOST_CHECK_EQUAL(total_local, u.size());  // the nodes' ranks add up to the world
  BOOST_CHECK_GE(u.num_nodes(), 1);
  // Every rank of one node reports the same host.
  const std::vector<std::string> hosts = ov::gather_strings(u.node(), u.host(), 0);
  for (const auto& h : hosts) BOOST_CHECK_EQUAL(h, u.host());
}

BOOST_AUTO_TEST_CASE(invalid_layouts_end_on_every_rank_with_the_same_message) {
  const int world = ov::world_size();
  const struct {
    int fs, cp;
    std::string expect;
  } cases[] = {{world + 1, 1, "is not divisible by fs*cp"}, {1, 2 * world, "is not divisible"},
               {0, 1, "--fs must be >= 1"}};
  for (const auto& c : cases) {
    std::string message;
    int code = 0;
    try {
      ov::Universe::create(MPI_COMM_WORLD, c.fs, c.cp);
    } catch (const ov::CollectiveExit& e) {
      message = e.what();
      code = e.exit_code();
    }
    BOOST_CHECK_MESSAGE(message.find(c.expect) != std::string::npos, message);
    BOOST_CHECK_EQUAL(code, ov::kExitInputError);
  }
}

BOOST_AUTO_TEST_CASE(agree_on_errors_reports_the_lowest_failing_rank_everywhere) {
  const int world = ov::world_size(), me = ov::world_rank();
  BOOST_CHECK_NO_THROW(ov::agree_on_errors(MPI_COMM_WORLD, ""));
  const int failing = world - 1;
  std::string message;
  try {
    ov::agree_on_errors(MPI_COMM_WORLD, me == failing ? "dataset missing on this node" : "", 7);
  } catch (const ov::CollectiveExit& e) {
    message = e.what();
    BOOST_CHECK_EQUAL(e.exit_code(), 7);
  }
  BOOST_CHECK_MESSAGE(message.find("dataset missing on this node") != std::string::npos, message);
  if (world > 1) BOOST_CHECK_MESSAGE(message.find("on rank " + std::to_string(failing)) != std::string::npos, message);
  // When every rank fails, the message is the plain one (lowest rank's), without a rank prefix.
  try {
    ov::agree_on_errors(MPI_COMM_WORLD, "bad --fs on rank " + std::to_string(me));
  } catch (const ov::CollectiveExit& e) {
    message = e.what();
  }
  BOOST_CHECK_EQUAL(message, "bad --fs on rank 0");
}

BOOST_AUTO_TEST_CASE(string_gather_and_broadcast) {
  const int world = ov::world_size(), me = ov::world_rank();
  const std::string mine(static_cast<size_t>(me), static_cast<char>('a' + me));  // rank 0 sends ""
  const auto all = ov::gather_strings(MPI_COMM_WORLD, mine, world - 1);
  if (me == world - 1) {
    BOOST_CHECK_EQUAL(static_cast<int>(all.size()), world);
    for (int r = 0; r < static_cast<int>(all.size()); ++r)
      BOOST_CHECK_EQUAL(all[static_cast<size_t>(r)], std::string(static_cast<size_t>(r), static_cast<char>('a' + r)));
  } else {
    BOOST_CHECK(all.empty());
  }
  BOOST_CHECK_EQUAL(ov::broadcast_string(MPI_COMM_WORLD, me == 0 ? "from root" : "x", 0), "from root");
}

// On a machine with GPUs, more ranks per node than GPUs is refused on every rank (NCCL cannot share
// a GPU between ranks of one communicator). Without GPUs, auto falls back to the CPU.
BOOST_AUTO_TEST_CASE(device_auto_uses_one_gpu_per_rank_or_the_cpu) {
  std::string message;
  try {
    ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, 1, 1, ov::DeviceRequest::kAuto);
    if (!at::hasCUDA()) BOOST_CHECK_EQUAL(u.device().str(), "cpu");
    else BOOST_CHECK_EQUAL(u.device().index, u.local_rank());
  } catch (const ov::CollectiveExit& e) {
    message = e.what();
  }
  const bool oversubscribed = at::hasCUDA() && ov::world_size() > static_cast<int>(at::getNumGPUs());
  BOOST_CHECK_EQUAL(!message.empty(), oversubscribed);
  if (oversubscribed) BOOST_CHECK_MESSAGE(message.find("launch at most one rank per GPU") != std::string::npos, message);
}

// The binding rule, for both ways launchers bind GPUs (no GPU needed: the rule is a pure function).
BOOST_AUTO_TEST_CASE(the_gpu_binding_rule_takes_both_slurm_bindings) {
  // Every GPU visible to every rank (mpirun; srun without GPU binding): the node-local rank's GPU.
  for (int local = 0; local < 8; ++local) BOOST_CHECK_EQUAL(ov::gpu_for_rank(8, local, 8), local);
  BOOST_CHECK_EQUAL(ov::gpu_for_rank(8, 3, 4), 3);  // fewer ranks than GPUs
  // One GPU per task (srun --gpus-per-task=1, --gpu-bind, cgroups): the one it sees, whatever its local rank.
  for (int local = 0; local < 8; ++local) BOOST_CHECK_EQUAL(ov::gpu_for_rank(1, local, 8), 0);
  // Two GPUs per task, four tasks: each takes one of its own pair in turn.
  BOOST_CHECK_EQUAL(ov::gpu_for_rank(2, 2, 4), 0);
  BOOST_CHECK_EQUAL(ov::gpu_for_rank(2, 3, 4), 1);
  BOOST_CHECK_THROW(ov::gpu_for_rank(0, 0, 1), ov::Error);

  // Whether that shares a GPU is decided by the GPUs' identities, not the counts.
  auto node = [](const std::vector<std::pair<int, std::string>>& taken) {  // (index seen, physical GPU) per local rank
    std::vector<ov::RankGpu> out;
    for (size_t i = 0; i < taken.size(); ++i)
      out.push_back(ov::RankGpu{static_cast<int>(10 + i), static_cast<int>(i), taken[i].first, taken[i].second});
    return out;
  };
  // One GPU per task: every rank sees its GPU as cuda:0, and they are different GPUs.
  BOOST_CHECK_EQUAL(ov::gpu_sharing_error("n1", node({{0, "GPU-a"}, {0, "GPU-b"}, {0, "GPU-c"}, {0, "GPU-d"}})), "");
  // All visible: cuda:0..3 are four GPUs.
  BOOST_CHECK_EQUAL(ov::gpu_sharing_error("n1", node({{0, "GPU-a"}, {1, "GPU-b"}, {2, "GPU-c"}, {3, "GPU-d"}})), "");
  // Real sharing: four ranks and one GPU visible to all of them (what 4 ranks on a 1-GPU node look like).
  const std::string shared = ov::gpu_sharing_error("n1", node({{0, "GPU-a"}, {0, "GPU-a"}, {0, "GPU-a"}, {0, "GPU-a"}}));
  BOOST_CHECK_MESSAGE(shared.find("ranks 10 and 11 on host n1 would share one GPU (GPU-a") != std::string::npos, shared);
  BOOST_CHECK_MESSAGE(shared.find("launch at most one rank per GPU") != std::string::npos, shared);
  // Two tasks whose bindings overlap (a mis-set CUDA_VISIBLE_DEVICES): the second pair repeats GPU-b.
  const std::string overlap = ov::gpu_sharing_error("n2", node({{0, "GPU-a"}, {1, "GPU-b"}, {0, "GPU-b"}}));
  BOOST_CHECK_MESSAGE(overlap.find("ranks 11 and 12 on host n2") != std::string::npos, overlap);
}

// A setting that must be the same on every rank (device kind, backend, dtype): a difference ends the job on
// every rank with one input error naming the values and their ranks.
BOOST_AUTO_TEST_CASE(ranks_that_differ_in_a_setting_end_the_job_with_one_message) {
  const int world = ov::world_size(), me = ov::world_rank();
  BOOST_CHECK_NO_THROW(ov::agree_on_value(MPI_COMM_WORLD, "device", "cuda, nccl, BFloat16", "advice"));
  if (world < 2) return;
  std::string message;
  int code = 0;
  try {
    ov::agree_on_value(MPI_COMM_WORLD, "device, backend and compute dtype", me == world - 1 ? "cpu, mpi, Float" : "cuda, nccl, BFloat16",
                       "Check the last host.");
  } catch (const ov::CollectiveExit& e) {
    message = e.what();
    code = e.exit_code();
  }
  BOOST_CHECK_EQUAL(code, ov::kExitInputError);
  const std::string last = std::to_string(world - 1);
  BOOST_CHECK_MESSAGE(message.find("ranks differ in device, backend and compute dtype: cuda, nccl, BFloat16 on host") != std::string::npos,
                      message);
  BOOST_CHECK_MESSAGE(message.find("(ranks 0" + (world > 2 ? "-" + std::to_string(world - 2) : std::string()) + "); cpu, mpi, Float on host") !=
                          std::string::npos,
                      message);
  BOOST_CHECK_MESSAGE(message.find("(ranks " + last + "). Check the last host.") != std::string::npos, message);
}
