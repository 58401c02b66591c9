#pragma once
// Boost.Test global fixture for tests run under mpiexec: MPI is initialised once before the first test
// and finalized after the last. Checks use BOOST_CHECK (never REQUIRE) around collectives so every rank
// keeps calling the same collectives in the same order even when one rank sees a failure.
#include <mpi.h>

#include <boost/test/unit_test.hpp>

struct MpiFixture {
  MpiFixture() {
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  }
  ~MpiFixture() { MPI_Finalize(); }
};
BOOST_TEST_GLOBAL_FIXTURE(MpiFixture);

// All (fs, cp) with fs*cp dividing `world`.
inline std::vector<std::pair<int, int>> layouts_for(int world) {
  std::vector<std::pair<int, int>> out;
  for (int fs = 1; fs <= world; ++fs)
    for (int cp = 1; cp <= world; ++cp)
      if (world % (fs * cp) == 0) out.emplace_back(fs, cp);
  return out;
}
