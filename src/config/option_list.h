#pragma once
// Private to src/config: the one list of options (building the parser, --help, to_ini and the INI keys all
// walk it, so they cannot drift) and the words of each choice. options.cpp is its one user.
#include <array>
#include <string>
#include <type_traits>
#include <utility>

#include "openvid/config/options.h"
#include "openvid/runtime/error.h"

namespace ov::config_detail {

enum class Group { kParallel, kData, kOptim, kRun, kModel };

// The words of each choice, in the order --help lists them.
template <typename E>
constexpr auto choices() {
  using std::pair;
  if constexpr (std::is_same_v<E, comm::BackendRequest>) {
    return std::array{pair{E::kAuto, "auto"}, pair{E::kMpi, "mpi"}, pair{E::kNccl, "nccl"}};
  } else if constexpr (std::is_same_v<E, DeviceRequest>) {
    return std::array{pair{E::kAuto, "auto"}, pair{E::kCpu, "cpu"}, pair{E::kCuda, "cuda"}};
  } else if constexpr (std::is_same_v<E, Precision>) {
    return std::array{pair{E::kAuto, "auto"}, pair{E::kFp32, "fp32"}, pair{E::kBf16, "bf16"}, pair{E::kFp8, "fp8"}};
  } else if constexpr (std::is_same_v<E, Float8Recipe>) {
    return std::array{pair{E::kTensorwise, to_string(E::kTensorwise)}, pair{E::kTensorwiseGwHp, to_string(E::kTensorwiseGwHp)}};
  } else if constexpr (std::is_same_v<E, LrSchedule>) {
    return std::array{pair{E::kLinear, "linear"}, pair{E::kCosine, "cosine"}, pair{E::kConstant, "constant"}};
  } else if constexpr (std::is_same_v<E, OptimizerType>) {
    return std::array{pair{E::kMupAdam, "mup_adam"}};
  } else {
    static_assert(std::is_same_v<E, RopeLayout>);
    return std::array{pair{E::kAligned, "aligned"}, pair{E::kSeed, "seed"}};
  }
}

template <typename E>
const char* choice_word(E value) {
  for (const auto& [v, word] : choices<E>())
    if (v == value) return word;
  return "?";
}

// "--option must be one of a, b, c (got 'x')".
template <typename E>
E parse_choice(const std::string& option, const std::string& word) {
  std::string list;
  for (const auto& [v, w] : choices<E>()) {
    if (word == w) return v;
    list += (list.empty() ? "" : ", ") + std::string(w);
  }
  throw InputError("--" + option + " must be one of " + list + " (got '" + word + "')");
}

// The one list of options: building the parser, --help and to_ini all walk it, so they cannot drift.
template <typename Fn>
void for_each_option(Options& o, Fn&& fn) {
  ModelConfig& m = o.model;
  // Parallel layout and runtime
  fn("fs", o.fs, "FSDP: shard parameters, gradients and optimizer state over fs*cp ranks", Group::kParallel);
  fn("cp", o.cp, "context parallelism: split each sample's video tokens over cp ranks (cp varies fastest)",
     Group::kParallel);
  fn("backend", o.backend, "collectives: auto (nccl on GPUs, else mpi), mpi, nccl", Group::kParallel);
  fn("device", o.device, "auto (a GPU per node-local rank when there are GPUs), cpu, cuda", Group::kParallel);
  fn("precision", o.precision,
     "auto (bf16 compute on GPU, fp32 on CPU), fp32, bf16, fp8 (bf16, with the block linears' products in float8 e4m3; GPUs of "
     "compute capability 8.9 or newer: H100, H200, L40S, B200)",
     Group::kParallel);
  fn("fp8_min_features", o.fp8_min_features,
     "--precision fp8: the block linears run in float8 when the model's width is at least this (narrower models gain less than "
     "the casts cost: at width 1024 on an H100 float8 is 0.3% slower than bf16)",
     Group::kParallel);
  fn("fp8_recipe", o.fp8_recipe,
     "--precision fp8: tensorwise (the block linears' three products in float8, one scale per tensor) or tensorwise_with_gw_hp "
     "(the forward and input-gradient products so, the weight gradients in bf16: closer to fp32's weight gradients, one product "
     "in three without float8's speed)",
     Group::kParallel);
  fn("deterministic", o.deterministic,
     "bitwise-repeatable GPU runs: deterministic attention backward (no atomic sums of dQ), cuBLAS with a fixed workspace "
     "(CPU runs are repeatable either way)",
     Group::kParallel);
  fn("collective_timeout", o.collective_timeout,
     "seconds a collective may wait for its peers before the job is aborted", Group::kParallel);
  fn("peak_tflops", o.peak_tflops, "per-device peak TFLOP/s for the MFU in logs; 0 = the GPU's dense peak by its name (H100, H200, A100, B200, L40S, ...), "
     "no MFU on CPUs and unknown GPUs",
     Group::kParallel);
  // Data
  fn("dataset", o.dataset, "the dataset's directory or its dataset.json manifest, or 'fake' for random latents and captions",
     Group::kData);
  fn("num_epochs", o.num_epochs, "passes over the dataset (training also stops at max_steps)", Group::kData);
  fn("batch_size", o.batch_size, "samples per optimizer step on each data rank (dp*fs data ranks)", Group::kData);
  fn("batch_tokens", o.batch_tokens,
     "instead of --batch_size: each bucket's batch per data rank is the most samples whose video tokens (registers included) fit "
     "this budget, so steps cost about the same across shapes (0: off)",
     Group::kData);
  fn("batch_cost", o.batch_cost,
     "with --batch_tokens, a sample's cost: tokens (video tokens with registers); attention (tokens + tokens^2 / c, c the median "
     "bucket's tokens, where both terms agree); or flops (tokens weighted by the model's FLOPs per token, attention and text "
     "included, relative to the median bucket's)",
     Group::kData);
  fn("skip_oversized_buckets", o.skip_oversized_buckets, "with --batch_tokens: leave out (and list) buckets one sample of which exceeds it",
     Group::kData);
  fn("grad_accum", o.grad_accum, "micro-batches per optimizer step (must divide batch_size)", Group::kData);
  fn("caption_dropout", o.caption_dropout, "probability a sample's text is replaced by zeros", Group::kData);
  fn("eval_batches", o.eval_batches, "held-out batches per evaluation", Group::kData);
  fn("drop_remainder", o.drop_remainder,
     "leave each bucket's last global batch out of every epoch when it is not full (default: train it, padded; the start-up lines "
     "say what is left out)",
     Group::kData);
  fn("heldout_fraction", o.heldout_fraction, "share of each bucket held out for evaluation (fixed by the data)", Group::kData);
  fn("check_finite_data", o.check_finite_data, "stop with a message on NaN/Inf in a read sample", Group::kData);
  fn("fake_samples", o.fake_samples, "--dataset fake: samples of the synthetic dataset", Group::kData);
  fn("fake_latent_shape", o.fake_latent_shape, "--dataset fake: latent FRAMESxHEIGHTxWIDTH", Group::kData);
  fn("fake_text_tokens", o.fake_text_tokens, "--dataset fake: text tokens per sample", Group::kData);
  fn("seed", o.seed, "run seed: initialisation, sampling order, noise, timesteps, RoPE offsets", Group::kData);
  // Optimisation
  fn("optimizer_type", o.optimizer_type, "mup_adam (AdamW with the reference's per-parameter groups)",
     Group::kOptim);
  fn("learning_rate", o.learning_rate, "base learning rate", Group::kOptim);
  fn("weight_decay", o.weight_decay, "base weight decay (scaled per parameter by mup_adam)", Group::kOptim);
  fn("adam_beta1", o.adam_beta1, "AdamW beta1", Group::kOptim);
  fn("adam_beta2", o.adam_beta2, "AdamW beta2", Group::kOptim);
  fn("adam_eps", o.adam_eps, "AdamW epsilon", Group::kOptim);
  fn("ema_decay", o.ema_decay, "keep an exponential moving average of the weights with this decay (e.g. 0.9999; 0 = off): "
     "checkpointed, exported as ema.safetensors, used by openvid_sample", Group::kOptim);
  fn("lr_scheduler_type", o.lr_scheduler_type, "after warm-up: linear, cosine or constant", Group::kOptim);
  fn("warmup_steps", o.warmup_steps, "linear warm-up steps (the first update uses multiplier 0)", Group::kOptim);
  fn("max_steps", o.max_steps, "optimizer steps of the run (also the schedule's horizon)", Group::kOptim);
  fn("grad_clip", o.grad_clip, "clip the global gradient norm to this value; 0 = off", Group::kOptim);
  fn("timestep_shift", o.timestep_shift, "rectified-flow timestep shift a", Group::kOptim);
  fn("max_nonfinite_steps", o.max_nonfinite_steps,
     "consecutive steps with a non-finite loss or gradient (skipped) before the run stops", Group::kOptim);
  // Run, logs, checkpoints
  fn("run_name", o.run_name, "name of the run; its files go to run_dir/run_name", Group::kRun);
  fn("run_dir", o.run_dir, "directory holding runs", Group::kRun);
  fn("evaluate_every", o.evaluate_every, "steps between held-out evaluations; 0 = never", Group::kRun);
  fn("sample_every", o.sample_every, "steps between samples drawn for fixed held-out text states into RUN_DIR/samples (latents; "
     "render them with openvid_sample); 0 = never", Group::kRun);
  fn("sample_count", o.sample_count, "samples each time (the first held-out samples)", Group::kRun);
  fn("sample_steps", o.sample_steps, "Euler steps of those samples", Group::kRun);
  fn("sample_guidance", o.sample_guidance, "classifier-free guidance of those samples", Group::kRun);
  fn("sample_decoder", o.sample_decoder, "TorchScript video decoder (Cosmos decoder.jit interface): also decode the samples into "
     "a contact sheet (samples/step_N.png, and TensorBoard)", Group::kRun);
  fn("sample_temporal_compression", o.sample_temporal_compression, "the decoder's video frames per latent frame", Group::kRun);
  fn("sample_spatial_compression", o.sample_spatial_compression, "the decoder's pixels per latent pixel", Group::kRun);
  fn("log_every", o.log_every, "steps between log lines", Group::kRun);
  fn("checkpoint_every", o.checkpoint_every, "steps between checkpoints; 0 = after every evaluation",
     Group::kRun);
  fn("keep_checkpoints", o.keep_checkpoints, "complete checkpoints kept; older ones are deleted", Group::kRun);
  fn("write_checkpoints", o.write_checkpoints,
     "false: no checkpoints on the cadence and no final model.safetensors (benchmarks); a signal still checkpoints",
     Group::kRun);
  fn("load_checkpoint", o.load_checkpoint, "initial weights: a safetensors file or a checkpoint directory",
     Group::kRun);
  fn("resume", o.resume, "continue a run: 'auto' (latest complete checkpoint of this run) or a path",
     Group::kRun);
  fn("start_over", o.start_over,
     "the run directory holds an earlier run: move its files aside (to <run_name>.replaced-<UTC time>) and start at step 0",
     Group::kRun);
  fn("profile_dir", o.profile_dir,
     "write here a per-rank host timeline of every step's phases and a Kineto trace (CUDA kernels, copies, NCCL) of "
     "--profile_steps; empty = off",
     Group::kRun);
  fn("profile_steps", o.profile_steps, "steps FIRST:END traced with LibTorch's profiler under --profile_dir", Group::kRun);
  fn("dry_run", o.dry_run,
     "plan the job instead of training: memory per rank by category and whether it fits, bytes per step on each group, FLOPs, "
     "batches per bucket; nothing is allocated, launched or written",
     Group::kRun);
  fn("plan_world", o.plan_world, "with --dry_run: ranks (GPUs) of the job planned; 0 = this launch's", Group::kRun);
  fn("plan_gpus_per_node", o.plan_gpus_per_node, "with --dry_run or --emulate_world: GPUs per node of the job planned; 0 = 8 (or the job's ranks when fewer)",
     Group::kRun);
  fn("plan_gpu_memory", o.plan_gpu_memory, "with --dry_run: memory per GPU in GB of the job planned (H100 80, H200 141)", Group::kRun);
  fn("plan", o.plan,
     "with --dry_run: rank every layout of the planned job (fs, cp, recomputation) that fits by predicted tokens/s, from "
     "--peak_tflops x --plan_efficiency and the network options",
     Group::kRun);
  fn("plan_efficiency", o.plan_efficiency, "with --plan: the share of --peak_tflops the step's products achieve", Group::kRun);
  fn("plan_nvlink_gbps", o.plan_nvlink_gbps, "with --plan and --emulate_world: GB/s bus bandwidth of a collective inside a node (NVLink)", Group::kRun);
  fn("plan_network_gbps", o.plan_network_gbps, "with --plan and --emulate_world: GB/s per GPU of a collective across nodes (400 Gb/s InfiniBand: 45)",
     Group::kRun);
  fn("plan_nvlink_latency_us", o.plan_nvlink_latency_us, "with --plan and --emulate_world: microseconds per ring step inside a node", Group::kRun);
  fn("plan_network_latency_us", o.plan_network_latency_us, "with --plan and --emulate_world: microseconds per ring step across nodes", Group::kRun);
  fn("emulate_world", o.emulate_world,
     "train as rank 0 of a job of this many ranks, on one process: its real shards, buffers and compute, every collective a "
     "stand-in that fills its output as identical peers would and lasts what the --plan network options give; for measuring a "
     "planned job's step time, memory and exposed communication on one GPU. Evaluation, samples and checkpoints are off; 0 = off",
     Group::kRun);
  // Model
  fn("model_width", m.width, "model width D", Group::kModel);
  fn("model_depth", m.depth, "number of DiT blocks", Group::kModel);
  fn("model_head_dim", m.head_dim, "attention head dimension (heads = width / head_dim)", Group::kModel);
  fn("model_mlp_ratio", m.mlp_ratio, "MLP hidden width = mlp_ratio * width", Group::kModel);
  fn("model_patch", m.patch, "spatial patch size", Group::kModel);
  fn("model_time_patch", m.time_patch, "temporal patch size", Group::kModel);
  fn("model_registers", m.registers, "register tokens placed before the video tokens", Group::kModel);
  fn("model_in_channels", m.in_channels, "latent channels C", Group::kModel);
  fn("model_text_dim", m.text_dim, "text-state width (T5-XXL: 4096)", Group::kModel);
  fn("model_residual_v", m.residual_v, "value residual across blocks", Group::kModel);
  fn("train_bias_and_rms", m.bias_and_norm_affine,
     "biases on qkv/q_cross/context_kv and learnable RMSNorm weights", Group::kModel);
  fn("init_std_factor", m.init_std_factor, "multiplier of every 2-D weight after default init", Group::kModel);
  fn("model_rope_layout", m.rope_layout,
     "aligned (each token its own position) or seed (the reference's exact tables)", Group::kModel);
  fn("recompute_every", m.recompute_every,
     "activation recomputation (checkpointing): recompute every k-th block in backward; 0 = none, 1 = all, 2 = every other",
     Group::kModel);
}

}  // namespace ov::config_detail
