#pragma once
// Reads the batches of upcoming steps on a background thread while the current step computes, into a
// bounded queue. The thread is the only user of the Dataset while it runs (HDF5 is not thread-safe), and
// it issues the same collective reads in the same order on every rank (MPI_THREAD_MULTIPLE lets them
// run beside the main thread's collectives).
//
// Stopping is collective-safe: the thread reads exactly the steps [start, start + num_steps) unless told
// to stop, and a stop takes effect at "consumed + depth", a point every rank reaches identically because
// all ranks consume in lockstep; so no rank is left inside a collective read its peers never start.
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

#include "openvid/data/dataset.h"
#include "openvid/data/sampler.h"

namespace ov::data {

class Prefetcher {
 public:
  struct Item {
    Position position;
    HostBatch batch;
  };

  // Collective in effect (every rank must create it with the same arguments): starts reading.
  Prefetcher(Dataset& dataset, const Sampler& sampler, Position start, int64_t num_steps, ReaderLayout layout,
             int depth = 2);
  ~Prefetcher();  // stops at consumed + depth (see above) and joins
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  // The next step's batch; blocks until it is read, at most --collective_timeout (then the job is aborted).
  // Rethrows an error of the reading thread.
  Item next();

  double total_wait_seconds() const { return total_wait_; }
  double last_wait_seconds() const { return last_wait_; }

 private:
  void run();

  Dataset& dataset_;
  const Sampler& sampler_;
  const ReaderLayout layout_;
  const Position start_;
  const int64_t num_steps_;
  const int depth_;

  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Item> ready_;
  int64_t consumed_ = 0;
  int64_t stop_at_;  // reads stop before this step count
  bool finished_ = false;
  std::exception_ptr error_;
  double total_wait_ = 0, last_wait_ = 0;
  std::thread thread_;
};

}  // namespace ov::data
