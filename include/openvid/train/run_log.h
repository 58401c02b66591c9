#pragma once
// What a run reports and when: the cadences of logging, evaluation and checkpoints, the log line and the
// metrics.jsonl record of each logging window (rank 0) with throughput, MFU and peak memory, and the
// optional per-rank timeline of each step's phases (--profile_dir).
#include <c10/core/Device.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "openvid/train/tensorboard.h"

namespace ov::train {

// When a run logs, evaluates and checkpoints, by the number of steps done (1 after the first step).
struct Cadence {
  int64_t last_step = 0;         // the run ends when this many steps are done
  int64_t log_every = 10;        // >= 1
  int64_t evaluate_every = 0;    // 0: never
  int64_t checkpoint_every = 0;  // 0: with every evaluation (the reference trainer's behaviour)
  int64_t sample_every = 0;      // 0: never
  bool write_checkpoints = true;  // false: no checkpoints at all (--write_checkpoints false)
  bool sample(int64_t done) const { return sample_every > 0 && (done % sample_every == 0 || done == last_step); }
  bool evaluate(int64_t done) const { return evaluate_every > 0 && (done % evaluate_every == 0 || done == last_step); }
  bool log(int64_t done) const { return done % log_every == 0 || done == last_step || evaluate(done); }
  bool checkpoint(int64_t done) const {
    return write_checkpoints && (done == last_step || (checkpoint_every > 0 ? done % checkpoint_every == 0 : evaluate(done)));
  }
  // Whether what happens after step `done` needs the state after it before the next step is enqueued
  // (evaluation, samples, a checkpoint, the end): the loop then reads that step's result at once, the
  // host's one synchronisation of the step; otherwise one step later, with the next one already queued.
  bool needs_state(int64_t done) const { return evaluate(done) || sample(done) || checkpoint(done) || done == last_step; }
};

// Peak dense TFLOP/s of one device for MFU: bf16 tensor cores, or fp32 without TF32, by the device's name
// (H100 SXM/PCIe/NVL, H200, GH200, H800, A100, A800, B200, B100, L40S, L4); 0 when it is not known (no MFU;
// --peak_tflops sets it) and on CPUs.
double device_peak_tflops(const c10::Device& device, bool bf16);
std::string device_name(const c10::Device& device);

// Peak memory of this rank since the start or the last reset_peak_memory: the CUDA caching allocator's on a
// GPU, the process's resident set on a CPU (never reset). In GB (1e9 bytes).
double peak_memory_gb(const c10::Device& device);
// Starts a new peak on a GPU (the allocator's peak statistics); nothing on a CPU.
void reset_peak_memory(const c10::Device& device);

// Averages over the steps since the last log line, and writes that line and its JSON record: one object per
// line, written by a JSON library (a non-finite number is null), with the wall time (Unix seconds) and the
// seconds since this launch started.
class RunLog {
 public:
  // `writer`: only this rank prints and writes metrics.jsonl. `peak_tflops` 0: no MFU. Memory is that
  // of `device`. A run continued at `start_step` first drops the records of later steps (written before
  // the checkpoint it resumes from was superseded), so that each step appears once in metrics.jsonl.
  RunLog(const std::string& run_dir, bool writer, double peak_tflops, int world_size, c10::Device device, int64_t start_step = 0);

  // One step: its mean loss, duration (compute and data wait), samples, video tokens and FLOPs, the
  // milliseconds of its phases (StepTimer), the bytes this rank's collectives moved on each group, and the
  // milliseconds it waited for each group (exposed) and, on NCCL, their collectives ran.
  void add_step(double loss, double seconds, double data_wait, double samples, double tokens, double flops,
                const std::vector<std::pair<std::string, double>>& phase_ms = {},
                const std::vector<std::pair<std::string, double>>& comm_bytes = {},
                const std::vector<std::pair<std::string, double>>& comm_exposed_ms = {},
                const std::vector<std::pair<std::string, double>>& comm_busy_ms = {});

  // Writes the window's line, its metrics.jsonl record and TensorBoard scalars, and starts a new window.
  struct Point {
    int64_t step = 0, last_step = 0;
    double lr = 0, grad_norm = 0, eta_seconds = 0;
    int64_t skipped = 0;
    std::optional<double> eval_loss;
    std::vector<std::pair<std::string, double>> eval_by_bucket;  // each evaluated bucket's held-out loss
  };
  void write(const Point& p);
  // An image (PNG bytes) for TensorBoard, on the writer rank.
  void image(const std::string& tag, int64_t step, const std::string& png, int width, int height);

 private:
  bool writer_;
  double peak_tflops_;
  int world_size_;
  c10::Device device_;
  std::ofstream metrics_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;  // RUN_DIR/tensorboard (the writer rank)
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  double loss_ = 0, seconds_ = 0, wait_ = 0, samples_ = 0, tokens_ = 0, flops_ = 0;
  std::vector<std::pair<std::string, double>> phase_ms_, comm_bytes_, comm_exposed_ms_, comm_busy_ms_;  // sums over the window
  int64_t steps_ = 0;
  double run_peak_gb_ = 0;  // the largest window peak so far
};

std::string format_duration(double seconds);

}  // namespace ov::train
