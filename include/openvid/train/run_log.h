#pragma once
// What a run reports: the log line and the metrics.jsonl record of each logging window (rank 0), and
// the optional per-rank timeline of each step's phases (--profile_dir).
#include <chrono>
#include <cstdint>
#include <fstream>
#include <optional>
#include <string>

namespace ov::train {

// Averages over the steps since the last log line, and writes that line and its JSON record.
class RunLog {
 public:
  // `writer`: only this rank prints and writes metrics.jsonl. `peak_tflops` 0: no MFU.
  RunLog(const std::string& run_dir, bool writer, double peak_tflops, int world_size);

  // One step: its mean loss, duration (compute and data wait), samples, video tokens and FLOPs.
  void add_step(double loss, double seconds, double data_wait, double samples, double tokens, double flops);

  // Writes the window's line and record and starts a new window.
  struct Point {
    int64_t step = 0, last_step = 0;
    double lr = 0, grad_norm = 0, eta_seconds = 0, peak_memory_gb = 0;
    int64_t skipped = 0;
    std::optional<double> eval_loss;
  };
  void write(const Point& p);

 private:
  bool writer_;
  double peak_tflops_;
  int world_size_;
  std::ofstream metrics_;
  double loss_ = 0, seconds_ = 0, wait_ = 0, samples_ = 0, tokens_ = 0, flops_ = 0;
  int64_t steps_ = 0;
};

// --profile_dir: complete events in the Chrome trace format (chrome://tracing, ui.perfetto.dev). Host
// times: on GPUs they show when work was enqueued, not when it ran.
class PhaseTrace {
 public:
  using Clock = std::chrono::steady_clock;
  void open(const std::string& path);
  bool active() const { return out_.is_open(); }
  void add(const char* name, Clock::time_point begin, Clock::time_point end, int64_t step, int rank);
  ~PhaseTrace();

 private:
  std::ofstream out_;
  bool first_ = true;
  Clock::time_point origin_ = Clock::now();
};

std::string format_duration(double seconds);

}  // namespace ov::train
