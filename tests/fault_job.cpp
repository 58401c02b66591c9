// A small MPI job that injects one fault on one rank, for the tests that check how a job ends:
//   fault_job <mode> <rank> [timeout_seconds]
// modes (every rank but <rank> enters an all-reduce over the world and waits for <rank>):
//   throw        <rank> throws an exception          -> job aborted promptly, "rank N (host): ..." once
//   stall        <rank> never joins (sleeps 120 s)   -> the others time out after timeout_seconds and abort
//   crash        <rank> calls std::abort()           -> the launcher takes the job down
//   exit         <rank> exits with code 3 mid-job    -> the launcher takes the job down
//   input-error  <rank> alone finds bad input        -> every rank exits 2, message printed once
//   none         no fault                            -> exit 0
#include <ATen/ops/ones.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <stdexcept>
#include <thread>

#include "openvid/comm/process_groups.h"
#include "openvid/runtime/error.h"
#include "openvid/runtime/mpi_session.h"
#include "openvid/runtime/universe.h"

namespace {

int fault_job(int argc, char** argv) {
  if (argc < 3) throw std::invalid_argument("usage: fault_job <mode> <rank> [timeout_seconds]");
  const std::string mode = argv[1];
  const int faulty = std::atoi(argv[2]);
  const double timeout_s = argc > 3 ? std::atof(argv[3]) : 600;
  ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, 1, 1, ov::DeviceRequest::kCpu);
  auto groups = ov::comm::ProcessGroups::create(
      u, ov::comm::Backend::kMpi, std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
  const bool me = u.rank() == faulty;

  if (mode == "input-error") {
    ov::agree_on_errors(u.world(), me ? "dataset 'x.h5' is missing on this node" : "");
    return 0;
  }
  if (me) {
    if (mode == "throw") throw std::runtime_error("injected failure");
    if (mode == "stall") std::this_thread::sleep_for(std::chrono::seconds(120));
    if (mode == "crash") std::abort();
    if (mode == "exit") std::exit(3);
  }
  at::Tensor t = at::ones({16});
  groups.world().all_reduce(t, ov::comm::ReduceOp::kSum).wait();
  if (u.rank() == 0) std::cout << "fault_job: all-reduce done, sum " << t[0].item<float>() << "\n";
  groups.finalize();
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return ov::run_mpi_main(argc, argv, fault_job); }
