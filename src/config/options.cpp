#include "openvid/config/options.h"

#include <boost/program_options.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <fstream>
#include <map>
#include <sstream>
#include <type_traits>

#include "openvid/runtime/error.h"

namespace po = boost::program_options;

namespace ov {
namespace {

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
    return std::array{pair{E::kAuto, "auto"}, pair{E::kFp32, "fp32"}, pair{E::kBf16, "bf16"}};
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
  fn("precision", o.precision, "auto (bf16 compute on GPU, fp32 on CPU), fp32, bf16", Group::kParallel);
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
  fn("grad_accum", o.grad_accum, "micro-batches per optimizer step (must divide batch_size)", Group::kData);
  fn("caption_dropout", o.caption_dropout, "probability a sample's text is replaced by zeros", Group::kData);
  fn("eval_batches", o.eval_batches, "held-out batches per evaluation", Group::kData);
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

// Other spellings accepted on the command line and in files (after '-' -> '_').
const std::map<std::string, std::string>& aliases() {
  static const std::map<std::string, std::string> kAliases = {
      {"eval_every", "evaluate_every"},
      {"lr", "learning_rate"},
      {"lr_schedule", "lr_scheduler_type"},
      {"model_bias_and_norm_affine", "train_bias_and_rms"},
      {"bias_and_norm_affine", "train_bias_and_rms"},
      {"model_init_std_factor", "init_std_factor"},
      {"model_recompute_every", "recompute_every"},
  };
  return kAliases;
}

std::string canonical_name(std::string name) {
  std::replace(name.begin(), name.end(), '-', '_');
  const auto it = aliases().find(name);
  return it == aliases().end() ? name : it->second;
}

template <typename T>
std::string to_text(const T& v) {
  if constexpr (std::is_enum_v<T>) {
    return choice_word(v);
  } else if constexpr (std::is_same_v<T, bool>) {
    return v ? "true" : "false";
  } else if constexpr (std::is_same_v<T, std::string>) {
    return v;
  } else {
    char buf[64];
    const auto res = std::to_chars(buf, buf + sizeof(buf), v);  // shortest form that reads back exactly
    return std::string(buf, res.ptr);
  }
}

const char* group_title(Group g) {
  switch (g) {
    case Group::kParallel: return "Parallel layout and runtime";
    case Group::kData: return "Data";
    case Group::kOptim: return "Optimisation";
    case Group::kRun: return "Run, logs and checkpoints";
    case Group::kModel: return "Model";
  }
  return "";
}

constexpr Group kGroups[] = {Group::kParallel, Group::kData, Group::kOptim, Group::kRun, Group::kModel};

// Options of the reference trainer that have no counterpart here: accepted (so that its command lines and
// job scripts run unchanged), never used, each with the reason the job prints.
struct ReferenceOnly {
  const char* name;
  const char* why;
};
constexpr ReferenceOnly kReferenceOnly[] = {
    {"compile_strat", "openvid's kernels are compiled ahead of time; there is no torch.compile strategy to choose"},
    {"project_name", "openvid logs to metrics.jsonl in the run directory; there is no experiment tracker to name"},
    {"return_index", "a detail of the reference's data loader; openvid's reader needs none"},
};

// Descriptions bound to `o`: parsing writes straight into it.
struct Descriptions {
  po::options_description general{"General"};
  std::map<Group, po::options_description> groups;
  po::options_description reference{"Accepted from the reference trainer's command lines, without effect", 120, 70};
  po::options_description all{"openvid options"};
};

std::unique_ptr<Descriptions> describe(Options& o) {
  auto d = std::make_unique<Descriptions>();
  d->general.add_options()
      ("help,h", "print this help and exit")
      ("version", "print the version and exit")
      ("config", po::value<std::string>(&o.config_file),
       "INI file of options (key = value; [model] keys get the model_ prefix); the command line wins");
  // Wide enough that no option name or alias is broken across lines.
  for (Group g : kGroups) d->groups.emplace(g, po::options_description(group_title(g), 120, 70));
  for_each_option(o, [&](const char* name, auto& field, const char* description, Group g) {
    using T = std::remove_reference_t<decltype(field)>;
    std::string help = description, also;  // with the other spellings, so that --help shows every accepted name
    for (const auto& [alias, canonical] : aliases()) {
      if (canonical == name) also += (also.empty() ? " (also " : ", ") + std::string("--") + alias;
    }
    if (!also.empty()) help += also + ")";
    if constexpr (std::is_enum_v<T>) {  // read as a word, parsed once into the enum when notified
      auto* v = po::value<std::string>()->default_value(to_text(field))->notifier(
          [&field, option = std::string(name)](const std::string& word) { field = parse_choice<T>(option, word); });
      d->groups.at(g).add_options()(name, v, help.c_str());
    } else {
      auto* v = po::value<T>(&field)->default_value(field, to_text(field));
      if constexpr (std::is_same_v<T, bool>) v->implicit_value(true, "true");
      d->groups.at(g).add_options()(name, v, help.c_str());
    }
  });
  for (const ReferenceOnly& r : kReferenceOnly) {
    d->reference.add_options()(r.name, po::value<std::string>()->implicit_value("true"), r.why);
  }
  d->all.add(d->general);
  for (Group g : kGroups) d->all.add(d->groups.at(g));
  d->all.add(d->reference);
  return d;
}

std::vector<std::string> normalise_command_line(const std::vector<std::string>& args) {
  std::vector<std::string> out;
  for (const std::string& a : args) {
    if (a.rfind("--", 0) == 0 && a.size() > 2) {
      const size_t eq = a.find('=');
      const std::string name = a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
      out.push_back("--" + canonical_name(name) + (eq == std::string::npos ? "" : a.substr(eq)));
    } else {
      out.push_back(a);
    }
  }
  return out;
}

// Maps file keys to option names ([model] width -> model_width, [any] key -> key, aliases) and rejects
// keys that name no option, all of them in one message.
void canonicalise_file_keys(po::parsed_options& parsed, const po::options_description& desc,
                            const std::string& file) {
  std::vector<std::string> unknown;
  for (po::option& opt : parsed.options) {
    std::string key = opt.string_key;
    const size_t dot = key.find('.');
    if (dot != std::string::npos) {
      const std::string section = key.substr(0, dot);
      key = key.substr(dot + 1);
      if (section == "model" && key.rfind("model_", 0) != 0 && !aliases().count(canonical_name(key))) {
        key = "model_" + key;
      }
    }
    key = canonical_name(key);
    if (key == "config") throw InputError("config file '" + file + "': 'config' cannot be set inside a config file");
    if (key == "help" || key == "version" || desc.find_nothrow(key, false) == nullptr) {
      unknown.push_back(opt.string_key);
      continue;
    }
    opt.string_key = key;
    opt.unregistered = false;
  }
  if (!unknown.empty()) {
    std::string list;
    for (const auto& k : unknown) list += (list.empty() ? "'" : ", '") + k + "'";
    throw InputError("config file '" + file + "': unknown key(s) " + list + " (see --help for the option names)");
  }
}

void store_ini(std::istream& in, const po::options_description& desc, const std::string& file, po::variables_map& vm) {
  try {
    po::parsed_options parsed = po::parse_config_file(in, desc, /*allow_unregistered=*/true);
    canonicalise_file_keys(parsed, desc, file);
    po::store(parsed, vm);
  } catch (const po::error& e) {
    throw InputError("config file '" + file + "': " + e.what());
  }
}

// Boost's default style completes an unambiguous prefix (--learning-rat = --learning_rate); a typo must be
// an error instead, so only whole names (and the listed aliases) are accepted.
constexpr int kCommandLineStyle = po::command_line_style::default_style & ~po::command_line_style::allow_guessing;

}  // namespace

std::string version_string() { return "openvid " OPENVID_VERSION; }

std::pair<int64_t, int64_t> parse_step_range(const std::string& text) {
  int64_t a = -1, b = -1;
  char colon = 0;
  std::istringstream in(text);
  if (!(in >> a >> colon >> b) || colon != ':' || !in.eof() || a < 0 || b <= a) {
    throw InputError("--profile_steps must be FIRST:END with 0 <= FIRST < END, e.g. 2:4 traces steps 2 and 3 (got '" + text + "')");
  }
  return {a, b};
}

const char* to_string(Precision p) { return choice_word(p); }
DeviceRequest parse_device(const std::string& option, const std::string& word) { return parse_choice<DeviceRequest>(option, word); }
Precision parse_precision(const std::string& option, const std::string& word) { return parse_choice<Precision>(option, word); }
const char* to_string(LrSchedule s) { return choice_word(s); }
const char* to_string(RopeLayout layout) { return choice_word(layout); }

void parse_tool_command_line(const po::options_description& desc, int argc, char** argv, po::variables_map& vm) {
  try {
    po::store(po::command_line_parser(argc, argv).options(desc).style(kCommandLineStyle).run(), vm);
    if (!vm.count("help")) po::notify(vm);
  } catch (const po::error& e) {
    throw InputError(std::string(e.what()) + " (see --help)");
  }
}

ParsedCommandLine parse_command_line(const std::vector<std::string>& args) {
  ParsedCommandLine result;
  Options& o = result.options;
  const auto desc = describe(o);
  po::variables_map vm;
  try {
    // Words that are no option's value are collected (not silently ignored) to be named in the error.
    po::options_description with_stray;
    with_stray.add(desc->all).add_options()("stray-words", po::value<std::vector<std::string>>());
    po::positional_options_description positional;
    positional.add("stray-words", -1);
    po::store(po::command_line_parser(normalise_command_line(args)).options(with_stray).positional(positional).style(kCommandLineStyle).run(),
             vm);
  } catch (const po::error& e) {
    throw InputError(std::string(e.what()) + " (see --help)");
  }
  if (vm.count("stray-words")) {
    std::string words;
    for (const auto& w : vm["stray-words"].as<std::vector<std::string>>()) words += (words.empty() ? "'" : ", '") + w + "'";
    throw InputError("unexpected word(s) " + words + " on the command line: every setting is an option, e.g. --dataset PATH (see --help)");
  }
  if (vm.count("help")) {
    result.action = ParsedCommandLine::Action::kHelp;
    return result;
  }
  if (vm.count("version")) {
    result.action = ParsedCommandLine::Action::kVersion;
    return result;
  }
  if (vm.count("config")) {
    const std::string file = vm["config"].as<std::string>();
    std::ifstream in(file);
    if (!in) throw InputError("config file '" + file + "' cannot be opened (check the --config path)");
    store_ini(in, desc->all, file, vm);  // values already set by the command line are kept
  }
  try {
    po::notify(vm);
  } catch (const po::error& e) {
    throw InputError(std::string(e.what()) + " (see --help)");
  }
  validate(o);
  for (const ReferenceOnly& r : kReferenceOnly) {
    if (vm.count(r.name)) result.notes.push_back(std::string("note: --") + r.name + " is ignored: " + r.why);
  }
  return result;
}

// Throws "--option what (got value)" unless ok.
template <typename T>
void need(bool ok, const std::string& option, const std::string& what, const T& got) {
  if (!ok) {
    std::ostringstream os;
    os << "--" << option << " " << what << " (got " << got << ")";
    throw InputError(os.str());
  }
}

// The options whose only rule is a lower bound.
struct LowerBound {
  const char* option;
  double got;
  double least;
};
void need_at_least(std::initializer_list<LowerBound> bounds) {
  for (const LowerBound& b : bounds) {
    std::ostringstream what;
    what << "must be >= " << b.least;
    need(b.got >= b.least, b.option, what.str(), b.got);
  }
}

void validate(const ModelConfig& m) {
  need_at_least({{"model_width", double(m.width), 1}, {"model_depth", double(m.depth), 1}, {"model_mlp_ratio", double(m.mlp_ratio), 1},
                 {"model_patch", double(m.patch), 1}, {"model_time_patch", double(m.time_patch), 1},
                 {"model_registers", double(m.registers), 0}, {"model_in_channels", double(m.in_channels), 1},
                 {"model_text_dim", double(m.text_dim), 1}});
  need(m.head_dim >= 8 && m.head_dim % 8 == 0, "model_head_dim",
       "must be a positive multiple of 8 (3-D RoPE splits head_dim/2 angles into t/h/w quarters)", m.head_dim);
  need(m.width % m.head_dim == 0, "model_width",
       "must be a multiple of --model_head_dim " + std::to_string(m.head_dim), m.width);
  need(m.init_std_factor > 0, "init_std_factor", "must be > 0", m.init_std_factor);
  need(m.recompute_every >= 0, "recompute_every", "must be >= 0 (0 = no recomputation)", m.recompute_every);
}

void validate(const Options& o) {
  const ModelConfig& m = o.model;
  need_at_least({{"fs", double(o.fs), 1}, {"cp", double(o.cp), 1}, {"num_epochs", double(o.num_epochs), 1},
                 {"batch_size", double(o.batch_size), 1}, {"grad_accum", double(o.grad_accum), 1},
                 {"eval_batches", double(o.eval_batches), 1}, {"fake_samples", double(o.fake_samples), 1},
                 {"fake_text_tokens", double(o.fake_text_tokens), 1}, {"peak_tflops", o.peak_tflops, 0},
                 {"seed", double(o.seed), 0}, {"weight_decay", o.weight_decay, 0}, {"max_steps", double(o.max_steps), 1},
                 {"max_nonfinite_steps", double(o.max_nonfinite_steps), 1}, {"log_every", double(o.log_every), 1},
                 {"checkpoint_every", double(o.checkpoint_every), 0}, {"keep_checkpoints", double(o.keep_checkpoints), 1}});
  need(o.collective_timeout > 0, "collective_timeout", "must be > 0 seconds", o.collective_timeout);
  need(o.batch_size % o.grad_accum == 0, "grad_accum",
       "must divide --batch_size " + std::to_string(o.batch_size), o.grad_accum);
  need(o.caption_dropout >= 0 && o.caption_dropout <= 1, "caption_dropout", "must be in [0, 1]",
       o.caption_dropout);
  need(o.heldout_fraction >= 0 && o.heldout_fraction < 1, "heldout_fraction", "must be in [0, 1)", o.heldout_fraction);
  need(o.learning_rate > 0, "learning_rate", "must be > 0", o.learning_rate);
  need(o.adam_beta1 >= 0 && o.adam_beta1 < 1, "adam_beta1", "must be in [0, 1)", o.adam_beta1);
  need(o.adam_beta2 >= 0 && o.adam_beta2 < 1, "adam_beta2", "must be in [0, 1)", o.adam_beta2);
  need(o.adam_eps > 0, "adam_eps", "must be > 0", o.adam_eps);
  need(o.warmup_steps >= 0 && o.warmup_steps < o.max_steps, "warmup_steps",
       "must be in [0, max_steps " + std::to_string(o.max_steps) + ")", o.warmup_steps);
  need(o.grad_clip >= 0, "grad_clip", "must be >= 0 (0 = off)", o.grad_clip);
  need(o.ema_decay >= 0 && o.ema_decay < 1, "ema_decay", "must be in [0, 1) (0 = off)", o.ema_decay);
  need(o.timestep_shift > 0, "timestep_shift", "must be > 0", o.timestep_shift);
  need(!o.run_name.empty() && o.run_name.find('/') == std::string::npos, "run_name",
       "must be a non-empty name without '/'", "'" + o.run_name + "'");
  need(!o.run_dir.empty(), "run_dir", "must not be empty", "''");
  need(!(o.start_over && !o.resume.empty()), "start_over", "contradicts --resume " + o.resume + " (continue the run or start it over)",
       "true");
  need(o.evaluate_every >= 0, "evaluate_every", "must be >= 0 (0 = never)", o.evaluate_every);
  need(o.sample_every >= 0, "sample_every", "must be >= 0 (0 = never)", o.sample_every);
  need(o.sample_count >= 1, "sample_count", "must be >= 1", o.sample_count);
  need(o.sample_steps >= 1, "sample_steps", "must be >= 1", o.sample_steps);
  need(o.sample_every == 0 || o.cp == 1, "sample_every", "needs --cp 1 (sampling over context-parallel ranks is not there yet)",
       o.sample_every);
  need(o.sample_every == 0 || o.heldout_fraction > 0, "sample_every", "needs held-out samples for its text (--heldout_fraction > 0)",
       o.sample_every);
  parse_step_range(o.profile_steps);
  validate(m);
}

std::string help_text(const std::string& program) {
  Options defaults;
  const auto desc = describe(defaults);
  std::ostringstream os;
  os << "Usage: mpirun -np N " << program << " [--config FILE.ini] [options]\n\n"
     << "Trains a text-to-video diffusion transformer (rectified flow) over dp x fs x cp MPI ranks.\n"
     << "Options take '-' or '_' alike (--eval-every = --evaluate_every). Booleans: --flag, --flag=false.\n"
     << "INI files hold the same names as 'key = value'; in a [model] section the model_ prefix is implied.\n"
     << "Exit codes: 0 done, 1 runtime failure (job aborted), 2 bad options/config/input, 3 checkpointed on\n"
     << "SIGUSR1/SIGTERM (requeue and resume with --resume auto).\n\n"
     << desc->all;
  return os.str();
}

Options options_from_ini(const std::string& ini_text, const std::string& source) {
  Options o;
  const auto desc = describe(o);
  po::variables_map vm;
  std::istringstream in(ini_text);
  store_ini(in, desc->all, source, vm);
  try {
    po::notify(vm);
  } catch (const po::error& e) {
    throw InputError("config file '" + source + "': " + e.what());
  }
  return o;
}

std::string to_ini(const Options& options) {
  Options o = options;
  std::ostringstream os;
  os << "# " << version_string() << " options (read back with --config)\n";
  Group current = Group::kParallel;
  bool first = true;
  for_each_option(o, [&](const char* name, auto& field, const char*, Group g) {
    if (first || g != current) os << "\n# " << group_title(g) << "\n";
    first = false;
    current = g;
    os << name << " = " << to_text(field) << "\n";
  });
  return os.str();
}

}  // namespace ov
