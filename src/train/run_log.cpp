#include "openvid/train/run_log.h"

#include <sys/resource.h>

#include <algorithm>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "openvid/runtime/error.h"
#include "openvid/runtime/files.h"

#ifdef OPENVID_TORCH_CUDA
#include <ATen/cuda/CUDAContextLight.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace ov::train {
using nlohmann::json;

std::string device_name(const c10::Device& device) {
#ifdef OPENVID_TORCH_CUDA
  if (device.is_cuda()) return at::cuda::getDeviceProperties(device.index())->name;
#endif
  return device.str();
}

double device_peak_tflops(const c10::Device& device, bool bf16) {
  if (!device.is_cuda()) return 0;
  // Vendor datasheet figures, dense (no sparsity). More specific names first.
  static const struct {
    const char* name;
    double bf16, fp32;
  } kPeaks[] = {
      {"H100 PCIe", 756.5, 51.2}, {"H100 NVL", 835.5, 59.9}, {"H100", 989.4, 66.9}, {"H200", 989.4, 66.9},
      {"H800", 989.4, 66.9},      {"A100", 312.0, 19.5},     {"A800", 312.0, 19.5}, {"B200", 2250.0, 80.0},
      {"B100", 1750.0, 60.0},     {"L40S", 362.1, 91.6},     {"L4", 121.0, 30.3},
  };
  const std::string name = device_name(device);
  for (const auto& p : kPeaks)
    if (name.find(p.name) != std::string::npos) return bf16 ? p.bf16 : p.fp32;
  return 0;
}

double peak_memory_gb(const c10::Device& device) {
#ifdef OPENVID_TORCH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    return static_cast<double>(stats.allocated_bytes[0].peak) / 1e9;  // [0]: all pools
  }
#endif
  static_cast<void>(device);
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1e6;  // kilobytes on Linux
}

void reset_peak_memory(const c10::Device& device) {
#ifdef OPENVID_TORCH_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
#endif
  static_cast<void>(device);
}

std::string format_duration(double s) {
  std::ostringstream os;
  if (s >= 3600) os << static_cast<int>(s / 3600) << "h" << std::setw(2) << std::setfill('0') << static_cast<int>(s / 60) % 60 << "m";
  else if (s >= 60) os << static_cast<int>(s / 60) << "m" << std::setw(2) << std::setfill('0') << static_cast<int>(s) % 60 << "s";
  else os << std::fixed << std::setprecision(0) << s << "s";
  return os.str();
}

namespace {

// Keeps the records of steps <= `last_step` (and drops a line a crash cut short); rewritten durably.
void truncate_metrics(const std::string& path, int64_t last_step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  bool dropped = false;
  while (std::getline(in, line)) {
    const json row = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (row.is_object() && row.contains("step") && row["step"].is_number_integer() && row["step"].get<int64_t>() <= last_step) {
      kept += line + "\n";
    } else {
      dropped = true;
    }
  }
  if (dropped) write_file_durably(path, kept);
}

}  // namespace

RunLog::RunLog(const std::string& run_dir, bool writer, double peak_tflops, int world_size, c10::Device device, int64_t start_step)
    : writer_(writer), peak_tflops_(peak_tflops), world_size_(world_size), device_(device) {
  if (!writer_) return;
  const std::string path = run_dir + "/metrics.jsonl";
  truncate_metrics(path, start_step);
  metrics_.open(path, std::ios::app);
  if (!metrics_) throw Error("cannot open '" + path + "' for writing");
  // Logged steps count the steps done: a run resuming at step s first logs s + 1 or later.
  tensorboard_ = std::make_unique<TensorBoardWriter>(run_dir + "/tensorboard", start_step > 0 ? start_step + 1 : 0);
}

void RunLog::add_step(double loss, double seconds, double data_wait, double samples, double tokens, double flops,
                      const std::vector<std::pair<std::string, double>>& phase_ms, const std::vector<std::pair<std::string, double>>& comm_bytes,
                      const std::vector<std::pair<std::string, double>>& comm_exposed_ms,
                      const std::vector<std::pair<std::string, double>>& comm_busy_ms) {
  const auto accumulate = [](std::vector<std::pair<std::string, double>>& sums, const std::vector<std::pair<std::string, double>>& values) {
    if (sums.size() != values.size()) sums.assign(values.begin(), values.end());
    else
      for (size_t i = 0; i < values.size(); ++i) sums[i].second += values[i].second;
  };
  accumulate(phase_ms_, phase_ms);
  accumulate(comm_bytes_, comm_bytes);
  accumulate(comm_exposed_ms_, comm_exposed_ms);
  accumulate(comm_busy_ms_, comm_busy_ms);
  loss_ += loss;
  seconds_ += seconds;
  wait_ += data_wait;
  samples_ += samples;
  tokens_ += tokens;
  flops_ += flops;
  ++steps_;
}

void RunLog::image(const std::string& tag, int64_t step, const std::string& png, int width, int height) {
  if (!writer_) return;
  tensorboard_->image(tag, step, png, width, height);
  tensorboard_->flush();
}

