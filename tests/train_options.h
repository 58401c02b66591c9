#pragma once
// The options of a small training run on CPU ranks over the MPI backend (the trainer, plan and emulation
// suites): the model of tiny_model.h's width with 2 blocks, 3 steps, no evaluation, 20% of each bucket held
// out; the small dataset such runs train on; and a run directory every rank agrees on.
#include <unistd.h>

#include <filesystem>
#include <string>

#include <mpi.h>

#include "openvid/config/options.h"
#include "openvid/data/synthetic.h"
#include "openvid/runtime/mpi_session.h"

inline ov::Options options_for(const std::string& dataset, const std::string& run_dir, const std::string& run, int fs, int cp,
                               int batch_size) {
  ov::Options o;
  o.dataset = dataset;
  o.run_dir = run_dir;
  o.run_name = run;
  o.fs = fs;
  o.cp = cp;
  o.batch_size = batch_size;
  o.max_steps = 3;
  o.warmup_steps = 1;
  o.learning_rate = 1e-3;
  o.evaluate_every = 0;
  o.eval_batches = 4;
  o.heldout_fraction = 0.2;
  o.seed = 3;
  o.device = ov::DeviceRequest::kCpu;
  o.backend = ov::comm::BackendRequest::kMpi;
  o.collective_timeout = 60;
  o.model.width = 32;
  o.model.depth = 2;
  o.model.head_dim = 16;
  o.model.registers = 4;
  o.model.in_channels = 4;
  o.model.text_dim = 24;
  return o;
}

// Collective over `comm`: a small synthetic dataset under `dir`/data (`samples` samples of [4, 4, 4, 6]: 2 x 2 x 3
// video tokens, so cp 2 splits time; text [5, 24]).
inline ov::data::SyntheticSpec small_dataset(const std::string& dir, MPI_Comm comm = MPI_COMM_WORLD, int64_t samples = 48) {
  ov::data::SyntheticSpec spec;
  spec.directory = dir + "/data";
  spec.shapes = {{4, 4, 6}};
  spec.samples_per_bucket = samples;
  spec.channels = 4;
  spec.text_tokens = 5;
  spec.text_dim = 24;
  ov::data::write_synthetic_dataset(comm, spec);
  return spec;
}

// Collective: a temporary directory name every rank agrees on (rank 0's).
inline std::string shared_temp_dir(const std::string& prefix) {
  return ov::broadcast_string(MPI_COMM_WORLD, (std::filesystem::temp_directory_path() / (prefix + std::to_string(::getpid()))).string());
}
