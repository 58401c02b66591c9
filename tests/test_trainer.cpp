#define BOOST_TEST_MODULE trainer
#include "mpi_fixture.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <map>

#include "openvid/comm/process_groups.h"
#include "openvid/data/manifest.h"
#include "openvid/data/sampler.h"
#include "openvid/data/synthetic.h"
#include "openvid/runtime/error.h"
#include "openvid/runtime/mpi_session.h"
#include "openvid/train/batching.h"
#include "openvid/train/run_start.h"
#include "openvid/train/trainer.h"
#include "train_options.h"
#include "openvid/model/flops.h"
#include "openvid/model/state_dict.h"

// Layout equivalence: from the same initial weights and data, 3 optimizer steps on one rank holding the
// global batch (a universe over MPI_COMM_SELF) and on every dp x fs x cp layout of the world give the same
// loss at every step, the same weights (1e-5) and the same held-out loss.


namespace {


struct Run {
  std::vector<double> losses;
  ov::model::TensorMap weights;
  double eval = 0;
};

Run train(MPI_Comm world, const ov::Options& o) {
  ov::Universe u = ov::Universe::create(world, o.fs, o.cp, ov::DeviceRequest::kCpu);
  auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));
  Run r;
  {
    ov::train::Trainer trainer(o, u, groups);
    for (int64_t s = 0; s < o.max_steps; ++s) r.losses.push_back(trainer.train_step(s).loss);
    r.weights = trainer.weights();
    r.eval = trainer.evaluate();
  }
  groups.finalize();
  return r;
}

// The run's loss at every step and its final weights equal the reference's, to `tol` relative.
void check_same_training(const Run& run, const Run& ref, double tol) {
  BOOST_REQUIRE_EQUAL(run.losses.size(), ref.losses.size());
  for (size_t s = 0; s < ref.losses.size(); ++s) {
    BOOST_CHECK_MESSAGE(std::abs(run.losses[s] - ref.losses[s]) <= tol * std::abs(ref.losses[s]),
                        "step " << s << ": loss " << run.losses[s] << " vs " << ref.losses[s]);
  }
  for (const auto& [name, w] : ref.weights) {
    const double err = (run.weights.at(name) - w).abs().max().item<double>() / std::max(w.abs().max().item<double>(), 1e-12);
    BOOST_CHECK_MESSAGE(err < tol, name << ": relative error " << err);
  }
}

// Collective: on fs = world, `k` steps then a checkpoint, and a resume from it to step `steps`, end with
// the weights of `steps` uninterrupted steps, bit for bit. `opts(run)` gives the options of run `run`.
void check_resume_is_bitwise(const std::function<ov::Options(const std::string&)>& opts, int64_t k, int64_t steps) {
  const int world = ov::world_size();
  ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, world, 1, ov::DeviceRequest::kCpu);
  auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));
  ov::model::TensorMap straight, resumed;
  {
    ov::train::Trainer t(opts("straight"), u, groups);
    for (int64_t s = 0; s < steps; ++s) t.train_step(s);
    straight = t.weights();
  }
  {
    ov::train::Trainer t(opts("split"), u, groups);
    for (int64_t s = 0; s < k; ++s) t.train_step(s);
    t.save_checkpoint(k);
  }
  {
    ov::Options o = opts("split");
    o.resume = "auto";
    ov::train::Trainer t(o, u, groups);
    BOOST_CHECK_EQUAL(t.start_step(), k);
    for (int64_t s = k; s < steps; ++s) t.train_step(s);
    resumed = t.weights();
  }
  for (const auto& [name, w] : straight) BOOST_CHECK_MESSAGE(at::equal(resumed.at(name), w), name << " differs after resuming");
  groups.finalize();
}

}  // namespace

