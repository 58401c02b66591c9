#define BOOST_TEST_MODULE sampler
// The sampler (data/sampler.h): the order of an epoch's batches from the seed, resumed exactly, batch sizes
// per bucket, buckets running out together, every sample once per epoch, and an epoch that continues after
// its batches change. Pure host code: one process.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <set>
#include <vector>

#include "openvid/data/sampler.h"
#include "openvid/runtime/error.h"

using namespace ov::data;

BOOST_AUTO_TEST_CASE(sampler_is_deterministic_and_resumes_exactly) {
  // --drop_remainder: each bucket's tail that does not fill a batch is left out.
  const Sampler a({40, 25, 3}, 11, 4, 0.1, true), b({40, 25, 3}, 11, 4, 0.1, true), other({40, 25, 3}, 12, 4, 0.1, true);
  BOOST_CHECK_EQUAL(a.steps_per_epoch(), 36 / 4 + 22 / 4 + 0);  // bucket 2 fills no batch
  BOOST_CHECK_EQUAL(a.left_out(1), 2);
  BOOST_CHECK_EQUAL(a.left_out(2), 3);
  BOOST_CHECK_EQUAL(a.batches(2), 0);
  std::vector<std::vector<int64_t>> seq;
  bool differs = false;
  Position p;
  for (int i = 0; i < 3 * a.steps_per_epoch(); ++i, p = a.next(p)) {
    const GlobalBatch x = a.batch(p), y = b.batch(p);
    BOOST_CHECK(x.samples == y.samples && x.bucket == y.bucket);
    differs = differs || other.batch(p).samples != x.samples;
    std::set<int64_t> in_batch(x.samples.begin(), x.samples.end());
    BOOST_CHECK_EQUAL(in_batch.size(), x.samples.size());  // one bucket, no repeats within an epoch's batch
    seq.push_back(x.samples);
  }
  BOOST_CHECK(differs);
  BOOST_CHECK(a.next({0, a.steps_per_epoch() - 1}) == (Position{1, 0}));
  // Resuming at any step gives the remaining sequence.
  for (int64_t k : {int64_t{0}, int64_t{5}, a.steps_per_epoch(), int64_t{2} * a.steps_per_epoch() + 3}) {
    Position q = a.position_after(k);
    for (size_t i = static_cast<size_t>(k); i < seq.size(); ++i, q = a.next(q)) BOOST_CHECK(a.batch(q).samples == seq[i]);
  }
  // Epochs differ in order; the held-out split depends on the data alone.
  BOOST_CHECK(seq[0] != seq[static_cast<size_t>(a.steps_per_epoch())] || seq[1] != seq[static_cast<size_t>(a.steps_per_epoch()) + 1]);
  BOOST_CHECK(a.heldout(0) == other.heldout(0));
  BOOST_CHECK_EQUAL(a.heldout(0).size(), 4u);
  const auto eval = a.heldout_batches(10);
  BOOST_CHECK_EQUAL(eval.front().valid, -1);  // full: every sample real
  BOOST_CHECK_EQUAL(eval.front().real(), 4);
  // Held out: 4 of 40, 3 of 25 (2.5 rounds up), 0 of 3: one batch each for the first two buckets, the
  // second padded from 3 real samples to 4.
  BOOST_CHECK_EQUAL(eval.size(), 2u);
  BOOST_CHECK_EQUAL(eval.back().valid, 3);
  BOOST_CHECK_EQUAL(eval.back().samples[3], eval.back().samples[0]);
  BOOST_CHECK_THROW(Sampler({3, 2}, 1, 4, 0.0, true), ov::InputError);
  BOOST_CHECK_THROW(Sampler({1, 1}, 1, 4, 0.6), ov::InputError);  // every sample held out: nothing to train
}

// A global batch per bucket (batches by token budget): each bucket cut by its own size, a bucket of size 0
// left out of training and evaluation; every other training sample still once per epoch.
BOOST_AUTO_TEST_CASE(sampler_takes_a_batch_size_per_bucket) {
  const Sampler s({40, 25, 3}, 11, std::vector<int64_t>{4, 8, 0}, 0.1);
  BOOST_CHECK_EQUAL(s.steps_per_epoch(), 36 / 4 + 22 / 8 + 1);
  BOOST_CHECK_EQUAL(s.left_out(2), 3);
  BOOST_CHECK_EQUAL(s.batches(2), 0);
  std::vector<std::multiset<int64_t>> seen(3);
  Position p;
  for (int64_t i = 0; i < s.steps_per_epoch(); ++i, p = s.next(p)) {
    const GlobalBatch gb = s.batch(p);
    BOOST_REQUIRE_NE(gb.bucket, 2);
    BOOST_CHECK_EQUAL(static_cast<int64_t>(gb.samples.size()), s.global_batch(gb.bucket));
    seen[static_cast<size_t>(gb.bucket)].insert(gb.samples.begin(), gb.samples.begin() + gb.real());
  }
  for (int64_t b = 0; b < 2; ++b) {
    BOOST_CHECK(std::vector<int64_t>(seen[static_cast<size_t>(b)].begin(), seen[static_cast<size_t>(b)].end()) == s.training(b));
  }
  for (const GlobalBatch& gb : s.heldout_batches(10)) {
    BOOST_CHECK_NE(gb.bucket, 2);
    BOOST_CHECK_EQUAL(static_cast<int64_t>(gb.samples.size()), s.global_batch(gb.bucket));
  }
}

