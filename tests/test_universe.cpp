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
