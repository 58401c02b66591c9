#pragma once
// Which samples each step reads: a deterministic function of (seed, epoch) and the dataset's bucket
// counts, the same on every rank and independent of the layout's rank count except through the global
// batch size. No MPI here.
//
// Epoch e: each bucket's training samples are shuffled with a stream seeded from (seed, e, bucket) and
// cut into global batches; the tail that does not fill one (the remainder) is a last, smaller batch of
// that bucket, padded to the global batch by repeating its samples (`valid` says how many are real: the
// loss weighs only those), or, with drop_remainder, left out of the epoch. Every training sample is in
// exactly one batch of each epoch (none left out without drop_remainder). The epoch's batches are then
// shuffled with (seed, e): a step's bucket is drawn in proportion to the batches the buckets have left, so
// every bucket's samples run out evenly over the epoch whatever its batch size; a bucket's batches come in
// the order they were cut, so the samples an epoch's first steps took are, per bucket, a prefix of its
// shuffled samples. A position (epoch, step) names a batch, so a checkpoint that stores it resumes exactly
// at the next batch.
//
// A resume that changes the global batches (other data ranks, another --batch_tokens or --batch_size) or
// the remainder rule continues the interrupted epoch with exactly the samples it has not yet taken
// (EpochStart: the samples of each bucket taken so far), cut into the new batches and shuffled as an
// epoch's are; later epochs are whole ones of the new rule. Every training sample is then still in one
// batch of every epoch.
//
// The held-out split is fixed by the data alone (a constant seed): the same samples are held out
// whatever the run seed or layout, so evaluation losses compare across runs.
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "openvid/data/dataset.h"

namespace ov::data {

struct Position {
  int64_t epoch = 0;
  int64_t step = 0;  // within the epoch
  bool operator==(const Position&) const = default;
};

// Where the sampler's first epoch starts: epoch `epoch`, partly done (`consumed[b]`: the samples of bucket b
// its earlier steps took; empty: none), continues at global step `step`.
struct EpochStart {
  int64_t epoch = 0, step = 0;
  std::vector<int64_t> consumed;
  bool operator==(const EpochStart&) const = default;
};

// What a checkpoint keeps of the sampler after `step` steps: the epoch and the samples of each bucket its
// earlier steps took, and the rule (global batches, remainder rule, the epoch start) that drew them.
struct SamplerState {
  int64_t epoch = 0;
  std::vector<int64_t> consumed;
  std::vector<int64_t> global_batches;
  bool drop_remainder = false;
  EpochStart start;
};

class Sampler {
 public:
  // bucket_counts[b]: samples in bucket b. Throws InputError when an epoch would have no batch.
  Sampler(std::vector<int64_t> bucket_counts, uint64_t seed, int64_t global_batch, double heldout_fraction, bool drop_remainder = false);
  // A global batch size per bucket (batches by token budget); 0 leaves a bucket out of training and of
  // evaluation.
  Sampler(std::vector<int64_t> bucket_counts, uint64_t seed, std::vector<int64_t> global_batches, double heldout_fraction,
          bool drop_remainder = false);

  int64_t global_batch(int64_t bucket) const { return global_batches_[static_cast<size_t>(bucket)]; }
  // Steps of a whole epoch, and of epoch e (the first one is shorter when it continues a partial epoch).
  int64_t steps_per_epoch() const { return steps_per_epoch_; }
  int64_t steps_in_epoch(int64_t epoch) const { return epoch == start_.epoch ? first_epoch_steps_ : steps_per_epoch_; }
  // The global step count when `epochs` epochs are done (epochs > the start's epoch).
  int64_t steps_until_epoch(int64_t epochs) const;
  GlobalBatch batch(Position p) const;
  Position next(Position p) const;
  // The position `steps` steps after the start of epoch 0 (steps >= the start's step).
  Position position_after(int64_t steps) const;

  // The state after `steps` steps (for a checkpoint).
  SamplerState state_after(int64_t steps) const;
  // Continues from a checkpoint's state at global step `steps`: with the same rule, exactly as the run that
  // wrote it (bitwise); otherwise the state's epoch continues with the samples it has not taken. Returns
  // false when the state does not fit this dataset (another number of buckets or fewer samples); the
  // sampler is then unchanged. Not thread-safe: call before any prefetching.
  bool resume(const SamplerState& state, int64_t steps);
  // Whether `state` was drawn by this sampler's rule (its global batches and remainder rule).
  bool same_rule(const SamplerState& state) const {
    return state.global_batches == global_batches_ && state.drop_remainder == drop_remainder_;
  }
  const EpochStart& start() const { return start_; }

  // Held-out samples of bucket b, in a fixed order.
  const std::vector<int64_t>& heldout(int64_t bucket) const { return heldout_[static_cast<size_t>(bucket)]; }
  const std::vector<int64_t>& training(int64_t bucket) const { return train_[static_cast<size_t>(bucket)]; }
  int64_t buckets() const { return static_cast<int64_t>(train_.size()); }
  // Training samples of bucket b that no batch of an epoch holds (its remainder with drop_remainder, all of
  // it when its global batch is 0).
  int64_t left_out(int64_t bucket) const;
  // Batches of bucket b per epoch, and how many of them are padded remainders.
  int64_t batches(int64_t bucket) const;
  int64_t padded_batches(int64_t bucket) const;
  // Evaluation batches over the held-out samples (at most max_batches, round robin over the buckets, so
  // that each bucket is evaluated when max_batches allows); the last batch of a bucket is padded by
  // repeating its samples, and `valid` says how many are real.
  std::vector<GlobalBatch> heldout_batches(int64_t max_batches) const;

 private:
  struct Slot {
    int64_t bucket, first;  // first: offset into the epoch's shuffled training samples of the bucket
    int64_t real;           // samples from `first` in the batch (the bucket's global batch, or fewer for a remainder)
  };
  std::vector<Slot> plan(int64_t epoch) const;
  // Samples of each bucket the steps of p.epoch before p took.
  std::vector<int64_t> consumed(Position p) const;
  void set_start(EpochStart start);
  std::vector<int64_t> shuffled_training(int64_t epoch, int64_t bucket) const;

  // The last epoch's plan and shuffled buckets: batch() is called every step, reshuffling per call would
  // cost O(dataset) each time. Guarded: the prefetch thread and the main thread may both ask.
  struct EpochCache {
    int64_t epoch = -1;
    std::vector<Slot> plan;
    std::vector<std::vector<int64_t>> shuffled;
  };
  mutable std::mutex cache_mutex_;
  mutable std::shared_ptr<const EpochCache> cache_;
  std::shared_ptr<const EpochCache> epoch_cache(int64_t epoch) const;

  uint64_t seed_;
  int64_t size_of(int64_t bucket) const;  // training samples of the bucket

  std::vector<int64_t> global_batches_;
  bool drop_remainder_;
  std::vector<std::vector<int64_t>> train_, heldout_;
  int64_t steps_per_epoch_ = 0;
  EpochStart start_;
  int64_t first_epoch_steps_ = 0;  // steps of start_.epoch from start_.step on
};

}  // namespace ov::data