// Buckets of different batch sizes (a token budget) run out together: two buckets of 400 samples in batches
// of 1 and of 16 (a step's bucket drawn by the batches left: 400 against 25). Halfway through the epoch's
// samples each bucket has given about half of its own (drawing by samples left instead gives 48 and 352);
// epochs differ in order.
BOOST_AUTO_TEST_CASE(buckets_run_out_together) {
  const Sampler s({400, 400}, 5, std::vector<int64_t>{1, 16}, 0.0);
  BOOST_REQUIRE_EQUAL(s.steps_per_epoch(), 400 + 25);
  constexpr int kEpochs = 8;
  double taken[2] = {0, 0};  // samples of each bucket in the first 400 of each epoch, summed over the epochs
  for (int64_t epoch = 0; epoch < kEpochs; ++epoch) {
    int64_t n = 0;
    for (Position p{epoch, 0}; n < 400; p = s.next(p)) {
      const GlobalBatch gb = s.batch(p);
      taken[gb.bucket] += static_cast<double>(gb.real());
      n += gb.real();
    }
  }
  // One epoch's count of the batches of 16 spreads by ~2.4 batches (39 samples); the mean of 8 by ~14.
  BOOST_TEST_MESSAGE("mean samples in the first 400: " << taken[0] / kEpochs << " and " << taken[1] / kEpochs);
  BOOST_CHECK(std::abs(taken[0] / kEpochs - 200) <= 45);
  BOOST_CHECK(std::abs(taken[1] / kEpochs - 200) <= 45);
  BOOST_CHECK(s.batch({0, 3}).samples != s.batch({1, 3}).samples || s.batch({0, 4}).samples != s.batch({1, 4}).samples);
}

// By default every training sample is trained once per epoch: a bucket's remainder (here 22 = 5 x 4 + 2,
// and all 3 of bucket 2) is one more batch, padded by repeating its real samples, `valid` of them.
BOOST_AUTO_TEST_CASE(sampler_trains_every_sample_once_per_epoch) {
  const Sampler s({40, 25, 3}, 11, 4, 0.1);
  BOOST_CHECK_EQUAL(s.steps_per_epoch(), 9 + 6 + 1);
  BOOST_CHECK_EQUAL(s.left_out(1) + s.left_out(2), 0);
  BOOST_CHECK_EQUAL(s.padded_batches(0), 0);
  BOOST_CHECK_EQUAL(s.padded_batches(1), 1);
  BOOST_CHECK_EQUAL(s.batches(2), 1);
  Position p;
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    std::vector<std::multiset<int64_t>> seen(3);
    int padded = 0;
    for (int64_t i = 0; i < s.steps_per_epoch(); ++i, p = s.next(p)) {
      const GlobalBatch gb = s.batch(p);
      BOOST_REQUIRE_EQUAL(gb.samples.size(), 4u);
      const int64_t real = gb.real();
      if (real < 4) {
        ++padded;
        BOOST_CHECK_EQUAL(real, gb.bucket == 1 ? 2 : 3);
        for (int64_t k = real; k < 4; ++k) BOOST_CHECK_EQUAL(gb.samples[static_cast<size_t>(k)], gb.samples[static_cast<size_t>(k % real)]);
      }
      seen[static_cast<size_t>(gb.bucket)].insert(gb.samples.begin(), gb.samples.begin() + real);
    }
    BOOST_CHECK_EQUAL(padded, 2);
    for (int64_t b = 0; b < 3; ++b) {
      const std::vector<int64_t>& train = s.training(b);
      BOOST_CHECK_MESSAGE(std::vector<int64_t>(seen[static_cast<size_t>(b)].begin(), seen[static_cast<size_t>(b)].end()) == train,
                          "epoch " << epoch << ", bucket " << b << ": not every training sample exactly once");
    }
  }
}

