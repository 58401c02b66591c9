#define BOOST_TEST_MODULE trainer_state
// What a run keeps and hands on (train/trainer.h, train/checkpoint.h): weights in the reference trainer's
// layout in and out unchanged, a resume that continues the run exactly, and the moving average of the weights.
#include "mpi_fixture.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>

#include "openvid/comm/process_groups.h"
#include "openvid/model/safetensors.h"
#include "openvid/model/state_dict.h"
#include "openvid/runtime/mpi_session.h"
#include "openvid/train/trainer.h"
#include "train_options.h"

// Weights in the reference trainer's layout load with --load_checkpoint and come back out of the export
// unchanged and name for name, at both settings of train_bias_and_rms.
BOOST_AUTO_TEST_CASE(reference_state_dicts_round_trip) {
  const int me = ov::world_rank();
  const std::string dir = (std::filesystem::temp_directory_path() / ("openvid_roundtrip_" + std::to_string(::getpid()) + "_" +
                                                                     std::to_string(me))).string();
  const ov::data::SyntheticSpec spec = small_dataset(dir, MPI_COMM_SELF, 8);
  ov::Universe u = ov::Universe::create(MPI_COMM_SELF, 1, 1, ov::DeviceRequest::kCpu);
  auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));
  for (bool affine : {false, true}) {
    ov::Options o = options_for(spec.directory, dir, affine ? "affine" : "plain", 1, 1, 2);
    o.model.bias_and_norm_affine = affine;
    at::Generator g = at::make_generator<at::CPUGeneratorImpl>(7);
    ov::model::TensorMap reference;
    for (const auto& [name, shape] : ov::model::parameter_shapes(o.model)) reference[name] = at::normal(0, 1, shape, g);
    BOOST_CHECK_EQUAL(reference.count("final_norm.weight"), affine ? 1u : 0u);
    reference["rope.freqs_hwt_cos"] = at::ones({4, 2});  // the reference stores its tables; openvid ignores them
    const std::string file = dir + (affine ? "/affine.safetensors" : "/plain.safetensors");
    ov::model::write_safetensors(file, reference);
    o.load_checkpoint = file;
    ov::train::Trainer trainer(o, u, groups);
    const ov::model::TensorMap exported = trainer.weights();
    reference.erase("rope.freqs_hwt_cos");
    BOOST_CHECK_EQUAL(exported.size(), reference.size());
    for (const auto& [name, w] : reference) {
      BOOST_CHECK_MESSAGE(exported.count(name) && at::equal(exported.at(name), w), name << " did not round-trip");
    }
  }
  groups.finalize();
  std::filesystem::remove_all(dir);
}