BOOST_AUTO_TEST_CASE(every_layout_trains_like_one_rank_with_the_global_batch) {
  const int world = ov::world_size(), me = ov::world_rank();
  const std::string dir = ov::broadcast_string(
      MPI_COMM_WORLD, (std::filesystem::temp_directory_path() / ("openvid_trainer_" + std::to_string(::getpid()))).string());
  ov::data::SyntheticSpec spec;
  spec.directory = dir + "/data";
  spec.shapes = {{8, 4, 6}, {4, 6, 4}};
  spec.samples_per_bucket = 24;
  spec.channels = 4;
  spec.text_tokens = 5;
  spec.text_dim = 24;
  spec.seed = 2;
  ov::data::write_synthetic_dataset(MPI_COMM_WORLD, spec);
  const int global_batch = 4;

  // The reference: each rank alone (MPI_COMM_SELF), the whole global batch.
  const Run ref = train(MPI_COMM_SELF, options_for(spec.directory, dir, "reference_" + std::to_string(me), 1, 1, global_batch));
  int layouts = 0;
  for (auto [fs_, cp] : layouts_for(world)) {
    const int data_ranks = world / cp;
    if (global_batch % data_ranks != 0 || 2 % cp != 0) continue;  // the 4-frame bucket has 2 time tokens
    BOOST_TEST_CONTEXT("dp=" << world / (fs_ * cp) << " fs=" << fs_ << " cp=" << cp) {
      ++layouts;
      const Run run = train(MPI_COMM_WORLD, options_for(spec.directory, dir, "layout", fs_, cp, global_batch / data_ranks));
      check_same_training(run, ref, 1e-5);
      BOOST_CHECK_MESSAGE(std::abs(run.eval - ref.eval) <= 1e-5 * std::abs(ref.eval), "eval " << run.eval << " vs " << ref.eval);
    }
  }
  BOOST_CHECK_GT(layouts, 0);
  BOOST_CHECK_GT(ref.losses[0], 0.0);
  BOOST_CHECK_NE(ref.losses[0], ref.losses[2]);  // the steps did something
  MPI_Barrier(MPI_COMM_WORLD);
  if (me == 0) std::filesystem::remove_all(dir);
}

// A bucket's remainder is trained in a padded batch whose loss and gradient count only its real samples.
// (a) One rank: 6 training samples of a bucket in a global batch of 8 (2 padding; the bucket never fills a
//     batch) train exactly like a global batch of 6 holding the same samples.
// (b) Every layout of the world: two epochs of 16-sample buckets (13 training samples = 12 + a remainder of
//     1, padded to 12: some data ranks hold padding alone) equal one rank with the global batch, step by
//     step, and a run resumed from a checkpoint just before a remainder batch continues bitwise.
BOOST_AUTO_TEST_CASE(remainder_batches_train_their_real_samples_on_every_layout) {
  const int world = ov::world_size(), me = ov::world_rank();
  const std::string dir = shared_temp_dir("openvid_remainder_");
  auto dataset = [&](const std::string& name, int64_t samples) {
    ov::data::SyntheticSpec spec;
    spec.directory = dir + "/" + name;
    spec.shapes = {{4, 4, 6}, {4, 6, 4}};
    spec.samples_per_bucket = samples;
    spec.channels = 4;
    spec.text_tokens = 5;
    spec.text_dim = 24;
    spec.seed = 4;
    ov::data::write_synthetic_dataset(MPI_COMM_WORLD, spec);
    return spec.directory;
  };
  const std::string small = dataset("small", 8), remainders = dataset("remainders", 16);
  const std::string self = std::to_string(me);
  {
    ov::Options padded = options_for(small, dir, "padded_" + self, 1, 1, 8), full = options_for(small, dir, "full_" + self, 1, 1, 6);
    padded.max_steps = full.max_steps = 2;  // one epoch: a batch of each bucket
    check_same_training(train(MPI_COMM_SELF, padded), train(MPI_COMM_SELF, full), 1e-6);
    ov::Options dropped = padded;
    dropped.drop_remainder = true;
    try {  // nothing would be trained
      train(MPI_COMM_SELF, dropped);
      BOOST_ERROR("--drop_remainder with no bucket filling a global batch must be refused");
    } catch (const std::exception& e) {
      BOOST_CHECK_MESSAGE(std::string(e.what()).find("leave out --drop_remainder") != std::string::npos, e.what());
    }
  }
  constexpr int kGlobal = 12;
  const ov::data::Sampler plan({16, 16}, 3, kGlobal, 0.2);  // the trainer's sampler (seed 3, held out 0.2)
  BOOST_REQUIRE_EQUAL(plan.steps_per_epoch(), 4);
  auto opts = [&](const std::string& run, int fs_, int cp, int data_ranks) {
    ov::Options o = options_for(remainders, dir, run, fs_, cp, kGlobal / data_ranks);
    o.max_steps = 8;
    return o;
  };
  const Run ref = train(MPI_COMM_SELF, opts("reference_" + self, 1, 1, 1));
  int layouts = 0;
  for (auto [fs_, cp] : layouts_for(world)) {
    const int data_ranks = world / cp;
    if (kGlobal % data_ranks != 0 || 2 % cp != 0) continue;  // 2 video tokens in time
    BOOST_TEST_CONTEXT("dp=" << world / (fs_ * cp) << " fs=" << fs_ << " cp=" << cp) {
      ++layouts;
      check_same_training(train(MPI_COMM_WORLD, opts("layout", fs_, cp, data_ranks)), ref, 1e-5);
    }
  }
  BOOST_CHECK_GT(layouts, 0);
  // Resume: checkpointed just before the first remainder batch after step 0, on the world with fs = world.
  int64_t k = 1;
  while (plan.batch(plan.position_after(k)).real() == kGlobal) ++k;
  BOOST_REQUIRE_LT(k, 8);
  check_resume_is_bitwise([&](const std::string& run) { return opts(run, world, 1, world); }, k, k + 1);
  MPI_Barrier(MPI_COMM_WORLD);
  if (me == 0) std::filesystem::remove_all(dir);
}

