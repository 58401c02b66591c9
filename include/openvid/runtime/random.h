#pragma once
// The project's one home for random numbers that must be reproducible everywhere: seeds are mixed with
// splitmix64, streams are mt19937_64 (fully specified by the C++ standard), and every bounded, uniform or
// normal draw is computed here rather than by std's distributions (whose algorithms are implementation
// defined). The sampler's shuffles, the objective's per-sample draws and the synthetic datasets all use it,
// so the same seed gives the same run on any compiler, CPU and rank layout.
#include <cstdint>
#include <random>
#include <vector>

namespace ov {

// splitmix64 over the words: well-spread seeds from small integers (seed, step, sample, ...).
uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c = 0);

// Fisher-Yates with an unbiased bounded draw (rejection sampling) from mt19937_64(seed).
void deterministic_shuffle(std::vector<int64_t>& v, uint64_t seed);

// Uniform in (0, 1) from 53 random bits: never exactly 0 or 1.
double uniform01(std::mt19937_64& g);

// Standard normal by Box-Muller (cosine branch).
double standard_normal(std::mt19937_64& g);

}  // namespace ov
