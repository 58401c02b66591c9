#pragma once
// The dry run's plan against a trainer built for the same job (the plan and emulation suites): its sharded
// state equals ShardedModel::memory() and each of `steps` steps moves on each group exactly the planned
// bytes of the (one) bucket. Boost.Test checks, never REQUIREs: every rank goes on calling the collectives.
#include <boost/test/unit_test.hpp>

#include <map>
#include <string>

#include "openvid/comm/process_groups.h"
#include "openvid/train/plan.h"
#include "openvid/train/trainer.h"

inline void check_trainer_against_plan(ov::train::Trainer& t, const ov::train::JobPlan& plan, ov::comm::ProcessGroups& groups,
                                       int64_t steps) {
  const auto m = t.memory();
  BOOST_CHECK_EQUAL(plan.state.masters, m.master_bytes);
  BOOST_CHECK_EQUAL(plan.state.gradients, m.grad_bytes);
  BOOST_CHECK_EQUAL(plan.state.moments, m.optimizer_bytes);
  BOOST_CHECK_EQUAL(plan.state.gathered, m.gathered_bytes);
  for (int64_t step = 0; step < steps; ++step) {
    const ov::train::StepResult r = t.train_step(step);
    std::map<std::string, double> bytes(r.comm_bytes.begin(), r.comm_bytes.end());
    const ov::train::GroupBytes& want = plan.buckets.at(0).bytes;
    BOOST_TEST_MESSAGE("step " << step << ": " << groups.traffic_line(1));
    BOOST_CHECK_EQUAL(bytes["world"], want.world);
    BOOST_CHECK_EQUAL(bytes["shard"], want.shard);
    BOOST_CHECK_EQUAL(bytes["cp"], want.cp);
    BOOST_CHECK_EQUAL(bytes["dp"], want.dp);
    BOOST_TEST(std::isfinite(r.loss));
  }
}
