#include "openvid/train/plan.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <initializer_list>
#include <iomanip>
#include <set>
#include <sstream>

#include "openvid/comm/network_model.h"
#include "openvid/data/dataset.h"
#include "openvid/model/float8_conversion.h"
#include "openvid/model/flops.h"
#include "openvid/model/state_dict.h"
#include "openvid/parallel/flat_unit.h"
#include "openvid/runtime/device.h"
#include "openvid/runtime/error.h"
#include "openvid/runtime/mesh.h"
#include "openvid/train/batching.h"
#include "openvid/train/setup.h"

namespace ov::train {
namespace {

// Activations and workspace per token of a block, in units of the width times the compute dtype's bytes:
// a block that keeps its graph, and one recomputed in backward (its inputs alone). Fitted to the peaks
// bench/memory_depth.sh and bench/step_bench.sh measured on an H100 in bf16 (docs/planning.md).
constexpr double kBlockTokenWidths = 21.5;
constexpr double kRecomputedTokenWidths = 6.0;
constexpr int64_t kReductionsInFlight = 2;  // parallel::ShardingOptions::max_reductions_in_flight's default

std::string gb(double bytes) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(bytes >= 1e10 ? 1 : 2) << bytes / 1e9 << " GB";
  return os.str();
}

// `value` in the largest of `units` (scale, name; descending) it reaches, the last one otherwise, to 0.1.
std::string scaled(double value, std::initializer_list<std::pair<double, const char*>> units) {
  const std::pair<double, const char*>* unit = units.end() - 1;
  for (const auto& u : units) {
    if (value >= u.first) {
      unit = &u;
      break;
    }
  }
  std::ostringstream os;
  os << std::fixed << std::setprecision(unit->first > 1 ? 1 : 0) << value / unit->first << " " << unit->second;
  return os.str();
}
std::string size(double bytes) { return scaled(bytes, {{1e9, "GB"}, {1e6, "MB"}, {1e3, "kB"}, {1, "B"}}); }
std::string flop(double f) { return scaled(f, {{1e15, "PFLOP"}, {1e12, "TFLOP"}, {1e9, "GFLOP"}, {1e6, "MFLOP"}}); }

}  // namespace

