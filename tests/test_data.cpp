#define BOOST_TEST_MODULE data
#include "mpi_fixture.h"

#include <ATen/ATen.h>
#include <hdf5.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <algorithm>
#include <set>

#include "openvid/data/dataset.h"
#include "openvid/data/device_batch.h"
#include "openvid/data/manifest.h"
#include "openvid/data/prefetch.h"
#include "openvid/data/sampler.h"
#include "openvid/data/synthetic.h"
#include "openvid/runtime/error.h"
#include "openvid/runtime/mesh.h"
#include "openvid/runtime/mpi_session.h"

using namespace ov::data;

namespace {

// A fresh directory name, the same on every rank (rank 0 chooses it).
std::string shared_dir(const std::string& tag) {
  static int n = 0;
  const std::string mine = (std::filesystem::temp_directory_path() / ("openvid_data_" + std::to_string(::getpid()) + "_" + tag + "_" + std::to_string(n++))).string();
  return ov::broadcast_string(MPI_COMM_WORLD, mine, 0);
}

struct DirGuard {
  std::string path;
  ~DirGuard() {
    MPI_Barrier(MPI_COMM_WORLD);
    if (ov::world_rank() == 0) std::filesystem::remove_all(path);
  }
};

SyntheticSpec small_spec(const std::string& dir) {
  SyntheticSpec s;
  s.directory = dir;
  s.shapes = {{4, 4, 6}, {8, 2, 4}};
  s.samples_per_bucket = 22;
  s.channels = 3;
  s.text_tokens = 5;
  s.text_dim = 8;
  s.caption_bytes = 64;
  s.shards = 3;
  s.seed = 9;
  return s;
}

std::string collective_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const ov::CollectiveExit& e) {
    return e.what();
  }
  return "";
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Edits a shard on rank 0 with serial HDF5 while the others wait.
void on_rank0(const std::function<void()>& f) {
  if (ov::world_rank() == 0) f();
  MPI_Barrier(MPI_COMM_WORLD);
}

}  // namespace

