#define BOOST_TEST_MODULE collectives
#include "mpi_fixture.h"

#include <ATen/ATen.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "openvid/comm/process_groups.h"
#include "openvid/runtime/error.h"
#include "openvid/runtime/mpi_session.h"

// Every collective of the backend named by OPENVID_TEST_BACKEND (mpi by default; nccl on a GPU
// machine) on every group of every layout the world size allows, for several dtypes, against values
// computed by hand: rank r of a group contributes (r+1) * [1, 2, ..., n], so sums, maxima, minima and
// averages are exact in every dtype tested, bfloat16 included.

using ov::comm::Backend;
using ov::comm::Communicator;
using ov::comm::ReduceOp;

namespace {

Backend test_backend() {
  const char* b = std::getenv("OPENVID_TEST_BACKEND");
  return b != nullptr && std::string(b) == "nccl" ? Backend::kNccl : Backend::kMpi;
}

const std::chrono::milliseconds kTimeout(60000);

struct Layout {
  ov::Universe universe;
  ov::comm::ProcessGroups groups;
  at::Device device;
};

Layout make_layout(int fs, int cp) {
  const Backend backend = test_backend();
  ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, fs, cp,
                                        backend == Backend::kNccl ? ov::DeviceRequest::kCuda : ov::DeviceRequest::kCpu);
  const at::Device device = backend == Backend::kNccl
                                ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(u.device().index))
                                : at::Device(at::kCPU);
  auto groups = ov::comm::ProcessGroups::create(u, backend, kTimeout);
  return Layout{std::move(u), std::move(groups), device};
}

const at::ScalarType kDtypes[] = {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf, at::kLong, at::kInt};

// (scale) * [first, first+1, ..., first+n-1], built in double.
at::Tensor ramp(int64_t n, double scale, double first = 1) {
  return (at::arange(n, at::kDouble) + first) * scale;
}

void check_equal(const at::Tensor& got, const at::Tensor& expected, const std::string& what) {
  const at::Tensor g = got.cpu().to(at::kDouble);
  const bool ok = g.sizes() == expected.sizes() && at::equal(g, expected);
  BOOST_CHECK_MESSAGE(ok, what << ": got " << g << " expected " << expected);
}

std::string label(const Communicator& c, at::ScalarType t, const char* op, int64_t n = -1) {
  std::ostringstream os;
  os << op << " on '" << c.name() << "' (" << c.size() << " ranks) " << c10::toString(t);
  if (n >= 0) os << " n=" << n;
  return os.str();
}

void check_all_reduce(Communicator& c, const at::Device& dev) {
  const int r = c.rank(), size = c.size();
  const double sum_scale = size * (size + 1) / 2.0;
  for (at::ScalarType t : kDtypes) {
    for (int64_t n : {0, 1, 7, 64}) {
      // 16-bit sums round partial results to 8 (bf16) or 11 (half) bits: keep them exact.
      if (c10::elementSize(t) == 2 && n > 7) continue;
      auto run = [&](ReduceOp op) {
        at::Tensor x = ramp(n, r + 1).to(t).to(dev);
        c.all_reduce(x, op).wait();
        return x;
      };
      check_equal(run(ReduceOp::kSum), ramp(n, sum_scale), label(c, t, "all_reduce sum", n));
      check_equal(run(ReduceOp::kMax), ramp(n, size), label(c, t, "all_reduce max", n));
      check_equal(run(ReduceOp::kMin), ramp(n, 1), label(c, t, "all_reduce min", n));
      if (at::isFloatingType(t)) {
        check_equal(run(ReduceOp::kAvg), ramp(n, sum_scale / size), label(c, t, "all_reduce avg", n));
      }
    }
  }
}