JobPlan plan_job(const Options& o, const data::Manifest& m, const PlanTarget& t) {
  const Mesh mesh = Mesh::make(t.world, o.fs, o.cp);  // the launch's own errors
  if (t.gpus_per_node < 0 || (t.gpus_per_node > t.world)) {
    throw InputError("--plan_gpus_per_node " + std::to_string(t.gpus_per_node) + " is more GPUs per node than the job's " +
                     std::to_string(t.world) + " ranks: give at most " + std::to_string(t.world) + ", or a larger --plan_world");
  }
  if (t.gpu && !(t.gpu_memory_gb > 0)) throw InputError("--plan_gpu_memory must be > 0 GB (an H100 has 80, an H200 141)");
  check_against_model(m, o.model, o.dataset);
  check_layout(m, data::ReaderLayout{0, mesh.num_data_ranks(), 0, mesh.cp(), o.model.time_patch});

  JobPlan p;
  p.dp = mesh.dp();
  p.fs = mesh.fs();
  p.cp = mesh.cp();
  p.compute_dtype = compute_dtype(o.precision, DeviceChoice{t.gpu ? DeviceKind::kCuda : DeviceKind::kCpu, t.gpu ? 0 : -1});
  const double dt = static_cast<double>(c10::elementSize(p.compute_dtype));
  const int64_t shard = mesh.shard_size();
  const model::ParameterShapes shapes = model::parameter_shapes(o.model);
  for (const auto& [name, shape] : shapes) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    p.parameters += n;
  }

  // The flat units as parallel::ShardedModel lays them out (train/setup.cpp build_run_model's options).
  std::function<bool(const std::string&)> float8;
  if (o.precision == Precision::kFp8) {
    const model::Float8Conversion conversion = model::float8_conversion(o.model, o.fp8_min_features, o.fp8_recipe);
    p.float8_layers = conversion.converted;
    if (shard > 1 && !conversion.weights.empty()) {
      const std::set<std::string> gathered(conversion.weights.begin(), conversion.weights.end());
      float8 = [gathered](const std::string& name) { return gathered.count(name) > 0; };
    }
  }
  const std::vector<parallel::FlatUnit> units = parallel::flat_units(shapes, shard, float8);
  p.units = static_cast<int64_t>(units.size());
  const bool keep_dtype = o.grad_accum == 1 && shard == 1 && mesh.dp() == 1;  // ShardingOptions::single_backward
  int64_t slice = 0, padded = 0, float8_weights = 0, root = 0, largest_block = 0;
  double gathered = 0;
  for (const parallel::FlatUnit& u : units) {
    slice += u.shard_numel;
    padded += u.padded;
    if (u.float8) {
      float8_weights += static_cast<int64_t>(u.params.size());
      gathered += static_cast<double>(u.padded) + static_cast<double>(u.shard_numel) * dt;  // e4m3 and this rank's staged chunk
    } else {
      gathered += static_cast<double>(u.padded) * dt;
    }
    if (u.name == "root") root = u.padded;
    else largest_block = std::max(largest_block, u.padded);
  }
  p.state.masters = slice * 4;
  p.state.gradients = slice * (keep_dtype ? static_cast<int64_t>(dt) : 4);
  p.state.moments = 2 * slice * 4;
  p.state.ema = o.ema_decay > 0 ? slice * 4 : 0;
  p.state.gathered = static_cast<int64_t>(gathered);
  // During backward a shard group of several ranks sums each unit's gradient in fp32 before reducing it:
  // the root unit's (its parameters get gradients first and last) and a block's being filled, besides
  // those whose transfer is in flight.
  if (shard > 1) {
    p.state.unit_gradients = (root + (kReductionsInFlight + 1) * largest_block) * 4;
    p.state.root_gradient = root * 4;
  }

  // The bytes of one step on each group (parallel/sharded_model.cpp, parallel/cp_attention.cpp, train/step.cpp).
  const BucketBatches batches = bucket_batches(o, m);
  p.batches_table = batches.table;
  const double width = static_cast<double>(o.model.width);
  const int64_t depth = o.model.depth;
  const int64_t recomputed = o.model.recompute_every > 0 ? (depth + o.model.recompute_every - 1) / o.model.recompute_every : 0;
  for (size_t b = 0; b < m.buckets.size(); ++b) {
    const data::Bucket& bucket = m.buckets[b];
    BucketPlan bp;
    bp.name = bucket.name;
    bp.tokens = sample_tokens(o.model, bucket);
    bp.per_rank = batches.per_rank[b];
    const auto samples = static_cast<double>(bp.per_rank);
    bp.flops = model::training_flops(o.model, bucket.frames, bucket.height, bucket.width, m.text_tokens) * samples * mesh.num_data_ranks();
    GroupBytes& g = bp.bytes;
    g.world = t.world > 1 ? 24 : 0;  // loss, stop flag, squared gradient norm: 3 doubles
    if (shard > 1) {
      double gathers = float8_weights > 0 ? 4.0 * static_cast<double>(float8_weights) : 0.0;  // the float8 amax (max over the group)
      for (const parallel::FlatUnit& u : units) {
        gathers += static_cast<double>(u.padded) * (u.float8 ? 1.0 : dt);
        if (u.name == "root") g.shard_gather_root = static_cast<double>(u.padded) * dt;
      }
      g.shard_gather = gathers;
      g.shard_reduce = static_cast<double>(o.grad_accum) * static_cast<double>(padded) * 4;  // each micro-batch's fp32 unit gradients
      g.shard = g.shard_gather + g.shard_reduce;
    }
    if (mesh.dp() > 1) g.dp = static_cast<double>(shard > 1 ? slice : padded) * 4;  // the fp32 gradient slice (or the whole units)
    const double video = static_cast<double>(bp.tokens - o.model.registers);
    if (mesh.cp() > 1) {
      // Each block's keys and values gathered over the cp group in every forward (twice for a recomputed
      // block), their gradients reduce-scattered in fp32 in backward.
      const double kv = 2 * video * samples * width;
      g.cp = kv * dt * static_cast<double>(depth + recomputed) + kv * 4 * static_cast<double>(depth);
    }
    const double micro = samples / static_cast<double>(o.grad_accum);
    const double local = video / static_cast<double>(mesh.cp()) + static_cast<double>(o.model.registers);
    const double kept = static_cast<double>(depth - recomputed) * kBlockTokenWidths + static_cast<double>(recomputed) * kRecomputedTokenWidths +
                        (recomputed > 0 ? kBlockTokenWidths : 0.0);  // the block being recomputed holds its graph
    const double token_width = micro * local * width * dt;  // one width of the micro-batch's local tokens, bytes
    bp.activations = token_width * kept;
    if (mesh.cp() > 1) {
      // Attention saves the whole sequence's keys and values (the peers' gathered ones beside this rank's) in
      // each block that keeps its graph; a block's backward makes their full gradients and one fp32 copy for
      // the reduce-scatter (parallel/cp_attention.cpp).
      const double graphs = static_cast<double>(depth - recomputed + (recomputed > 0 ? 1 : 0));
      const double peers = video - video / static_cast<double>(mesh.cp());
      bp.activations += graphs * 2 * peers * micro * width * dt + video * micro * width * (2 * dt + 4);
    }
    // The activations peak as backward starts, with the root unit's gradient (its first parameters' gradients
    // come first). Later a block's full gradient fills as its graph drains, and a finished block's stays until
    // its reduce-scatter is done: on a GPU that is over before the next block's backward begins when the
    // network is fast against the block's compute (and its recomputation), so the window's bound is reached
    // only on slow networks (bench/results/emulate_check_h100.md: the peaks of sharded steps, recomputed or
    // not, are the state, the activations and the root's gradient).
    bp.peak = bp.activations;
    if (shard > 1) {
      const double block_gradient = static_cast<double>(largest_block) * 4, graph = token_width * kBlockTokenWidths;
      bp.blocks_in_flight = kReductionsInFlight;
      if (t.gpu) {
        const double rate = planned_peak_tflops(o) * 1e12 * o.plan_efficiency;
        const double block_forward = bp.flops / t.world / static_cast<double>(o.grad_accum) / static_cast<double>(depth) / 3 / rate;
        const double gap = o.model.recompute_every == 1 ? block_forward : 0.0;  // every block recomputed before its backward
        const double reduce = comm::collective_seconds(comm::Collective::kReduceScatter, block_gradient, static_cast<int>(shard),
                                                       !t.within_node(static_cast<int>(shard)), planned_network(o));
        bp.blocks_in_flight = reduce <= gap ? 0 : reduce < gap + 2 * block_forward ? 1 : kReductionsInFlight;
      }
      const double done = static_cast<double>(std::min(depth, bp.blocks_in_flight)) / static_cast<double>(depth);
      const double later = static_cast<double>(bp.blocks_in_flight) * block_gradient + std::max(0.0, block_gradient - graph) + bp.activations * (1 - done);
      bp.peak = static_cast<double>(p.state.root_gradient) + std::max(bp.activations, later);
    }
    bp.peak += static_cast<double>(p.state.total());
    p.buckets.push_back(bp);
  }
  for (size_t b = 0; b < p.buckets.size(); ++b) {
    if (p.buckets[b].peak > p.buckets[p.largest].peak) p.largest = b;
  }
  return p;
}