BOOST_AUTO_TEST_CASE(every_sample_once_per_epoch_with_exact_values_for_every_layout) {
  const SyntheticSpec spec = small_spec(shared_dir("roundtrip"));
  DirGuard guard{spec.directory};
  write_synthetic_dataset(MPI_COMM_WORLD, spec);
  auto ds = Dataset::open(spec.directory, MPI_COMM_WORLD);
  const int world = ov::world_size(), me = ov::world_rank();
  int layouts = 0;
  for (auto [fs_, cp] : layouts_for(world)) {
    if (cp > 2) continue;  // the 4-frame bucket has 2 video tokens (time_patch 2): cp 4 cannot split it
    ++layouts;
    const ov::Mesh mesh = ov::Mesh::make(world, fs_, cp);
    const ReaderLayout layout{mesh.data_rank(me), mesh.num_data_ranks(), mesh.coord(me).cp, cp, 2};
    BOOST_CHECK_NO_THROW(ds->check_layout(layout));
    const Sampler sampler({22, 22}, 5, 2 * layout.num_data_ranks, 0.1);
    std::vector<int64_t> mine;  // bucket * 1000 + sample, delivered to my data rank (recorded by cp rank 0)
    for (int64_t step = 0; step < sampler.steps_per_epoch(); ++step) {
      const GlobalBatch gb = sampler.batch({0, step});
      const HostBatch hb = ds->read(gb, layout);
      BOOST_CHECK_EQUAL(hb.t_count * cp, hb.frames);
      BOOST_CHECK_EQUAL(hb.t_begin, layout.cp_rank * hb.t_count);
      const std::vector<int64_t> share(gb.samples.begin() + layout.data_rank * 2, gb.samples.begin() + layout.data_rank * 2 + 2);
      BOOST_CHECK(hb.samples == share);  // this data rank's share, in the batch's order
      for (size_t i = 0; i < hb.samples.size(); ++i) {
        const SyntheticSample want = synthetic_sample(spec, gb.bucket, hb.samples[i]);
        BOOST_CHECK(at::equal(hb.latents[static_cast<int64_t>(i)], want.latent.narrow(1, hb.t_begin, hb.t_count)));
        BOOST_CHECK(at::equal(hb.text[static_cast<int64_t>(i)], want.text));
        BOOST_CHECK_EQUAL(hb.captions[i], want.caption);
        if (layout.cp_rank == 0 && static_cast<int64_t>(i) < hb.valid) mine.push_back(gb.bucket * 1000 + hb.samples[i]);
      }
    }
    // Gather what every data rank received as real samples: each training sample exactly once (the
    // remainders' padding repeats samples, marked as padding by `valid`).
    int n = static_cast<int>(mine.size());
    std::vector<int> counts(static_cast<size_t>(world));
    MPI_Allgather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, MPI_COMM_WORLD);
    std::vector<int> displs(static_cast<size_t>(world), 0);
    for (int r = 1; r < world; ++r) displs[static_cast<size_t>(r)] = displs[static_cast<size_t>(r - 1)] + counts[static_cast<size_t>(r - 1)];
    std::vector<int64_t> all(static_cast<size_t>(displs.back() + counts.back()));
    MPI_Allgatherv(mine.data(), n, MPI_INT64_T, all.data(), counts.data(), displs.data(), MPI_INT64_T, MPI_COMM_WORLD);
    const std::set<int64_t> distinct(all.begin(), all.end());
    BOOST_CHECK_EQUAL(distinct.size(), all.size());
    BOOST_CHECK_EQUAL(static_cast<int64_t>(all.size()), static_cast<int64_t>(sampler.training(0).size() + sampler.training(1).size()));
    for (int64_t b = 0; b < 2; ++b) {
      for (int64_t s : sampler.heldout(b)) BOOST_CHECK(!distinct.count(b * 1000 + s));  // held-out never trained on
      int64_t seen = 0;
      for (int64_t s : sampler.training(b)) seen += distinct.count(b * 1000 + s);
      BOOST_CHECK_EQUAL(seen, static_cast<int64_t>(sampler.training(b).size()));
    }
  }
  BOOST_CHECK_GT(layouts, 0);
  const ReadStats& st = ds->stats();
  BOOST_CHECK_GT(st.reads, 0);
  BOOST_CHECK_EQUAL(st.collective_reads, st.reads);  // HDF5 says every latent/text read was collective
  BOOST_CHECK_EQUAL(st.independent_reads, 0);
  BOOST_CHECK_GT(st.bytes, 0);
}

// ... and in the batch's order (read in file order, put back): positions carry meaning, e.g. the padding of
// an evaluation batch is its last positions.
BOOST_AUTO_TEST_CASE(a_sample_drawn_twice_is_delivered_twice) {
  const SyntheticSpec spec = small_spec(shared_dir("dup"));
  DirGuard guard{spec.directory};
  write_synthetic_dataset(MPI_COMM_WORLD, spec);
  auto ds = Dataset::open(spec.directory, MPI_COMM_WORLD);
  const int world = ov::world_size(), me = ov::world_rank();
  GlobalBatch gb;
  gb.bucket = 1;
  for (int r = 0; r < world; ++r) gb.samples.insert(gb.samples.end(), {17, 3, 17, 8});  // 17 twice, across shards
  const HostBatch hb = ds->read(gb, ReaderLayout{me, world, 0, 1, 2});
  BOOST_CHECK(hb.samples == (std::vector<int64_t>{17, 3, 17, 8}));
  for (size_t i = 0; i < 4; ++i) {
    const SyntheticSample want = synthetic_sample(spec, 1, hb.samples[i]);
    BOOST_CHECK(at::equal(hb.latents[static_cast<int64_t>(i)], want.latent));
    BOOST_CHECK(at::equal(hb.text[static_cast<int64_t>(i)], want.text));
    BOOST_CHECK_EQUAL(hb.captions[i], want.caption);
  }
  BOOST_CHECK_EQUAL(hb.global_valid, 4 * world);  // valid -1: every sample real
  BOOST_CHECK_EQUAL(hb.valid, 4);
  // A padded batch (a remainder's, 4 * world - 3 real samples): the padding is the last ranks' last positions.
  gb.valid = 4 * world - 3;
  const HostBatch padded = ds->read(gb, ReaderLayout{me, world, 0, 1, 2});
  BOOST_CHECK_EQUAL(padded.global_valid, 4 * world - 3);
  BOOST_CHECK_EQUAL(padded.valid, me + 1 < world ? 4 : 1);
}

