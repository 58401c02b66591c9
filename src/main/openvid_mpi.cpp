// openvid_mpi: the training job. Parse options (all ranks agree on errors), build the runtime, report
// the topology, check the communication groups, train.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <iostream>
#include <string>
#include <vector>

#include <c10/util/Exception.h>

#include "openvid/comm/process_groups.h"
#include "openvid/config/options.h"
#include "openvid/runtime/error.h"
#include "openvid/runtime/files.h"
#include "openvid/runtime/mpi_session.h"
#include "openvid/runtime/signals.h"
#include "openvid/runtime/universe.h"
#include "openvid/train/plan.h"
#include "openvid/train/plan_advice.h"
#include "openvid/train/setup.h"
#include "openvid/train/trainer.h"

namespace {

int openvid_mpi(int argc, char** argv) {
  const bool root = ov::world_rank() == 0;
  ov::install_stop_signal_handlers();  // first: a signal during the start-up must not kill the job (exit 3 instead)
  if (const char* delay = std::getenv("OPENVID_FAULT_START_DELAY")) {  // fault injection for the start-up signal test
    std::cerr << "openvid: start-up held for " << delay << " s (OPENVID_FAULT_START_DELAY)\n" << std::flush;  // the test's cue
    std::this_thread::sleep_for(std::chrono::duration<double>(std::atof(delay)));
  }
  ov::ParsedCommandLine cl;
  ov::all_ranks_check(MPI_COMM_WORLD, [&] { cl = ov::parse_command_line(std::vector<std::string>(argv + 1, argv + argc)); });
  if (cl.action == ov::ParsedCommandLine::Action::kHelp) {
    if (root) std::cout << ov::help_text("openvid_mpi");
    return ov::kExitOk;
  }
  if (cl.action == ov::ParsedCommandLine::Action::kVersion) {
    if (root) std::cout << ov::version_string() << "\n";
    return ov::kExitOk;
  }
  const ov::Options& opt = cl.options;
  if (root) {
    for (const std::string& note : cl.notes) std::cout << note << "\n";
  }
  ov::set_collective_timeout(opt.collective_timeout);
  if (opt.dry_run || opt.plan) return ov::train::dry_run(opt, MPI_COMM_WORLD);  // before any device, communicator or file

  ov::Universe universe = opt.emulate_world > 0 ? ov::Universe::emulate(MPI_COMM_WORLD, opt.emulate_world, opt.fs, opt.cp, opt.device)
                                                : ov::Universe::create(MPI_COMM_WORLD, opt.fs, opt.cp, opt.device);
  ov::comm::Backend backend = ov::comm::Backend::kMpi;
  ov::all_ranks_check(universe.world(), [&] { backend = ov::comm::resolve_backend(opt.backend, universe.device()); });
  // Before any communicator exists: ranks on other devices, backends or dtypes would meet in different
  // collectives (a hang) or compute different things.
  const ov::train::ComputeSetup compute = ov::train::compute_setup(opt, universe);
  ov::agree_on_value(universe.world(), "device, backend and compute dtype",
                     std::string(compute.device.is_cuda() ? "cuda" : "cpu") + ", " + ov::comm::to_string(backend) + ", " +
                         c10::toString(compute.dtype),
                     "A host whose GPUs are hidden or failed runs its ranks on the CPU: check nvidia-smi and CUDA_VISIBLE_DEVICES "
                     "there, and pass the same --device, --backend and --precision to every rank");
  const std::vector<std::string> lines = ov::gather_strings(universe.world(), universe.describe());
  const std::vector<std::string> places = ov::gather_strings(universe.world(), universe.place());
  if (root) {
    if (universe.emulated()) {
      const ov::comm::Network net = ov::train::planned_network(opt);
      std::cout << ov::version_string() << ": one process emulating rank 0 of " << universe.size() << " ranks ("
                << ov::train::planned_gpus_per_node(opt, universe.size()) << " per node), mesh "
                << universe.mesh().describe() << ", backend " << ov::comm::to_string(backend) << "; collectives are stand-ins lasting "
                << "what the network model gives: NVLink " << net.nvlink_gbps << " GB/s and " << net.nvlink_latency_us
                << " us per ring step, across nodes " << net.network_gbps << " GB/s per GPU and " << net.network_latency_us << " us\n";
    } else {
      std::cout << ov::version_string() << ": " << universe.size() << " ranks on " << universe.num_nodes()
                << " node(s), mesh " << universe.mesh().describe() << ", backend "
                << ov::comm::to_string(backend) << "\n";
    }
    std::vector<ov::RankPlace> ranks;
    for (const std::string& p : places) ranks.push_back(ov::place_of(p));
    for (const std::string& line : ov::placement_summary(ranks, lines)) std::cout << "  " << line << "\n";
    std::cout.flush();
  }
  // Every input is checked (over MPI) before the first NCCL communicator exists.
  ov::train::RunInputs inputs = ov::train::check_run_inputs(opt, universe);
  ov::root_check<std::exception>(universe.world(), [&] {  // every rank's line, whatever the job's size
    std::string all;
    for (const std::string& line : lines) all += line + "\n";
    ov::write_file_durably(inputs.run_dir + "/placement.txt", all);
  }, ov::kExitFailure);
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(opt.collective_timeout * 1000));
  ov::comm::ProcessGroups groups =
      universe.emulated()
          ? ov::comm::ProcessGroups::emulate(universe, backend, timeout, ov::train::planned_network(opt),
                                             ov::train::planned_gpus_per_node(opt, universe.size()))
          : ov::comm::ProcessGroups::create(universe, backend, timeout);
  ov::comm::verify_groups(groups, universe);
  if (root && !universe.emulated()) std::cout << "communication groups verified (world, shard, cp, dp)\n" << std::flush;
  int code = ov::kExitOk;
  try {
    ov::train::Trainer trainer(opt, universe, groups, std::move(inputs));
    code = trainer.run();
  } catch (const c10::OutOfMemoryError& e) {  // what to change, instead of LibTorch's backtrace
    std::string what = e.what_without_backtrace();
    what = what.substr(0, what.find(" Including non-PyTorch memory"));
    throw ov::Error("the GPU ran out of memory (" + what +
                    ") Lower --batch_size, recompute activations (--recompute_every 1: every block, 2: every other "
                    "block), or shard the model over more ranks (--fs); docs/gpu.md lists what fits on an 80 GB GPU");
  }
  groups.finalize();
  return code;
}

}  // namespace

int main(int argc, char** argv) { return ov::run_mpi_main(argc, argv, openvid_mpi); }