std::string plan_report(const Options& o, const data::Manifest& m, const PlanTarget& t, const JobPlan& p) {
  std::ostringstream os;
  const int nodes = t.gpus_per_node > 0 ? (t.world + t.gpus_per_node - 1) / t.gpus_per_node : 1;
  os << "dry run (nothing allocated, launched or written): a job of " << t.world << " rank" << (t.world == 1 ? "" : "s");
  if (t.gpu) os << " on " << nodes << " node" << (nodes == 1 ? "" : "s") << " of " << t.gpus_per_node << " GPUs (" << t.gpu_memory_gb << " GB each)";
  else os << " on CPUs";
  os << ", mesh dp=" << p.dp << " x fs=" << p.fs << " x cp=" << p.cp << ", " << c10::toString(p.compute_dtype) << " compute\n";
  os << "model: " << std::fixed << std::setprecision(1) << static_cast<double>(p.parameters) / 1e6 << "M parameters (width " << o.model.width
     << ", depth " << o.model.depth << "), " << p.units << " flat units sharded over " << p.fs * p.cp << " rank" << (p.fs * p.cp == 1 ? "" : "s");
  if (o.model.recompute_every > 0) os << ", every " << o.model.recompute_every << (o.model.recompute_every == 1 ? " block" : " blocks") << " recomputed";
  if (!p.float8_layers.empty()) {
    os << "; float8 products:";
    for (const std::string& l : p.float8_layers) os << " " << l;
  }
  os << "\n";
  const int64_t data_ranks = static_cast<int64_t>(p.dp) * p.fs;
  os << "data: " << m.buckets.size() << " bucket" << (m.buckets.size() == 1 ? "" : "s") << ", " << data_ranks << " data rank" << (data_ranks == 1 ? "" : "s")
     << ", " << (o.batch_tokens > 0 ? "--batch_tokens " + std::to_string(o.batch_tokens) : "--batch_size " + std::to_string(o.batch_size))
     << " per data rank" << (o.grad_accum > 1 ? " in " + std::to_string(o.grad_accum) + " micro-batches" : "") << "\n";
  const BucketPlan& big = p.buckets[p.largest];
  os << "memory per rank: masters " << gb(static_cast<double>(p.state.masters)) << ", gradients " << gb(static_cast<double>(p.state.gradients))
     << ", Adam moments " << gb(static_cast<double>(p.state.moments));
  if (p.state.ema > 0) os << ", moving average " << gb(static_cast<double>(p.state.ema));
  os << ", gathered parameters " << gb(static_cast<double>(p.state.gathered));
  os << "; activations and workspace (estimate, bucket " << big.name << ", " << big.per_rank / o.grad_accum << " sample"
     << (big.per_rank / o.grad_accum == 1 ? "" : "s") << " per micro-batch) " << gb(big.activations);
  if (p.state.unit_gradients > 0) {
    os << " with the root unit's full gradient " << gb(static_cast<double>(p.state.root_gradient)) << " (full unit gradients in backward: at most "
       << gb(static_cast<double>(p.state.unit_gradients)) << ", once blocks have freed theirs; " << big.blocks_in_flight
       << " finished block" << (big.blocks_in_flight == 1 ? "'s" : "s'") << " reduce-scatter in flight as the next block's backward begins"
       << (t.gpu ? ", by the network model" : ", the window's bound on CPU ranks") << ")";
  }
  os << ": peak " << gb(p.peak());
  if (t.gpu && t.gpu_memory_gb > 0) {
    const double room = t.gpu_memory_gb * 1e9;
    if (p.peak() <= 0.95 * room) {
      os << " of " << t.gpu_memory_gb << " GB: fits (" << gb(room - p.peak()) << " to spare)\n";
    } else {
      const double short_by = p.peak() - 0.95 * room;
      os << " of " << t.gpu_memory_gb << " GB: does NOT fit, short by " << gb(short_by) << " (of 95% of the GPU); what each knob saves:";
      if (o.model.recompute_every != 1) {
        Options all = o;
        all.model.recompute_every = 1;
        os << " --recompute_every 1 " << gb(big.activations - plan_job(all, m, t).buckets[p.largest].activations) << ",";
      }
      if (p.dp % 2 == 0) {
        Options wider = o;
        wider.fs = o.fs * 2;
        os << " --fs " << wider.fs << " " << gb(static_cast<double>(p.state.total() - plan_job(wider, m, t).state.total())) << ",";
      }
      os << " half the batch per micro-batch (--batch_size, --batch_tokens or --grad_accum) " << gb(big.activations / 2) << "\n";
    }
  } else {
    os << "\n";
  }
  os << "per step (bytes on rank 0's groups, FLOPs of the whole job):\n";
  os << "| bucket | tokens/sample | samples/data rank | FLOPs | shard | cp | dp | world | activations |\n";
  os << "|---|---|---|---|---|---|---|---|---|\n";
  for (const BucketPlan& b : p.buckets) {
    os << "| " << b.name << " | " << b.tokens << " | " << b.per_rank << " | " << flop(b.flops) << " | "
       << size(b.bytes.shard) << " | " << size(b.bytes.cp) << " | " << size(b.bytes.dp) << " | " << size(b.bytes.world) << " | "
       << gb(b.activations) << " |\n";
  }
  if (p.fs * p.cp > 1) {
    os << "the shard group's bytes: all-gathers of the parameters " << size(big.bytes.shard_gather) << ", reduce-scatters of the gradients "
       << size(big.bytes.shard_reduce) << "\n";
  }
  return os.str();
}

}  // namespace ov::train
