#define BOOST_TEST_MODULE sharded_model
#include "mpi_fixture.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "openvid/comm/process_groups.h"
#include "openvid/model/dit.h"
#include "openvid/model/gradient_slots.h"
#include "openvid/model/state_dict.h"
#include "openvid/parallel/parallelize.h"
#include "openvid/parallel/shard_io.h"
#include "openvid/parallel/sharded_model.h"
#include "openvid/runtime/mpi_session.h"
#include "openvid/train/optimizer.h"
#include "sharded_checks.h"
#include "tiny_model.h"

// Sharded training computes what one rank holding the whole global batch computes: on every layout
// (dp x fs x cp) each rank back-propagates its own loss; the reduced gradient slices equal the sum of
// every rank's gradients, and an AdamW step on the slices equals the step of one unsharded model.
//
// What must agree is compared where it is computed: gradients after the reduction (summation order
// differs between layouts, so within fp32 rounding), and the optimizer step on identical gradients.
// Comparing weights only after several AdamW steps would let Adam's normalisation blow rounding noise
// of near-zero gradients up to full-size steps, different for every CPU's choice of kernels.

BOOST_AUTO_TEST_CASE(sharded_steps_equal_unsharded_steps_on_every_layout) {
  const int world = ov::world_size(), me = ov::world_rank();
  const ov::ModelConfig cfg = tiny_model_config(true);
  for (auto [fs, cp] : layouts_for(world)) {
    BOOST_TEST_CONTEXT("fs=" << fs << " cp=" << cp) {
      ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, fs, cp, ov::DeviceRequest::kCpu);
      auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));

      // Reference: one unsharded model stepped with the sum of every rank's gradient.
      ov::model::DiT ref(cfg);
      randomize_parameters(*ref, 5);
      ov::train::AdamW ref_opt({0.95, 0.99, 1e-8});
      std::map<std::string, at::Tensor> ref_grads;
      for (const auto& item : ref->named_parameters()) {
        ref_grads[item.key()] = at::zeros_like(item.value());
        ref_opt.add_segment(item.key(), item.value().detach(), ref_grads[item.key()],
                            ov::train::mup_adam_rule(item.key(), item.value().sizes(), 0.1));
      }

      ov::model::DiT model(cfg);
      randomize_parameters(*model, 5);
      ov::parallel::ShardedModel sharded(*model, groups.shard(), groups.dp());
      BOOST_CHECK_EQUAL(sharded.num_units(), cfg.depth + 1);
      ov::train::AdamW opt({0.95, 0.99, 1e-8});
      ov::train::add_shards(opt, sharded, 0.1);

      for (int step = 0; step < 3; ++step) {
        const double lr = 1e-2 * (step + 1);
        for (auto& [name, g] : ref_grads) g.zero_();
        for (int r = 0; r < world; ++r) {
          ref->zero_grad();
          loss_of(ref, inputs_of(r, step)).backward();
          for (const auto& item : ref->named_parameters()) {
            if (item.value().grad().defined()) ref_grads[item.key()] += item.value().grad();
          }
        }
        sharded.arm();
        loss_of(model, inputs_of(me, step)).backward();
        sharded.finish();
        // The reduced gradient is the sum over the world's ranks...
        const ov::model::TensorMap got = full_gradients(sharded);
        for (const auto& [name, want] : ref_grads) {
          const double err = relative_error(got.at(name), want);
          BOOST_CHECK_MESSAGE(err < 1e-5, "step " << step << " gradient of " << name << ": relative error " << err);
        }
        // ...and on the same gradients, the sharded step is the unsharded one.
        for (auto& [name, g] : ref_grads) g.copy_(got.at(name));
        ref_opt.step(lr);
        opt.step(lr);
        sharded.gather();
        const auto weights = ov::model::state_dict(*model), want = ov::model::state_dict(*ref);
        for (const auto& [name, w] : want) {
          const double err = relative_error(weights.at(name), w);
          BOOST_CHECK_MESSAGE(err < 1e-6, "step " << step << " weights of " << name << ": relative error " << err);
        }
      }

      // Sharded state per rank falls as 1/(fs*cp): the units' flat buffers split in equal slices, their
      // size the parameters' up to the alignment padding (under kAlignElements per parameter and slice).
      const ov::parallel::ShardMemory mem = sharded.memory();
      int64_t numel = 0, params = 0, padded = 0;
      for (const auto& p : model->parameters()) numel += p.numel();
      for (const auto& unit : sharded.units()) {
        padded += unit.padded;
        params += static_cast<int64_t>(unit.params.size());
      }
      const int64_t s = fs * cp, units = sharded.num_units();
      BOOST_CHECK_EQUAL(mem.master_bytes * s, 4 * padded);
      BOOST_CHECK_GE(padded, numel);
      BOOST_CHECK_LE(padded, numel + (params + units * s) * ov::parallel::kAlignElements);
      BOOST_CHECK_EQUAL(mem.optimizer_bytes, 2 * mem.master_bytes);
      groups.finalize();
    }
  }
}

