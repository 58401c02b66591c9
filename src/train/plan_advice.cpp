#include "openvid/train/plan_advice.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <sstream>

#include "openvid/runtime/error.h"

namespace ov::train {
namespace {

constexpr double kHbmBytesPerSecond = 2.5e12;    // what the optimizer's pass over the shards achieves on an H100 (of 3.35 TB/s)
constexpr double kOptimizerBytesPerElement = 30;  // master, gradient, two moments read; master, moments, compute copy written

}  // namespace

std::vector<LayoutPrediction> predict_layouts(const Options& o, const data::Manifest& m, const PlanTarget& t, const Network& net,
                                              double peak_tflops) {
  if (!t.gpu) throw InputError("--plan predicts GPU jobs: give --plan_world (the job's GPUs) and leave out --device cpu");
  const double rate = peak_tflops * 1e12 * o.plan_efficiency;
  std::vector<LayoutPrediction> out;
  for (int cp = 1; cp <= t.world; ++cp) {
    for (int fs = 1; fs * cp <= t.world; ++fs) {
      if (t.world % (fs * cp) != 0) continue;
      for (int recompute : {0, 2, 1}) {
        Options lo = o;
        lo.fs = fs;
        lo.cp = cp;
        lo.model.recompute_every = recompute;
        JobPlan p;
        try {
          p = plan_job(lo, m, t);
        } catch (const InputError&) {
          continue;  // cp does not split some bucket's time tokens, or another rule of the launch
        }
        LayoutPrediction r{p.dp, p.fs, p.cp, recompute};
        const int shard = fs * cp, data_ranks = p.dp * p.fs;
        r.memory = p.peak();
        r.fits = r.memory <= 0.95 * t.gpu_memory_gb * 1e9;
        const int64_t depth = o.model.depth;
        const double recomputed = recompute > 0 ? static_cast<double>((depth + recompute - 1) / recompute) / static_cast<double>(depth) : 0.0;
        const bool shard_inside = t.within_node(shard), cp_inside = t.within_node(cp), dp_inside = t.within_node(p.dp, shard);
        const double units = static_cast<double>(p.units);
        const double optimizer = static_cast<double>(p.state.masters) / 4 * kOptimizerBytesPerElement / kHbmBytesPerSecond;
        double weight = 0, time = 0, compute = 0, exposed = 0, tokens = 0, useful = 0;
        for (size_t b = 0; b < p.buckets.size(); ++b) {
          const BucketPlan& bp = p.buckets[b];
          if (bp.per_rank == 0) continue;
          const int64_t global = bp.per_rank * data_ranks;
          const double training = static_cast<double>(m.buckets[b].count) * (1 - o.heldout_fraction);
          const double steps = std::max(1.0, std::ceil(training / static_cast<double>(global)));  // this bucket's steps per epoch
          r.global_batch = std::max(r.global_batch, global);
          const double flops = bp.flops / t.world;  // each rank computes its share: its samples, its time slice
          const double forward = flops / 3 / rate, fb = flops / rate + recomputed * forward;
          const double backward = fb - forward;
          const GroupBytes& g = bp.bytes;
          // One collective per unit (and per micro-batch for the reduce-scatters): each pays the ring's latency.
          const double reductions = units * (shard > 1 ? static_cast<double>(o.grad_accum) : 1.0);
          const double gather = units * collective_seconds(Collective::kAllGather, g.shard_gather / units, shard, !shard_inside, net);
          const double reduce = reductions * collective_seconds(Collective::kReduceScatter, g.shard_reduce / reductions, shard, !shard_inside, net);
          const double dp = units * collective_seconds(Collective::kAllReduce, g.dp / units, p.dp, !dp_inside, net);
          // The cp exchange: 2 gathers per block forward (4 for a recomputed one), 2 reduce-scatters per block backward, each waited for.
          const double exchanges = static_cast<double>(o.grad_accum) * static_cast<double>(depth) * (4 + 2 * recomputed);
          const double cp_latency = (cp_inside ? net.nvlink_latency_us : net.network_latency_us) * 1e-6 * (cp - 1);
          const double cpx = collective_seconds(Collective::kAllGather, g.cp, cp, !cp_inside, net) + (exchanges - 1) * cp_latency * (cp > 1);
          const double world = collective_seconds(Collective::kAllReduce, g.world, t.world, t.world > (t.gpus_per_node > 0 ? t.gpus_per_node : t.world), net);
          // The step ends waiting for the root unit's gather; each block waits for its own in the next forward,
          // so the blocks' gathers run behind the blocks before them (the first block's is exposed). The
          // reduce-scatters run under the backward; what exceeds it, or the last unit's, is exposed.
          double hidden_gather = 0, hidden_reduce = 0;
          if (shard > 1) {
            const double root = gather * g.shard_gather_root / g.shard_gather, blocks = gather - root;
            hidden_gather = root + std::max(blocks / (units - 1), blocks - forward);
            hidden_reduce = std::max(reduce / units, reduce - backward);
          }
          // The replicas' all-reduce of each unit's gradient runs under the backward too (after the unit's
          // reduce-scatter when the shard group has several ranks): the last unit's is exposed.
          const double dp_exposed = std::max(dp / units, dp - backward);
          const double step_exposed = hidden_gather + hidden_reduce + dp_exposed + cpx + world;
          const double step = fb + optimizer + step_exposed;
          weight += steps;
          time += steps * step;
          compute += steps * (fb + optimizer);
          exposed += steps * step_exposed;
          tokens += steps * static_cast<double>(global) * static_cast<double>(bp.tokens);
          useful += steps * flops;
        }
        if (weight == 0) continue;
        r.step_s = time / weight;
        r.compute_s = compute / weight;
        r.exposed_s = exposed / weight;
        r.tokens_per_s = tokens / time;
        r.mfu = useful / time / (peak_tflops * 1e12);
        out.push_back(r);
      }
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const LayoutPrediction& a, const LayoutPrediction& b) {
    if (a.fits != b.fits) return a.fits;
    return a.fits ? a.tokens_per_s > b.tokens_per_s : a.memory < b.memory;
  });
  return out;
}

std::string advice_report(const Options& o, const PlanTarget& t, const Network& net, double peak_tflops,
                          const std::vector<LayoutPrediction>& layouts) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(1);
  os << "layout advice for " << t.world << " GPUs (" << t.gpus_per_node << " per node, " << t.gpu_memory_gb << " GB each), predicted: products at "
     << peak_tflops << " TFLOP/s x " << std::setprecision(2) << o.plan_efficiency << std::setprecision(1) << " per GPU; NVLink "
     << net.nvlink_gbps << " GB/s and " << net.nvlink_latency_us << " us per ring step inside a node, " << net.network_gbps << " GB/s per GPU and "
     << net.network_latency_us << " us across nodes; per step, averaged over an epoch's buckets\n";
  os << "| dp | fs | cp | recompute_every | global batch | memory GB | fits | compute ms | exposed comm ms | step ms | MFU | tokens/s | |\n";
  os << "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  const auto configured = [&](const LayoutPrediction& l) { return l.fs == o.fs && l.cp == o.cp && l.recompute_every == o.model.recompute_every; };
  size_t shown = 0;
  for (size_t i = 0; i < layouts.size(); ++i) {
    const LayoutPrediction& l = layouts[i];
    if (shown >= 12 && !configured(l)) continue;
    ++shown;
    std::string mark = i == 0 && l.fits ? "best" : "";
    if (configured(l)) mark += std::string(mark.empty() ? "" : ", ") + "as configured";
    os << "| " << l.dp << " | " << l.fs << " | " << l.cp << " | " << l.recompute_every << " | " << l.global_batch << " | " << l.memory / 1e9 << " | "
       << (l.fits ? "yes" : "no") << " | " << l.compute_s * 1e3 << " | " << l.exposed_s * 1e3 << " | " << l.step_s * 1e3 << " | "
       << 100 * l.mfu << "% | " << std::setprecision(0) << l.tokens_per_s << std::setprecision(1) << " | " << mark << " |\n";
  }
  if (layouts.empty() || !layouts.front().fits) {
    os << "no layout fits " << t.gpu_memory_gb << " GB per GPU: the smallest needs " << (layouts.empty() ? 0.0 : layouts.front().memory / 1e9)
       << " GB; a smaller batch per data rank (--batch_size, --batch_tokens) or --grad_accum cuts the activations\n";
  }
  if (layouts.size() > shown) os << "(" << layouts.size() - shown << " more layouts not shown)\n";
  if (!layouts.empty() && layouts.front().fits) {
    const LayoutPrediction& b = layouts.front();
    os << "to measure the best layout's step on one GPU, all but the network (docs/planning.md): the same options with --emulate_world " << t.world
       << " --plan_gpus_per_node " << t.gpus_per_node << " --fs " << b.fs << " --cp " << b.cp << " --recompute_every " << b.recompute_every
       << " --max_steps 20\n";
  }
  return os.str();
}

}  // namespace ov::train
