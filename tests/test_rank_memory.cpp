#define BOOST_TEST_MODULE rank_memory
#include "mpi_fixture.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "counting_allocator.h"
#include "openvid/comm/process_groups.h"
#include "openvid/model/dit.h"
#include "openvid/model/safetensors.h"
#include "openvid/parallel/shard_io.h"
#include "openvid/parallel/sharded_model.h"
#include "openvid/runtime/mpi_session.h"
#include "openvid/train/checkpoint.h"
#include "openvid/train/plan.h"
#include "tiny_model.h"

// Memory per rank stays bounded as the model is sharded (--fs): the full unit gradients that the shard
// group reduce-scatters are released as their transfers finish, and checkpoints and the export gather the
// model one unit at a time. Measured with accounting hooks, not timings: the sharded model's own count of
// full gradient buffers, and a CPU allocator that counts the bytes of every tensor alive.

namespace {

// Deep enough that "a few units" and "the whole model" differ: 8 blocks and the root unit.
ov::ModelConfig deep_config() {
  ov::ModelConfig c = tiny_model_config(true);
  c.depth = 8;
  return c;
}

at::Tensor loss_of(ov::model::DiT& m, int rank, int step) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(1000 * step + rank);
  const at::Tensor x = at::normal(0, 1, {1, 4, 4, 4, 6}, g), text = at::normal(0, 1, {1, 5, 24}, g), t = at::rand({1}, g);
  return (m->forward(x, text, t) * at::normal(0, 1, x.sizes(), g)).sum();
}

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

// At fs = world, however deep the model: at most max_reductions_in_flight full unit gradients wait for their
// reduce-scatter, plus the unit being summed and the root unit (the final layer's gradients come first in
// backward, the embedders' last), from the first step on; none are left after finish(). The reduced
// gradients are those of the unbounded path (held by test_sharded); here the same gradient slices result
// whatever the bound.
BOOST_AUTO_TEST_CASE(full_unit_gradients_alive_at_once_stay_bounded) {
  const int world = ov::world_size(), me = ov::world_rank();
  ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, world, 1, ov::DeviceRequest::kCpu);
  auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));
  at::Tensor reference;  // the gradient slices with the loosest bound
  for (const int64_t in_flight : {4, 2, 1}) {
    ov::model::DiT model(deep_config());
    randomize_parameters(*model, 9);
    ov::parallel::ShardingOptions options;
    options.max_reductions_in_flight = in_flight;
    ov::parallel::ShardedModel sharded(*model, groups.shard(), groups.dp(), options);
    at::Tensor grads;
    for (int step = 0; step < 2; ++step) {
      sharded.arm();
      loss_of(model, me, step).backward();
      sharded.finish();
      // Block 0's value-residual weight gets no gradient: the first step reduces that unit in finish(),
      // later steps know and reduce every unit during backward.
      BOOST_CHECK_EQUAL(sharded.units_launched_in_backward(), sharded.num_units() - (step == 0 ? 1 : 0));
      std::vector<at::Tensor> slices;
      for (size_t k = 0; k < sharded.units().size(); ++k) slices.push_back(sharded.slices(k).grad.clone());
      grads = at::cat(slices);
    }
    const ov::parallel::UnitGradientBuffers& b = sharded.unit_gradient_buffers();
    BOOST_CHECK_EQUAL(b.alive, 0);
    BOOST_CHECK_EQUAL(b.alive_bytes, 0);
    if (world == 1) {
      BOOST_CHECK_EQUAL(b.peak, 0);  // one rank sums straight into its slices
    } else {
      BOOST_CHECK_MESSAGE(b.peak <= in_flight + 2, "in flight " << in_flight << ": " << b.peak << " full unit gradients at once");
      BOOST_CHECK_LT(b.peak, sharded.num_units());
      int64_t largest = 0;
      for (const auto& unit : sharded.units()) largest = std::max(largest, unit.padded * 4);
      BOOST_CHECK_LE(b.peak_bytes, (in_flight + 2) * largest);
      if (in_flight == 2) {  // the trainer's setting: the dry run's bound holds (the root's and three blocks')
        ov::Options o;
        o.dataset = "fake";
        o.fake_latent_shape = "4x4x4";
        o.model = deep_config();
        o.fs = world;
        o.batch_size = 1;
        const ov::train::JobPlan plan = ov::train::plan_job(o, ov::train::planned_manifest(o), ov::train::PlanTarget{world, 0, false, 0});
        BOOST_CHECK_LE(b.peak_bytes, plan.state.unit_gradients);
        BOOST_CHECK_GT(b.peak_bytes, plan.state.unit_gradients / 3);  // and is not far above it
      }
    }
    if (!reference.defined()) reference = grads;
    BOOST_CHECK_MESSAGE(at::equal(grads, reference), "in flight " << in_flight << ": other gradient slices");
  }
  groups.finalize();
}

