#include "openvid/train/checkpoint.h"

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "openvid/model/safetensors.h"
#include "openvid/model/safetensors_writer.h"
#include "openvid/model/state_dict.h"
#include "openvid/parallel/shard_io.h"
#include "openvid/runtime/error.h"
#include "openvid/runtime/files.h"
#include "openvid/config/options.h"
#include "openvid/runtime/mpi_session.h"

namespace ov::train {
using nlohmann::json;

namespace {

constexpr const char* kComplete = "COMPLETE";
constexpr const char* kFormat = "openvid-checkpoint";

json sampler_json(const data::SamplerState& s) {
  return {{"epoch", s.epoch},
          {"consumed", s.consumed},
          {"global_batches", s.global_batches},
          {"drop_remainder", s.drop_remainder},
          {"start", {{"epoch", s.start.epoch}, {"step", s.start.step}, {"consumed", s.start.consumed}}}};
}

data::SamplerState sampler_state(const json& j) {
  data::SamplerState s;
  s.epoch = j.at("epoch").get<int64_t>();
  s.consumed = j.at("consumed").get<std::vector<int64_t>>();
  s.global_batches = j.at("global_batches").get<std::vector<int64_t>>();
  s.drop_remainder = j.at("drop_remainder").get<bool>();
  const json& start = j.at("start");
  s.start = {start.at("epoch").get<int64_t>(), start.at("step").get<int64_t>(), start.at("consumed").get<std::vector<int64_t>>()};
  return s;
}
constexpr const char* kEmaFile = "ema.safetensors";

std::string step_name(int64_t step) {
  std::string digits = std::to_string(step);
  return "step_" + std::string(digits.size() < 8 ? 8 - digits.size() : 0, '0') + digits;
}

std::string optimizer_file(int rank, int size) {
  return "optimizer-" + std::to_string(rank) + "-of-" + std::to_string(size) + ".safetensors";
}

// Fault injection for the crash test: OPENVID_FAULT_KILL_IN_CHECKPOINT=<step> kills rank 0 after every
// file of that checkpoint is written and before it is committed.
void maybe_crash(int64_t step, int rank) {
  const char* v = std::getenv("OPENVID_FAULT_KILL_IN_CHECKPOINT");
  if (v != nullptr && rank == 0 && std::atoll(v) == step) std::raise(SIGKILL);
}

}  // namespace

std::optional<std::string> latest_checkpoint(const std::string& dir) {
  std::optional<std::string> best;
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return best;
  std::string best_name;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step_", 0) != 0 || name.find('.') != std::string::npos || !std::filesystem::exists(e.path() / kComplete)) continue;
    if (name > best_name) {
      best_name = name;
      best = e.path().string();
    }
  }
  return best;
}

std::string write_full_weights(const std::string& path, const parallel::ShardedModel& sharded, parallel::Weights which,
                               const model::Metadata& metadata, const Universe& u) {
  if (u.coord().dp != 0) return "";  // world rank 0's shard group gathers; the replicas hold the same weights
  std::string error;
  std::optional<model::SafetensorsWriter> writer;
  auto attempt = [&](auto&& io) {
    if (!error.empty()) return;
    try {
      io();
    } catch (const std::exception& e) {
      error = e.what();
      writer.reset();  // removes the partial file
    }
  };
  if (u.rank() == 0) attempt([&] { writer.emplace(path, parallel::weight_specs(sharded), metadata); });
  parallel::for_each_full_weight(sharded, which, [&](const std::string& name, const at::Tensor& t) {
    if (writer) attempt([&] { writer->write(name, t); });  // after a failure: still in every gather, writing nothing
  });
  if (writer) attempt([&] { writer->commit(); });
  return error;
}

