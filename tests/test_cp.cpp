#define BOOST_TEST_MODULE context_parallel
#include "mpi_fixture.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>

#include "openvid/comm/process_groups.h"
#include "openvid/model/dit.h"
#include "openvid/parallel/cp_attention.h"
#include "openvid/runtime/mpi_session.h"
#include "tiny_model.h"

// Context parallelism is exact: on every layout whose cp splits the sample's time tokens, each cp rank's
// forward over its time slice equals its slice of the single-rank forward, and the gradients summed over
// the cp group equal the single-rank gradients.

namespace {

double rel_err(const at::Tensor& a, const at::Tensor& b) {
  const double ref = b.norm().item<double>();
  return (a - b).norm().item<double>() / (ref > 0 ? ref : 1);
}


}  // namespace

BOOST_AUTO_TEST_CASE(cp_forward_and_gradients_equal_the_single_rank_ones) {
  const int world = ov::world_size();
  int checked = 0;
  for (auto [fs, cp] : layouts_for(world)) {
    if (fs != 1 || 8 % cp != 0) continue;  // the sample below has 8 time tokens
    ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, 1, cp, ov::DeviceRequest::kCpu);
    auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));
    for (const ov::RopeLayout layout : {ov::RopeLayout::kAligned, ov::RopeLayout::kSeed}) {
      ov::model::DiT model(tiny_model_config(true, layout));
      randomize_parameters(*model, 3);
      at::Generator g = at::make_generator<at::CPUGeneratorImpl>(11);  // same inputs on every rank
      const at::Tensor x = at::normal(0, 1, {2, 4, 16, 4, 6}, g), text = at::normal(0, 1, {2, 5, 24}, g);
      const at::Tensor t = at::rand({2}, g), probe = at::normal(0, 1, x.sizes(), g);
      const std::array<int64_t, 3> offset{3, 1, 2};

      // Single-rank reference over the whole sample.
      const at::Tensor v_ref = model->forward(x, text, t, offset);
      (v_ref * probe).sum().backward();
      std::vector<at::Tensor> g_ref;
      for (auto& p : model->parameters()) g_ref.push_back(p.grad().defined() ? p.grad().clone() : at::zeros_like(p));
      model->zero_grad();

      // This cp rank's slice: 8 time tokens / cp, 2 frames each.
      const int64_t tokens = 8 / cp, c = u.coord().cp;
      ov::model::TokenWindow w;
      w.t = 8, w.h = 2, w.w = 3, w.t_begin = c * tokens, w.t_count = tokens, w.offset = offset;
      model->set_self_attention(std::make_shared<ov::parallel::CpSelfAttention>(groups.cp(), 4));
      const at::Tensor x_local = x.narrow(2, c * tokens * 2, tokens * 2);
      const at::Tensor v = model->forward_window(x_local, text, t, w);
      BOOST_CHECK_LT(rel_err(v, v_ref.narrow(2, c * tokens * 2, tokens * 2)), 1e-5);
      (v * probe.narrow(2, c * tokens * 2, tokens * 2)).sum().backward();
      size_t i = 0;
      for (auto& p : model->parameters()) {
        at::Tensor grad = p.grad().defined() ? p.grad().clone() : at::zeros_like(p);
        groups.cp().all_reduce(grad, ov::comm::ReduceOp::kSum).wait();  // what the shard reduction sums
        BOOST_CHECK_MESSAGE(rel_err(grad, g_ref[i]) < 1e-5, ov::to_string(layout) << " cp=" << cp << " parameter " << i << ": "
                                                                     << rel_err(grad, g_ref[i]));
        ++i;
      }
      ++checked;
    }
    groups.finalize();
  }
  BOOST_CHECK_GT(checked, 0);
}