// Resume: 6 steps straight vs 3 steps, checkpoint, a new trainer resuming, 3 more steps: bitwise equal on
// the same layout; on another layout (the world's checkpoint resumed by one rank alone), within 1e-5.
BOOST_AUTO_TEST_CASE(resume_continues_the_run_exactly) {
  const int world = ov::world_size(), me = ov::world_rank();
  const std::string dir = shared_temp_dir("openvid_resume_");
  const ov::data::SyntheticSpec spec = small_dataset(dir);
  const int fs_ = world;  // shard everything over the world: the moments really are split
  auto opts = [&](const std::string& run) {
    ov::Options o = options_for(spec.directory, dir, run, fs_, 1, 1);
    o.max_steps = 6;
    o.ema_decay = 0.8;  // the moving average is resumed exactly too
    return o;
  };
  ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, fs_, 1, ov::DeviceRequest::kCpu);
  auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));
  ov::model::TensorMap straight, resumed, straight_ema, resumed_ema;
  uint64_t split_bytes = 0, alone_bytes = 0;  // tensor bytes read by a rank to resume
  {
    ov::train::Trainer t(opts("straight"), u, groups);
    for (int64_t s = 0; s < 6; ++s) t.train_step(s);
    straight = t.weights();
    straight_ema = t.ema_weights();
  }
  std::string checkpoint;
  {
    ov::train::Trainer t(opts("split"), u, groups);
    for (int64_t s = 0; s < 3; ++s) t.train_step(s);
    checkpoint = t.save_checkpoint(3);
  }
  {
    ov::Options o = opts("split");
    o.resume = "auto";
    const uint64_t before = ov::model::tensor_bytes_read();
    ov::train::Trainer t(o, u, groups);
    split_bytes = ov::model::tensor_bytes_read() - before;
    BOOST_CHECK_EQUAL(t.start_step(), 3);
    for (int64_t s = 3; s < 6; ++s) t.train_step(s);
    resumed = t.weights();
    resumed_ema = t.ema_weights();
  }
  for (const auto& [name, w] : straight) BOOST_CHECK_MESSAGE(at::equal(resumed.at(name), w), name << " differs after resuming");
  BOOST_REQUIRE_EQUAL(straight_ema.size(), straight.size());
  int64_t averaged = 0;  // parameters whose average is not (yet) their weights
  for (const auto& [name, w] : straight_ema) {
    BOOST_CHECK_MESSAGE(at::equal(resumed_ema.at(name), w), name << "'s moving average differs after resuming");
    averaged += !at::equal(w, straight.at(name));
  }
  BOOST_CHECK_GT(averaged, 0);
  groups.finalize();

  // Another layout: every rank alone resumes the world's checkpoint (re-slicing the moments of fs=world).
  ov::Universe self = ov::Universe::create(MPI_COMM_SELF, 1, 1, ov::DeviceRequest::kCpu);
  auto self_groups = ov::comm::ProcessGroups::create(self, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));
  {
    ov::Options o = options_for(spec.directory, dir, "alone_" + std::to_string(me), 1, 1, world);
    o.max_steps = 6;
    o.ema_decay = 0.8;
    o.resume = checkpoint;
    const uint64_t before = ov::model::tensor_bytes_read();
    ov::train::Trainer t(o, self, self_groups);
    alone_bytes = ov::model::tensor_bytes_read() - before;
    BOOST_CHECK_EQUAL(t.start_step(), 3);
    for (int64_t s = 3; s < 6; ++s) t.train_step(s);
    const auto w = t.weights(), ema = t.ema_weights();
    for (const auto& [name, ref] : straight) {
      const double err = (w.at(name) - ref).abs().max().item<double>() / std::max(ref.abs().max().item<double>(), 1e-12);
      BOOST_CHECK_MESSAGE(err < 1e-5, "other layout, " << name << ": relative error " << err);
      const double ema_err = (ema.at(name) - straight_ema.at(name)).abs().max().item<double>() /
                             std::max(straight_ema.at(name).abs().max().item<double>(), 1e-12);
      BOOST_CHECK_MESSAGE(ema_err < 1e-5, "other layout, " << name << "'s moving average: relative error " << ema_err);
    }
  }
  self_groups.finalize();
  // One rank alone reads the whole checkpoint; a rank of fs = world reads about its 1/world share of the
  // weights and of the Adam moments, not every file.
  BOOST_TEST_MESSAGE("resume read " << split_bytes << " tensor bytes on rank " << me << " of " << world << ", " << alone_bytes << " alone");
  BOOST_CHECK_GT(alone_bytes, 0u);
  BOOST_CHECK_LE(static_cast<double>(split_bytes), 1.25 * static_cast<double>(alone_bytes) / world + 4096);
  MPI_Barrier(MPI_COMM_WORLD);
  if (me == 0) std::filesystem::remove_all(dir);
}

// The moving average (--ema_decay d) after each step k is d * ema_{k-1} + (1 - d) * w_k, from the initial
// weights; a checkpoint holds it, and the run exports it beside the weights.
BOOST_AUTO_TEST_CASE(ema_is_the_moving_average_of_the_weights) {
  const int world = ov::world_size();
  const std::string dir = shared_temp_dir("openvid_ema_");
  const ov::data::SyntheticSpec spec = small_dataset(dir);
  ov::Options o = options_for(spec.directory, dir, "ema", world, 1, 1);
  o.ema_decay = 0.75;
  o.learning_rate = 1e-2;
  ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, world, 1, ov::DeviceRequest::kCpu);
  auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));
  {
    ov::train::Trainer t(o, u, groups);
    ov::model::TensorMap expected = t.weights();  // ema_0: the initial weights
    BOOST_REQUIRE_EQUAL(t.ema_weights().size(), expected.size());
    for (int64_t s = 0; s < 3; ++s) {
      t.train_step(s);
      const ov::model::TensorMap w = t.weights(), ema = t.ema_weights();
      for (auto& [name, e] : expected) {
        e = o.ema_decay * e + (1 - o.ema_decay) * w.at(name);
        const double err = (ema.at(name) - e).abs().max().item<double>();
        BOOST_CHECK_MESSAGE(err <= 1e-6 * std::max(1.0, e.abs().max().item<double>()), "step " << s << ", " << name << ": " << err);
      }
    }
    const std::string checkpoint = t.save_checkpoint(3);
    const ov::model::TensorMap ema = t.ema_weights();  // collective
    if (ov::world_rank() == 0) {
      const auto saved = ov::model::read_weights(checkpoint + "/ema.safetensors");
      for (const auto& [name, e] : ema) BOOST_CHECK_MESSAGE(at::equal(saved.at(name), e), name << " in the checkpoint");
    }
  }
  groups.finalize();
  MPI_Barrier(MPI_COMM_WORLD);
  if (ov::world_rank() == 0) std::filesystem::remove_all(dir);
}
