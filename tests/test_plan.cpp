// The dry run's plan (train/plan.h) against real runs: the sharded state each rank holds and the bytes each
// step moves on each group, for dp, fs, cp and mixed layouts at np 1, 2 and 4, with gradient accumulation
// and recomputation; the plan of a world that is not launched; and its errors.
#define BOOST_TEST_MODULE plan
#include "mpi_fixture.h"

#include <filesystem>
#include <map>
#include <set>
#include <tuple>

#include "openvid/comm/process_groups.h"
#include "openvid/data/manifest.h"
#include "openvid/data/synthetic.h"
#include "openvid/parallel/flat_unit.h"
#include "openvid/model/dit.h"
#include "openvid/model/state_dict.h"
#include "openvid/runtime/mpi_session.h"
#include "openvid/train/plan.h"
#include "openvid/train/plan_advice.h"
#include "openvid/train/trainer.h"
#include "plan_checks.h"
#include "test_util.h"
#include "train_options.h"


namespace {

// The bench's shapes on fake data (latents 16x64x64: 8 video tokens in time, text 512 x 4096), batch 2 per
// data rank, a model of `width` x `depth` with heads of 128, sharded over `fs` ranks.
ov::Options bench_options(int width, int depth, int fs, int samples) {
  ov::Options o;
  o.dataset = "fake";
  o.fake_latent_shape = "16x64x64";
  o.fake_text_tokens = 512;
  o.fake_samples = samples;
  o.batch_size = 2;
  o.model.width = width;
  o.model.depth = depth;
  o.model.head_dim = 128;
  o.fs = fs;
  return o;
}

}  // namespace

// For every layout of the world (and gradient accumulation with recomputation on two of them), the plan's
// state per rank equals ShardedModel::memory() and its bytes per step on each group equal what the run's
// collectives counted in its first two steps, exactly.
BOOST_AUTO_TEST_CASE(the_plan_equals_what_a_run_holds_and_moves) {
  const int world = ov::world_size(), me = ov::world_rank();
  const std::string dir = ov::broadcast_string(
      MPI_COMM_WORLD, (std::filesystem::temp_directory_path() / ("openvid_plan_" + std::to_string(::getpid()))).string());
  const ov::data::Manifest manifest = ov::data::read_manifest(small_dataset(dir, MPI_COMM_WORLD, 24).directory);
  struct Layout {
    int fs, cp, accum, recompute;
  };
  std::vector<Layout> layouts{{world, 1, 1, 0}, {1, 1, 1, 0}, {world, 1, 2, 1}};
  if (world % 2 == 0) layouts.push_back({1, 2, 1, 0});
  if (world % 2 == 0) layouts.push_back({1, 2, 2, 2});
  if (world == 4) layouts.push_back({2, 1, 1, 0});  // dp 2 x fs 2
  if (world == 4) layouts.push_back({1, 2, 1, 1});  // dp 2 x cp 2
  int n = 0;
  for (const Layout& l : layouts) {
    BOOST_TEST_CONTEXT("fs=" << l.fs << " cp=" << l.cp << " grad_accum=" << l.accum << " recompute_every=" << l.recompute) {
      ov::Options o = options_for(dir + "/data", dir, "run" + std::to_string(n++), l.fs, l.cp, 2);
      o.model.depth = 3;  // recompute_every 2 recomputes 2 of 3 blocks
      o.grad_accum = l.accum;
      o.model.recompute_every = l.recompute;
      const ov::train::JobPlan plan = ov::train::plan_job(o, manifest, ov::train::PlanTarget{world, 0, false, 0});
      BOOST_CHECK_EQUAL(plan.dp * plan.fs * plan.cp, world);
      ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, l.fs, l.cp, ov::DeviceRequest::kCpu);
      auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));
      {
        ov::train::Trainer t(o, u, groups);
        check_trainer_against_plan(t, plan, groups, 2);
      }
      groups.finalize();
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (me == 0) std::filesystem::remove_all(dir);
}

// The flat units built from names and shapes (what the plan uses) equal those of the built model, float8
// units included, for several configurations and shard sizes.
BOOST_AUTO_TEST_CASE(units_from_shapes_equal_the_models) {
  for (const auto& [width, depth, affine] : {std::tuple{32, 2, false}, std::tuple{48, 3, true}}) {
    ov::ModelConfig c;
    c.width = width;
    c.depth = depth;
    c.head_dim = 16;
    c.text_dim = 24;
    c.bias_and_norm_affine = affine;
    ov::model::DiT dit(c);
    const auto float8 = [](const std::string& name) { return name.find("qkv.weight") != std::string::npos; };
    for (int64_t shard : {1, 2, 8}) {
      const auto a = ov::parallel::flat_units(*dit, shard, float8);
      const auto b = ov::parallel::flat_units(ov::model::parameter_shapes(c), shard, float8);
      BOOST_REQUIRE_EQUAL(a.size(), b.size());
      for (size_t i = 0; i < a.size(); ++i) {
        BOOST_CHECK_EQUAL(a[i].name, b[i].name);
        BOOST_CHECK_EQUAL(a[i].padded, b[i].padded);
        BOOST_CHECK_EQUAL(a[i].params.size(), b[i].params.size());
        for (size_t k = 0; k < std::min(a[i].params.size(), b[i].params.size()); ++k) {
          BOOST_CHECK_EQUAL(a[i].params[k].name, b[i].params[k].name);
          BOOST_CHECK_EQUAL(a[i].params[k].offset, b[i].params[k].offset);
        }
      }
    }
  }
}

