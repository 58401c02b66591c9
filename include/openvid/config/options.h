#pragma once
// Everything a run is configured by: the reference trainer's options (same names and defaults unless
// noted) plus openvid's own. Read from the command line and INI files (command line wins over the file).
//
// Spelling: option names take '-' or '_' alike (--eval-every == --eval_every), and a few aliases map to
// the reference's names (see kAliases in options.cpp). In INI files, keys of a [model] section are
// prefixed with "model_" ([model] width = 512 is model_width); any other section is only for grouping
// ([parallel] fs = 2 is fs).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "openvid/comm/backend.h"
#include "openvid/config/model_config.h"
#include "openvid/runtime/device.h"

namespace boost::program_options {
class options_description;
class variables_map;
}  // namespace boost::program_options

namespace ov {

// Choices, parsed once from their words (shown in --help and written by to_ini).
enum class LrSchedule { kLinear, kCosine, kConstant };
enum class OptimizerType { kMupAdam };

const char* to_string(Precision p);
const char* to_string(LrSchedule s);
// The words of --device and --precision, for the tools that parse their own command lines (the same words
// and the same message as openvid_mpi's): "--<option> must be one of auto, cpu, cuda (got 'x')".
DeviceRequest parse_device(const std::string& option, const std::string& word);
// fp8 is a training precision: `tool` (an encoder's or the sampler's) refuses it, saying to use bf16.
Precision parse_precision(const std::string& option, const std::string& word, const std::string& tool);

struct Options {
  std::string config_file;           // --config (INI)

  // Parallel layout and runtime
  int fs = 1;                        // FSDP shard size (together with cp)
  int cp = 1;                        // context-parallel size
  comm::BackendRequest backend = comm::BackendRequest::kAuto;  // auto | mpi | nccl
  DeviceRequest device = DeviceRequest::kAuto;                  // auto | cpu | cuda
  Precision precision = Precision::kAuto;                       // auto | fp32 | bf16 | fp8
  int fp8_min_features = 2048;       // --precision fp8: narrower models keep their block linears in bf16
  Float8Recipe fp8_recipe = Float8Recipe::kTensorwise;  // --precision fp8: tensorwise | tensorwise_with_gw_hp
  bool deterministic = false;        // bitwise-repeatable GPU steps (deterministic attention backward, fixed cuBLAS workspace)
  double collective_timeout = 600;   // seconds before a stuck collective aborts the job
  double peak_tflops = 0;            // per-device peak for MFU; 0 = by the GPU's name, none on CPU

  // Data
  std::string dataset;               // path to a dataset (manifest or shard), or "fake"
  int num_epochs = 2;
  int batch_size = 64;               // per data rank (dp*fs data ranks)
  int64_t batch_tokens = 0;          // > 0: per-bucket batch sizes by this video-token budget per data rank (train/batching.h)
  bool skip_oversized_buckets = false;  // with batch_tokens: leave out buckets one sample of which exceeds it
  std::string batch_cost = "tokens";    // with batch_tokens: a sample's cost, "tokens", "attention" or "flops" (train/batching.h)
  int grad_accum = 1;                // micro-batches per optimizer step (divides batch_size)
  double caption_dropout = 0.01;
  bool drop_remainder = false;       // leave out each bucket's last, smaller global batch (default: train it, padded)
  int eval_batches = 9;              // held-out batches per evaluation
  double heldout_fraction = 0.01;    // share of each bucket held out for evaluation
  bool check_finite_data = false;    // fail on NaN/Inf in a read latent or text state
  int64_t seed = 0;
  // --dataset fake: a synthetic dataset written into the run directory on first use
  int fake_samples = 256;
  std::string fake_latent_shape = "16x64x64";  // latent frames x height x width (the reference's fake data)
  int fake_text_tokens = 512;

  // Optimisation
  OptimizerType optimizer_type = OptimizerType::kMupAdam;
  double learning_rate = 1e-4;
  double weight_decay = 0.1;
  double adam_beta1 = 0.95;
  double adam_beta2 = 0.99;
  double adam_eps = 1e-8;
  LrSchedule lr_scheduler_type = LrSchedule::kCosine;
  int warmup_steps = 20;
  int64_t max_steps = 10000;
  double grad_clip = 0;              // global-norm clipping; 0 = off (as in the reference)
  double ema_decay = 0;              // exponential moving average of the weights; 0 = off
  double timestep_shift = 8;
  int max_nonfinite_steps = 5;       // consecutive skipped (non-finite) steps before the run stops

