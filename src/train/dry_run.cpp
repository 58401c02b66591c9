#include <algorithm>
#include <iostream>

#include "openvid/data/manifest.h"
#include "openvid/data/synthetic.h"
#include "openvid/runtime/device.h"
#include "openvid/runtime/error.h"
#include "openvid/runtime/mpi_session.h"
#include "openvid/train/plan.h"
#include "openvid/train/plan_advice.h"

namespace ov::train {
namespace {
constexpr double kH100PeakTflops = 989.4;  // dense bf16, H100 SXM: the plan's compute rate unless --peak_tflops
}  // namespace

double planned_peak_tflops(const Options& o) { return o.peak_tflops > 0 ? o.peak_tflops : kH100PeakTflops; }

data::Manifest planned_manifest(const Options& o) {
  if (o.dataset.empty()) throw InputError("no dataset: pass --dataset PATH (a dataset.json or its directory) or --dataset fake");
  if (o.dataset != "fake") return data::read_manifest(o.dataset);
  const auto shape = data::parse_latent_shape(o.fake_latent_shape, "--fake_latent_shape");
  data::Manifest m;
  m.latent_channels = o.model.in_channels;
  m.text_tokens = o.fake_text_tokens;
  m.text_dim = o.model.text_dim;
  data::Bucket b;
  b.frames = shape[0];
  b.height = shape[1];
  b.width = shape[2];
  b.name = data::bucket_name(b.frames, b.height, b.width);
  b.count = o.fake_samples;
  m.buckets.push_back(b);
  return m;
}

PlanTarget plan_target(const Options& o, int launched) {
  PlanTarget t;
  t.world = o.plan_world > 0 ? o.plan_world : launched;
  t.gpu = o.device == DeviceRequest::kCuda || (o.device == DeviceRequest::kAuto && (o.plan_world > 0 || visible_gpus() > 0));
  if (t.gpu) {
    t.gpus_per_node = planned_gpus_per_node(o, t.world);
    t.gpu_memory_gb = o.plan_gpu_memory;
  }
  return t;
}

int planned_gpus_per_node(const Options& o, int world) { return o.plan_gpus_per_node > 0 ? o.plan_gpus_per_node : std::min(8, world); }

Network planned_network(const Options& o) {
  return Network{o.plan_nvlink_gbps, o.plan_network_gbps, o.plan_nvlink_latency_us, o.plan_network_latency_us};
}

int dry_run(const Options& o, MPI_Comm world) {
  int launched = 1;
  OV_MPI_CHECK(MPI_Comm_size(world, &launched));
  std::string report;
  root_check(world, [&] {
    const data::Manifest manifest = planned_manifest(o);
    const PlanTarget target = plan_target(o, launched);
    const JobPlan plan = plan_job(o, manifest, target);
    report = plan_report(o, manifest, target, plan);
    if (!plan.batches_table.empty()) report += plan.batches_table + "\n";
    if (o.plan) {
      const Network net = planned_network(o);
      const double peak = planned_peak_tflops(o);
      report += advice_report(o, target, net, peak, predict_layouts(o, manifest, target, net, peak));
    }
  });
  int rank = 0;
  OV_MPI_CHECK(MPI_Comm_rank(world, &rank));
  if (rank == 0) std::cout << report << std::flush;
  return kExitOk;
}

}  // namespace ov::train
