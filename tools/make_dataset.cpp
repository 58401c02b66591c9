// openvid_make_dataset: writes a synthetic dataset (random latents and text states in the real format,
// docs/dataset.md) in parallel over the MPI ranks it is launched on.
//
//   mpirun -np 4 openvid_make_dataset --out data/fake --samples 256 --shape 16x32x32 --shape 8x32x48
#include <boost/program_options.hpp>

#include <chrono>
#include <iostream>

#include "openvid/data/synthetic.h"
#include "openvid/runtime/error.h"
#include "openvid/config/options.h"
#include "openvid/runtime/mpi_session.h"

namespace po = boost::program_options;

namespace {

int make_dataset(int argc, char** argv) {
  ov::data::SyntheticSpec spec;
  std::vector<std::string> shapes;
  po::options_description desc("openvid_make_dataset: a synthetic openvid dataset, written in parallel over MPI ranks");
  desc.add_options()("help,h", "print this help")
      ("out", po::value(&spec.directory)->required(), "directory to write (dataset.json and shard-*.h5)")
      ("samples", po::value(&spec.samples_per_bucket)->default_value(spec.samples_per_bucket), "samples per bucket")
      ("shape", po::value(&shapes)->multitoken(), "latent FRAMESxHEIGHTxWIDTH of a bucket; repeat for more buckets (default 16x32x32)")
      ("channels", po::value(&spec.channels)->default_value(spec.channels), "latent channels C")
      ("text-tokens", po::value(&spec.text_tokens)->default_value(spec.text_tokens), "text tokens Lc")
      ("text-dim", po::value(&spec.text_dim)->default_value(spec.text_dim), "text width Dc")
      ("caption-bytes", po::value(&spec.caption_bytes)->default_value(spec.caption_bytes), "fixed caption length in bytes")
      ("shards", po::value(&spec.shards)->default_value(spec.shards), "shard files (every bucket is split over them)")
      ("seed", po::value(&spec.seed)->default_value(spec.seed), "seed of the random values");
  po::variables_map vm;
  ov::all_ranks_check(MPI_COMM_WORLD, [&] {
    ov::parse_tool_command_line(desc, argc, argv, vm);
    for (const auto& s : shapes) spec.shapes.push_back(ov::data::parse_latent_shape(s, "--shape"));
    if (spec.shapes.empty()) spec.shapes.push_back({16, 32, 32});
  });
  const bool root = ov::world_rank() == 0;
  if (vm.count("help")) {
    if (root) std::cout << desc << "\n";
    return 0;
  }
  const auto t0 = std::chrono::steady_clock::now();
  const ov::data::Manifest m = ov::data::write_synthetic_dataset(MPI_COMM_WORLD, spec);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (root) {
    double bytes = 0;
    for (const auto& b : m.buckets)
      bytes += 2.0 * b.count * (m.latent_channels * b.frames * b.height * b.width + m.text_tokens * m.text_dim);
    std::cout << "wrote " << m.total_samples() << " samples in " << m.buckets.size() << " bucket(s) and " << spec.shards
              << " shard(s) to " << spec.directory << " (" << bytes / 1e9 << " GB of latents and text) in " << seconds
              << " s on " << ov::world_size() << " rank(s)\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return ov::run_mpi_main(argc, argv, make_dataset); }
