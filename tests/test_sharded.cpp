#define BOOST_TEST_MODULE sharded_model
#include "mpi_fixture.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>

#include "openvid/comm/process_groups.h"
#include "openvid/model/dit.h"
#include "openvid/model/state_dict.h"
#include "openvid/parallel/sharded_model.h"
#include "openvid/runtime/mpi_session.h"
#include "openvid/train/optimizer.h"
#include "tiny_model.h"

// Sharded training equals unsharded training: on every layout (dp x fs x cp), each rank back-propagates
// its own loss; after reduce_gradients() and an AdamW step on the slices, the gathered parameters equal
// those of one model stepped with the sum of all ranks' gradients (what one rank holding the whole global
// batch computes), for three steps.

namespace {

struct Inputs {
  at::Tensor x, text, t, probe;
};

// Rank r's inputs, reproducible anywhere.
Inputs inputs_of(int rank, int step) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(1000 * step + rank);
  return {at::normal(0, 1, {1, 4, 4, 4, 6}, g), at::normal(0, 1, {1, 5, 24}, g), at::rand({1}, g),
          at::normal(0, 1, {1, 4, 4, 4, 6}, g)};
}

at::Tensor loss_of(ov::model::DiT& m, const Inputs& in) { return (m->forward(in.x, in.text, in.t) * in.probe).sum(); }


}  // namespace

BOOST_AUTO_TEST_CASE(sharded_steps_equal_unsharded_steps_on_every_layout) {
  const int world = ov::world_size(), me = ov::world_rank();
  // The spec's default (no attention biases): with bias_and_norm_affine, the key half of context_kv.bias
  // has an exactly-zero true gradient (softmax ignores a shift shared by all keys), so its gradient is
  // rounding noise that Adam normalises into full-size steps, different for any other summation order.
  const ov::ModelConfig cfg = tiny_model_config(false);
  for (auto [fs, cp] : layouts_for(world)) {
    BOOST_TEST_CONTEXT("fs=" << fs << " cp=" << cp) {
      ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, fs, cp, ov::DeviceRequest::kCpu);
      auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));

      // Reference: one unsharded model stepped with the sum of every rank's gradient.
      ov::model::DiT ref(cfg);
      randomize_parameters(*ref, 5);
      ov::train::AdamW ref_opt({0.95, 0.99, 1e-8});
      std::vector<at::Tensor> ref_grads;
      for (const auto& item : ref->named_parameters()) {
        ref_grads.push_back(at::zeros_like(item.value()));
        ref_opt.add_segment(item.key(), item.value().detach(), ref_grads.back(),
                            ov::train::mup_adam_rule(item.key(), item.value().sizes(), 0.1));
      }

      ov::model::DiT model(cfg);
      randomize_parameters(*model, 5);
      ov::parallel::ShardedModel sharded(*model, groups.shard(), groups.dp());
      BOOST_CHECK_EQUAL(sharded.num_units(), cfg.depth + 1);
      ov::train::AdamW opt({0.95, 0.99, 1e-8});
      sharded.add_to_optimizer(opt, 0.1);

      for (int step = 0; step < 3; ++step) {
        const double lr = 1e-2 * (step + 1);
        for (auto& g : ref_grads) g.zero_();
        for (int r = 0; r < world; ++r) {
          ref->zero_grad();
          loss_of(ref, inputs_of(r, step)).backward();
          size_t i = 0;
          for (auto& p : ref->parameters()) {
            if (p.grad().defined()) ref_grads[i] += p.grad();
            ++i;
          }
        }
        ref_opt.step(lr);

        sharded.gather();
        loss_of(model, inputs_of(me, step)).backward();
        sharded.reduce_gradients();
        BOOST_CHECK(sharded.gradients_finite());
        opt.step(lr);
      }
      sharded.gather();
      const auto got = ov::model::state_dict(*model), want = ov::model::state_dict(*ref);
      for (const auto& [name, w] : want) {
        const double err = (got.at(name) - w).abs().max().item<double>() / std::max(w.abs().max().item<double>(), 1e-12);
        BOOST_CHECK_MESSAGE(err < 1e-5, name << ": relative error " << err);
      }

      // Sharded state per rank falls as 1/(fs*cp) (up to the padding of each unit to a multiple).
      const ov::parallel::ShardMemory mem = sharded.memory();
      int64_t total = 0;
      for (const auto& p : model->parameters()) total += p.numel() * 4;
      const int64_t s = fs * cp;
      BOOST_CHECK_LE(mem.master_bytes, total / s + 4 * s * (cfg.depth + 1));
      BOOST_CHECK_GE(mem.master_bytes, total / s);
      BOOST_CHECK_EQUAL(mem.optimizer_bytes, 2 * mem.master_bytes);
      groups.finalize();
    }
  }
}