// A resume that changes the global batches (other data ranks, another budget) or the remainder rule
// continues the interrupted epoch with exactly the samples it had not taken, in the new batches, and the
// epochs after it are whole ones of the new rule; a resume with the rule of the run that wrote the state
// continues that run's own sequence, also inside an epoch that was itself continued. Checked at every
// step of an epoch for three changes.
BOOST_AUTO_TEST_CASE(sampler_continues_the_epoch_after_a_change_of_batches) {
  const std::vector<int64_t> counts{40, 25, 3};
  const Sampler before(counts, 11, std::vector<int64_t>{4, 8, 2}, 0.1);
  struct Change {
    std::vector<int64_t> batches;
    bool drop;
  };
  for (const Change& change : {Change{{2, 4, 1}, false}, Change{{8, 16, 4}, false}, Change{{6, 3, 0}, true}}) {
    for (int64_t k = 0; k <= before.steps_per_epoch() + 2; ++k) {
      // The checkpoint after k steps of the first run (epoch 0, or 1 past its end).
      const SamplerState state = before.state_after(k);
      Sampler after(counts, 11, change.batches, 0.1, change.drop);
      BOOST_REQUIRE(after.resume(state, 100 + k));  // the global step can be anything: the position is in the state
      // The epoch's samples: those the first run took in its first k steps, then the continued epoch's.
      std::vector<std::multiset<int64_t>> seen(3);
      Position p = before.position_after(0);
      for (int64_t i = 0; i < k; ++i, p = before.next(p)) {
        const GlobalBatch gb = before.batch(p);
        if (p.epoch == state.epoch) seen[static_cast<size_t>(gb.bucket)].insert(gb.samples.begin(), gb.samples.begin() + gb.real());
      }
      Position q = after.position_after(100 + k);
      const int64_t continued = after.steps_in_epoch(state.epoch);  // 0 when nothing of the epoch fills a new batch
      BOOST_REQUIRE(q == (continued > 0 ? Position{state.epoch, 0} : Position{state.epoch + 1, 0}));
      BOOST_CHECK_EQUAL(after.steps_until_epoch(state.epoch + 1), 100 + k + continued);
      for (int64_t i = 0; i < continued; ++i, q = after.next(q)) {
        const GlobalBatch gb = after.batch(q);
        BOOST_REQUIRE_EQUAL(static_cast<int64_t>(gb.samples.size()), after.global_batch(gb.bucket));
        seen[static_cast<size_t>(gb.bucket)].insert(gb.samples.begin(), gb.samples.begin() + gb.real());
      }
      BOOST_CHECK(q == (Position{state.epoch + 1, 0}));
      for (int64_t b = 0; b < 3; ++b) {
        std::vector<int64_t> want = after.training(b);
        const std::set<int64_t> once(seen[b].begin(), seen[b].end());
        if (after.global_batch(b) == 0 || change.drop) {
          // A bucket the new rule leaves out: only what the first run had taken. A remainder dropped: fewer
          // than one new batch of the bucket's samples missing. Each sample at most once.
          BOOST_CHECK_EQUAL(once.size(), seen[b].size());
          BOOST_CHECK(std::includes(want.begin(), want.end(), once.begin(), once.end()));
          if (after.global_batch(b) == 0) BOOST_CHECK_EQUAL(static_cast<int64_t>(seen[b].size()), state.consumed[b]);
          else BOOST_CHECK_LT(static_cast<int64_t>(want.size() - seen[b].size()), after.global_batch(b));
          continue;
        }
        BOOST_CHECK_MESSAGE(std::vector<int64_t>(seen[b].begin(), seen[b].end()) == want,
                            "change " << change.batches[0] << ", step " << k << ", bucket " << b << ": not every training sample once");
      }
      // The next epoch is a whole one of the new rule, as a fresh run of it would draw it.
      const Sampler fresh(counts, 11, change.batches, 0.1, change.drop);
      for (int64_t i = 0; i < fresh.steps_per_epoch(); ++i, q = after.next(q)) {
        BOOST_REQUIRE(after.batch(q).samples == fresh.batch({state.epoch + 1, i}).samples);
      }
      // A checkpoint inside the continued epoch, resumed with the new rule: the same sequence on.
      if (continued > 1) {
        const int64_t mid = 100 + k + continued / 2;
        Sampler again(counts, 11, change.batches, 0.1, change.drop);
        BOOST_REQUIRE(again.resume(after.state_after(mid), mid));
        BOOST_CHECK(again.start() == after.start());
        Position x = after.position_after(mid), y = again.position_after(mid);
        for (int64_t i = 0; i < continued; ++i, x = after.next(x), y = again.next(y)) BOOST_REQUIRE(after.batch(x).samples == again.batch(y).samples);
      }
    }
  }
  // The same rule resumes bitwise from any step; a state of another dataset does not fit.
  Sampler same(counts, 11, std::vector<int64_t>{4, 8, 2}, 0.1);
  BOOST_REQUIRE(same.resume(before.state_after(13), 13));
  for (Position p = same.position_after(13), q = before.position_after(13); p.epoch < 3; p = same.next(p), q = before.next(q)) {
    BOOST_REQUIRE(p == q);
    BOOST_REQUIRE(same.batch(p).samples == before.batch(q).samples);
  }
  Sampler other({40, 25}, 11, std::vector<int64_t>{4, 8}, 0.1);
  BOOST_CHECK(!other.resume(before.state_after(5), 5));
}