// With gradient accumulation (--grad_accum), each micro-batch armed with arm(false) is reduce-scattered
// during its own backward and added into the slices: the bound holds in every micro-batch, and the summed
// gradients equal those of accumulating the full gradients first and reducing once (to fp32 rounding: the
// sums are grouped differently).
BOOST_AUTO_TEST_CASE(gradient_accumulation_keeps_the_bound) {
  const int world = ov::world_size(), me = ov::world_rank();
  ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, world, 1, ov::DeviceRequest::kCpu);
  auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));
  ov::model::DiT a(deep_config()), b(deep_config());
  randomize_parameters(*a, 9);
  randomize_parameters(*b, 9);
  ov::parallel::ShardedModel whole_first(*a, groups.shard(), groups.dp()), per_micro(*b, groups.shard(), groups.dp());
  const int micro = 3;
  for (int step = 0; step < 2; ++step) {
    for (int i = 0; i < micro; ++i) {
      if (i + 1 == micro) whole_first.arm();  // earlier micro-batches only accumulate full gradients
      loss_of(a, micro * me + i, step).backward();
      per_micro.arm(i + 1 == micro);
      loss_of(b, micro * me + i, step).backward();
      if (i + 1 < micro) per_micro.finish_micro_batch();
    }
    whole_first.finish();
    per_micro.finish();
    for (size_t k = 0; k < per_micro.units().size(); ++k) {
      const at::Tensor want = whole_first.slices(k).grad, got = per_micro.slices(k).grad;
      const double err = (got - want).norm().item<double>() / std::max(want.norm().item<double>(), 1e-30);
      BOOST_CHECK_MESSAGE(err < 1e-6, "step " << step << " unit " << per_micro.units()[k].name << ": relative error " << err);
    }
  }
  if (world > 1) {
    BOOST_CHECK_MESSAGE(per_micro.unit_gradient_buffers().peak <= 4, per_micro.unit_gradient_buffers().peak << " full unit gradients at once");
    BOOST_CHECK_EQUAL(whole_first.unit_gradient_buffers().peak, whole_first.num_units());  // what accumulating full gradients costs
  }
  BOOST_CHECK_EQUAL(per_micro.unit_gradient_buffers().alive, 0);
  groups.finalize();
}

// Checkpoints and the export write the full weights one unit at a time: the extra CPU memory while writing
// is at most one unit on every rank (the whole model, gathered at once, is ~9 units here), and the file
// is byte-identical to writing the whole gathered model as before.
BOOST_AUTO_TEST_CASE(writing_the_full_weights_takes_at_most_one_unit_more) {
  const int world = ov::world_size(), me = ov::world_rank();
  CountingCpuAllocator& counter = CountingCpuAllocator::install();
  for (auto [fs, cp] : layouts_for(world)) {
    BOOST_TEST_CONTEXT("fs=" << fs << " cp=" << cp) {
      ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, fs, cp, ov::DeviceRequest::kCpu);
      auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));
      ov::model::DiT model(deep_config());
      randomize_parameters(*model, 4);
      ov::parallel::ShardedModel sharded(*model, groups.shard(), groups.dp());
      sharded.enable_ema();
      const std::string dir = ov::broadcast_string(MPI_COMM_WORLD, std::filesystem::temp_directory_path().string() + "/openvid_rank_memory_" +
                                                                     std::to_string(::getpid()));
      if (me == 0) std::filesystem::create_directories(dir);
      MPI_Barrier(MPI_COMM_WORLD);
      int64_t largest = 0, whole = 0;
      for (const auto& unit : sharded.units()) {
        largest = std::max(largest, unit.padded * 4);
        whole += unit.extent * 4;
      }

      const int64_t before = counter.alive();
      counter.reset_peak();
      const std::string error = ov::train::write_full_weights(dir + "/streamed.safetensors", sharded, ov::parallel::Weights::kEma,
                                                              {{"format", "pt"}}, u);
      const int64_t extra = counter.peak() - before;
      BOOST_TEST_MESSAGE("fs=" << fs << " cp=" << cp << " rank " << me << ": writing the weights took " << extra << " bytes beyond the shards; largest unit "
                                << largest << ", whole model " << whole);
      BOOST_CHECK_EQUAL(error, "");
      BOOST_CHECK_MESSAGE(extra <= largest, "writing took " << extra << " bytes beyond the shards; one unit is " << largest);
      BOOST_CHECK_LT(largest * 3, whole);  // the bound says something: the whole model is many units

      // The same bytes as the whole gathered model written at once.
      const ov::model::TensorMap all = ov::parallel::full_masters(sharded, ov::parallel::Weights::kEma);
      if (me == 0) {
        ov::model::write_safetensors(dir + "/whole.safetensors", all, {{"format", "pt"}});
        BOOST_CHECK(file_bytes(dir + "/streamed.safetensors") == file_bytes(dir + "/whole.safetensors"));
      }
      MPI_Barrier(MPI_COMM_WORLD);
      if (me == 0) std::filesystem::remove_all(dir);
      groups.finalize();
    }
  }
}

// A write that fails on rank 0 (here: its directory does not exist) does not strand the other ranks in the
// gathers: every rank returns, rank 0 with the error, and no partial file is left.
BOOST_AUTO_TEST_CASE(a_failed_weights_write_returns_on_every_rank) {
  const int world = ov::world_size(), me = ov::world_rank();
  ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, world, 1, ov::DeviceRequest::kCpu);
  auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));
  ov::model::DiT model(deep_config());
  ov::parallel::ShardedModel sharded(*model, groups.shard(), groups.dp());
  const std::string error =
      ov::train::write_full_weights("/nonexistent-openvid-dir/model.safetensors", sharded, ov::parallel::Weights::kMasters, {}, u);
  if (me == 0) BOOST_CHECK_MESSAGE(error.find("cannot create") != std::string::npos, error);
  else BOOST_CHECK_EQUAL(error, "");
  groups.finalize();
}