// Each step's traffic per group (StepResult::comm_bytes, as metrics.jsonl logs it) is what the layout's
// collectives must move, counted from the model's own buffers (fp32 on the CPU): fs = world gathers every
// unit's full parameters and reduce-scatters its full gradient (twice the gathered bytes) on the shard
// group (fs x cp ranks: cp = 2 shards too); the dp group all-reduces each rank's gradient slice (all of it at
// dp = world); cp = 2 exchanges keys and values on the cp group; every layout all-reduces the step's 3 statistics (24 bytes) on the world; and every step the same.
BOOST_AUTO_TEST_CASE(each_step_moves_the_bytes_its_layout_needs) {
  const int world = ov::world_size(), me = ov::world_rank();
  const std::string dir = shared_temp_dir("openvid_traffic_");
  const ov::data::SyntheticSpec spec = small_dataset(dir);
  for (auto [fs_, cp] : {std::pair{world, 1}, std::pair{1, 1}, std::pair{1, world == 2 || world == 4 ? 2 : 1}}) {
    BOOST_TEST_CONTEXT("fs=" << fs_ << " cp=" << cp) {
      ov::Options o = options_for(spec.directory, dir, "traffic", fs_, cp, 2);
      ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, fs_, cp, ov::DeviceRequest::kCpu);
      auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));
      {
        ov::train::Trainer t(o, u, groups);
        const auto first = t.train_step(0).comm_bytes, second = t.train_step(1).comm_bytes;
        BOOST_TEST_MESSAGE("rank " << me << ": " << groups.traffic_line(2));
        BOOST_REQUIRE_EQUAL(first.size(), 4u);
        std::map<std::string, double> bytes(first.begin(), first.end());
        BOOST_CHECK(first == second);
        const double gathered = static_cast<double>(t.memory().gathered_bytes);
        const int dp = world / (fs_ * cp);
        BOOST_CHECK_EQUAL(bytes["world"], world > 1 ? 24.0 : 0.0);
        BOOST_CHECK_EQUAL(bytes["shard"], fs_ * cp > 1 ? 2 * gathered : 0.0);  // the shard group is fs x cp
        BOOST_CHECK_EQUAL(bytes["dp"], dp > 1 ? gathered / (fs_ * cp) : 0.0);  // the shard's gradient slice
        if (cp > 1) BOOST_CHECK_GT(bytes["cp"], 0.0);
        else BOOST_CHECK_EQUAL(bytes["cp"], 0.0);
      }
      groups.finalize();
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (me == 0) std::filesystem::remove_all(dir);
}