// Every parameter the module computes with, and every rank's slice, starts at a multiple of
// kAlignElements elements of its buffer: cuBLAS runs its fast kernels only on aligned operands.
BOOST_AUTO_TEST_CASE(parameter_views_and_slices_are_aligned) {
  const int world = ov::world_size();
  ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, world, 1, ov::DeviceRequest::kCpu);
  auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    ov::model::DiT model(tiny_model_config(true));
    ov::parallel::ShardedModel sharded(*model, groups.shard(), groups.dp(), ov::parallel::ShardingOptions{dtype});
    const int64_t granule = ov::parallel::kAlignElements * static_cast<int64_t>(c10::elementSize(dtype));
    int checked = 0;
    for (size_t k = 0; k < sharded.units().size(); ++k) {
      const ov::parallel::UnitSlices& s = sharded.slices(k);
      const auto* base = static_cast<const char*>(s.full.data_ptr());
      BOOST_CHECK_EQUAL((static_cast<const char*>(s.own_full().data_ptr()) - base) % granule, 0);
      BOOST_CHECK_EQUAL(s.master.numel() % ov::parallel::kAlignElements, 0);
      for (size_t i = 0; i < sharded.units()[k].params.size(); ++i) {
        const at::Tensor view = sharded.units()[k].view(s.full, i);
        BOOST_CHECK_EQUAL((static_cast<const char*>(view.data_ptr()) - base) % granule, 0);
        ++checked;
      }
    }
    // ... and the module's own parameters are those views.
    for (const auto& p : model->parameters()) {
      BOOST_CHECK(p.scalar_type() == dtype);
      BOOST_CHECK_EQUAL(reinterpret_cast<uintptr_t>(p.data_ptr()) % 16, 0u);
    }
    BOOST_CHECK_GT(checked, 40);
  }
  groups.finalize();
}