// The overlapped reduction (hooks launch each unit's reduce-scatter during backward) gives exactly what
// reduce_gradients() gives, also with two micro-batches, and from the second step on every unit is
// launched from the hooks.
BOOST_AUTO_TEST_CASE(reductions_launched_during_backward_equal_the_plain_ones) {
  const int world = ov::world_size(), me = ov::world_rank();
  const ov::ModelConfig cfg = tiny_model_config(true);
  for (auto [fs, cp] : layouts_for(world)) {
    ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, fs, cp, ov::DeviceRequest::kCpu);
    auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));
    ov::model::DiT a(cfg), b(cfg);
    randomize_parameters(*a, 9);
    randomize_parameters(*b, 9);
    ov::parallel::ShardedModel plain(*a, groups.shard(), groups.dp()), overlapped(*b, groups.shard(), groups.dp());
    ov::train::AdamW opt_a({0.95, 0.99, 1e-8}), opt_b({0.95, 0.99, 1e-8});
    plain.add_to_optimizer(opt_a, 0.1);
    overlapped.add_to_optimizer(opt_b, 0.1);
    for (int step = 0; step < 3; ++step) {
      plain.gather();
      overlapped.gather();
      for (int micro = 0; micro < 2; ++micro) {
        const Inputs in = inputs_of(2 * me + micro, step);
        loss_of(a, in).backward();
        if (micro == 1) overlapped.arm();
        loss_of(b, in).backward();
      }
      plain.reduce_gradients();
      overlapped.finish();
      if (step > 0) BOOST_CHECK_EQUAL(overlapped.units_launched_in_backward(), overlapped.num_units());
      opt_a.step(1e-2);
      opt_b.step(1e-2);
    }
    plain.gather();
    overlapped.gather();
    const auto wa = ov::model::state_dict(*a), wb = ov::model::state_dict(*b);
    for (const auto& [name, w] : wa) BOOST_CHECK_MESSAGE(at::equal(wb.at(name), w), "fs=" << fs << " cp=" << cp << " " << name);
    groups.finalize();
  }
}

// Gathering in bf16: the module's parameters are the bf16 rounding of the fp32 masters, the gathered
// memory halves, and the gradients still reach the fp32 slices (training moves the weights).
BOOST_AUTO_TEST_CASE(bf16_gathers_round_the_fp32_masters) {
  ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, ov::world_size(), 1, ov::DeviceRequest::kCpu);
  auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));
  const ov::ModelConfig cfg = tiny_model_config(false);
  ov::model::DiT ref(cfg), model(cfg);
  randomize_parameters(*ref, 4);
  randomize_parameters(*model, 4);
  const auto masters = ov::model::state_dict(*ref);
  ov::parallel::ShardedModel fp32(*ref, groups.shard(), groups.dp());
  ov::parallel::ShardedModel bf16(*model, groups.shard(), groups.dp(), at::kBFloat16);
  bf16.gather();
  model->set_compute_dtype(at::kBFloat16);
  for (const auto& [name, w] : ov::model::state_dict(*model)) {
    BOOST_CHECK(w.scalar_type() == at::kBFloat16);
    BOOST_CHECK_MESSAGE(at::equal(w, masters.at(name).to(at::kBFloat16)), name);
  }
  BOOST_CHECK_EQUAL(2 * bf16.memory().gathered_bytes, fp32.memory().gathered_bytes);
  ov::train::AdamW opt({0.95, 0.99, 1e-8});
  bf16.add_to_optimizer(opt, 0.1);
  loss_of(model, inputs_of(ov::world_rank(), 0)).backward();
  bf16.reduce_gradients();
  at::Tensor norm = at::full({1}, bf16.local_grad_norm_squared(), at::kDouble);
  groups.shard().all_reduce(norm, ov::comm::ReduceOp::kSum).wait();
  BOOST_CHECK_GT(norm.item<double>(), 0.0);  // the bf16 gradients reached the fp32 slices
  opt.step(1e-2);
  const auto before = bf16.full_masters();
  BOOST_CHECK(before.at("blocks.0.qkv.weight").scalar_type() == at::kFloat);
  BOOST_CHECK(!at::equal(before.at("blocks.0.qkv.weight"), masters.at("blocks.0.qkv.weight")));
  groups.finalize();
}
