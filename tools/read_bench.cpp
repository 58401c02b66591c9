// openvid_read_bench: read throughput of the dataset reader, as the trainer uses it (sampler, collective
// reads, prefetch thread), optionally against a simulated compute time per step to measure the data wait.
//
//   mpirun -np 4 openvid_read_bench --dataset data/bench --batch 4 --steps 50 [--cp 2] [--compute-ms 200]
//
// Prints one line from rank 0: bytes read by all ranks, GB/s, samples/s, collective/independent reads,
// and the data wait as a fraction of the step time.
#include <boost/program_options.hpp>

#include <chrono>
#include <iostream>
#include <thread>

#include "openvid/data/dataset.h"
#include "openvid/data/prefetch.h"
#include "openvid/data/sampler.h"
#include "openvid/runtime/error.h"
#include "openvid/runtime/mesh.h"
#include "openvid/config/options.h"
#include "openvid/runtime/mpi_session.h"

namespace po = boost::program_options;

namespace {

int read_bench(int argc, char** argv) {
  std::string dataset;
  int64_t batch = 4, steps = 0;
  int cp = 1, depth = 2;
  double compute_ms = 0;
  po::options_description desc("openvid_read_bench: throughput of the collective dataset reader");
  desc.add_options()("help,h", "print this help")
      ("dataset", po::value(&dataset)->required(), "dataset directory or manifest")
      ("batch", po::value(&batch)->default_value(batch), "samples per data rank per step")
      ("steps", po::value(&steps)->default_value(steps), "steps to read; 0 = one epoch")
      ("cp", po::value(&cp)->default_value(cp), "context-parallel ranks per sample (each reads its time slice)")
      ("depth", po::value(&depth)->default_value(depth), "prefetch queue depth")
      ("compute-ms", po::value(&compute_ms)->default_value(compute_ms), "simulated compute per step (the main thread sleeps)");
  po::variables_map vm;
  ov::all_ranks_check(MPI_COMM_WORLD, [&] { ov::parse_tool_command_line(desc, argc, argv, vm); });
  const int rank = ov::world_rank(), world = ov::world_size();
  if (vm.count("help")) {
    if (rank == 0) std::cout << desc << "\n";
    return 0;
  }
  const ov::Mesh mesh = ov::Mesh::make(world, 1, cp);
  const ov::data::ReaderLayout layout{mesh.data_rank(rank), mesh.num_data_ranks(), mesh.coord(rank).cp, cp, 1};
  auto ds = ov::data::Dataset::open(dataset, MPI_COMM_WORLD);
  std::vector<int64_t> counts;
  for (const auto& b : ds->manifest().buckets) counts.push_back(b.count);
  const ov::data::Sampler sampler(counts, 1, batch * layout.num_data_ranks, 0.0);
  if (steps <= 0) steps = sampler.steps_per_epoch();

  MPI_Barrier(MPI_COMM_WORLD);
  const auto t0 = std::chrono::steady_clock::now();
  double wait = 0;
  {
    ov::data::Prefetcher pf(*ds, sampler, {0, 0}, steps, layout, depth);
    for (int64_t s = 0; s < steps; ++s) {
      pf.next();
      if (compute_ms > 0) std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(compute_ms));
    }
    wait = pf.total_wait_seconds();
  }
  MPI_Barrier(MPI_COMM_WORLD);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto& st = ds->stats();
  int64_t local[3] = {st.bytes, st.collective_reads, st.independent_reads}, total[3] = {0, 0, 0};
  OV_MPI_CHECK(MPI_Reduce(local, total, 3, MPI_INT64_T, MPI_SUM, 0, MPI_COMM_WORLD));
  double max_wait = 0;
  OV_MPI_CHECK(MPI_Reduce(&wait, &max_wait, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD));
  if (rank == 0) {
    const double samples = static_cast<double>(steps * batch * layout.num_data_ranks);
    std::cout << "ranks " << world << " cp " << cp << " steps " << steps << " bytes " << total[0] << " seconds " << seconds
              << " GB/s " << static_cast<double>(total[0]) / seconds / 1e9 << " samples/s " << samples / seconds
              << " collective_reads " << total[1] << " independent_reads " << total[2] << " data_wait_fraction "
              << max_wait / seconds << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return ov::run_mpi_main(argc, argv, read_bench); }
