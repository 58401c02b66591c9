#pragma once
// What the sharded-model suites (test_sharded.cpp, test_sharded_float8.cpp) share: each rank's reproducible
// inputs and loss, the reduced gradients gathered back to full size, one model's gradients summed over every
// rank's batch (what a sharded step must produce), and the relative error they are compared by.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <map>
#include <string>

#include "openvid/model/dit.h"
#include "openvid/model/state_dict.h"
#include "openvid/parallel/sharded_model.h"

namespace {

struct Inputs {
  at::Tensor x, text, t, probe;
};

// Rank r's inputs, reproducible anywhere.
inline Inputs inputs_of(int rank, int step) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(1000 * step + rank);
  return {at::normal(0, 1, {1, 4, 4, 4, 6}, g), at::normal(0, 1, {1, 5, 24}, g), at::rand({1}, g),
          at::normal(0, 1, {1, 4, 4, 4, 6}, g)};
}

inline at::Tensor loss_of(ov::model::DiT& m, const Inputs& in) { return (m->forward(in.x, in.text, in.t) * in.probe).sum(); }

// Collective over the shard group: the reduced gradient, full size, by parameter name.
inline ov::model::TensorMap full_gradients(const ov::parallel::ShardedModel& sharded) {
  ov::model::TensorMap out;
  for (size_t k = 0; k < sharded.units().size(); ++k) {
    const ov::parallel::FlatUnit& u = sharded.units()[k];
    at::Tensor flat = at::empty({u.padded}, at::kFloat);
    sharded.shard_group().all_gather(flat, sharded.slices(k).grad).wait();
    for (size_t i = 0; i < u.params.size(); ++i) out[u.params[i].name] = u.view(flat, i).clone();
  }
  return out;
}

// One unsharded model's gradients, summed over the batches of `world` ranks at `step`, by parameter name
// (parameters without a gradient left out).
inline std::map<std::string, at::Tensor> summed_gradients(ov::model::DiT& m, int world, int step) {
  std::map<std::string, at::Tensor> sum;
  for (int r = 0; r < world; ++r) {
    m->zero_grad();
    loss_of(m, inputs_of(r, step)).backward();
    for (const auto& item : m->named_parameters()) {
      if (!item.value().grad().defined()) continue;
      at::Tensor& s = sum[item.key()];
      s = s.defined() ? s + item.value().grad() : item.value().grad().clone();
    }
  }
  return sum;
}

inline double relative_error(const at::Tensor& got, const at::Tensor& want) {
  return (got - want).norm().item<double>() / std::max(want.norm().item<double>(), 1e-30);
}

}  // namespace
