#include "openvid/runtime/error.h"

#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "openvid/runtime/process.h"

namespace ov {

std::string rank_tag() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  std::ostringstream os;
  if (initialized && !finalized) {
    os << "rank " << world_rank() << " (" << host_name() << ")";
  } else {
    os << "rank ? (" << host_name() << ")";
  }
  return os.str();
}

void print_rank_message(const std::string& message) {
  // One write, so lines from different ranks do not interleave mid-line.
  const std::string line = rank_tag() + ": " + message + "\n";
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

void end_job(int exit_code) {
  std::fflush(stdout);
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);
}

void abort_job(const std::string& message, int exit_code) {
  print_rank_message(message);
  end_job(exit_code);
}

namespace detail {
void throw_check_failed(const char* expr, const std::string& message, const char* file, int line) {
  std::ostringstream os;
  os << message << " [check '" << expr << "' failed at " << file << ":" << line << "]";
  throw Error(os.str());
}
}  // namespace detail

int run_tool_main(const char* name, int (*tool)(int, char**), int argc, char** argv) {
  try {
    return tool(argc, argv);
  } catch (const InputError& e) {
    std::fprintf(stderr, "%s: error: %s\n", name, e.what());
    return kExitInputError;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.what());
    return kExitFailure;
  }
}

}  // namespace ov