// Read buffers are reused only once released: a batch still held (or a view of it) keeps its values.
BOOST_AUTO_TEST_CASE(held_batches_are_never_overwritten) {
  const SyntheticSpec spec = small_spec(shared_dir("reuse"));
  DirGuard guard{spec.directory};
  write_synthetic_dataset(MPI_COMM_WORLD, spec);
  auto ds = Dataset::open(spec.directory, MPI_COMM_WORLD);
  const int world = ov::world_size(), me = ov::world_rank();
  const ReaderLayout layout{me, world, 0, 1, 2};
  auto batch_of = [&](int64_t first) {
    GlobalBatch gb;
    gb.bucket = 0;
    for (int r = 0; r < world; ++r) gb.samples.insert(gb.samples.end(), {first, first + 1});
    return gb;
  };
  HostBatch held = ds->read(batch_of(0), layout);
  const at::Tensor view = ds->read(batch_of(4), layout).latents.narrow(0, 1, 1);  // only a view survives
  std::vector<HostBatch> later;
  for (int64_t first = 8; first < 20; first += 2) later.push_back(ds->read(batch_of(first), layout));
  BOOST_CHECK(at::equal(held.latents[0], synthetic_sample(spec, 0, 0).latent));
  BOOST_CHECK(at::equal(held.text[1], synthetic_sample(spec, 0, 1).text));
  BOOST_CHECK(at::equal(view[0], synthetic_sample(spec, 0, 5).latent));
  for (size_t i = 0; i < later.size(); ++i)
    BOOST_CHECK(at::equal(later[i].latents[1], synthetic_sample(spec, 0, 8 + 2 * static_cast<int64_t>(i) + 1).latent));
  // Released buffers are reused: reading on does not grow memory without bound (the pool is capped).
  later.clear();
  held = HostBatch{};
  for (int i = 0; i < 40; ++i) ds->read(batch_of(2 * (i % 10)), layout);
}

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

BOOST_AUTO_TEST_CASE(prefetcher_delivers_the_sampler_sequence_and_stops_cleanly) {
  const SyntheticSpec spec = small_spec(shared_dir("prefetch"));
  DirGuard guard{spec.directory};
  write_synthetic_dataset(MPI_COMM_WORLD, spec);
  auto ds = Dataset::open(spec.directory, MPI_COMM_WORLD);
  const int world = ov::world_size(), me = ov::world_rank();
  const ReaderLayout layout{me, world, 0, 1, 2};
  const Sampler sampler({22, 22}, 3, world, 0.0);
  const Position start = sampler.position_after(3);
  {
    Prefetcher pf(*ds, sampler, start, 6, layout, 2);
    Position p = start;
    for (int i = 0; i < 6; ++i, p = sampler.next(p)) {
      const Prefetcher::Item item = pf.next();
      BOOST_CHECK(item.position == p);
      BOOST_CHECK(item.batch.samples == std::vector<int64_t>{sampler.batch(p).samples[static_cast<size_t>(me)]});
      BOOST_CHECK(at::equal(item.batch.latents[0], synthetic_sample(spec, item.batch.bucket, item.batch.samples[0]).latent));
    }
    BOOST_CHECK_THROW(pf.next(), ov::Error);  // only 6 steps were planned
  }
  {
    // Dropped after 2 of 100 planned steps: must neither hang nor leave a rank in a collective read.
    Prefetcher pf(*ds, sampler, start, 100, layout, 3);
    pf.next();
    pf.next();
  }
  // The dataset is still usable collectively afterwards: the ranks stopped at the same read.
  const HostBatch hb = ds->read(sampler.batch({0, 0}), layout);
  BOOST_CHECK_EQUAL(hb.samples.size(), 1u);
  // To the compute device (the CPU here) in the compute dtype, values unchanged.
  const DeviceBatch db = to_device(hb, at::Device(at::kCPU), at::kFloat);
  BOOST_CHECK(db.latents.scalar_type() == at::kFloat && db.text.scalar_type() == at::kFloat);
  BOOST_CHECK(at::equal(db.latents, hb.latents.to(at::kFloat)));
  BOOST_CHECK(db.samples == hb.samples);
}

