#include "openvid/train/resume.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <vector>

#include "openvid/runtime/error.h"
#include "openvid/train/optimizer.h"

namespace ov::train {

namespace {

// How the data order goes on (Sampler::resume has run): "" when the checkpoint's own sequence continues.
std::string order_change(const CheckpointState& st, const data::Sampler& s, bool resumed, bool rule_changed) {
  const std::string epochs = "epochs of " + std::to_string(s.steps_per_epoch()) + " steps";
  if (!st.sampler) {
    return rule_changed ? "the checkpoint keeps no sampler state (an older version wrote it): the epoch goes on by step count, so its "
                          "remaining steps may repeat or miss samples; " + epochs
                        : "";
  }
  if (!resumed) return "the checkpoint's sampler state does not fit this dataset: the epoch goes on by step count; " + epochs;
  if (s.same_rule(*st.sampler)) return "";
  int64_t taken = 0, total = 0;
  for (int64_t b = 0; b < s.buckets(); ++b) {
    taken += s.start().consumed[static_cast<size_t>(b)];
    total += static_cast<int64_t>(s.training(b).size());
  }
  if (taken == 0) return "epoch " + std::to_string(s.start().epoch) + " starts afresh in the new batches: " + epochs;
  return "epoch " + std::to_string(s.start().epoch) + " continues with the " + std::to_string(total - taken) + " of its " + std::to_string(total) +
         " training samples not yet taken, in " + std::to_string(s.steps_in_epoch(s.start().epoch)) + " steps of the new batches (every sample "
         "still once per epoch), then " + epochs;
}

}  // namespace

std::string resume_changes(const CheckpointState& st, const Options& now, int64_t data_ranks_now, const data::Sampler& sampler,
                           bool sampler_resumed) {
  Options before;
  try {
    before = options_from_ini(st.options_ini, "the checkpoint's options");
  } catch (const InputError&) {
    return "";  // written by another version: nothing to compare with
  }
  // Written before remainders were trained: its epochs left each bucket's remainder out.
  if (st.options_ini.find("\ndrop_remainder =") == std::string::npos) before.drop_remainder = true;
  std::vector<std::string> changes;
  const bool tokens = before.batch_tokens > 0 || now.batch_tokens > 0;
  const auto budget = [](const Options& o, int64_t ranks) {
    return o.batch_tokens > 0 ? "--batch_tokens " + std::to_string(o.batch_tokens) + " x " + std::to_string(ranks) + " data ranks"
                              : std::to_string(int64_t{o.batch_size} * ranks) + " samples";
  };
  bool rule_changed = false;
  if (tokens && st.data_ranks > 0 && (before.batch_tokens != now.batch_tokens || st.data_ranks != data_ranks_now)) {
    changes.push_back("global batch " + budget(before, st.data_ranks) + " -> " + budget(now, data_ranks_now) + " (each bucket's batch size changes)");
    rule_changed = true;
  }
  const int64_t batch_before = int64_t{before.batch_size} * st.data_ranks, batch_now = int64_t{now.batch_size} * data_ranks_now;
  if (!tokens && st.data_ranks > 0 && batch_before != batch_now) {
    changes.push_back("global batch " + std::to_string(batch_before) + " -> " + std::to_string(batch_now) + " (each step now averages " +
                      std::to_string(batch_now) + " samples)");
    rule_changed = true;
  }
  if (before.drop_remainder != now.drop_remainder) {
    changes.push_back(now.drop_remainder ? "each bucket's remainder now left out (--drop_remainder)"
                                         : "each bucket's remainder now trained in a padded batch (the checkpoint's run left it out: "
                                           "--drop_remainder keeps that)");
    rule_changed = true;
  }
  const std::string order = order_change(st, sampler, sampler_resumed, rule_changed);
  if (!order.empty()) changes.push_back(order);
  std::string length;
  if (before.max_steps != now.max_steps) length = "max_steps " + std::to_string(before.max_steps) + " -> " + std::to_string(now.max_steps);
  if (before.num_epochs != now.num_epochs) {
    length += (length.empty() ? "" : ", ") + std::string("num_epochs ") + std::to_string(before.num_epochs) + " -> " + std::to_string(now.num_epochs);
  }
  if (!length.empty()) {
    changes.push_back(length + " (the run now ends at step " + std::to_string(std::min(now.max_steps, sampler.steps_until_epoch(now.num_epochs))) + ")");
  }
  if (before.precision != now.precision) {
    changes.push_back("precision " + std::string(to_string(before.precision)) + " -> " + to_string(now.precision) +
                      " (masters, moments and checkpoints are the same in every precision: only the arithmetic of the steps changes)");
  }
  if (before.precision == Precision::kFp8 && now.precision == Precision::kFp8 && before.fp8_recipe != now.fp8_recipe) {
    changes.push_back(std::string("float8 recipe ") + to_string(before.fp8_recipe) + " -> " + to_string(now.fp8_recipe) +
                      " (only the arithmetic of the steps changes)");
  }
  const int64_t step = st.next_step;
  const double lr_before = before.learning_rate * lr_multiplier(before.lr_scheduler_type, step, before.max_steps, before.warmup_steps);
  const double lr_now = now.learning_rate * lr_multiplier(now.lr_scheduler_type, step, now.max_steps, now.warmup_steps);
  if (std::abs(lr_now - lr_before) > 1e-9 * std::max(std::abs(lr_before), 1e-30)) {
    std::ostringstream os;
    os << std::scientific << std::setprecision(2) << "learning rate at step " << step << " jumps " << lr_before << " -> " << lr_now
       << " (schedule " << to_string(before.lr_scheduler_type) << " to " << before.max_steps << " steps, peak " << before.learning_rate
       << " -> " << to_string(now.lr_scheduler_type) << " to " << now.max_steps << " steps, peak " << now.learning_rate << ")";
    changes.push_back(os.str());
  }
  std::string line;
  for (const std::string& c : changes) line += (line.empty() ? "" : "; ") + c;
  return line;
}

CheckpointState resume_run(const std::string& path, RunModel& m, const Options& opt, const Universe& u, data::Sampler& sampler) {
  const CheckpointState st = read_checkpoint(path, *m.sharded, u);
  const bool resumed = st.sampler && sampler.resume(*st.sampler, st.next_step);  // every rank alike: a function of the state
  m.sharded->refresh_compute_copy();
  m.optimizer->set_steps(st.optimizer_steps);
  if (u.rank() == 0) {
    std::cout << "resuming from " << path << " at step " << st.next_step << "\n";
    if (m.sharded->has_ema() && !st.has_ema) std::cout << "note: the checkpoint has no moving average of the weights; it starts at its weights\n";
    if (!m.sharded->has_ema() && st.has_ema) std::cout << "note: --ema_decay is 0: the checkpoint's moving average of the weights is not continued\n";
    const std::string changes = resume_changes(st, opt, u.num_data_ranks(), sampler, resumed);
    if (!changes.empty()) std::cout << "note: this resume changes the run: " << changes << "\n";
    std::cout << std::flush;
  }
  return st;
}

}  // namespace ov::train
