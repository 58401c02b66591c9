// Float8 under sharding (model/float8.h, parallel/sharded_model.h): a float8 model's reduced gradients on every
// layout against one float8 model's, the float8 all-gather of the converted weights against one rank's casts
// and step, and checkpoints of fp8 and bf16 runs resuming each other.
#define BOOST_TEST_MODULE sharded_float8
#include "mpi_fixture.h"

#include <c10/core/GradMode.h>

#include <unistd.h>

#include <filesystem>
#include <optional>
#include <set>

#include "openvid/comm/process_groups.h"
#include "openvid/model/float8.h"
#include "openvid/model/float8_conversion.h"
#include "openvid/model/float8_weights.h"
#include "openvid/parallel/shard_io.h"
#include "openvid/runtime/mpi_session.h"
#include "openvid/train/checkpoint.h"
#include "sharded_checks.h"
#include "tiny_model.h"

namespace {

// This rank's sharded step of `step`'s batch: its reduced gradients equal `want` (one float8 model's over every
// rank's batch) within fp32 rounding, or float8's error where cp > 1 (each rank's scales from its own tokens).
void check_step(ov::parallel::ShardedModel& sharded, ov::model::DiT& model, int step, const std::map<std::string, at::Tensor>& want, int cp) {
  sharded.arm();
  loss_of(model, inputs_of(ov::world_rank(), step)).backward();
  sharded.finish();
  const ov::model::TensorMap got = full_gradients(sharded);
  const double tolerance = cp == 1 ? 1e-5 : 5e-2;
  for (const auto& [name, w] : want) {
    const double err = relative_error(got.at(name), w);
    BOOST_CHECK_MESSAGE(err < tolerance, "step " << step << " gradient of " << name << ": relative error " << err);
  }
}

}  // namespace

// Float8 products (model/float8.h) under sharding: each rank casts its own batch's tensors, so the reduced
// gradients are the sum of what one unsharded float8 model computes for each rank's batch, within fp32
// rounding, on dp and fs layouts. With cp > 1 each rank's scales come from its own window of tokens (no
// collective per cast), so those layouts agree within float8's error only.
BOOST_AUTO_TEST_CASE(float8_sharded_gradients_are_one_float8_model_s) {
  const int world = ov::world_size();
  const ov::ModelConfig cfg = tiny_model_config(true);
  for (auto [fs, cp] : layouts_for(world)) {
    BOOST_TEST_CONTEXT("fs=" << fs << " cp=" << cp) {
      ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, fs, cp, ov::DeviceRequest::kCpu);
      auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));
      ov::model::DiT ref(cfg), plain(cfg), model(cfg);
      for (ov::model::DiT* m : {&ref, &plain, &model}) randomize_parameters(**m, 7);
      ov::model::convert_to_float8(ref, 0);
      const ov::model::Float8Conversion conversion = ov::model::convert_to_float8(model, 0);
      BOOST_CHECK_EQUAL(conversion.converted.size(), 5u);  // all but context_kv (24 text features)
      const std::map<std::string, at::Tensor> want = summed_gradients(ref, world, 0), bf = summed_gradients(plain, world, 0);
      ov::parallel::ShardedModel sharded(*model, groups.shard(), groups.dp());
      check_step(sharded, model, 0, want, cp);
      // The products were float8: the qkv weight's gradient is not the fp32 model's.
      BOOST_CHECK_GT(relative_error(want.at("blocks.1.qkv.weight"), bf.at("blocks.1.qkv.weight")), 1e-4);
      groups.finalize();
    }
  }
}