// A world that is not launched: 64 GPUs, the reference's small model (width 4096, depth 8) with --fs 8.
// The sharded state falls as 1/fs (masters, moments), the shard group moves twice the gathered bf16
// parameters plus fp32 gradients, and the dp group the fp32 gradient slice; impossible targets are refused
// with the launch's messages.
BOOST_AUTO_TEST_CASE(a_large_job_is_planned_without_launching_it) {
  const ov::Options o = bench_options(4096, 8, 8, 1024);
  const ov::data::Manifest m = ov::train::planned_manifest(o);
  const ov::train::PlanTarget target{64, 8, true, 80};
  const ov::train::JobPlan p = ov::train::plan_job(o, m, target);
  BOOST_CHECK_EQUAL(p.dp, 8);
  BOOST_CHECK_EQUAL(p.compute_dtype, at::kBFloat16);
  BOOST_TEST(p.parameters > 3'000'000'000);
  const double per_rank = static_cast<double>(p.parameters) / 8;
  BOOST_TEST(std::abs(static_cast<double>(p.state.masters) / 4 - per_rank) / per_rank < 0.01);
  BOOST_CHECK_EQUAL(p.state.moments, 2 * p.state.masters);
  BOOST_CHECK_EQUAL(p.state.gradients, p.state.masters);  // fp32: summed over ranks
  const ov::train::GroupBytes& g = p.buckets.at(0).bytes;
  BOOST_CHECK_EQUAL(g.shard_gather * 2, g.shard_reduce);  // bf16 gathers, fp32 reduce-scatters of the same padded units
  BOOST_CHECK_EQUAL(g.dp, static_cast<double>(p.state.masters));
  BOOST_CHECK_EQUAL(g.cp, 0.0);
  BOOST_CHECK_EQUAL(g.world, 24.0);
  const std::string report = ov::train::plan_report(o, m, target, p);
  BOOST_TEST_MESSAGE(report);
  BOOST_TEST(ov::test::has(report, "a job of 64 ranks on 8 nodes of 8 GPUs (80 GB each), mesh dp=8 x fs=8 x cp=1, BFloat16 compute"), report);
  BOOST_TEST(ov::test::has(report, ": fits ("), report);
  // Nothing fits on 8 GB: said, with what is short and the knobs that help.
  const std::string small = ov::train::plan_report(o, m, ov::train::PlanTarget{64, 8, true, 8}, ov::train::plan_job(o, m, {64, 8, true, 8}));
  BOOST_TEST(ov::test::has(small, "does NOT fit"), small);
  BOOST_TEST(ov::test::has(small, "short by "), small);
  BOOST_TEST(ov::test::has(small, "what each knob saves: --recompute_every 1 "), small);
  BOOST_TEST(ov::test::has(small, "--fs 16 "), small);
  // Impossible targets: the launch's own message, and the plan's.
  BOOST_TEST(ov::test::has(ov::test::error_of([&] { ov::train::plan_job(o, m, {60, 8, true, 80}); }), "not divisible by fs*cp"));
  BOOST_TEST(ov::test::has(ov::test::error_of([&] { ov::train::plan_job(o, m, {64, 128, true, 80}); }), "more GPUs per node than the job's 64 ranks"));
  BOOST_TEST(ov::test::has(ov::test::error_of([&] { ov::train::plan_job(o, m, {64, 8, true, 0}); }), "--plan_gpu_memory must be > 0"));
}

// The later moment of a sharded backward: a finished block's full gradient outlives the next block's start
// only when its reduce-scatter is slow against the block's compute. The reference's small model over 64
// GPUs with every block recomputed: inside a node (fs 8 at 360 GB/s) no block's gradient is in flight, so
// the peak is the state, the activations and the root's gradient; over a slow network (fs 64 across nodes
// at 1 GB/s) the window's two are, and the peak holds them beside the finished blocks' freed activations.
BOOST_AUTO_TEST_CASE(gradients_in_flight_follow_the_network) {
  ov::Options o = bench_options(4096, 8, 8, 1024);
  o.model.recompute_every = 1;
  const ov::data::Manifest m = ov::train::planned_manifest(o);
  const ov::train::JobPlan fast = ov::train::plan_job(o, m, {64, 8, true, 80});
  const ov::train::BucketPlan& f = fast.buckets.at(0);
  BOOST_CHECK_EQUAL(f.blocks_in_flight, 0);
  BOOST_CHECK_CLOSE(f.peak, static_cast<double>(fast.state.total() + fast.state.root_gradient) + f.activations, 1e-9);
  o.fs = 64;
  o.plan_network_gbps = 1;
  const ov::train::JobPlan slow = ov::train::plan_job(o, m, {64, 8, true, 80});
  const ov::train::BucketPlan& s = slow.buckets.at(0);
  BOOST_CHECK_EQUAL(s.blocks_in_flight, 2);
  const double block = static_cast<double>(slow.state.unit_gradients - slow.state.root_gradient) / 3;  // the bound: root + 3 blocks
  BOOST_CHECK_CLOSE(s.peak, static_cast<double>(slow.state.total() + slow.state.root_gradient) + 2 * block + s.activations * 6 / 8, 1e-9);
  BOOST_TEST(s.peak > static_cast<double>(slow.state.total() + slow.state.root_gradient) + s.activations);
  // CPU ranks have no compute rate: the window's bound.
  o.fs = 8;
  BOOST_CHECK_EQUAL(ov::train::plan_job(o, m, {64, 0, false, 0}).buckets.at(0).blocks_in_flight, 2);
  BOOST_TEST(ov::test::has(ov::train::plan_report(o, m, {64, 8, true, 80}, fast), "0 finished blocks' reduce-scatter in flight"));
}

// Layout advice: a ring collective's time by hand; every layout of 8 GPUs listed once, the fitting ones
// first by predicted tokens/s; one GPU exposes no communication; CPU targets are refused.
BOOST_AUTO_TEST_CASE(layouts_are_ranked_by_predicted_throughput) {
  const ov::train::Network net{360, 45, 10, 20};
  // All-gather of 8 GB over 8 ranks inside a node: 7 ring steps of 10 us, 7/8 of the bytes at 360 GB/s.
  BOOST_CHECK_CLOSE(ov::train::collective_seconds(ov::train::Collective::kAllGather, 8e9, 8, false, net), 7 * 10e-6 + 7.0 / 8 * 8e9 / 360e9, 1e-9);
  // All-reduce across nodes: twice the steps and the bytes, at the network's rate.
  BOOST_CHECK_CLOSE(ov::train::collective_seconds(ov::train::Collective::kAllReduce, 1e9, 16, true, net), 30 * 20e-6 + 30.0 / 16 * 1e9 / 45e9, 1e-9);
  BOOST_CHECK_EQUAL(ov::train::collective_seconds(ov::train::Collective::kAllReduce, 1e9, 1, true, net), 0.0);
  // A few bytes over 512 ranks go by the tree: 2 x 9 steps of latency, not the ring's 2 x 511.
  BOOST_CHECK_CLOSE(ov::train::collective_seconds(ov::train::Collective::kAllReduce, 24, 512, true, net), 18 * 20e-6 + 48 / 45e9, 1e-9);
  const ov::Options o = bench_options(2048, 8, 2, 4096);  // 8 video tokens in time: cp 1, 2, 4 or 8
  const ov::data::Manifest m = ov::train::planned_manifest(o);
  const ov::train::PlanTarget eight{8, 8, true, 80};
  const auto layouts = ov::train::predict_layouts(o, m, eight, net, 989.4);
  std::set<std::tuple<int, int, int, int>> seen;
  for (const auto& l : layouts) {
    BOOST_CHECK_EQUAL(l.dp * l.fs * l.cp, 8);
    BOOST_CHECK(seen.insert({l.dp, l.fs, l.cp, l.recompute_every}).second);
    BOOST_CHECK_CLOSE(l.step_s, l.compute_s + l.exposed_s, 1e-9);
    BOOST_CHECK_EQUAL(l.fits, l.memory <= 0.95 * 80e9);
  }
  BOOST_CHECK_EQUAL(seen.size(), 10u * 3u);  // (fs, cp) with fs x cp dividing 8: 4 + 3 + 2 + 1 pairs, 3 recomputations each
  for (size_t i = 1; i < layouts.size(); ++i) {
    if (layouts[i].fits && layouts[i - 1].fits) BOOST_CHECK_GE(layouts[i - 1].tokens_per_s, layouts[i].tokens_per_s);
    BOOST_CHECK(layouts[i - 1].fits || !layouts[i].fits);
  }
  const std::string report = ov::train::advice_report(o, eight, net, 989.4, layouts);
  BOOST_TEST_MESSAGE(report);
  BOOST_TEST(ov::test::has(report, "| best"), report);
  BOOST_TEST(ov::test::has(report, "as configured"), report);
  // One GPU: nothing to communicate.
  for (const auto& l : ov::train::predict_layouts(o, m, {1, 1, true, 80}, net, 989.4)) BOOST_CHECK_EQUAL(l.exposed_s, 0.0);
  BOOST_TEST(ov::test::has(ov::test::error_of([&] { ov::train::predict_layouts(o, m, {8, 0, false, 0}, net, 989.4); }), "--plan predicts GPU jobs"));
}
