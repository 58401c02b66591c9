// The rules a configuration must meet (Options and ModelConfig): each broken one is an InputError naming the
// option, what it must be and what it got, before anything runs.
#include <initializer_list>
#include <sstream>

#include "openvid/config/options.h"
#include "openvid/runtime/error.h"

namespace ov {

std::pair<int64_t, int64_t> parse_step_range(const std::string& text) {
  int64_t a = -1, b = -1;
  char colon = 0;
  std::istringstream in(text);
  if (!(in >> a >> colon >> b) || colon != ':' || !in.eof() || a < 0 || b <= a) {
    throw InputError("--profile_steps must be FIRST:END with 0 <= FIRST < END, e.g. 2:4 traces steps 2 and 3 (got '" + text + "')");
  }
  return {a, b};
}

namespace {

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

}  // namespace

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
                 {"fp8_min_features", double(o.fp8_min_features), 0},
                 {"seed", double(o.seed), 0}, {"weight_decay", o.weight_decay, 0}, {"max_steps", double(o.max_steps), 1},
                 {"max_nonfinite_steps", double(o.max_nonfinite_steps), 1}, {"log_every", double(o.log_every), 1},
                 {"checkpoint_every", double(o.checkpoint_every), 0}, {"keep_checkpoints", double(o.keep_checkpoints), 1}});
  need(o.collective_timeout > 0, "collective_timeout", "must be > 0 seconds", o.collective_timeout);
  need(o.batch_tokens >= 0, "batch_tokens", "must be >= 0 (0: batches of --batch_size)", o.batch_tokens);
  need(o.plan_world >= 0, "plan_world", "must be >= 0 (0: this launch's ranks)", o.plan_world);
  need(o.emulate_world >= 0, "emulate_world", "must be >= 0 (0: off)", o.emulate_world);
  if (o.emulate_world > 0 && (o.dry_run || o.plan)) {
    throw InputError("--emulate_world runs a job's rank 0 and --dry_run/--plan only plans it: give one of them (--dry_run --plan_world " +
                     std::to_string(o.emulate_world) + " plans the same job)");
  }
  if (o.emulate_world > 0 && !o.resume.empty()) {
    throw InputError("--emulate_world cannot --resume: an emulated rank writes no checkpoints, and a real job's checkpoint is every "
                     "rank's shards; start it fresh (it measures steps, it does not train a model to keep)");
  }
  need(o.plan_gpus_per_node >= 0, "plan_gpus_per_node", "must be >= 0 (0: 8)", o.plan_gpus_per_node);
  need(o.plan_gpu_memory > 0, "plan_gpu_memory", "must be > 0 GB (an H100 has 80, an H200 141)", o.plan_gpu_memory);
  need(o.plan_efficiency > 0 && o.plan_efficiency <= 1, "plan_efficiency", "must be in (0, 1]", o.plan_efficiency);
  need(o.plan_nvlink_gbps > 0, "plan_nvlink_gbps", "must be > 0", o.plan_nvlink_gbps);
  need(o.plan_network_gbps > 0, "plan_network_gbps", "must be > 0", o.plan_network_gbps);
  need(o.plan_nvlink_latency_us >= 0 && o.plan_network_latency_us >= 0, "plan_nvlink_latency_us", "latencies must be >= 0",
       o.plan_nvlink_latency_us);
  need(o.batch_cost == "tokens" || o.batch_cost == "attention" || o.batch_cost == "flops", "batch_cost", "must be tokens, attention or flops",
       o.batch_cost);
  if (o.batch_tokens > 0 && o.batch_size != Options{}.batch_size) {
    throw InputError("--batch_size " + std::to_string(o.batch_size) + " and --batch_tokens " + std::to_string(o.batch_tokens) +
                     " are both given (a config file counts): give one of them");
  }
  need(o.batch_tokens > 0 || o.batch_size % o.grad_accum == 0, "grad_accum",
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

}  // namespace ov
