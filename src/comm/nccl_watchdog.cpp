// Compiled with the NCCL backend only (see nccl_watchdog.h).
#ifdef OPENVID_HAVE_NCCL
#include "nccl_watchdog.h"

#include <algorithm>
#include <future>
#include <sstream>

#include "openvid/runtime/error.h"

namespace ov::comm {
namespace {
constexpr auto kPollInterval = std::chrono::milliseconds(20);
constexpr size_t kRecent = 16;
constexpr auto kAbortGrace = std::chrono::seconds(5);
std::string seconds(std::chrono::milliseconds ms) { return std::to_string(std::chrono::duration<double>(ms).count()) + " s"; }
}  // namespace

NcclWatchdog& NcclWatchdog::instance() {
  static NcclWatchdog watchdog;
  return watchdog;
}

NcclWatchdog::~NcclWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void NcclWatchdog::add(Watched* comm, int device) {
  std::lock_guard<std::mutex> lock(mutex_);
  entries_.push_back(Entry{comm, device, {}});
  if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
}

void NcclWatchdog::remove(Watched* comm) {
  std::lock_guard<std::mutex> lock(mutex_);
  entries_.erase(std::remove_if(entries_.begin(), entries_.end(), [&](const Entry& e) { return e.comm == comm; }), entries_.end());
}

void NcclWatchdog::track(Watched* comm, std::shared_ptr<CUevent_st> done, std::string what, std::chrono::milliseconds timeout) {
  std::lock_guard<std::mutex> lock(mutex_);
  recent_.push_back(what);
  if (recent_.size() > kRecent) recent_.pop_front();
  for (Entry& e : entries_) {
    if (e.comm == comm) e.in_flight.push_back(InFlight{std::move(done), std::move(what), Clock::now() + timeout, timeout});
  }
}

void NcclWatchdog::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_cv_.wait_for(lock, kPollInterval, [&] { return stopping_; })) {
    for (Entry& e : entries_) {
      cudaSetDevice(e.device);
      const std::string error = e.comm->async_error();
      if (!error.empty()) fail(error, e.comm);
      while (!e.in_flight.empty()) {
        const InFlight& f = e.in_flight.front();
        const cudaError_t q = cudaEventQuery(f.done.get());
        if (q == cudaSuccess) {
          e.in_flight.pop_front();
          continue;
        }
        if (q != cudaErrorNotReady) fail(f.what + ": CUDA reports " + cudaGetErrorString(q), e.comm);
        if (Clock::now() > f.deadline) {
          fail(f.what + " did not complete within " + seconds(f.timeout) +
               " (a peer rank died, hangs, or called a different collective; raise --collective_timeout if steps are "
               "legitimately this slow)",
               e.comm);
        }
        break;
      }
    }
  }
}

void NcclWatchdog::fail(const std::string& problem, Watched* culprit) {
  std::ostringstream os;
  os << "NCCL watchdog: " << problem << ". Aborting the job. This rank's last collectives (oldest first):";
  for (const std::string& r : recent_) os << "\n    " << r;
  print_rank_message(os.str());  // first: what follows may take the grace period, or never return
  // ncclCommAbort releases device memory, which can wait for kernels still queued on the device (the very
  // work that is stuck), so it runs beside a bounded wait: the job ends either way. The communicator that
  // failed goes first, so that its peers see the failure soonest; then the others, in creation order.
  std::vector<Watched*> comms{culprit};
  for (Entry& e : entries_) {
    if (e.comm != culprit) comms.push_back(e.comm);
  }
  auto aborted = std::make_shared<std::promise<void>>();
  std::future<void> done = aborted->get_future();
  std::thread([comms, problem, aborted] {
    for (Watched* c : comms) c->abort_now(problem);
    aborted->set_value();
  }).detach();
  done.wait_for(kAbortGrace);
  end_job(kExitFailure);  // MPI_Abort: every rank of the job ends
}

}  // namespace ov::comm

#endif  // OPENVID_HAVE_NCCL
