#pragma once
// The NCCL backend's watchdog (after PyTorch c10d's): Work::wait() only orders streams, so nobody on the
// host ever waits for an NCCL collective with a deadline. One thread per process therefore watches every
// collective in flight: when one has not completed within its group's timeout, or a communicator reports an
// asynchronous error (a peer died, a network failure), it aborts every communicator and ends the job with a
// message naming the collective, its group and this rank, followed by this rank's last collectives.
// Internal to src/comm (built with the NCCL backend only).
#include <cuda_runtime.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace ov::comm {

// What the watchdog needs of a communicator. Its methods are called from the watchdog's thread.
class Watched {
 public:
  virtual ~Watched() = default;
  virtual std::string async_error() = 0;                  // "" while the communicator is healthy
  virtual void abort_now(const std::string& reason) = 0;  // ncclCommAbort (the watchdog bounds its wait)
};

class NcclWatchdog {
 public:
  using Clock = std::chrono::steady_clock;
  static NcclWatchdog& instance();
  ~NcclWatchdog();

  void add(Watched* comm, int device);
  void remove(Watched* comm);
  // A collective enqueued on `comm`'s stream; `done` fires when it has completed.
  void track(Watched* comm, std::shared_ptr<CUevent_st> done, std::string what, std::chrono::milliseconds timeout);

 private:
  NcclWatchdog() = default;
  struct InFlight {
    std::shared_ptr<CUevent_st> done;
    std::string what;
    Clock::time_point deadline;
    std::chrono::milliseconds timeout;
  };
  struct Entry {
    Watched* comm;
    int device;
    std::deque<InFlight> in_flight;  // in launch order (one stream: they complete in order)
  };
  void run();
  // Prints the diagnostic, aborts `culprit` (the communicator that failed) and then the others, ends the job.
  [[noreturn]] void fail(const std::string& problem, Watched* culprit);

  std::mutex mutex_;
  std::condition_variable stop_cv_;
  std::vector<Entry> entries_;
  std::deque<std::string> recent_;  // this rank's last collectives, for the failure message
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace ov::comm
