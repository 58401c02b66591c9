// One process as rank 0 of a larger job (--emulate_world): the stand-in collectives fill their outputs as
// identical peers would, last the time the network model gives (hidden when waited for late, serialised
// on their group), and count traffic as the real backends do; an emulated job of 8 and 64 ranks holds and
// moves per step exactly what the dry run plans for that job; the launch's errors.
#define BOOST_TEST_MODULE emulation
#include "mpi_fixture.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <thread>

#if defined(OPENVID_TORCH_CUDA) && defined(OPENVID_HAVE_KERNELS)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "openvid/kernels/clock.h"
#endif

#include "openvid/comm/emulated_communicator.h"
#include "openvid/comm/mpi_communicator.h"
#include "openvid/comm/network_model.h"
#include "openvid/comm/process_groups.h"
#include "openvid/data/manifest.h"
#include "openvid/model/dit.h"
#include "openvid/parallel/sharded_model.h"
#include "openvid/data/synthetic.h"
#include "openvid/runtime/mpi_session.h"
#include "openvid/runtime/universe.h"
#include "openvid/train/plan.h"
#include "openvid/train/trainer.h"
#include "plan_checks.h"
#include "test_util.h"
#include "tiny_model.h"
#include "train_options.h"

namespace {

using Clock = std::chrono::steady_clock;
using ov::comm::ReduceOp;

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

std::unique_ptr<ov::comm::Communicator> stand_in(int size, double latency_us, bool across = false) {
  ov::comm::Network net;
  net.nvlink_latency_us = latency_us;
  net.network_latency_us = 2 * latency_us;
  net.nvlink_gbps = net.network_gbps = 1e6;  // bytes cost ~nothing: the latency sets the time
  return ov::comm::make_emulated_communicator("shard", size, ov::comm::Backend::kMpi, -1, ov::comm::EmulatedLink{net, across},
                                              std::chrono::milliseconds(10000));
}

}  // namespace

BOOST_AUTO_TEST_CASE(stand_ins_fill_outputs_as_identical_peers_would) {
  auto c = stand_in(4, 0);
  const at::Tensor in = at::arange(3, at::kFloat) + 1;  // 1 2 3
  at::Tensor out = at::zeros({12});
  c->all_gather(out, in).wait();
  BOOST_TEST(at::equal(out, in.repeat({4})));
  at::Tensor gathered = at::zeros({12});
  gathered.narrow(0, 0, 3).copy_(in);
  c->all_gather(gathered, gathered.narrow(0, 0, 3)).wait();  // in place: rank 0's chunk
  BOOST_TEST(at::equal(gathered, in.repeat({4})));
  // A group that keeps the peers' chunks (the shard group's parameter gathers) writes only this rank's.
  ov::comm::EmulatedLink keep;
  keep.peer_chunks = ov::comm::EmulatedLink::PeerChunks::kKept;
  auto kept = ov::comm::make_emulated_communicator("shard", 4, ov::comm::Backend::kMpi, -1, keep, std::chrono::milliseconds(1000));
  at::Tensor held = at::full({12}, 7.0f);
  kept->all_gather(held, in).wait();
  BOOST_TEST(at::equal(held.narrow(0, 0, 3), in));
  BOOST_TEST(at::equal(held.narrow(0, 3, 9), at::full({9}, 7.0f)));
  const at::Tensor full = at::arange(12, at::kFloat);
  at::Tensor part = at::zeros({3});
  c->reduce_scatter(part, full, ReduceOp::kSum).wait();  // four peers' chunk 0 summed
  BOOST_TEST(at::equal(part, 4 * full.narrow(0, 0, 3)));
  c->reduce_scatter(part, full, ReduceOp::kAvg).wait();
  BOOST_TEST(at::equal(part, full.narrow(0, 0, 3)));
  at::Tensor t = in.clone();
  c->all_reduce(t, ReduceOp::kSum).wait();
  BOOST_TEST(at::equal(t, 4 * in));
  at::Tensor counts = at::full({2}, 5, at::kLong);
  c->all_reduce(counts, ReduceOp::kSum).wait();
  BOOST_TEST(at::equal(counts, at::full({2}, 20, at::kLong)));
  t = in.clone();
  c->all_reduce(t, ReduceOp::kMax).wait();
  c->all_reduce(t, ReduceOp::kAvg).wait();
  c->broadcast(t, 3).wait();
  BOOST_TEST(at::equal(t, in));
  // Counted as the real backends count: the gathered output, the scattered input, the reduced buffer.
  BOOST_CHECK_EQUAL(c->traffic(ov::comm::Communicator::kAllGather).calls, 2);
  BOOST_CHECK_EQUAL(c->traffic(ov::comm::Communicator::kAllGather).bytes, 2 * 12 * 4);
  BOOST_CHECK_EQUAL(c->traffic(ov::comm::Communicator::kReduceScatter).bytes, 2 * 12 * 4);
  BOOST_CHECK_EQUAL(c->traffic(ov::comm::Communicator::kAllReduce).bytes, 3 * 12 + 16);
  BOOST_CHECK_EQUAL(c->traffic(ov::comm::Communicator::kBroadcast).bytes, 12);
  // Wrong sizes and devices are refused as by the real backends.
  try {
    c->all_gather(at::zeros({11}), in).wait();
    BOOST_ERROR("a wrong output size passed");
  } catch (const ov::Error& e) {
    BOOST_TEST(ov::test::has(e.what(), "expected 12"), e.what());
  }
  // all_reduce_after needs a collective of an emulated group to follow.
  BOOST_TEST(c->starts_after());
  ov::comm::Work none;
  try {
    t = in.clone();
    c->all_reduce_after(none, t, ReduceOp::kSum).wait();
    BOOST_ERROR("all_reduce_after passed without a collective to follow");
  } catch (const ov::Error& e) {
    BOOST_TEST(ov::test::has(e.what(), "the collective to follow is not one of an emulated group"), e.what());
  }
  // A group of one moves and counts nothing.
  auto one = stand_in(1, 1000);
  at::Tensor u = in.clone();
  one->all_reduce(u, ReduceOp::kSum).wait();
  BOOST_TEST(at::equal(u, in));
  BOOST_CHECK_EQUAL(one->total_traffic().calls, 0);
  BOOST_CHECK_EQUAL(one->timing().busy_ms, 0.0);
}