// Batches by token budget (--batch_tokens): buckets of 16 and 32 tokens per sample (registers included)
// take 4 and 2 samples per data rank from a budget of 64; every layout of the world trains like one rank
// whose budget gives the same global batches (64 x data ranks), through two epochs with padded remainders.
BOOST_AUTO_TEST_CASE(token_budget_batches_train_alike_on_every_layout) {
  const int world = ov::world_size(), me = ov::world_rank();
  const std::string dir = shared_temp_dir("openvid_tokens_");
  ov::data::SyntheticSpec spec;
  spec.directory = dir + "/data";
  spec.shapes = {{4, 4, 6}, {4, 4, 14}};  // 2x2x3 + 4 = 16 and 2x2x7 + 4 = 32 tokens
  spec.samples_per_bucket = 24;
  spec.channels = 4;
  spec.text_tokens = 5;
  spec.text_dim = 24;
  ov::data::write_synthetic_dataset(MPI_COMM_WORLD, spec);
  auto opts = [&](const std::string& run, int fs_, int cp, int64_t budget) {
    ov::Options o = options_for(spec.directory, dir, run, fs_, cp, ov::Options{}.batch_size);
    o.batch_tokens = budget;
    o.max_steps = 6;
    return o;
  };
  {
    const ov::Options o = opts("probe_" + std::to_string(me), 1, 1, 64);
    const ov::train::BucketBatches b = ov::train::bucket_batches(o, ov::data::read_manifest(spec.directory));
    BOOST_REQUIRE_EQUAL(b.per_rank.size(), 2u);
    BOOST_CHECK_EQUAL(b.per_rank[0], 4);
    BOOST_CHECK_EQUAL(b.per_rank[1], 2);
    BOOST_TEST(b.table.find("t4_h4_w6 4 x 16 tokens, t4_h4_w14 2 x 32 tokens") != std::string::npos, b.table);
    // Attention's cost, tokens + tokens^2 / 16 (16: the median bucket's tokens): 32 and 96 per sample.
    ov::Options a = opts("probe_" + std::to_string(me), 1, 1, 192);
    a.batch_cost = "attention";
    const ov::train::BucketBatches att = ov::train::bucket_batches(a, ov::data::read_manifest(spec.directory));
    BOOST_CHECK_EQUAL(att.per_rank[0], 6);
    BOOST_CHECK_EQUAL(att.per_rank[1], 2);
    // FLOPs' cost: the 16-token (median) bucket costs its tokens; the 32-token one its tokens times its FLOPs
    // per token over the median's, more than 32 (attention grows per token) and less than attention's 96 here.
    a.batch_cost = "flops";
    const ov::data::Manifest manifest = ov::data::read_manifest(spec.directory);
    const double per16 = ov::model::forward_flops(a.model, 4, 4, 6, manifest.text_tokens) / 16;
    const double per32 = ov::model::forward_flops(a.model, 4, 4, 14, manifest.text_tokens) / 32;
    const auto cost32 = static_cast<int64_t>(std::ceil(32 * per32 / per16));
    BOOST_TEST_REQUIRE((cost32 > 32 && cost32 < 96), cost32);
    a.batch_tokens = 2 * cost32;
    const ov::train::BucketBatches fl = ov::train::bucket_batches(a, manifest);
    BOOST_CHECK_EQUAL(fl.per_rank[0], 2 * cost32 / 16);
    BOOST_CHECK_EQUAL(fl.per_rank[1], 2);
    BOOST_TEST(fl.table.find("t4_h4_w14 2 x 32 tokens (cost " + std::to_string(cost32) + ")") != std::string::npos, fl.table);
    a.batch_tokens = cost32 - 1;
    BOOST_CHECK_EXCEPTION(ov::train::bucket_batches(a, manifest), ov::InputError, [&](const ov::InputError& e) {
      return std::string(e.what()).find("give --batch_tokens " + std::to_string(cost32) + " or more") != std::string::npos;
    });
    // A budget below one sample of the 32-token bucket: named, with the smallest budget; or left out.
    ov::Options small = opts("probe_" + std::to_string(me), 1, 1, 20);
    BOOST_CHECK_EXCEPTION(ov::train::bucket_batches(small, ov::data::read_manifest(spec.directory)), ov::InputError, [](const ov::InputError& e) {
      return std::string(e.what()).find("bucket(s) t4_h4_w14 (32 tokens): give --batch_tokens 32 or more") != std::string::npos;
    });
    small.skip_oversized_buckets = true;
    const ov::train::BucketBatches skip = ov::train::bucket_batches(small, ov::data::read_manifest(spec.directory));
    BOOST_CHECK_EQUAL(skip.per_rank[0], 1);
    BOOST_CHECK_EQUAL(skip.per_rank[1], 0);
    BOOST_TEST(skip.table.find("left out (--skip_oversized_buckets): t4_h4_w14 (32 tokens)") != std::string::npos, skip.table);
  }
  {
    // Evaluation covers both buckets even with 2 evaluation batches (round robin), each with its own loss,
    // and the overall loss is their mean weighted by the elements evaluated.
    ov::Options o = opts("eval_" + std::to_string(me), 1, 1, 64);
    o.eval_batches = 2;
    ov::Universe u = ov::Universe::create(MPI_COMM_SELF, 1, 1, ov::DeviceRequest::kCpu);
    auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));
    {
      ov::train::Trainer t(o, u, groups);
      const double overall = t.evaluate();
      const auto& by = t.eval_by_bucket();
      BOOST_REQUIRE_EQUAL(by.size(), 2u);
      BOOST_CHECK_EQUAL(by[0].first, "t4_h4_w6");
      BOOST_CHECK_EQUAL(by[1].first, "t4_h4_w14");
      // Evaluated: the first batch of each, 4 samples of 4x4x6 and 2 of 4x4x14 (elements 96 and 224 each).
      const double weighted = (by[0].second * 4 * 96 + by[1].second * 2 * 224) / (4 * 96 + 2 * 224);
      BOOST_CHECK_CLOSE(overall, weighted, 1e-9);
      BOOST_CHECK_NE(by[0].second, by[1].second);
    }
    groups.finalize();
  }
  // Layouts and resume over three buckets: 16, 32 and 60 tokens (a third of 4x8x14: 2x4x7 + 4), 4, 2 and 1
  // samples per data rank from a budget of 64 (one rank with 64 x data ranks takes the same global batches).
  ov::data::SyntheticSpec three = spec;
  three.directory = dir + "/data3";
  three.shapes = {{4, 4, 6}, {4, 4, 14}, {4, 8, 14}};
  ov::data::write_synthetic_dataset(MPI_COMM_WORLD, three);
  auto opts3 = [&](const std::string& run, int fs_, int cp, int64_t budget) {
    ov::Options o = opts(run, fs_, cp, budget);
    o.dataset = three.directory;
    return o;
  };
  int layouts = 0;
  for (auto [fs_, cp] : layouts_for(world)) {
    const int data_ranks = world / cp;
    if (2 % cp != 0) continue;  // 2 video tokens in time
    BOOST_TEST_CONTEXT("dp=" << world / (fs_ * cp) << " fs=" << fs_ << " cp=" << cp) {
      ++layouts;
      const Run ref = train(MPI_COMM_SELF, opts3("reference_" + std::to_string(me), 1, 1, 64 * data_ranks));
      check_same_training(train(MPI_COMM_WORLD, opts3("layout", fs_, cp, 64)), ref, 1e-5);
    }
  }
  BOOST_CHECK_GT(layouts, 0);
  // Resume at steps 2, 3 and 5 of 6, mid-epoch (an epoch is at least 6 steps), on fs = world: the
  // continuation is bitwise the uninterrupted run's.
  for (int64_t k : {2, 3, 5}) {
    check_resume_is_bitwise([&](const std::string& run) { return opts3("tokens" + std::to_string(k) + "_" + run, world, 1, 64); }, k, 6);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (me == 0) std::filesystem::remove_all(dir);
}