BOOST_AUTO_TEST_CASE(layouts_that_split_a_token_are_refused) {
  const SyntheticSpec spec = small_spec(shared_dir("layout"));
  DirGuard guard{spec.directory};
  write_synthetic_dataset(MPI_COMM_WORLD, spec);
  auto ds = Dataset::open(spec.directory, MPI_COMM_WORLD);
  try {
    ds->check_layout(ReaderLayout{0, 1, 0, 4, 2});
    BOOST_ERROR("cp 4 of a 4-frame bucket with time_patch 2 must be refused");
  } catch (const ov::InputError& e) {
    BOOST_CHECK_MESSAGE(has(e.what(), "t4_h4_w6") && has(e.what(), "choose --cp dividing 2"), e.what());
  }
}

BOOST_AUTO_TEST_CASE(bad_datasets_end_every_rank_with_one_clear_message) {
  const SyntheticSpec spec = small_spec(shared_dir("bad"));
  DirGuard guard{spec.directory};
  const std::string shard0 = spec.directory + "/shard-00000.h5", manifest = spec.directory + "/dataset.json";
  auto fresh = [&] { write_synthetic_dataset(MPI_COMM_WORLD, spec); };
  auto open_error = [&] { return collective_error([&] { Dataset::open(spec.directory, MPI_COMM_WORLD); }); };

  std::string e = collective_error([&] { Dataset::open(spec.directory + "/nowhere", MPI_COMM_WORLD); });
  BOOST_CHECK_MESSAGE(has(e, "nowhere' does not exist"), e);

  fresh();
  on_rank0([&] { std::ofstream(manifest) << "{ not json"; });
  e = open_error();
  BOOST_CHECK_MESSAGE(has(e, "dataset.json' is not valid JSON"), e);

  fresh();
  on_rank0([&] {
    std::ifstream in(manifest);
    std::string text((std::istreambuf_iterator<char>(in)), {});
    text.replace(text.find("\"format_version\": 1"), 19, "\"format_version\": 7");
    std::ofstream(manifest) << text;
  });
  e = open_error();
  BOOST_CHECK_MESSAGE(has(e, "format version 7; this openvid reads version 1"), e);

  fresh();
  on_rank0([&] { std::filesystem::remove(spec.directory + "/shard-00001.h5"); });
  e = open_error();
  BOOST_CHECK_MESSAGE(has(e, "shard-00001.h5' (listed in the manifest) does not exist"), e);

  fresh();
  on_rank0([&] { std::ofstream(shard0) << "this is not an HDF5 file"; });
  e = open_error();
  BOOST_CHECK_MESSAGE(has(e, "shard-00000.h5' is not an HDF5 file"), e);

  fresh();
  on_rank0([&] {
    const hid_t f = H5Fopen(shard0.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    const int64_t two = 2;
    const hid_t a = H5Aopen(f, "format_version", H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT64, &two);
    H5Aclose(a);
    H5Fclose(f);
  });
  e = open_error();
  BOOST_CHECK_MESSAGE(has(e, "shard-00000.h5' has format version 2"), e);

  fresh();
  on_rank0([&] {
    const hid_t f = H5Fopen(shard0.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(f, "/buckets/t8_h2_w4/text", H5P_DEFAULT);
    H5Fclose(f);
  });
  e = open_error();
  BOOST_CHECK_MESSAGE(has(e, "shard-00000.h5'") && has(e, "'/buckets/t8_h2_w4/text' is missing"), e);

  fresh();
  on_rank0([&] {
    const hid_t f = H5Fopen(shard0.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(f, "/buckets/t4_h4_w6/latents", H5P_DEFAULT);
    const hsize_t dims[5] = {7, 3, 4, 4, 6};
    const hid_t space = H5Screate_simple(5, dims, nullptr);
    const hid_t d = H5Dcreate2(f, "/buckets/t4_h4_w6/latents", H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(d);
    H5Sclose(space);
    H5Fclose(f);
  });
  e = open_error();
  BOOST_CHECK_MESSAGE(has(e, "/buckets/t4_h4_w6/latents is not stored as IEEE half"), e);

  fresh();
  on_rank0([&] {  // the manifest claims one more row in shard 0 than the file holds (counts kept consistent)
    std::ifstream in(manifest);
    std::string text((std::istreambuf_iterator<char>(in)), {});
    text.replace(text.find("\"count\": 22"), 11, "\"count\": 23");
    text.replace(text.find("\"count\": 7"), 10, "\"count\": 8");
    std::ofstream(manifest) << text;
  });
  e = open_error();
  BOOST_CHECK_MESSAGE(has(e, "/latents has shape [7, 3, 4, 4, 6], the manifest implies [8, 3, 4, 4, 6]"), e);

  fresh();
  on_rank0([&] {
    std::ifstream in(manifest);
    std::string text((std::istreambuf_iterator<char>(in)), {});
    text.replace(text.find("\"count\": 22"), 11, "\"count\": 21");
    std::ofstream(manifest) << text;
  });
  e = open_error();
  BOOST_CHECK_MESSAGE(has(e, "counts 21 samples but its shards hold 22"), e);

  fresh();
  on_rank0([&] {  // NaN in row 2 of bucket t4_h4_w6 in shard 0
    const hid_t f = H5Fopen(shard0.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    const hid_t d = H5Dopen2(f, "/buckets/t4_h4_w6/latents", H5P_DEFAULT);
    const hid_t space = H5Dget_space(d);
    const hsize_t start[5] = {2, 1, 3, 2, 5}, one[5] = {1, 1, 1, 1, 1};
    H5Sselect_hyperslab(space, H5S_SELECT_SET, start, nullptr, one, nullptr);
    const hid_t mem = H5Screate_simple(5, one, nullptr);
    const float nan = NAN;
    H5Dwrite(d, H5T_NATIVE_FLOAT, mem, space, H5P_DEFAULT, &nan);
    H5Sclose(mem);
    H5Sclose(space);
    H5Dclose(d);
    H5Fclose(f);
  });
  {
    auto ds = Dataset::open(spec.directory, MPI_COMM_WORLD, DatasetOptions{true});
    GlobalBatch gb;
    gb.bucket = 0;
    for (int r = 0; r < ov::world_size(); ++r) gb.samples.push_back(r == ov::world_size() - 1 ? 2 : 9);
    e = collective_error([&] { ds->read(gb, ReaderLayout{ov::world_rank(), ov::world_size(), 0, 1, 2}); });
    BOOST_CHECK_MESSAGE(has(e, "shard-00000.h5', bucket 't4_h4_w6', row 2: the latent or text states hold NaN or Inf"), e);
  }
}

BOOST_AUTO_TEST_CASE(a_dataset_written_by_h5py_is_read) {
  const char* dir = std::getenv("OPENVID_H5PY_DATASET");
  BOOST_TEST_REQUIRE(dir != nullptr, "OPENVID_H5PY_DATASET names the directory tests/write_h5py_dataset.py wrote");
  auto ds = Dataset::open(dir, MPI_COMM_WORLD);
  const Manifest& m = ds->manifest();
  BOOST_CHECK_EQUAL(m.latent_encoder, "formula");
  const int world = ov::world_size(), me = ov::world_rank();
  const int cp = world % 2 == 0 ? 2 : 1;  // with an even world size, also read time slices
  GlobalBatch gb;
  gb.bucket = 0;
  for (int r = 0; r < world / cp; ++r) gb.samples.push_back((r * 5 + 1) % 6);
  const ReaderLayout layout{me / cp, world / cp, me % cp, cp, 1};
  const HostBatch hb = ds->read(gb, layout);
  const int64_t i = hb.samples[0];
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t t = 0; t < hb.t_count; ++t)
      for (int64_t h = 0; h < 2; ++h)
        for (int64_t w = 0; w < 3; ++w) {
          const double want = ((i * 7 + c * 3 + (t + hb.t_begin) * 5 + h * 11 + w * 13) % 17 - 8) / 4.0;
          BOOST_CHECK_EQUAL(hb.latents[0][c][t][h][w].item<double>(), want);
        }
  for (int64_t l = 0; l < 5; ++l)
    for (int64_t d = 0; d < 7; ++d) BOOST_CHECK_EQUAL(hb.text[0][l][d].item<double>(), ((i + l * 3 + d * 5) % 13 - 6) / 2.0);
  BOOST_CHECK_EQUAL(hb.captions[0], "h5py sample " + std::to_string(i));
  BOOST_CHECK_EQUAL(ds->stats().independent_reads, 0);
}
