#include "openvid/train/run_start.h"

#include <iomanip>
#include <iostream>

#include "openvid/model/flops.h"
#include "openvid/train/optimizer.h"
#include "openvid/train/run_log.h"

namespace ov::train {

RunEnd run_end(const Options& opt, const data::Sampler& sampler) {
  const int64_t epoch_cap = sampler.steps_until_epoch(opt.num_epochs);
  const data::EpochStart& start = sampler.start();
  const bool continued = start.step > 0 || start.epoch > 0;  // a resume that changed the batches continues an epoch
  RunEnd end;
  end.last_step = std::min(opt.max_steps, epoch_cap);
  end.capped = epoch_cap < opt.max_steps;
  end.reason = !end.capped ? "--max_steps " + std::to_string(opt.max_steps)
               : continued ? "the epoch cap: --num_epochs " + std::to_string(opt.num_epochs) + " (epoch " + std::to_string(start.epoch) +
                                 " continued from step " + std::to_string(start.step) + " in " + std::to_string(sampler.steps_in_epoch(start.epoch)) +
                                 " steps, then " + std::to_string(sampler.steps_per_epoch()) + " steps per epoch) = " + std::to_string(epoch_cap) +
                                 " steps, before --max_steps " + std::to_string(opt.max_steps)
                           : "the epoch cap: --num_epochs " + std::to_string(opt.num_epochs) + " x " + std::to_string(sampler.steps_per_epoch()) +
                                 " steps per epoch = " + std::to_string(epoch_cap) + " steps, before --max_steps " + std::to_string(opt.max_steps);
  return end;
}

std::string epoch_coverage(const data::Sampler& s, const data::Manifest& m) {
  const auto count = [](int64_t n, const std::string& what) { return std::to_string(n) + " " + what + (n == 1 ? "" : "s"); };
  int64_t samples = 0, left_out = 0, padded = 0, unused = 0;  // left_out: remainders; unused: all not trained
  std::string never;  // buckets no batch of an epoch holds
  for (int64_t b = 0; b < s.buckets(); ++b) {
    const auto n = static_cast<int64_t>(s.training(b).size());
    samples += n;
    unused += s.left_out(b);
    if (s.global_batch(b) > 0) left_out += s.left_out(b);
    padded += s.padded_batches(b);
    if (s.batches(b) > 0) continue;
    const data::Bucket& bucket = m.buckets[static_cast<size_t>(b)];
    never += (never.empty() ? "" : ", ") + bucket.name + " (" +
             (n == 0                    ? count(bucket.count, "sample") + ", all held out"
              : s.global_batch(b) == 0 ? count(n, "training sample") + ", over the token budget"
                                       : count(n, "training sample") + ", fewer than the global batch of " + std::to_string(s.global_batch(b))) +
             ")";
  }
  std::string line = "epoch: " + std::to_string(samples - unused) + " of " + count(samples, "training sample") + " in " +
                     count(s.steps_per_epoch(), "step");
  if (left_out > 0) line += "; " + std::to_string(left_out) + " left out (each bucket's last, smaller batch: --drop_remainder)";
  if (padded > 0) {
    line += "; " + std::to_string(padded) + (padded == 1 ? " bucket ends" : " buckets end") +
            " in a smaller batch, padded to the global batch (the loss counts only its real samples)";
  }
  if (!never.empty()) line += "; never trained: " + never;
  return line;
}

void print_run_start(const Options& opt, const Universe& u, const RunData& data, const ComputeSetup& compute,
                     const RunModel& model, const RunEnd& end, double peak, const std::string& run_dir) {
  const int64_t per_epoch = data.sampler->steps_per_epoch();
  std::cout << "training " << model::parameter_count(opt.model) / 1e6 << "M parameters for " << opt.max_steps << " steps: " << per_epoch
            << " steps per epoch, global batch "
            << (opt.batch_tokens > 0 ? "by token budget" : std::to_string(int64_t{opt.batch_size} * u.num_data_ranks())) << " ("
            << (opt.batch_tokens > 0 ? "--batch_tokens " + std::to_string(opt.batch_tokens) : std::to_string(opt.batch_size)) << " per data rank x "
            << u.num_data_ranks() << "), " << c10::toString(compute.dtype) << " compute on " << device_name(compute.device)
            << ", run directory " << run_dir << "\n"
            << epoch_coverage(*data.sampler, data.dataset->manifest()) << "\n";
  if (!data.batches.table.empty()) std::cout << data.batches.table << " (" << run_dir << "/batch_sizes.json)\n";
  const parallel::ShardMemory mem = model.sharded->memory();
  std::cout << std::fixed << std::setprecision(2) << "sharded state per rank (1/" << u.mesh().shard_size() << "): masters "
            << mem.master_bytes / 1e6 << " MB, gradients " << mem.grad_bytes / 1e6 << " MB, Adam moments " << mem.optimizer_bytes / 1e6
            << " MB; gathered parameters " << mem.gathered_bytes / 1e6 << " MB\n" << std::defaultfloat;
  if (!model.float8.empty()) std::cout << model.float8 << "\n";
  if (end.capped) {
    int64_t epochs_needed = opt.num_epochs;
    while (data.sampler->steps_until_epoch(epochs_needed) < opt.max_steps) ++epochs_needed;
    std::cout << std::scientific << std::setprecision(2) << "note: the run will end at step " << end.last_step << ", at " << end.reason
              << "; the learning-rate schedule runs to max_steps, so it ends at lr "
              << opt.learning_rate * lr_multiplier(opt.lr_scheduler_type, end.last_step - 1, opt.max_steps, opt.warmup_steps)
              << " (--num_epochs " << epochs_needed << " trains to max_steps)\n" << std::defaultfloat;
  }
  if (compute.device.is_cuda() && peak == 0) {
    std::cout << "no peak TFLOP/s known for " << device_name(compute.device) << ": logs show no MFU (set --peak_tflops)\n";
  }
  std::cout << std::flush;
}

}  // namespace ov::train