// The start-up line on an epoch's coverage: the remainders padded or left out, never-trained buckets named.
BOOST_AUTO_TEST_CASE(the_start_up_line_says_what_an_epoch_leaves_out) {
  ov::data::Manifest m;
  const std::vector<int64_t> counts{40, 25, 3, 1};  // half held out: 20, 12, 1 and 0 training samples
  for (int64_t n : counts) m.buckets.push_back({ov::data::bucket_name(2, 2, n), 2, 2, n, n, {}});
  const std::string keep = ov::train::epoch_coverage(ov::data::Sampler(counts, 1, 4, 0.5), m);
  BOOST_TEST(keep == "epoch: 33 of 33 training samples in 9 steps; 1 bucket ends in a smaller batch, padded to the global batch (the loss "
                     "counts only its real samples); never trained: t2_h2_w1 (1 sample, all held out)");
  const std::string drop = ov::train::epoch_coverage(ov::data::Sampler(counts, 1, 4, 0.5, true), m);
  BOOST_TEST(drop == "epoch: 32 of 33 training samples in 8 steps; 1 left out (each bucket's last, smaller batch: --drop_remainder); "
                     "never trained: t2_h2_w3 (1 training sample, fewer than the global batch of 4), t2_h2_w1 (1 sample, all held out)");
}

