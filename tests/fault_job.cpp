// A small MPI job that injects one fault on one rank, for the tests that check how a job ends:
//   fault_job <mode> <rank> [timeout_seconds]
// modes (every rank but <rank> enters an all-reduce over the world and waits for <rank>):
//   throw        <rank> throws an exception          -> job aborted promptly, "rank N (host): ..." once
//   stall        <rank> never joins (sleeps 120 s)   -> the others time out after timeout_seconds and abort
//   crash        <rank> calls std::abort()           -> the launcher takes the job down
//   exit         <rank> exits with code 3 mid-job    -> the launcher takes the job down
//   input-error  <rank> alone finds bad input        -> every rank exits 2, message printed once
//   stall-agree  <rank> never joins an agreement on errors (the checkpoint's path)  -> abort after the timeout
//   stall-read   <rank> never joins the data prefetcher's collective reads          -> abort after the timeout
//   nccl-stall   (CUDA builds, one GPU) an all-reduce over NCCL is held behind a kernel spinning for 60 s
//                -> the NCCL watchdog aborts the job after the timeout, naming the collective
//   none         no fault                            -> exit 0
#include <ATen/ops/ones.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <stdexcept>
#include <thread>

#include <unistd.h>

#include <filesystem>

#ifdef OPENVID_TEST_SPIN
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
void spin_gpu_for(double seconds, cudaStream_t stream);
#endif

#include "openvid/comm/host_copy.h"
#include "openvid/comm/process_groups.h"
#include "openvid/data/prefetch.h"
#include "openvid/data/synthetic.h"
#include "openvid/runtime/error.h"
#include "openvid/runtime/mpi_session.h"
#include "openvid/runtime/universe.h"

namespace {

int fault_job(int argc, char** argv) {
  if (argc < 3) throw std::invalid_argument("usage: fault_job <mode> <rank> [timeout_seconds]");
  const std::string mode = argv[1];
  const int faulty = std::atoi(argv[2]);
  const double timeout_s = argc > 3 ? std::atof(argv[3]) : 600;
  ov::set_collective_timeout(timeout_s);
#ifdef OPENVID_TEST_SPIN
  if (mode == "nccl-stall") {
    ov::Universe gpu = ov::Universe::create(MPI_COMM_WORLD, 1, 1, ov::DeviceRequest::kCuda);
    auto nccl = ov::comm::ProcessGroups::create(gpu, ov::comm::Backend::kNccl,
                                                std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
    const auto device = static_cast<c10::DeviceIndex>(gpu.device().index);
    at::Tensor t = at::ones({16}, at::TensorOptions().device(at::kCUDA, device));
    nccl.world().all_reduce(t, ov::comm::ReduceOp::kSum).wait();  // NCCL's lazy set-up done before the device is held
    c10::cuda::getCurrentCUDAStream(device).synchronize();
    // The spinner runs on a side stream, so that nothing synchronising with the legacy default stream waits for it.
    c10::cuda::CUDAStreamGuard side(c10::cuda::getStreamFromPool(false, device));
    spin_gpu_for(60, c10::cuda::getCurrentCUDAStream(device).stream());
    nccl.world().all_reduce(t, ov::comm::ReduceOp::kSum).wait();  // the collective waits behind the spinning kernel
    std::cout << "fault_job: sum " << ov::comm::to_host(t)[0].item<float>() << "\n";  // the host blocks here, as the trainer does
    return 0;
  }
#endif
  ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, 1, 1, ov::DeviceRequest::kCpu);
  auto groups = ov::comm::ProcessGroups::create(
      u, ov::comm::Backend::kMpi, std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
  const bool me = u.rank() == faulty;

  if (mode == "input-error") {
    ov::agree_on_errors(u.world(), me ? "dataset 'x.h5' is missing on this node" : "");
    return 0;
  }
  if (mode == "stall-agree") {
    if (me) std::this_thread::sleep_for(std::chrono::seconds(120));
    ov::agree_on_errors(u.world(), "");
    return 0;
  }
  if (mode == "stall-read") {
    const std::string dir = ov::broadcast_string(
        u.world(), (std::filesystem::temp_directory_path() / ("openvid_fault_read_" + std::to_string(::getpid()))).string());
    ov::data::SyntheticSpec spec;
    spec.directory = dir;
    spec.shapes = {{2, 4, 4}};
    spec.samples_per_bucket = 16;
    spec.channels = 2;
    spec.text_tokens = 2;
    spec.text_dim = 4;
    ov::data::write_synthetic_dataset(u.world(), spec);
    auto dataset = ov::data::Dataset::open(dir, u.world());
    const ov::data::Sampler sampler({16}, 1, u.size(), 0.0);
    if (me) std::this_thread::sleep_for(std::chrono::seconds(120));
    ov::data::Prefetcher prefetcher(*dataset, sampler, {0, 0}, 4, ov::data::ReaderLayout{u.rank(), u.size(), 0, 1, 1});
    prefetcher.next();
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
