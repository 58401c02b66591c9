#pragma once
// Reads samples of an openvid dataset (docs/dataset.md) with collective MPI-IO: every rank of the
// reader's communicator takes part in every read, each selecting its own rows (and, for context
// parallelism, its own time slice of the latents).
#include <ATen/core/Tensor.h>
#include <mpi.h>

#include <memory>
#include <string>
#include <vector>

#include "openvid/data/manifest.h"

namespace ov::data {

// Which part of a global batch this rank reads.
struct ReaderLayout {
  int data_rank = 0, num_data_ranks = 1;  // ranks that read different samples (dp * fs)
  int cp_rank = 0, cp_size = 1;           // ranks that split one sample's latent along time
  int64_t time_granule = 1;               // frames per video token (the model's time_patch)
};

// The samples of one optimizer step, for all data ranks: data rank r reads
// samples[r * per_rank .. (r + 1) * per_rank), indices within `bucket`.
struct GlobalBatch {
  int64_t bucket = -1;
  std::vector<int64_t> samples;
  int64_t valid = -1;  // samples before this index are real; the rest pad a remainder or evaluation batch (-1: all)
  int64_t real() const { return valid < 0 ? static_cast<int64_t>(samples.size()) : valid; }
};

// One rank's share of a batch on the host, in the stored IEEE half.
struct HostBatch {
  int64_t bucket = -1;
  std::vector<int64_t> samples;        // indices within the bucket: this rank's share, in batch order
  at::Tensor latents;                  // [B, C, t_count, H, W] half: this rank's time slice
  at::Tensor text;                     // [B, Lc, Dc] half
  std::vector<std::string> captions;
  int64_t frames = 0;                  // T of the whole sample
  int64_t t_begin = 0, t_count = 0;    // this rank's latent frames
  int64_t valid = 0;                   // real samples of this share (its first ones; the rest are padding)
  int64_t global_valid = 0;            // real samples of the whole global batch
};

struct ReadStats {
  int64_t reads = 0;               // H5Dread calls of latents and text
  int64_t collective_reads = 0;    // ... that HDF5 reports as collective
  int64_t independent_reads = 0;   // ... that fell back to independent I/O
  int64_t bytes = 0;               // bytes read by this rank
  double seconds = 0;              // time inside the reads
};

struct DatasetOptions {
  bool check_finite = false;  // after each read, fail (on every rank) on NaN/Inf in a latent
};

// Local: throws InputError when a bucket of `manifest` has latent frames that are not a multiple of the
// layout's time granule, or video tokens in time that do not split into its cp slices.
void check_layout(const Manifest& manifest, const ReaderLayout& layout);

class Dataset {
 public:
  // Collective over `comm` (every rank that will read calls it). Reads the manifest, opens every shard
  // with MPI-IO and checks it against the manifest. Bad input ends the job cleanly on every rank
  // (CollectiveExit) with one message naming the file and the problem.
  static std::unique_ptr<Dataset> open(const std::string& path, MPI_Comm comm, DatasetOptions options = {});
  ~Dataset();
  Dataset(const Dataset&) = delete;
  Dataset& operator=(const Dataset&) = delete;

  const Manifest& manifest() const;

  // Collective over the dataset's communicator: every rank calls it with the same global batch and a
  // layout consistent with the others'. Returns this rank's share of the samples in the batch's order (rows
  // are read in file order, in place, then put back in batch order: positions matter, e.g. the padding of
  // an evaluation batch is its last positions), a sample drawn twice coming twice. The returned buffers are reused for a
  // later batch once every tensor sharing their storage is released. HDF5 is not thread-safe: one thread
  // at a time may call into a Dataset.
  HostBatch read(const GlobalBatch& batch, const ReaderLayout& layout);

  // Local: throws InputError when a bucket cannot be split into cp slices of whole video tokens.
  void check_layout(const ReaderLayout& layout) const { data::check_layout(manifest(), layout); }

  const ReadStats& stats() const;

 private:
  struct Impl;
  explicit Dataset(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ov::data
