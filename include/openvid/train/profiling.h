#pragma once
// Where a step's time goes (--profile_dir, and the per-phase times of every logged step):
//  * StepTimer: the phases of each step timed where they run: CUDA events on the compute stream on GPUs,
//    read after the step's one synchronisation (so timing adds no wait), the host clock on CPUs.
//  * KinetoTrace: LibTorch's own profiler (Kineto) over a range of steps: CUDA kernels, memory copies and
//    NCCL kernels beside the host's operators and ranges, as a Chrome trace (Perfetto, chrome://tracing;
//    bench/trace_breakdown.py turns it into a table).
//  * PhaseTrace: a per-rank host timeline of every step's phases, kept valid JSON after each event, so a
//    killed job leaves a readable file.
#include <c10/core/Device.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace ov::train {

class StepTimer {
 public:
  explicit StepTimer(const c10::Device& device);
  ~StepTimer();
  StepTimer(const StepTimer&) = delete;
  StepTimer& operator=(const StepTimer&) = delete;

  void begin();                      // the step starts
  void end_phase(const char* name);  // the phase `name` (since the previous mark) ends
  // Milliseconds of each phase of the last step, in order, and "step" for all of them; only once the
  // device has done the step's work (after its synchronisation).
  std::vector<std::pair<std::string, double>> read() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class KinetoTrace {
 public:
  // Traces steps [first, last) into `path`; on a CUDA device also its kernels and copies.
  KinetoTrace(std::string path, int64_t first, int64_t last, bool cuda);
  // Call at the start of every step: starts and stops the profiler on cue.
  void at_step(int64_t step);
  // Stops and saves a trace still running (a run shorter than the range, or one stopped by a signal).
  ~KinetoTrace();
  KinetoTrace(const KinetoTrace&) = delete;
  KinetoTrace& operator=(const KinetoTrace&) = delete;

 private:
  std::string path_;
  int64_t first_, last_;
  bool cuda_, running_ = false, done_ = false;
};

class PhaseTrace {
 public:
  using Clock = std::chrono::steady_clock;
  void open(const std::string& path);
  bool active() const { return out_.is_open(); }
  void add(const char* name, Clock::time_point begin, Clock::time_point end, int64_t step, int rank);

 private:
  std::fstream out_;
  bool first_ = true;
  Clock::time_point origin_ = Clock::now();
};

}  // namespace ov::train