void RunLog::write(const Point& p) {
  // The window's peak (a GPU's allocator restarts its peak at every window) and the run's.
  const double window_gb = peak_memory_gb(device_);
  const double memory_gb = run_peak_gb_ = std::max(run_peak_gb_, window_gb);
  reset_peak_memory(device_);
  if (writer_ && steps_ > 0) {
    const double loss = loss_ / static_cast<double>(steps_), step_seconds = seconds_ / static_cast<double>(steps_);
    const double tflops = flops_ / seconds_ / 1e12 / world_size_;  // per rank
    std::ostringstream line;
    line << "step " << p.step << "/" << p.last_step << " | loss " << std::fixed << std::setprecision(4) << loss;
    if (p.eval_loss) line << " | eval " << *p.eval_loss;
    line << std::scientific << std::setprecision(2) << " | lr " << p.lr << std::fixed << " | grad " << p.grad_norm << " | "
         << std::setprecision(3) << step_seconds << " s/step | " << std::setprecision(1) << samples_ / seconds_ << " samples/s | "
         << std::setprecision(0) << tokens_ / seconds_ << " tok/s | " << std::setprecision(3) << tflops << " TFLOP/s";
    if (peak_tflops_ > 0) line << " | MFU " << std::setprecision(1) << 100 * tflops / peak_tflops_ << "%";
    line << " | data wait " << std::setprecision(1) << 100 * wait_ / seconds_ << "% | mem " << std::setprecision(2) << memory_gb
         << " GB | ETA " << format_duration(p.eta_seconds);
    if (p.skipped > 0) line << " | skipped " << p.skipped;
    std::cout << line.str() << "\n" << std::flush;
    // Full precision (the library writes the shortest form that reads back exactly): runs are compared by these numbers.
    nlohmann::ordered_json row = {{"step", p.step}, {"loss", loss}};
    if (p.eval_loss) row["eval_loss"] = *p.eval_loss;
    if (!p.eval_by_bucket.empty()) {
      nlohmann::ordered_json by = nlohmann::ordered_json::object();
      for (const auto& [bucket, value] : p.eval_by_bucket) by[bucket] = value;
      row["eval_loss_by_bucket"] = std::move(by);
    }
    row["lr"] = p.lr;
    row["grad_norm"] = p.grad_norm;
    row["step_seconds"] = step_seconds;
    row["samples_per_step"] = samples_ / static_cast<double>(steps_);  // real samples (a token budget or a remainder varies them)
    row["tokens_per_step"] = tokens_ / static_cast<double>(steps_);
    row["samples_per_second"] = samples_ / seconds_;
    row["tokens_per_second"] = tokens_ / seconds_;
    row["tflops"] = tflops;
    if (peak_tflops_ > 0) row["mfu"] = tflops / peak_tflops_;
    row["data_wait_fraction"] = wait_ / seconds_;
    row["peak_memory_gb"] = memory_gb;
    if (device_.is_cuda()) row["window_peak_memory_gb"] = window_gb;  // this window's steps (and evaluation) alone
    row["skipped_steps"] = p.skipped;
    row["wall_time"] = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    row["elapsed_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    // Mean per step: milliseconds of each phase, timed where it ran; bytes this rank moved on each group.
    for (const auto& [key, sums] : {std::pair{"phase_ms", &phase_ms_}, std::pair{"comm_bytes", &comm_bytes_},
                                    std::pair{"comm_exposed_ms", &comm_exposed_ms_}, std::pair{"comm_busy_ms", &comm_busy_ms_}}) {
      if (sums->empty()) continue;
      nlohmann::ordered_json means = nlohmann::ordered_json::object();
      for (const auto& [name, sum] : *sums) means[name] = sum / static_cast<double>(steps_);
      row[key] = std::move(means);
    }
    metrics_ << row.dump() << "\n" << std::flush;
    // The same numbers for TensorBoard, grouped: train/..., eval/..., perf/..., phase_ms/...
    for (const auto& [name, value] : row.items()) {
      if (name == "step" || name == "wall_time" || name == "elapsed_seconds") continue;
      if (name == "phase_ms" || name == "comm_bytes" || name == "comm_exposed_ms" || name == "comm_busy_ms" || name == "eval_loss_by_bucket") {
        const std::string group = name == "eval_loss_by_bucket" ? "eval/loss_by_bucket" : name;
        for (const auto& [part, v] : value.items()) tensorboard_->scalar(group + "/" + part, p.step, v.get<double>());
        continue;
      }
      const bool train = name == "loss" || name == "lr" || name == "grad_norm" || name == "skipped_steps";
      const std::string tag = name == "eval_loss" ? "eval/loss" : (train ? "train/" : "perf/") + name;
      tensorboard_->scalar(tag, p.step, value.get<double>());
    }
    tensorboard_->flush();
  }
  loss_ = seconds_ = wait_ = samples_ = tokens_ = flops_ = 0;
  phase_ms_.clear();
  comm_bytes_.clear();
  comm_exposed_ms_.clear();
  comm_busy_ms_.clear();
  steps_ = 0;
}

}  // namespace ov::train
