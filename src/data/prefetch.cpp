#include "openvid/data/prefetch.h"

#include <chrono>

#include "openvid/runtime/error.h"
#include "openvid/runtime/mpi_session.h"

namespace ov::data {

Prefetcher::Prefetcher(Dataset& dataset, const Sampler& sampler, Position start, int64_t num_steps, ReaderLayout layout,
                       int depth)
    : dataset_(dataset),
      sampler_(sampler),
      layout_(layout),
      start_(start),
      num_steps_(num_steps),
      depth_(depth),
      stop_at_(num_steps) {
  OV_CHECK(depth >= 1, "prefetch depth must be >= 1");
  thread_ = std::thread([this] { run(); });
}

Prefetcher::~Prefetcher() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_at_ = std::min(stop_at_, consumed_ + depth_);
  }
  changed_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Prefetcher::run() {
  Position pos = start_;
  try {
    for (int64_t read = 0;; ++read) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        // Read ahead at most depth_ steps past what was consumed, and never past the stop point.
        changed_.wait(lock, [&] { return read >= stop_at_ || read < consumed_ + depth_; });
        if (read >= stop_at_) break;
      }
      Item item{pos, dataset_.read(sampler_.batch(pos), layout_)};
      pos = sampler_.next(pos);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        ready_.push_back(std::move(item));
      }
      changed_.notify_all();
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    error_ = std::current_exception();
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    finished_ = true;
  }
  changed_.notify_all();
}

Prefetcher::Item Prefetcher::next() {
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mutex_);
  // Bounded like every collective: the reading thread is inside collective reads, which a stalled or dead
  // peer would hold forever.
  const double limit = collective_timeout();
  if (!changed_.wait_for(lock, std::chrono::duration<double>(limit), [&] { return !ready_.empty() || finished_; })) {
    abort_job("the data prefetcher delivered no batch within " + std::to_string(static_cast<int64_t>(limit)) +
              " s (its collective reads wait for every rank: a peer rank may have died or stalled). Aborting the job");
  }
  if (ready_.empty()) {
    if (error_) std::rethrow_exception(error_);
    throw Error("the data prefetcher has no more batches (" + std::to_string(num_steps_) + " steps were planned)");
  }
  Item item = std::move(ready_.front());
  ready_.pop_front();
  ++consumed_;
  last_wait_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  total_wait_ += last_wait_;
  lock.unlock();
  changed_.notify_all();
  return item;
}

}  // namespace ov::data