// A ring all-gather of 4 ranks at 20 ms per step lasts 60 ms: waited for at once it is exposed, waited for
// after 90 ms of work it is hidden, and two in a row run one after the other (a group's stream).
BOOST_AUTO_TEST_CASE(a_stand_in_lasts_what_the_network_model_gives) {
  auto c = stand_in(4, 20000);
  const at::Tensor in = at::ones({8});
  at::Tensor out = at::zeros({32});
  auto t0 = Clock::now();
  c->all_gather(out, in).wait();
  const double exposed = ms_since(t0);
  BOOST_TEST(exposed >= 59.0);
  BOOST_TEST(c->timing().waited_ms >= 59.0);
  BOOST_TEST(c->timing().waited_ms <= exposed + 1.0);
  BOOST_CHECK_CLOSE(c->timing().busy_ms, 60.0, 0.1);
  // Hidden behind 90 ms of "compute".
  double before = c->timing().waited_ms;
  ov::comm::Work w = c->all_gather(out, in);
  std::this_thread::sleep_for(std::chrono::milliseconds(90));
  w.wait();
  BOOST_TEST(c->timing().waited_ms - before < 5.0);
  // Two in flight: the second starts when the first ends.
  before = c->timing().waited_ms;
  t0 = Clock::now();
  ov::comm::Work a = c->all_gather(out, in);
  ov::comm::Work b = c->all_gather(out, in);
  b.wait();
  a.wait();
  BOOST_TEST(ms_since(t0) >= 119.0);
  BOOST_TEST(c->timing().waited_ms - before >= 119.0);
  // A small all-reduce goes by the tree: 2 x log2(4) steps; across nodes the network's latency (here twice NVLink's).
  t0 = Clock::now();
  at::Tensor r = at::ones({8});
  c->all_reduce(r, ReduceOp::kSum).wait();
  BOOST_TEST(ms_since(t0) >= 79.0);
  BOOST_TEST(ms_since(t0) < 115.0);
  auto far = stand_in(4, 20000, true);
  t0 = Clock::now();
  far->all_gather(out, in).wait();
  BOOST_TEST(ms_since(t0) >= 119.0);
  // all_reduce_after: another group's all-reduce (80 ms by the tree) starts when the 60 ms gather before it
  // ends, though the host does not wait for the gather: it ends 140 ms after both were issued.
  auto other = stand_in(4, 20000);
  t0 = Clock::now();
  ov::comm::Work gather = c->all_gather(out, in);
  at::Tensor s = at::ones({8});
  ov::comm::Work reduce = other->all_reduce_after(gather, s, ReduceOp::kSum);
  BOOST_TEST(ms_since(t0) < 20.0);
  reduce.wait();
  BOOST_TEST(ms_since(t0) >= 139.0);
  BOOST_TEST(at::equal(s, at::full({8}, 4.0f)));
  gather.wait();
  // The MPI backend cannot start a transfer on a condition: it says so.
  BOOST_TEST(!ov::comm::MpiCommunicator(MPI_COMM_SELF, "self", std::chrono::milliseconds(1000)).starts_after());
}