// The reduction launched from the gradient hooks during backward gives exactly what the plain path
// (reduce_gradients() after backward) gives, also with two micro-batches, and from the second step on
// every unit is launched from the hooks.
BOOST_AUTO_TEST_CASE(reductions_launched_during_backward_equal_the_plain_ones) {
  const int world = ov::world_size(), me = ov::world_rank();
  const ov::ModelConfig cfg = tiny_model_config(true);
  for (auto [fs, cp] : layouts_for(world)) {
    ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, fs, cp, ov::DeviceRequest::kCpu);
    auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));
    ov::model::DiT a(cfg), b(cfg);
    randomize_parameters(*a, 9);
    randomize_parameters(*b, 9);
    ov::parallel::ShardedModel plain(*a, groups.shard(), groups.dp(), ov::parallel::ShardingOptions{at::kFloat, false});
    ov::parallel::ShardedModel overlapped(*b, groups.shard(), groups.dp());
    ov::train::AdamW opt_a({0.95, 0.99, 1e-8}), opt_b({0.95, 0.99, 1e-8});
    ov::train::add_shards(opt_a, plain, 0.1);
    ov::train::add_shards(opt_b, overlapped, 0.1);
    for (int step = 0; step < 3; ++step) {
      for (int micro = 0; micro < 2; ++micro) {
        const Inputs in = inputs_of(2 * me + micro, step);
        loss_of(a, in).backward();
        if (micro == 1) overlapped.arm();
        const int64_t dp_before = groups.dp().traffic(ov::comm::Communicator::kAllReduce).calls;
        loss_of(b, in).backward();
        // Shard and dp groups of several ranks: the replicas' all-reduce of a unit's slice starts during the
        // last micro-batch's backward, once the unit leaves the window of reductions in flight.
        const int64_t dp_started = groups.dp().traffic(ov::comm::Communicator::kAllReduce).calls - dp_before;
        if (micro == 1 && fs * cp > 1 && world / (fs * cp) > 1) BOOST_CHECK_GT(dp_started, 0);
        if (micro == 0) BOOST_CHECK_EQUAL(dp_started, 0);
      }
      plain.reduce_gradients();
      overlapped.finish();
      if (step > 0) BOOST_CHECK_EQUAL(overlapped.units_launched_in_backward(), overlapped.num_units());
      opt_a.step(1e-2);
      opt_b.step(1e-2);
      plain.gather();
      overlapped.gather();
    }
    const auto wa = ov::model::state_dict(*a), wb = ov::model::state_dict(*b);
    for (const auto& [name, w] : wa) BOOST_CHECK_MESSAGE(at::equal(wb.at(name), w), "fs=" << fs << " cp=" << cp << " " << name);
    groups.finalize();
  }
}

// The gathers of a step's end overlap the next forward: after gather_async() and the root's wait every
// block's units are still in flight (shard groups of several ranks), and the forward of
// parallelize_and_shard's model waits for each block's own before running it, so none is left after it;
// the parameters it used are the gathered ones (the same forward as after a complete gather()).
BOOST_AUTO_TEST_CASE(each_block_waits_for_its_own_gather) {
  const int world = ov::world_size(), me = ov::world_rank();
  const ov::ModelConfig cfg = tiny_model_config(true);
  ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, world, 1, ov::DeviceRequest::kCpu);
  auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));
  {
    ov::model::DiT m(cfg);
    randomize_parameters(*m, 9);
    auto sharded = ov::parallel::parallelize_and_shard(m, ov::parallel::Parallelism{&groups.cp(), 0}, groups.shard(), groups.dp(),
                                                       ov::parallel::ShardingOptions{});
    ov::train::AdamW opt({0.95, 0.99, 1e-8});
    ov::train::add_shards(opt, *sharded, 0.1);
    const Inputs in = inputs_of(me, 0);
    sharded->arm();
    loss_of(m, in).backward();
    sharded->finish();
    opt.step(1e-2);
    sharded->gather_async();
    sharded->wait_gathered_root();
    for (size_t k = 0; k < static_cast<size_t>(sharded->num_units()); ++k) {
      const bool block = sharded->units()[k].name != "root";
      BOOST_CHECK_EQUAL(sharded->gather_pending(k), block && world > 1);
    }
    const at::Tensor overlapped = [&] {
      c10::NoGradGuard no_grad;
      return m->forward(in.x, in.text, in.t);
    }();
    for (size_t k = 0; k < static_cast<size_t>(sharded->num_units()); ++k) BOOST_CHECK(!sharded->gather_pending(k));
    sharded->gather();
    c10::NoGradGuard no_grad;
    BOOST_CHECK(at::equal(m->forward(in.x, in.text, in.t), overlapped));
  }
  groups.finalize();
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
  ov::parallel::ShardedModel bf16(*model, groups.shard(), groups.dp(), ov::parallel::ShardingOptions{at::kBFloat16});
  bf16.gather();
  model->set_compute_dtype(at::kBFloat16);
  for (const auto& [name, w] : ov::model::state_dict(*model)) {
    BOOST_CHECK(w.scalar_type() == at::kBFloat16);
    BOOST_CHECK_MESSAGE(at::equal(w, masters.at(name).to(at::kBFloat16)), name);
  }
  BOOST_CHECK_EQUAL(2 * bf16.memory().gathered_bytes, fp32.memory().gathered_bytes);
  ov::train::AdamW opt({0.95, 0.99, 1e-8});
  ov::train::add_shards(opt, bf16, 0.1);
  bf16.arm();
  loss_of(model, inputs_of(ov::world_rank(), 0)).backward();
  bf16.finish();
  at::Tensor norm = bf16.grad_norm_squared().to(at::kDouble);
  groups.shard().all_reduce(norm, ov::comm::ReduceOp::kSum).wait();
  BOOST_CHECK_GT(norm.item<double>(), 0.0);  // the bf16 gradients reached the fp32 slices
  opt.step(1e-2);
  bf16.gather();
  const auto after = ov::parallel::full_masters(bf16);
  BOOST_CHECK(after.at("blocks.0.qkv.weight").scalar_type() == at::kFloat);
  BOOST_CHECK(!at::equal(after.at("blocks.0.qkv.weight"), masters.at("blocks.0.qkv.weight")));
  // The optimizer wrote the new weights' bf16 rounding into the module's parameters.
  for (const auto& [name, w] : ov::model::state_dict(*model)) {
    BOOST_CHECK_MESSAGE(at::equal(w, after.at(name).to(at::kBFloat16)), name << " is not the bf16 copy of its updated master");
  }
  groups.finalize();
}