void check_all_gather(Communicator& c, const at::Device& dev) {
  const int r = c.rank(), size = c.size();
  for (at::ScalarType t : kDtypes) {
    // Even: every rank sends n = 3 values 10*r + [0, 1, 2].
    const int64_t n = 3;
    at::Tensor in = ramp(n, 1, 10.0 * r).to(t).to(dev);
    at::Tensor out = at::full({size * n}, -1.0, at::kDouble).to(t).to(dev);
    c.all_gather(out, in).wait();
    std::vector<at::Tensor> parts;
    for (int q = 0; q < size; ++q) parts.push_back(ramp(n, 1, 10.0 * q));
    check_equal(out, at::cat(parts), label(c, t, "all_gather"));

    // In place: this rank's values already sit in its chunk of the output.
    at::Tensor out_in_place = at::full({size * n}, -1.0, at::kDouble).to(t).to(dev);
    at::Tensor own = out_in_place.narrow(0, r * n, n);
    own.copy_(ramp(n, 1, 10.0 * r).to(t));
    c.all_gather(out_in_place, own).wait();
    check_equal(out_in_place, at::cat(parts), label(c, t, "all_gather in place"));
  }
}

void check_reduce_scatter(Communicator& c, const at::Device& dev) {
  const int r = c.rank(), size = c.size();
  const double sum_scale = size * (size + 1) / 2.0;
  for (at::ScalarType t : kDtypes) {
    const int64_t n = 3;
    at::Tensor in = ramp(size * n, r + 1).to(t).to(dev);
    at::Tensor out = at::full({n}, -1.0, at::kDouble).to(t).to(dev);
    c.reduce_scatter(out, in, ReduceOp::kSum).wait();
    check_equal(out, ramp(n, sum_scale, static_cast<double>(r * n + 1)), label(c, t, "reduce_scatter sum"));
    c.reduce_scatter(out, in, ReduceOp::kMax).wait();
    check_equal(out, ramp(n, size, static_cast<double>(r * n + 1)), label(c, t, "reduce_scatter max"));
    if (at::isFloatingType(t)) {
      c.reduce_scatter(out, in, ReduceOp::kAvg).wait();
      check_equal(out, ramp(n, sum_scale / size, static_cast<double>(r * n + 1)), label(c, t, "reduce_scatter avg"));
    }
  }
}

void check_broadcast(Communicator& c, const at::Device& dev) {
  const int r = c.rank(), root = c.size() - 1;
  for (at::ScalarType t : kDtypes) {
    at::Tensor x = (r == root ? ramp(5, 1, 42) : at::full({5}, -1.0, at::kDouble)).to(t).to(dev);
    c.broadcast(x, root).wait();
    check_equal(x, ramp(5, 1, 42), label(c, t, "broadcast"));
  }
}

// Several collectives in flight at once, completed in reverse order.
void check_overlapping_work(Communicator& c, const at::Device& dev) {
  const int r = c.rank(), size = c.size();
  at::Tensor a = ramp(1000, r + 1).to(at::kFloat).to(dev);
  at::Tensor b = ramp(10, 1, 10.0 * r).to(at::kFloat).to(dev);
  at::Tensor gathered = at::zeros({10 * size}, at::kFloat).to(dev);
  ov::comm::Work wa = c.all_reduce(a, ReduceOp::kSum);
  ov::comm::Work wb = c.all_gather(gathered, b);
  wb.wait();
  wa.wait();
  check_equal(a, ramp(1000, size * (size + 1) / 2.0), label(c, at::kFloat, "overlapped all_reduce"));
  std::vector<at::Tensor> parts;
  for (int q = 0; q < size; ++q) parts.push_back(ramp(10, 1, 10.0 * q));
  check_equal(gathered, at::cat(parts), label(c, at::kFloat, "overlapped all_gather"));
}

