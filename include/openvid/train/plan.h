#pragma once
// The dry run's plan (--dry_run): what a job of a given layout holds and moves on each rank, from the
// options and the dataset's manifest alone: names and shapes, never tensors, so a 10B model costs nothing
// and a world of any size is described without launching it (--plan_world). The sharded state is
// parallel::ShardedModel's arithmetic over the same flat units (from model::parameter_shapes), and the
// bytes per step on each group are what the collectives count (comm::Communicator::traffic): tests hold
// both equal to real runs on 1, 2 and 4 ranks. The activations are an estimate, per token and width of
// a block, fitted to peaks measured on an H100 (docs/planning.md says how, and what it leaves out).
#include <c10/core/ScalarType.h>
#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "openvid/comm/network_model.h"
#include "openvid/config/options.h"
#include "openvid/data/manifest.h"

namespace ov::train {

// The job described: its ranks, and what they compute on.
struct PlanTarget {
  int world = 1;
  int gpus_per_node = 0;       // 0 on CPU ranks
  bool gpu = false;            // GPU ranks: bf16 compute under --precision auto, device memory to fit
  double gpu_memory_gb = 0;    // per GPU, GB (1e9 bytes); 0: not checked
  // Whether a group of `ranks` ranks spaced `stride` apart lies inside one node of this job (all of it on CPUs).
  bool within_node(int ranks, int stride = 1) const { return comm::group_within_node(ranks, stride, gpus_per_node > 0 ? gpus_per_node : world); }
};

// Bytes one step moves on each group of rank 0, counted as comm::Communicator counts them (a collective's
// buffer: the all-gathered output, the reduce-scattered input, the all-reduced tensor; a group of one
// rank moves none).
struct GroupBytes {
  double world = 0, shard = 0, cp = 0, dp = 0;
  double shard_gather = 0, shard_reduce = 0;  // the shard group's all-gathers and reduce-scatters (+ float8 amax)
  double shard_gather_root = 0;               // of the all-gathers, the root unit's (waited for at the step's end)
};

// One rank's persistent state, bytes (as parallel::ShardMemory reports it, and the moving average).
struct StatePlan {
  int64_t masters = 0, gradients = 0, moments = 0, ema = 0, gathered = 0;
  int64_t unit_gradients = 0;  // at most this many bytes of full unit gradients during backward (shard groups of several ranks)
  int64_t root_gradient = 0;   // of those, the root unit's: alive from backward's first gradient to its last
  int64_t total() const { return masters + gradients + moments + ema + gathered; }  // held throughout the step
};

struct BucketPlan {
  std::string name;
  int64_t tokens = 0;       // video tokens per sample, registers included
  int64_t per_rank = 0;     // samples per data rank per step (0: left out)
  double flops = 0;         // model FLOPs of one step of the whole job (3 x forward)
  GroupBytes bytes;         // one step's, on rank 0
  double activations = 0;   // estimated peak bytes of one micro-batch's activations and workspace on a rank
  // Finished blocks whose full gradient is still being reduce-scattered when a block's backward begins (shard
  // groups of several ranks): on GPU targets from the network model's reduce-scatter of a block's fp32
  // gradient against the block's backward (and its recomputation) at --peak_tflops x --plan_efficiency;
  // on CPU targets the window's bound (parallel::ShardingOptions::max_reductions_in_flight).
  int64_t blocks_in_flight = 0;
  // The estimated peak of a step of this bucket on a rank: the state, and the larger of the activations' peak
  // (with the root unit's full gradient, made at backward's start) and the later moment of backward that
  // holds the root's, the blocks_in_flight finished blocks' and the filling block's full gradients while
  // the finished blocks have freed their activations (the filling block's gradient grows as its graph drains).
  double peak = 0;
};

struct JobPlan {
  int dp = 1, fs = 1, cp = 1;
  at::ScalarType compute_dtype = at::kFloat;
  int64_t parameters = 0, units = 0;
  std::vector<std::string> float8_layers;  // block linears whose products run in float8
  StatePlan state;
  std::vector<BucketPlan> buckets;         // the manifest's order
  size_t largest = 0;                      // the bucket of the largest activations (the memory that must fit)
  std::string batches_table;               // a token budget's start-up lines (train/batching.h; "" with --batch_size)
  double peak() const { return buckets.empty() ? static_cast<double>(state.total()) : buckets[largest].peak; }
};

// Throws InputError as a real launch would for an impossible layout (world not divisible by fs x cp, the
// patch rule, a token budget below one sample) and for impossible targets.
JobPlan plan_job(const Options& options, const data::Manifest& manifest, const PlanTarget& target);

// The dry run's report: the job, the model, the data's batches, memory per rank by category and whether it
// fits, the bytes per step on each group, FLOPs per step, per bucket.
std::string plan_report(const Options& options, const data::Manifest& manifest, const PlanTarget& target, const JobPlan& plan);

// The dataset's manifest as the run would see it (--dataset fake: the synthetic one's, built in memory).
data::Manifest planned_manifest(const Options& options);
// The job --dry_run describes: --plan_world ranks (or `launched`), GPUs unless --device cpu (or, for this
// launch under --device auto, none visible), --plan_gpus_per_node (8, or the ranks when fewer).
PlanTarget plan_target(const Options& options, int launched);
// GPUs per node of the job --dry_run, --plan and --emulate_world describe: --plan_gpus_per_node, or 8 (the
// job's ranks when fewer).
int planned_gpus_per_node(const Options& options, int world);
// The network the options describe (--plan_nvlink_gbps, --plan_network_gbps and their latencies): what the
// plan predicts with and --emulate_world's stand-ins last.
comm::Network planned_network(const Options& options);
// The per-GPU peak the plan's compute times take (--peak_tflops, or an H100 SXM's dense bf16 989.4).
double planned_peak_tflops(const Options& options);

// Collective over `world` (rank 0 plans, every rank agrees on errors): the dry run; returns the exit code.
int dry_run(const Options& options, MPI_Comm world);

}  // namespace ov::train