// The held-out loss is the mean over the held-out samples whatever the batch size: padded evaluation batches
// (6 held-out samples in batches of 4 or 8 repeat some) count each sample once, on any layout.
BOOST_AUTO_TEST_CASE(eval_loss_does_not_depend_on_the_batch_size) {
  const int world = ov::world_size(), me = ov::world_rank();
  const std::string dir = ov::broadcast_string(
      MPI_COMM_WORLD, (std::filesystem::temp_directory_path() / ("openvid_eval_" + std::to_string(::getpid()))).string());
  ov::data::SyntheticSpec spec;
  spec.directory = dir + "/data";
  spec.shapes = {{4, 4, 6}};
  spec.samples_per_bucket = 30;  // held out: 6
  spec.channels = 4;
  spec.text_tokens = 5;
  spec.text_dim = 24;
  ov::data::write_synthetic_dataset(MPI_COMM_WORLD, spec);
  auto eval_with = [&](MPI_Comm comm, int batch, const std::string& run) {
    ov::Options o = options_for(spec.directory, dir, run, 1, 1, batch);
    o.eval_batches = 8;
    ov::Universe u = ov::Universe::create(comm, 1, 1, ov::DeviceRequest::kCpu);
    auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));
    double e = 0;
    {
      ov::train::Trainer trainer(o, u, groups);
      e = trainer.evaluate();
    }
    groups.finalize();
    return e;
  };
  const double unpadded = eval_with(MPI_COMM_SELF, 1, "alone1_" + std::to_string(me));
  for (int batch : {4, 8}) {
    const double padded = eval_with(MPI_COMM_SELF, batch, "alone" + std::to_string(batch) + "_" + std::to_string(me));
    BOOST_CHECK_MESSAGE(std::abs(padded - unpadded) <= 1e-6 * std::abs(unpadded), "batch " << batch << ": " << padded << " vs " << unpadded);
  }
  if (8 % world == 0) {  // the world's ranks share a global batch of 8
    const double spread = eval_with(MPI_COMM_WORLD, 8 / world, "world");
    BOOST_CHECK_MESSAGE(std::abs(spread - unpadded) <= 1e-6 * std::abs(unpadded), world << " ranks: " << spread << " vs " << unpadded);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (me == 0) std::filesystem::remove_all(dir);
}