BOOST_AUTO_TEST_CASE(groups_inside_or_across_nodes) {
  BOOST_TEST(ov::comm::group_within_node(8, 1, 8));   // a shard group of one node
  BOOST_TEST(!ov::comm::group_within_node(16, 1, 8));  // of two
  BOOST_TEST(!ov::comm::group_within_node(2, 8, 8));   // replicas of 8-rank shards: one per node
  BOOST_TEST(ov::comm::group_within_node(2, 4, 8));    // replicas of 4-rank shards: both in one node
  BOOST_TEST(!ov::comm::group_within_node(3, 1, 8));   // would straddle a node's boundary
  BOOST_TEST(ov::comm::group_within_node(64, 1, 0));   // one node holds the job
}

// An emulated job holds what the dry run plans for that job (its sharded state, exactly) and its steps move
// on each group exactly the planned bytes: for 8 and 64 ranks, sharded, mixed with cp and dp, with
// gradient accumulation and recomputation. The stand-ins' network is the default one.
BOOST_AUTO_TEST_CASE(an_emulated_job_holds_and_moves_what_the_plan_says) {
  BOOST_REQUIRE_EQUAL(ov::world_size(), 1);
  const std::string dir = (std::filesystem::temp_directory_path() / ("openvid_emulation_" + std::to_string(::getpid()))).string();
  // 160 samples for training: a step of 64 data ranks x 2 fits.
  const ov::data::Manifest manifest = ov::data::read_manifest(small_dataset(dir, MPI_COMM_WORLD, 200).directory);
  struct Layout {
    int world, fs, cp, accum, recompute;
  };
  int n = 0;
  for (const Layout& l : {Layout{8, 8, 1, 1, 0}, Layout{8, 2, 2, 2, 1}, Layout{64, 64, 1, 1, 0}, Layout{64, 8, 1, 1, 2}}) {
    BOOST_TEST_CONTEXT("world=" << l.world << " fs=" << l.fs << " cp=" << l.cp << " grad_accum=" << l.accum << " recompute_every=" << l.recompute) {
      ov::Options o = options_for(dir + "/data", dir, "run" + std::to_string(n++), l.fs, l.cp, 2);
      o.model.depth = 3;
      o.grad_accum = l.accum;
      o.model.recompute_every = l.recompute;
      o.emulate_world = l.world;
      o.write_checkpoints = false;
      const ov::train::JobPlan plan = ov::train::plan_job(o, manifest, ov::train::PlanTarget{l.world, 0, false, 0});
      ov::Universe u = ov::Universe::emulate(MPI_COMM_WORLD, l.world, l.fs, l.cp, ov::DeviceRequest::kCpu);
      BOOST_CHECK_EQUAL(u.size(), l.world);
      BOOST_CHECK_EQUAL(u.mesh().dp(), plan.dp);
      auto groups = ov::comm::ProcessGroups::emulate(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000), ov::comm::Network{}, 8);
      ov::comm::verify_groups(groups, u);
      BOOST_CHECK_EQUAL(groups.shard().size(), l.fs * l.cp);
      BOOST_CHECK_EQUAL(groups.dp().size(), l.world / (l.fs * l.cp));
      {
        ov::train::Trainer t(o, u, groups);
        check_trainer_against_plan(t, plan, groups, 2);
      }
      BOOST_TEST(!std::filesystem::exists(dir + "/run" + std::to_string(n - 1) + "/checkpoints"));
    }
  }
  std::filesystem::remove_all(dir);
}

// With groups that order one collective after another (the stand-ins here; NCCL on GPUs), each unit's
// all-reduce over the replicas starts during backward right behind the unit's reduce-scatter: one per unit
// launched in backward, none left to the step's end (the MPI backend's window of reductions in flight
// leaves the last two units' there).
BOOST_AUTO_TEST_CASE(the_replicas_reduction_follows_each_reduce_scatter) {
  ov::Universe u = ov::Universe::emulate(MPI_COMM_WORLD, 4, 2, 1, ov::DeviceRequest::kCpu);  // dp 2 x fs 2
  auto groups = ov::comm::ProcessGroups::emulate(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000), ov::comm::Network{}, 8);
  ov::model::DiT model(tiny_model_config(true));
  randomize_parameters(*model, 5);
  ov::parallel::ShardedModel sharded(*model, groups.shard(), groups.dp());
  BOOST_REQUIRE_GE(sharded.num_units(), 3);
  for (int step = 0; step < 3; ++step) {
    at::Generator g = at::make_generator<at::CPUGeneratorImpl>(step);
    const at::Tensor x = at::normal(0, 1, {1, 4, 4, 4, 6}, g), text = at::normal(0, 1, {1, 5, 24}, g), t = at::rand({1}, g);
    sharded.arm();
    const int64_t before = groups.dp().traffic(ov::comm::Communicator::kAllReduce).calls;
    model->forward(x, text, t).square().mean().backward();
    const int64_t started = groups.dp().traffic(ov::comm::Communicator::kAllReduce).calls - before;
    sharded.finish();
    if (step > 0) {  // from the second step on every unit is launched from backward's hooks
      BOOST_CHECK_EQUAL(sharded.units_launched_in_backward(), sharded.num_units());
      BOOST_CHECK_EQUAL(started, sharded.num_units());
    }
    sharded.gather();
  }
}

