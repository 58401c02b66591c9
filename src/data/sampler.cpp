#include "openvid/data/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "openvid/runtime/error.h"
#include "openvid/runtime/random.h"

namespace ov::data {

namespace {
constexpr uint64_t kSplitSeed = 0x0e7a1d5e7;  // fixed: the held-out split depends on the data only

// A batch of fewer than `size` real samples: repeated (sample i of the padding is real sample i mod
// real) to the full size, with `valid` the real count; a full batch keeps valid = -1.
void pad_to(GlobalBatch& gb, int64_t size) {
  const auto real = static_cast<int64_t>(gb.samples.size());
  if (real == size) return;
  for (int64_t i = real; i < size; ++i) gb.samples.push_back(gb.samples[static_cast<size_t>(i % real)]);
  gb.valid = real;
}
}  // namespace

Sampler::Sampler(std::vector<int64_t> counts, uint64_t seed, int64_t global_batch, double heldout_fraction, bool drop_remainder)
    : Sampler(counts, seed, std::vector<int64_t>(counts.size(), global_batch), heldout_fraction, drop_remainder) {}

Sampler::Sampler(std::vector<int64_t> counts, uint64_t seed, std::vector<int64_t> global_batches, double heldout_fraction, bool drop_remainder)
    : seed_(seed), global_batches_(std::move(global_batches)), drop_remainder_(drop_remainder) {
  OV_CHECK(global_batches_.size() == counts.size(), "one global batch size per bucket");
  OV_CHECK(std::all_of(global_batches_.begin(), global_batches_.end(), [](int64_t g) { return g >= 0; }) &&
               std::any_of(global_batches_.begin(), global_batches_.end(), [](int64_t g) { return g > 0; }),
           "global batches must be >= 0, one > 0");
  OV_CHECK(heldout_fraction >= 0 && heldout_fraction < 1, "held-out fraction must be in [0, 1)");
  for (size_t b = 0; b < counts.size(); ++b) {
    std::vector<int64_t> all(static_cast<size_t>(counts[b]));
    std::iota(all.begin(), all.end(), int64_t{0});
    deterministic_shuffle(all, mix_seed(kSplitSeed, b));
    const int64_t held = std::min<int64_t>(counts[b], static_cast<int64_t>(std::llround(heldout_fraction * static_cast<double>(counts[b]))));
    heldout_.emplace_back(all.begin(), all.begin() + held);
    train_.emplace_back(all.begin() + held, all.end());
    std::sort(train_.back().begin(), train_.back().end());
    steps_per_epoch_ += batches(static_cast<int64_t>(b));
  }
  first_epoch_steps_ = steps_per_epoch_;
  if (steps_per_epoch_ == 0) {
    const int64_t largest = *std::max_element(global_batches_.begin(), global_batches_.end());
    throw InputError(drop_remainder ? "no bucket of the dataset has enough training samples for one global batch (" +
                                          std::to_string(largest) +
                                          " at most: batch size x data ranks): lower the batch size, use more data, or leave out --drop_remainder"
                                    : std::string("the dataset has no training samples to train on (all held out, or in buckets left out: "
                                                  "lower --heldout_fraction)"));
  }
}

int64_t Sampler::size_of(int64_t bucket) const { return static_cast<int64_t>(train_[static_cast<size_t>(bucket)].size()); }

int64_t Sampler::left_out(int64_t bucket) const {
  const int64_t g = global_batch(bucket);
  if (g == 0) return size_of(bucket);  // a bucket left out whole
  return drop_remainder_ ? size_of(bucket) % g : 0;
}

int64_t Sampler::padded_batches(int64_t bucket) const {
  const int64_t g = global_batch(bucket);
  return g > 0 && !drop_remainder_ && size_of(bucket) % g != 0 ? 1 : 0;
}

int64_t Sampler::batches(int64_t bucket) const {
  const int64_t g = global_batch(bucket);
  return g == 0 ? 0 : size_of(bucket) / g + padded_batches(bucket);
}

std::vector<int64_t> Sampler::shuffled_training(int64_t epoch, int64_t bucket) const {
  std::vector<int64_t> v = train_[static_cast<size_t>(bucket)];
  deterministic_shuffle(v, mix_seed(seed_, static_cast<uint64_t>(epoch), static_cast<uint64_t>(bucket) + 1));
  return v;
}

std::vector<Sampler::Slot> Sampler::plan(int64_t epoch) const {
  // The epoch's batches in a uniform shuffle: each step's bucket is drawn in proportion to the batches the
  // buckets have left, so each bucket's samples are used up evenly over the epoch whatever its batch size
  // (a token budget's batches of 1 and of 16 run out together; drawing by samples left instead would spend
  // the bucket of large batches first). The shuffle picks the sequence of buckets; each bucket's batches
  // then come in the order they were cut, so what the epoch took so far is a prefix of each bucket.
  // The epoch that a resume continues starts each bucket after the samples taken before.
  const bool partial = epoch == start_.epoch && !start_.consumed.empty();
  std::vector<std::vector<Slot>> cut(train_.size());
  std::vector<int64_t> labels;
  for (size_t b = 0; b < train_.size(); ++b) {
    const int64_t first = partial ? start_.consumed[b] : 0, size = size_of(static_cast<int64_t>(b)) - first, g = global_batches_[b];
    if (g == 0) continue;
    const int64_t n = size / g + (!drop_remainder_ && size % g != 0 ? 1 : 0);
    for (int64_t i = 0; i < n; ++i) cut[b].push_back({static_cast<int64_t>(b), first + i * g, std::min(g, size - i * g)});
    labels.insert(labels.end(), static_cast<size_t>(n), static_cast<int64_t>(b));
  }
  deterministic_shuffle(labels, mix_seed(seed_, static_cast<uint64_t>(epoch), 0));
  std::vector<size_t> next(train_.size(), 0);
  std::vector<Slot> out;
  out.reserve(labels.size());
  for (int64_t b : labels) out.push_back(cut[static_cast<size_t>(b)][next[static_cast<size_t>(b)]++]);
  return out;
}

void Sampler::set_start(EpochStart start) {
  OV_CHECK(start.consumed.empty() || start.consumed.size() == train_.size(), "one consumed count per bucket");
  start_ = std::move(start);
  first_epoch_steps_ = start_.consumed.empty() ? steps_per_epoch_ : static_cast<int64_t>(plan(start_.epoch).size());
  std::lock_guard<std::mutex> lock(cache_mutex_);
  cache_.reset();
}

int64_t Sampler::steps_until_epoch(int64_t epochs) const {
  if (epochs <= start_.epoch) return start_.step;
  return start_.step + first_epoch_steps_ + (epochs - start_.epoch - 1) * steps_per_epoch_;
}

std::vector<int64_t> Sampler::consumed(Position p) const {
  std::vector<int64_t> taken(train_.size(), 0);
  if (p.epoch == start_.epoch && !start_.consumed.empty()) taken = start_.consumed;
  const auto cache = epoch_cache(p.epoch);
  for (int64_t i = 0; i < p.step; ++i) {
    const Slot& s = cache->plan[static_cast<size_t>(i)];
    taken[static_cast<size_t>(s.bucket)] += s.real;
  }
  return taken;
}

SamplerState Sampler::state_after(int64_t steps) const {
  const Position p = position_after(steps);
  return SamplerState{p.epoch, consumed(p), global_batches_, drop_remainder_, start_};
}

bool Sampler::resume(const SamplerState& st, int64_t steps) {
  const size_t n = train_.size();
  if (st.consumed.size() != n || (!st.start.consumed.empty() && st.start.consumed.size() != n) || steps < st.start.step) return false;
  for (size_t b = 0; b < n; ++b) {
    if (st.consumed[b] < 0 || st.consumed[b] > size_of(static_cast<int64_t>(b))) return false;
    if (!st.start.consumed.empty() && (st.start.consumed[b] < 0 || st.start.consumed[b] > st.consumed[b])) return false;
  }
  if (same_rule(st)) {
    set_start(st.start);  // the same rule: the writing run's own sequence
  } else {
    set_start(EpochStart{st.epoch, steps, st.consumed});
  }
  return true;
}

std::shared_ptr<const Sampler::EpochCache> Sampler::epoch_cache(int64_t epoch) const {
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (!cache_ || cache_->epoch != epoch) {
    auto c = std::make_shared<EpochCache>();
    c->epoch = epoch;
    c->plan = plan(epoch);
    for (size_t b = 0; b < train_.size(); ++b) c->shuffled.push_back(shuffled_training(epoch, static_cast<int64_t>(b)));
    cache_ = std::move(c);
  }
  return cache_;
}

GlobalBatch Sampler::batch(Position p) const {
  OV_CHECK(p.epoch >= start_.epoch && p.step >= 0 && p.step < steps_in_epoch(p.epoch), "sampler position outside the epoch");
  const auto cache = epoch_cache(p.epoch);
  const Slot slot = cache->plan[static_cast<size_t>(p.step)];
  const std::vector<int64_t>& samples = cache->shuffled[static_cast<size_t>(slot.bucket)];
  GlobalBatch gb;
  gb.bucket = slot.bucket;
  gb.samples.assign(samples.begin() + slot.first, samples.begin() + slot.first + slot.real);
  pad_to(gb, global_batch(slot.bucket));
  return gb;
}

Position Sampler::next(Position p) const {
  if (p.step + 1 < steps_in_epoch(p.epoch)) return Position{p.epoch, p.step + 1};
  return Position{p.epoch + 1, 0};  // a whole epoch: never empty
}

Position Sampler::position_after(int64_t steps) const {
  OV_CHECK(steps >= start_.step, "sampler position before the epoch this run starts in");
  int64_t k = steps - start_.step;
  if (k < first_epoch_steps_) return Position{start_.epoch, k};
  k -= first_epoch_steps_;
  return Position{start_.epoch + 1 + k / steps_per_epoch_, k % steps_per_epoch_};
}

std::vector<GlobalBatch> Sampler::heldout_batches(int64_t max_batches) const {
  // Round robin over the buckets (each one's first batch, then each one's second, ...): every bucket with
  // held-out samples is evaluated when max_batches is at least their number.
  std::vector<GlobalBatch> out;
  for (size_t round = 0;; ++round) {
    bool any = false;
    for (size_t b = 0; b < heldout_.size(); ++b) {
      const std::vector<int64_t>& h = heldout_[b];
      const auto g = static_cast<size_t>(global_batches_[b]);
      const size_t first = round * g;
      if (g == 0 || first >= h.size()) continue;
      any = true;
      if (static_cast<int64_t>(out.size()) >= max_batches) return out;
      GlobalBatch gb;
      gb.bucket = static_cast<int64_t>(b);
      const size_t real = std::min(h.size() - first, g);
      gb.samples.assign(h.begin() + static_cast<std::ptrdiff_t>(first), h.begin() + static_cast<std::ptrdiff_t>(first + real));
      pad_to(gb, static_cast<int64_t>(g));
      out.push_back(std::move(gb));
    }
    if (!any) return out;
  }
}

}  // namespace ov::data
