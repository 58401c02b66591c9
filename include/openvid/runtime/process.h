#pragma once
// Who this process is in the job: its world rank, the world's size, its host. The lowest piece of the
// runtime: the error path (runtime/error.h) names ranks with it, and the MPI session (mpi_session.h) builds
// on both.
#include <string>

namespace ov {

// World rank and size, valid inside run_mpi_main (and in tests after MPI_Init).
int world_rank();
int world_size();
// This process's host name (MPI_Get_processor_name).
std::string host_name();

}  // namespace ov
