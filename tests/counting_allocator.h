#pragma once
// A CPU allocator for tests that measures memory: it wraps LibTorch's default CPU allocator and counts the
// bytes of every CPU tensor alive, and the most at once since reset_peak(). Installed for the process by
// CountingCpuAllocator::install() (c10::SetCPUAllocator at a priority above the default), so every
// at::empty on the CPU, in openvid's code and in LibTorch's, goes through it.
#include <c10/core/CPUAllocator.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

class CountingCpuAllocator final : public c10::Allocator {
 public:
  static CountingCpuAllocator& install() {
    static CountingCpuAllocator instance(c10::GetDefaultCPUAllocator());
    c10::SetCPUAllocator(&instance, /*priority=*/100);
    return instance;
  }
  int64_t alive() const { return alive_.load(); }
  int64_t peak() const { return peak_.load(); }
  void reset_peak() { peak_.store(alive_.load()); }

  c10::DataPtr allocate(size_t n) override {
    c10::DataPtr inner = inner_->allocate(n);
    void* data = inner.get();
    const c10::Device device = inner.device();
    auto* ctx = new Block{this, static_cast<int64_t>(n), std::move(inner)};
    const int64_t now = alive_.fetch_add(ctx->bytes) + ctx->bytes;
    int64_t seen = peak_.load();
    while (now > seen && !peak_.compare_exchange_weak(seen, now)) {
    }
    return {data, ctx, &release, device};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }

 private:
  struct Block {
    CountingCpuAllocator* owner;
    int64_t bytes;
    c10::DataPtr inner;  // frees the memory with the default allocator's own deleter
  };
  explicit CountingCpuAllocator(c10::Allocator* inner) : inner_(inner) {}
  static void release(void* ctx) {
    auto* b = static_cast<Block*>(ctx);
    b->owner->alive_.fetch_sub(b->bytes);
    delete b;
  }

  c10::Allocator* inner_;
  std::atomic<int64_t> alive_{0}, peak_{0};
};