// The float8 all-gather (parallel/sharded_model.h): on a shard group of several ranks the converted weights are
// gathered as e4m3 bytes cast from every rank's chunk with one scale per weight (an all-reduce of the chunks'
// amaxes). After an update of the masters the gathered bytes and scales are exactly one rank's casts of the
// whole new weights, and the next step's gradients are those of one float8 model holding those weights.
BOOST_AUTO_TEST_CASE(float8_all_gather_gives_one_rank_s_step) {
  const int world = ov::world_size(), me = ov::world_rank();
  const ov::ModelConfig cfg = tiny_model_config(true);
  namespace f8 = ov::model::float8;
  for (auto [fs, cp] : layouts_for(world)) {
    BOOST_TEST_CONTEXT("fs=" << fs << " cp=" << cp) {
      ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, fs, cp, ov::DeviceRequest::kCpu);
      auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));
      ov::model::DiT ref(cfg), model(cfg);
      for (ov::model::DiT* m : {&ref, &model}) randomize_parameters(**m, 7);
      ov::model::convert_to_float8(ref, 0);
      const ov::model::Float8Conversion conversion = ov::model::convert_to_float8(model, 0);
      const int64_t blocks = model->num_blocks();  // each: qkv, attn_proj, q_cross, cross_proj, fc1, fc2
      BOOST_REQUIRE_EQUAL(static_cast<int64_t>(conversion.weights.size()), 6 * blocks);
      const std::set<std::string> converted(conversion.weights.begin(), conversion.weights.end());
      ov::parallel::ShardingOptions options;
      options.float8_gather = [&](const std::string& name) { return converted.count(name) > 0; };
      ov::parallel::ShardedModel sharded(*model, groups.shard(), groups.dp(), options);
      const bool gathers = groups.shard().size() > 1;
      int64_t float8_units = 0, float8_bytes = 0, float8_elements = 0;
      for (size_t k = 0; k < sharded.units().size(); ++k) {
        if (!sharded.units()[k].float8) continue;
        ++float8_units;
        float8_bytes += sharded.slices(k).full.nbytes();
        float8_elements += sharded.units()[k].padded;
      }
      BOOST_CHECK_EQUAL(float8_units, gathers ? blocks : 0);
      BOOST_CHECK_EQUAL(float8_bytes, float8_elements);  // one byte per gathered element

      // A step, then an update of the masters as an optimizer would make it, then the gather.
      sharded.arm();
      loss_of(model, inputs_of(me, 0)).backward();
      sharded.finish();
      {
        c10::NoGradGuard no_grad;
        for (size_t k = 0; k < sharded.units().size(); ++k) sharded.slices(k).master.sub_(sharded.slices(k).grad.mul(0.5));
      }
      sharded.refresh_compute_copy();
      const ov::model::TensorMap masters = ov::parallel::full_masters(sharded);
      std::map<std::string, at::Tensor> params;
      for (const auto& item : model->named_parameters()) params[item.key()] = item.value();
      for (const std::string& name : conversion.weights) {
        const std::optional<ov::model::Float8Weight> got = ov::model::float8_weight(params.at(name));
        BOOST_REQUIRE_EQUAL(got.has_value(), gathers);
        if (!gathers) continue;
        const at::Tensor w = masters.at(name);
        const f8::Cast want = f8::reference::cast(w, f8::reference::amax(w), true, false);
        BOOST_CHECK_MESSAGE(at::equal(got->rows.view(at::kByte), want.rows.view(at::kByte)), "gathered float8 bytes of " << name);
        BOOST_CHECK_EQUAL(got->inv_scale.item<float>(), want.inv_scale.item<float>());
      }
      // The next step: one float8 model with the updated weights, summed over every rank's batch.
      {
        c10::NoGradGuard no_grad;
        for (const auto& item : ref->named_parameters()) item.value().copy_(masters.at(item.key()));
      }
      const std::map<std::string, at::Tensor> want = summed_gradients(ref, world, 1);
      check_step(sharded, model, 1, want, cp);
      groups.finalize();
    }
  }
}

// A checkpoint of an fp8 run (the float8 units' own layout) resumes a bf16 run and the other way round: the
// masters are full-size by name, and each moment is found by name in whichever unit the writer put it.
BOOST_AUTO_TEST_CASE(float8_and_bf16_checkpoints_resume_each_other) {
  const int world = ov::world_size();
  const ov::ModelConfig cfg = tiny_model_config(true);
  int pid = static_cast<int>(::getpid());
  MPI_Bcast(&pid, 1, MPI_INT, 0, MPI_COMM_WORLD);  // one directory for every rank
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / ("openvid_f8_resume_" + std::to_string(pid));
  for (auto [fs, cp] : layouts_for(world)) {
    for (const bool from_fp8 : {true, false}) {
      BOOST_TEST_CONTEXT("fs=" << fs << " cp=" << cp << (from_fp8 ? ", fp8 -> bf16" : ", bf16 -> fp8")) {
        if (ov::world_rank() == 0) std::filesystem::create_directories(dir);
        MPI_Barrier(MPI_COMM_WORLD);
        ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, fs, cp, ov::DeviceRequest::kCpu);
        auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));
        ov::model::DiT a(cfg), b(cfg);
        randomize_parameters(*a, 7);
        randomize_parameters(*b, 8);
        const ov::model::Float8Conversion conversion = ov::model::convert_to_float8(a, 0);
        ov::model::convert_to_float8(b, 0);
        const std::set<std::string> converted(conversion.weights.begin(), conversion.weights.end());
        ov::parallel::ShardingOptions fp8, bf16;
        fp8.float8_gather = [&](const std::string& name) { return converted.count(name) > 0; };
        ov::parallel::ShardedModel writer(*a, groups.shard(), groups.dp(), from_fp8 ? fp8 : bf16);
        ov::parallel::ShardedModel reader(*b, groups.shard(), groups.dp(), from_fp8 ? bf16 : fp8);
        {
          c10::NoGradGuard no_grad;  // moments that are functions of the weights, so that any layout can check them
          for (size_t k = 0; k < writer.units().size(); ++k) {
            const ov::parallel::UnitSlices& s = writer.slices(k);
            s.exp_avg.copy_(s.master * 3);
            s.exp_avg_sq.copy_(s.master * s.master);
          }
        }
        ov::train::CheckpointState state;
        state.next_step = state.optimizer_steps = 5;
        state.shard_files = static_cast<int>(groups.shard().size());
        const std::string path = ov::train::write_checkpoint(dir.string(), state, writer, u, "", 1);
        ov::train::read_checkpoint(path, reader, u);
        reader.refresh_compute_copy();
        const ov::model::TensorMap want = ov::parallel::full_masters(writer), got = ov::parallel::full_masters(reader);
        for (const auto& [name, w] : want) BOOST_CHECK_MESSAGE(at::equal(got.at(name), w), "master of " << name);
        for (size_t k = 0; k < reader.units().size(); ++k) {
          const ov::parallel::UnitSlices& s = reader.slices(k);
          BOOST_CHECK_MESSAGE(at::equal(s.exp_avg, s.master * 3), "exp_avg of unit " << reader.units()[k].name);
          BOOST_CHECK_MESSAGE(at::equal(s.exp_avg_sq, s.master * s.master), "exp_avg_sq of unit " << reader.units()[k].name);
        }
        groups.finalize();
        MPI_Barrier(MPI_COMM_WORLD);
        if (ov::world_rank() == 0) std::filesystem::remove_all(dir);
      }
    }
  }
}