BOOST_AUTO_TEST_CASE(an_emulated_mesh_is_checked_like_a_launch) {
  try {
    ov::Universe::emulate(MPI_COMM_WORLD, 60, 8, 1, ov::DeviceRequest::kCpu);
    BOOST_ERROR("a world of 60 with fs 8 passed");
  } catch (const ov::CollectiveExit& e) {
    BOOST_TEST(ov::test::has(e.what(), "--emulate_world 60 is not divisible by fs*cp = 8*1 = 8: emulate a multiple of 8 ranks"), e.what());
  }
}

#if defined(OPENVID_TORCH_CUDA) && defined(OPENVID_HAVE_KERNELS)
// On a GPU (run by bench/gpu_check.sh; skipped without one): the stand-in runs on the group's stream and
// holds the caller's stream, from wait() on, until the modelled 60 ms have passed; 90 ms of work queued
// on the caller's stream before the wait hide it; the outputs are the CPU path's.
BOOST_AUTO_TEST_CASE(on_a_gpu_a_stand_in_holds_the_callers_stream) {
  if (!at::hasCUDA()) {
    BOOST_TEST_MESSAGE("no GPU: skipped");
    return;
  }
  c10::cuda::CUDAGuard guard(0);
  ov::comm::Network net;
  net.nvlink_latency_us = 20000;
  net.nvlink_gbps = 1e6;
  auto c = ov::comm::make_emulated_communicator("shard", 4, ov::comm::Backend::kNccl, 0, ov::comm::EmulatedLink{net, false},
                                                std::chrono::milliseconds(10000));
  const auto gpu = at::TensorOptions().device(at::kCUDA, 0);
  const at::Tensor in = at::arange(3, gpu.dtype(at::kFloat)) + 1;
  at::Tensor out = at::zeros({12}, gpu);
  const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream();
  const auto t0 = Clock::now();
  c->all_gather(out, in).wait();
  stream.synchronize();
  BOOST_TEST(ms_since(t0) >= 59.0);
  BOOST_TEST(at::equal(out.cpu(), in.cpu().repeat({4})));
  const at::Tensor full = at::arange(12, gpu.dtype(at::kFloat));
  at::Tensor part = at::zeros({3}, gpu);
  c->reduce_scatter(part, full, ov::comm::ReduceOp::kSum).wait();
  stream.synchronize();
  BOOST_TEST(at::equal(part.cpu(), 4 * full.cpu().narrow(0, 0, 3)));
  const ov::comm::Communicator::Timing exposed = c->timing();
  BOOST_TEST(exposed.waited_ms >= 90.0);  // both waited for at once (less the first launches' module loading)
  BOOST_TEST(exposed.busy_ms >= 119.0);
  // 90 ms of work on the caller's stream before the wait: the 60 ms stand-in runs under it.
  const at::Tensor slot = at::zeros({1}, gpu.dtype(at::kLong));
  ov::comm::Work w = c->all_gather(out, in);
  ov::kernels::stamp_time(slot.data_ptr<int64_t>(), stream.stream());
  ov::kernels::spin_until(slot.data_ptr<int64_t>(), 90'000'000, stream.stream());
  w.wait();
  stream.synchronize();
  const ov::comm::Communicator::Timing after = c->timing();
  BOOST_TEST(after.waited_ms - exposed.waited_ms < 5.0);
  BOOST_TEST(after.busy_ms - exposed.busy_ms >= 59.0);
  // all_reduce_after: another group's all-reduce (a tree over 4 ranks: 80 ms) starts on the device once the
  // 60 ms stand-in before it is done; the host and the caller's stream wait for neither until wait().
  auto dp = ov::comm::make_emulated_communicator("dp", 4, ov::comm::Backend::kNccl, 0, ov::comm::EmulatedLink{net, false},
                                                 std::chrono::milliseconds(10000));
  BOOST_TEST(dp->starts_after());
  at::Tensor g = at::ones({4}, gpu);
  const auto t1 = Clock::now();
  ov::comm::Work first = c->all_gather(out, in);
  ov::comm::Work second = dp->all_reduce_after(first, g, ov::comm::ReduceOp::kSum);
  BOOST_TEST(ms_since(t1) < 30.0);
  second.wait();
  stream.synchronize();
  BOOST_TEST(ms_since(t1) >= 139.0);
  BOOST_TEST(at::equal(g.cpu(), at::full({4}, 4.0f)));
  first.wait();
}
#endif
