#include "openvid/runtime/process.h"

#include <mpi.h>
#include <unistd.h>

namespace ov {

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

int world_size() {
  int s = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}

std::string host_name() {
  char name[MPI_MAX_PROCESSOR_NAME] = {};
  int len = 0;
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized && MPI_Get_processor_name(name, &len) == MPI_SUCCESS && len > 0) {
    return std::string(name, static_cast<size_t>(len));
  }
  if (gethostname(name, sizeof(name) - 1) == 0) return name;
  return "unknown-host";
}

}  // namespace ov