// Wrong arguments are caught before any communication, with a message naming the group.
void check_argument_errors(Communicator& c, const at::Device& dev) {
  const int size = c.size();
  at::Tensor small = at::zeros({2}, at::kFloat).to(dev);
  at::Tensor out = at::zeros({2 * size + 1}, at::kFloat).to(dev);
  BOOST_CHECK_EXCEPTION(static_cast<void>(c.all_gather(out, small)), ov::Error, [&](const ov::Error& e) {
    return std::string(e.what()).find("group '" + c.name() + "'") != std::string::npos;
  });
  at::Tensor strided = at::zeros({4, 4}, at::kFloat).to(dev).t();
  BOOST_CHECK_THROW(static_cast<void>(c.all_reduce(strided, ReduceOp::kSum)), ov::Error);
  BOOST_CHECK_THROW(static_cast<void>(c.broadcast(small, size)), ov::Error);
  at::Tensor as_double = at::zeros({2 * size}, at::kDouble).to(dev);
  BOOST_CHECK_THROW(static_cast<void>(c.all_gather(as_double, small)), ov::Error);
  if (c.backend() == Backend::kMpi) {
    at::Tensor ints = at::zeros({2}, at::kInt);
    BOOST_CHECK_THROW(static_cast<void>(c.all_reduce(ints, ReduceOp::kAvg)), ov::Error);
  }
}

// Every collective is counted on its group: calls and the bytes of its buffer (all_reduce and broadcast the
// tensor, all_gather the gathered output, reduce_scatter the scattered input); a group of one rank moves
// nothing; a refused call counts nothing.
void check_traffic(Communicator& c, const at::Device& dev) {
  using C = Communicator;
  const int size = c.size();
  const C::Traffic before = c.total_traffic();
  at::Tensor t = at::ones({10}, at::kFloat).to(dev), h = at::ones({6}, at::kBFloat16).to(dev);
  at::Tensor gathered = at::empty({3 * size}, at::kDouble).to(dev), mine = at::ones({3}, at::kDouble).to(dev);
  at::Tensor scattered = at::ones({5 * size}, at::kFloat).to(dev), out = at::empty({5}, at::kFloat).to(dev);
  const C::Traffic ar = c.traffic(C::kAllReduce), ag = c.traffic(C::kAllGather), rs = c.traffic(C::kReduceScatter), bc = c.traffic(C::kBroadcast);
  c.all_reduce(t, ReduceOp::kSum).wait();
  c.all_reduce(h, ReduceOp::kMax).wait();
  c.all_gather(gathered, mine).wait();
  c.reduce_scatter(out, scattered, ReduceOp::kSum).wait();
  c.broadcast(t, 0).wait();
  BOOST_CHECK_THROW(static_cast<void>(c.broadcast(t, size)), ov::Error);
  const int64_t counted = size > 1 ? 1 : 0;
  BOOST_CHECK_EQUAL(c.traffic(C::kAllReduce).calls - ar.calls, 2 * counted);
  BOOST_CHECK_EQUAL(c.traffic(C::kAllReduce).bytes - ar.bytes, (10 * 4 + 6 * 2) * counted);
  BOOST_CHECK_EQUAL(c.traffic(C::kAllGather).bytes - ag.bytes, 3 * size * 8 * counted);
  BOOST_CHECK_EQUAL(c.traffic(C::kReduceScatter).bytes - rs.bytes, 5 * size * 4 * counted);
  BOOST_CHECK_EQUAL(c.traffic(C::kBroadcast).calls - bc.calls, counted);
  BOOST_CHECK_EQUAL(c.total_traffic().bytes - before.bytes, (40 + 12 + 24 * size + 20 * size + 40) * counted);
}