// One backward per step on a shard group and dp group of one rank (single_backward): the model's linear
// layers write their gradients straight into the gradient slices (model/gradient_slots.h), which then hold
// exactly what the copied gradients of the general path hold, step after step, also when blocks are
// recomputed in backward (their backward runs inside the outer one).
BOOST_AUTO_TEST_CASE(gradients_written_in_place_equal_the_copied_ones) {
  ov::Universe u = ov::Universe::create(MPI_COMM_SELF, 1, 1, ov::DeviceRequest::kCpu);
  auto groups = ov::comm::ProcessGroups::create(u, ov::comm::Backend::kMpi, std::chrono::milliseconds(60000));
  for (const int recompute_every : {0, 2}) {
    ov::ModelConfig cfg = tiny_model_config(true);
    cfg.recompute_every = recompute_every;
    ov::model::DiT a(cfg), b(cfg);
    randomize_parameters(*a, 11);
    randomize_parameters(*b, 11);
    ov::parallel::parallelize(a, ov::parallel::Parallelism{nullptr, recompute_every});
    ov::parallel::parallelize(b, ov::parallel::Parallelism{nullptr, recompute_every});
    ov::parallel::ShardedModel copied(*a, groups.shard(), groups.dp(), ov::parallel::ShardingOptions{at::kFloat, true, false});
    ov::parallel::ShardedModel in_place(*b, groups.shard(), groups.dp(), ov::parallel::ShardingOptions{at::kFloat, true, true});
    const at::Tensor qkv = b->named_parameters()["blocks.0.qkv.weight"];  // block 0 is recomputed when recompute_every > 0
    for (int step = 0; step < 2; ++step) {
      const Inputs in = inputs_of(ov::world_rank(), step);
      copied.arm();
      loss_of(a, in).backward();
      copied.finish();
      in_place.arm();
      loss_of(b, in).backward();
      // The backward took the weight's slot (it is handed out once per step)...
      BOOST_CHECK(!ov::model::take_gradient_slot(qkv).defined());
      in_place.finish();
      // ...and finish() returned it for the next step.
      BOOST_CHECK(ov::model::take_gradient_slot(qkv).defined());
      ov::model::reset_gradient_slots({qkv});
      for (int64_t k = 0; k < copied.num_units(); ++k) {
        BOOST_CHECK_MESSAGE(at::equal(in_place.slices(k).grad, copied.slices(k).grad),
                            "recompute_every " << recompute_every << " step " << step << " unit " << k);
      }
    }
  }
}
