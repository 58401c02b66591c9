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

// Runs the comparison for every cp layout of this world size with the model computing in `dtype`; the
// relative errors allowed are `tolerance`. Returns the layouts checked.
int check_cp_layouts(at::ScalarType dtype, double tolerance) {
  const int world = ov::world_size();
  int checked = 0;
  for (auto [fs, cp] : layouts_for(world)) {
    if (fs != 1 || 8 % cp != 0) continue;  // the sample below has 8 time tokens
    ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, 1, cp, ov::DeviceRequest::kCpu);
    auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));
    for (const ov::RopeLayout layout : {ov::RopeLayout::kAligned, ov::RopeLayout::kSeed}) {
      ov::model::DiT model(tiny_model_config(true, layout));
      randomize_parameters(*model, 3);
      model->set_compute_dtype(dtype);
      at::Generator g = at::make_generator<at::CPUGeneratorImpl>(11);  // same inputs on every rank
      const at::Tensor x = at::normal(0, 1, {2, 4, 16, 4, 6}, g), text = at::normal(0, 1, {2, 5, 24}, g);
      const at::Tensor t = at::rand({2}, g), probe = at::normal(0, 1, x.sizes(), g);
      const std::array<int64_t, 3> offset{3, 1, 2};

      // Single-rank reference over the whole sample.
      const at::Tensor v_ref = model->forward(x, text, t, offset).to(at::kFloat);
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
      const at::Tensor v = model->forward_window(x_local, text, t, w).to(at::kFloat);
      BOOST_CHECK_LT(rel_err(v, v_ref.narrow(2, c * tokens * 2, tokens * 2)), tolerance);
      (v * probe.narrow(2, c * tokens * 2, tokens * 2)).sum().backward();
      size_t i = 0;
      for (auto& p : model->parameters()) {
        at::Tensor grad = p.grad().defined() ? p.grad().clone() : at::zeros_like(p);
        groups.cp().all_reduce(grad, ov::comm::ReduceOp::kSum).wait();  // what the shard reduction sums
        BOOST_CHECK_MESSAGE(rel_err(grad, g_ref[i]) < tolerance, ov::to_string(layout) << " cp=" << cp << " " << c10::toString(dtype)
                                                                                         << " parameter " << i << ": " << rel_err(grad, g_ref[i]));
        ++i;
      }
      ++checked;
    }
    groups.finalize();
  }
  return checked;
}

}  // namespace

BOOST_AUTO_TEST_CASE(cp_forward_and_gradients_equal_the_single_rank_ones) { BOOST_CHECK_GT(check_cp_layouts(at::kFloat, 1e-5), 0); }

// The same in bf16, as the GPU trains: every cp layout equals one rank within bf16's rounding (the key and
// value gradients are summed over the cp group in fp32, see the next test).
BOOST_AUTO_TEST_CASE(bf16_cp_equals_one_rank_within_bf16_rounding) { BOOST_CHECK_GT(check_cp_layouts(at::kBFloat16, 2e-2), 0); }

// The key/value gradients of the cp ranks are added in fp32 and rounded to the compute dtype once: each
// rank's share equals bf16(sum over ranks of fp32(gradient)) bit for bit. (Summed in bf16, every addition
// after the first would round: at cp 4 most elements differ.)
BOOST_AUTO_TEST_CASE(key_value_gradients_are_summed_over_the_cp_group_in_fp32) {
  const int world = ov::world_size(), me = ov::world_rank();
  ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, 1, world, ov::DeviceRequest::kCpu);
  auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));
  const int64_t B = 2, H = 3, n = 5, D = 16;  // this rank's n tokens of keys [B, H, n, D]
  at::Generator gx = at::make_generator<at::CPUGeneratorImpl>(100 + me);
  const at::Tensor x = at::normal(0, 1, {B, H, n, D}, gx).to(at::kBFloat16).requires_grad_(true);
  const at::Tensor all = ov::parallel::gather_tokens(groups.cp(), x);  // [B, H, world * n, D]
  BOOST_CHECK_EQUAL(all.size(2), world * n);
  // Every rank's gradient of the gathered keys, drawn from its rank's seed (so each rank can compute them all).
  auto upstream = [&](int r) {
    at::Generator gg = at::make_generator<at::CPUGeneratorImpl>(200 + r);
    return at::normal(0, 1, {B, H, world * n, D}, gg).to(at::kBFloat16);
  };
  all.backward(upstream(me));
  at::Tensor sum = at::zeros({B, H, world * n, D}, at::kFloat);
  for (int r = 0; r < world; ++r) sum += upstream(r).to(at::kFloat);
  const at::Tensor expected = sum.narrow(2, me * n, n).to(at::kBFloat16);
  BOOST_CHECK_EQUAL(x.grad().scalar_type(), at::kBFloat16);
  const int64_t differ = x.grad().ne(expected).sum().item<int64_t>();
  BOOST_CHECK_MESSAGE(differ == 0, differ << " of " << expected.numel() << " key gradients differ from the fp32 sum rounded once (cp " << world << ")");
  groups.finalize();
}