  // Run, logs, checkpoints
  std::string run_name = "diffusion_repa";
  std::string run_dir = "runs";      // the run writes under run_dir/run_name
  int evaluate_every = 20;           // steps; 0 = never
  int sample_every = 0;              // steps between samples of fixed held-out text states; 0 = never
  int sample_count = 2;              // samples each time (the first held-out samples of rank 0)
  int sample_steps = 20;             // Euler steps of those samples
  double sample_guidance = 6.0;      // their classifier-free guidance
  std::string sample_decoder;        // TorchScript video decoder: also a contact sheet of the samples
  int sample_temporal_compression = 4, sample_spatial_compression = 8;  // the decoder's (Cosmos CV4x8x8's)
  int log_every = 10;
  int checkpoint_every = 0;          // steps; 0 = after every evaluation (the reference's behaviour)
  int keep_checkpoints = 3;
  bool write_checkpoints = true;     // false: no checkpoints on the cadence and no final export (benchmarks)
  std::string load_checkpoint;       // initial weights (safetensors or checkpoint dir); "" = none
  std::string resume;                // "" | auto | path of a checkpoint to continue from
  bool start_over = false;           // move an earlier run's files in the run directory aside, start at step 0
  std::string profile_dir;           // "" = no profiling
  std::string profile_steps = "2:4"; // steps [A, B) traced with LibTorch's profiler (Kineto) under profile_dir
  // --dry_run: the plan of the job (train/plan.h) instead of training; the target job, when not this launch
  bool dry_run = false;
  int plan_world = 0;                // ranks of the job planned; 0: this launch's
  int plan_gpus_per_node = 0;        // 0: 8, or the job's ranks when fewer
  double plan_gpu_memory = 80;       // GB (1e9 bytes) per GPU
  // --plan: the layouts of the planned job ranked by predicted throughput (train/plan_advice.h)
  bool plan = false;
  double plan_efficiency = 0.5;      // achieved share of --peak_tflops in the products
  double plan_nvlink_gbps = 360;     // GB/s bus bandwidth of a collective inside a node
  double plan_network_gbps = 45;     // GB/s per GPU across nodes (400 Gb/s InfiniBand)
  double plan_nvlink_latency_us = 10, plan_network_latency_us = 20;  // per ring step
  // --emulate_world N: this one process trains as rank 0 of an N-rank job, its collectives stand-ins timed
  // by the network options above (comm/emulated_communicator.h); 0 = off
  int emulate_world = 0;

  ModelConfig model;
};

// What the command line asks for.
struct ParsedCommandLine {
  enum class Action { kRun, kHelp, kVersion };
  Action action = Action::kRun;
  Options options;
  // One line per option of the reference trainer's command lines that openvid accepts but does not need
  // (e.g. --compile-strat), saying why it has no effect; the job prints them once.
  std::vector<std::string> notes;
};

// Parses `args` (without the program name) and, when given, the --config file; validates the result.
// Throws ov::InputError with one line naming the option (and file) and what is wrong.
// Deterministic: every rank gets the same verdict from the same arguments and file.
ParsedCommandLine parse_command_line(const std::vector<std::string>& args);

// Checks ranges (the model's too); throws ov::InputError naming the option.
void validate(const Options& options);

// --help text: every option with its default and meaning.
std::string help_text(const std::string& program);

// --profile_steps "A:B": steps [A, B). Throws InputError naming the option otherwise.
std::pair<int64_t, int64_t> parse_step_range(const std::string& text);

// The resolved options as an INI file that parse_command_line reads back to the same Options.
std::string to_ini(const Options& options);

// The options an INI text (to_ini's, e.g. a checkpoint's) sets over the defaults. Throws InputError naming
// `source` when a key is unknown or a value malformed. Not validated.
Options options_from_ini(const std::string& ini_text, const std::string& source);

std::string version_string();

// The tools' own command lines (openvid_make_dataset, ...): parses into `vm` and, unless --help was given,
// notifies the bound variables. Throws ov::InputError naming the problem.
void parse_tool_command_line(const boost::program_options::options_description& desc, int argc, char** argv,
                             boost::program_options::variables_map& vm);

}  // namespace ov