template <typename Check>
void on_every_group(Check&& check) {
  for (auto [fs, cp] : layouts_for(ov::world_size())) {
    Layout l = make_layout(fs, cp);
    for (Communicator* c : {&l.groups.world(), &l.groups.shard(), &l.groups.cp(), &l.groups.dp()}) {
      BOOST_TEST_CONTEXT("layout fs=" << fs << " cp=" << cp << " group " << c->name()) { check(*c, l.device); }
    }
    l.groups.finalize();
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(all_reduce_every_op_and_dtype) { on_every_group(check_all_reduce); }
BOOST_AUTO_TEST_CASE(all_gather_even_and_uneven) { on_every_group(check_all_gather); }
BOOST_AUTO_TEST_CASE(reduce_scatter_even_and_uneven) { on_every_group(check_reduce_scatter); }
BOOST_AUTO_TEST_CASE(broadcast_from_the_last_rank) { on_every_group(check_broadcast); }
BOOST_AUTO_TEST_CASE(overlapping_collectives) { on_every_group(check_overlapping_work); }
BOOST_AUTO_TEST_CASE(argument_errors) { on_every_group(check_argument_errors); }
BOOST_AUTO_TEST_CASE(traffic_is_counted_per_group) { on_every_group(check_traffic); }

BOOST_AUTO_TEST_CASE(barrier_waits_for_the_slowest_rank) {
  Layout l = make_layout(1, 1);
  Communicator& world = l.groups.world();
  world.barrier();
  const auto start = std::chrono::steady_clock::now();
  if (world.rank() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  world.barrier();
  const double waited_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  BOOST_CHECK_GE(waited_ms, 250.0);  // every rank, not only rank 0, waited for rank 0
  l.groups.finalize();
}

// Waiting for a collective is counted as exposed communication on its group: the other ranks reach an
// all-reduce 300 ms after rank 0, which waits for them there (MPI: the host blocked in wait(); NCCL: the
// stream stalled at wait(), from events); they themselves wait little. On NCCL the collectives' run time
// is counted too. Resolved once the device has passed the wait (the copy to the host).
BOOST_AUTO_TEST_CASE(waiting_for_a_slow_peer_is_exposed_communication) {
  Layout l = make_layout(1, 1);
  Communicator& world = l.groups.world();
  at::Tensor t = at::ones({1024}, at::kFloat).to(l.device);
  world.all_reduce(t, ReduceOp::kSum).wait();  // NCCL sets up on first use: not part of the measurement
  static_cast<void>(t.cpu());
  world.barrier();
  const Communicator::Timing before = world.timing();
  if (world.rank() != 0) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  world.all_reduce(t, ReduceOp::kSum).wait();
  static_cast<void>(t.cpu());
  const Communicator::Timing after = world.timing();
  const double waited = after.waited_ms - before.waited_ms;
  BOOST_TEST_MESSAGE("rank " << world.rank() << " waited " << waited << " ms, collectives ran " << after.busy_ms - before.busy_ms << " ms");
  BOOST_CHECK_GE(waited, 0.0);
  if (world.size() > 1 && world.rank() == 0) BOOST_CHECK_GE(waited, 250.0);
  if (world.rank() != 0) BOOST_CHECK_LT(waited, 250.0);
  if (world.backend() == Backend::kNccl && world.size() > 1) BOOST_CHECK_GT(after.busy_ms - before.busy_ms, 0.0);
  l.groups.finalize();
}

BOOST_AUTO_TEST_CASE(groups_are_wired_as_the_mesh_says) {
  for (auto [fs, cp] : layouts_for(ov::world_size())) {
    Layout l = make_layout(fs, cp);
    BOOST_CHECK_NO_THROW(ov::comm::verify_groups(l.groups, l.universe));
    l.groups.finalize();
  }
}

BOOST_AUTO_TEST_CASE(backend_resolution) {
  const ov::DeviceChoice cpu{};
  using ov::comm::BackendRequest;
  BOOST_CHECK(ov::comm::resolve_backend(BackendRequest::kAuto, cpu) == Backend::kMpi);
  BOOST_CHECK(ov::comm::resolve_backend(BackendRequest::kMpi, cpu) == Backend::kMpi);
  BOOST_CHECK_THROW(ov::comm::resolve_backend(BackendRequest::kNccl, cpu), ov::InputError);  // no GPU here
  // Unknown words ("gloo") are refused by the option parser (test_options).
}
