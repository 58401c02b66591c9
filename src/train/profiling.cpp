#include "openvid/train/profiling.h"

#include <c10/core/Event.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <iomanip>
#include <iostream>
#include <sstream>

#include "openvid/runtime/error.h"

namespace ov::train {

// ---- StepTimer ---------------------------------------------------------------------------------------

struct StepTimer::Impl {
  c10::Device device;
  std::vector<std::string> names;
  // CUDA: one event per mark (reused every step); CPU: the host times of the marks.
  std::vector<c10::Event> events;
  std::vector<std::chrono::steady_clock::time_point> times;
  size_t marks = 0;

  void mark() {
    if (device.is_cuda()) {
      if (marks == events.size()) events.emplace_back(c10::DeviceType::CUDA, c10::EventFlag::BACKEND_DEFAULT);  // timing on
      const c10::impl::VirtualGuardImpl guard(c10::DeviceType::CUDA);
      events[marks].record(guard.getStream(device));
    } else {
      if (marks == times.size()) times.emplace_back();
      times[marks] = std::chrono::steady_clock::now();
    }
    ++marks;
  }

  double between(size_t a, size_t b) const {
    if (device.is_cuda()) return events[a].elapsedTime(events[b]);
    return std::chrono::duration<double, std::milli>(times[b] - times[a]).count();
  }
};

StepTimer::StepTimer(const c10::Device& device) : impl_(std::make_unique<Impl>(Impl{device, {}, {}, {}, 0})) {}
StepTimer::~StepTimer() = default;

void StepTimer::begin() {
  impl_->marks = 0;
  impl_->names.clear();
  impl_->mark();
}

void StepTimer::end_phase(const char* name) {
  impl_->names.emplace_back(name);
  impl_->mark();
}

std::vector<std::pair<std::string, double>> StepTimer::read() const {
  std::vector<std::pair<std::string, double>> out;
  if (impl_->marks < 2) return out;
  for (size_t i = 0; i + 1 < impl_->marks; ++i) out.emplace_back(impl_->names[i], impl_->between(i, i + 1));
  out.emplace_back("step", impl_->between(0, impl_->marks - 1));
  return out;
}

// ---- KinetoTrace --------------------------------------------------------------------------------------

namespace {
// Steps overlap on the device (the next is enqueued before the last completes), so the trace starts and
// ends with the device idle: it then holds exactly the GPU work of its steps. Only traced runs pay for it.
void wait_for_device(bool cuda) {
  if (!cuda) return;
  const c10::impl::VirtualGuardImpl impl(c10::DeviceType::CUDA);
  impl.synchronizeDevice(impl.getDevice().index());
}
}  // namespace

KinetoTrace::KinetoTrace(std::string path, int64_t first, int64_t last, bool cuda)
    : path_(std::move(path)), first_(first), last_(last), cuda_(cuda) {}

void KinetoTrace::at_step(int64_t step) {
  namespace prof = torch::autograd::profiler;
  using torch::profiler::impl::ActivityType;
  if (!running_ && !done_ && step == first_) {
    const torch::profiler::impl::ProfilerConfig config(torch::profiler::impl::ProfilerState::KINETO);
    std::set<ActivityType> activities{ActivityType::CPU};
    if (cuda_) activities.insert(ActivityType::CUDA);
    prof::prepareProfiler(config, activities);
    wait_for_device(cuda_);
    prof::enableProfiler(config, activities);
    running_ = true;
  } else if (running_ && step >= last_) {
    wait_for_device(cuda_);
    prof::disableProfiler()->save(path_);
    running_ = false;
    done_ = true;
  }
}

KinetoTrace::~KinetoTrace() {
  if (!running_) return;
  try {
    wait_for_device(cuda_);
    torch::autograd::profiler::disableProfiler()->save(path_);
  } catch (const std::exception& e) {
    std::cerr << "the Kineto trace " << path_ << " could not be saved: " << e.what() << "\n";
  }
}

// ---- PhaseTrace ----------------------------------------------------------------------------------------

void PhaseTrace::open(const std::string& path) {
  out_.open(path, std::ios::out | std::ios::trunc);
  out_ << "[\n]\n" << std::flush;
}

void PhaseTrace::add(const char* name, Clock::time_point begin, Clock::time_point end, int64_t step, int rank) {
  if (!active()) return;
  const auto us = [&](Clock::time_point t) { return std::chrono::duration<double, std::micro>(t - origin_).count(); };
  // Overwrite the closing "]\n" and write it again after the event: the file is valid JSON at all times.
  out_.seekp(-2, std::ios::end);
  out_ << (first_ ? "" : ",\n") << "{\"name\": \"" << name << "\", \"ph\": \"X\", \"pid\": " << rank << ", \"tid\": 0, \"ts\": "
       << std::fixed << std::setprecision(1) << us(begin) << ", \"dur\": " << us(end) - us(begin) << ", \"args\": {\"step\": " << step
       << "}}\n]\n" << std::flush;
  first_ = false;
}

}  // namespace ov::train