namespace {

// Collective over the world: the masters to `dir`/model.safetensors and, when kept, their moving average to
// `dir`/ema.safetensors (with `ema_metadata` added), both by write_full_weights; rank 0's first error ("").
std::string write_masters_and_ema(const std::filesystem::path& dir, const parallel::ShardedModel& sharded, const model::Metadata& ema_metadata,
                                  const Universe& u) {
  model::Metadata metadata{{"format", "pt"}, {"producer", version_string()}};
  std::string error = write_full_weights((dir / "model.safetensors").string(), sharded, parallel::Weights::kMasters, metadata, u);
  if (sharded.has_ema()) {  // on every rank of the shard group, whatever rank 0's first write did
    metadata.insert(ema_metadata.begin(), ema_metadata.end());
    const std::string e = write_full_weights((dir / kEmaFile).string(), sharded, parallel::Weights::kEma, metadata, u);
    if (error.empty()) error = e;
  }
  return error;
}

}  // namespace

void write_export(const std::string& run_dir, const parallel::ShardedModel& sharded, double ema_decay, const Universe& u) {
  agree_on_errors(u.world(), write_masters_and_ema(run_dir, sharded, {{"ema_decay", std::to_string(ema_decay)}}, u), kExitFailure);
}

std::string write_checkpoint(const std::string& dir, const CheckpointState& state, parallel::ShardedModel& sharded,
                             const Universe& u, const std::string& options_ini, int keep) {
  const std::filesystem::path final_dir = std::filesystem::path(dir) / step_name(state.next_step);
  const std::filesystem::path tmp = std::filesystem::path(dir) / (step_name(state.next_step) + ".tmp");
  root_check(
      u.world(),
      [&] {
        std::error_code ec;
        std::filesystem::remove_all(tmp, ec);
        std::filesystem::create_directories(tmp, ec);
        if (ec) throw Error("cannot create the checkpoint directory '" + tmp.string() + "': " + ec.message());
      },
      kExitFailure);

  const std::string weights_error = write_masters_and_ema(tmp, sharded, {}, u);
  all_ranks_check<std::exception>(
      u.world(),
      [&] {
        try {
          if (!weights_error.empty()) throw Error(weights_error);
          if (u.coord().dp == 0) {  // one replica writes the shards of the moments
            const int r = u.coord().fs * u.mesh().cp() + u.coord().cp, s = u.mesh().shard_size();
            model::write_safetensors((tmp / optimizer_file(r, s)).string(), parallel::optimizer_slices(sharded),
                                     {{"geometry", parallel::geometry_json(sharded)}});
          }
          if (u.rank() == 0) {
            json j = {{"format", kFormat},
                            {"version", 1},
                            {"next_step", state.next_step},
                            {"optimizer_steps", state.optimizer_steps},
                            {"skipped_steps", state.skipped_steps},
                            {"ema", sharded.has_ema()},
                            {"shard_files", u.mesh().shard_size()},
                            {"layout", {{"world", u.size()}, {"dp", u.mesh().dp()}, {"fs", u.mesh().fs()}, {"cp", u.mesh().cp()}}},
                            {"options", options_ini}};
            if (state.sampler) j["sampler"] = sampler_json(*state.sampler);
            write_file_durably((tmp / "trainer.json").string(), j.dump(2));
          }
        } catch (const std::exception& e) {
          throw Error(std::string("writing checkpoint '") + tmp.string() + "' failed: " + e.what());
        }
      },
      kExitFailure);  // every file is on disk (fsynced) past this point
  maybe_crash(state.next_step, u.rank());

  root_check<std::exception>(
      u.world(),
      [&] {
        try {
          std::error_code ec;
          std::filesystem::remove_all(final_dir, ec);
          std::filesystem::rename(tmp, final_dir);
          fsync_path(dir);
          write_file_durably((final_dir / kComplete).string(), step_name(state.next_step) + "\n");
          // Keep the newest `keep` complete checkpoints; drop older ones, abandoned temporaries, and checkpoints
          // a crash left without their marker (between the rename and COMPLETE, or while pruning): neither
          // --resume auto nor anyone else can use them, and each holds a checkpoint's worth of disk.
          std::vector<std::filesystem::path> complete, abandoned;
          for (const auto& e : std::filesystem::directory_iterator(dir)) {
            const std::string name = e.path().filename().string();
            if (name.rfind("step_", 0) != 0 || !e.is_directory()) continue;
            if (std::filesystem::exists(e.path() / kComplete)) complete.push_back(e.path());
            else abandoned.push_back(e.path());
          }
          std::sort(complete.begin(), complete.end());
          for (size_t i = 0; i + static_cast<size_t>(keep) < complete.size(); ++i) {
            std::filesystem::remove(complete[i] / kComplete, ec);  // unmarked first: a crash mid-way leaves no "complete" shell
            abandoned.push_back(complete[i]);
          }
          for (const auto& p : abandoned) std::filesystem::remove_all(p, ec);
        } catch (const std::exception& e) {
          throw Error(std::string("committing checkpoint '") + final_dir.string() + "' failed: " + e.what());
        }
      },
      kExitFailure);
  return final_dir.string();
}

namespace {

// The marker and trainer.json of the checkpoint at `path`.
CheckpointState parse_trainer_state(const std::string& path) {
  const std::filesystem::path dir(path);
  if (!std::filesystem::exists(dir / kComplete)) {
    throw InputError("checkpoint '" + path + "' is missing or incomplete (no " + std::string(kComplete) +
                     " marker: it was interrupted while being written); use --resume auto or an earlier checkpoint");
  }
  CheckpointState state;
  try {
    std::ifstream in(dir / "trainer.json");
    const json j = json::parse(in);
    if (j.value("format", std::string()) != kFormat || j.value("version", 0) != 1) {
      throw InputError("checkpoint '" + path + "': trainer.json is not an openvid checkpoint of version 1");
    }
    state.next_step = j.at("next_step").get<int64_t>();
    state.optimizer_steps = j.at("optimizer_steps").get<int64_t>();
    state.skipped_steps = j.value("skipped_steps", int64_t{0});
    state.shard_files = j.at("shard_files").get<int>();
    if (j.contains("layout")) state.data_ranks = j["layout"].value("dp", 0) * j["layout"].value("fs", 0);
    state.options_ini = j.value("options", std::string());
    state.has_ema = j.value("ema", false);
    if (j.contains("sampler")) state.sampler = sampler_state(j.at("sampler"));
  } catch (const json::exception& e) {
    throw InputError("checkpoint '" + path + "': trainer.json is not valid or lacks a field: " + e.what());
  }
  return state;
}

}  // namespace

CheckpointState check_checkpoint(const std::string& path, const ModelConfig& model) {
  const std::filesystem::path dir(path);
  const CheckpointState state = parse_trainer_state(path);
  model::check_weights(model::read_weights((dir / "model.safetensors").string(), model::Read::kHeader), model::parameter_shapes(model),
                       path + "/model.safetensors");
  for (int r = 0; r < state.shard_files; ++r) model::read_safetensors((dir / optimizer_file(r, state.shard_files)).string(), model::Read::kHeader);
  if (state.has_ema) {
    model::check_weights(model::read_weights((dir / kEmaFile).string(), model::Read::kHeader), model::parameter_shapes(model),
                         path + "/" + kEmaFile);
  }
  return state;
}

CheckpointState read_checkpoint(const std::string& path, parallel::ShardedModel& sharded, const Universe& u) {
  CheckpointState state;
  all_ranks_check(u.world(), [&] {
    const std::filesystem::path dir(path);
    state = parse_trainer_state(path);
    // Each rank reads only its slices' elements of the weights and of the optimizer files.
    parallel::load_masters(sharded, (dir / "model.safetensors").string(), path + "/model.safetensors");
    std::vector<std::string> files;
    for (int r = 0; r < state.shard_files; ++r) files.push_back((dir / optimizer_file(r, state.shard_files)).string());
    parallel::load_optimizer(sharded, files, path);
    // The moving average: the checkpoint's, or (a checkpoint without one) restarted at its weights.
    if (sharded.has_ema() && state.has_ema) {
      parallel::load_masters(sharded, (dir / kEmaFile).string(), path + "/" + kEmaFile, parallel::Weights::kEma);
    } else {
      sharded.reset_ema();
    }
  });
  return state;
}

}  // namespace ov::train
