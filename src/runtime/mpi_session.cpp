#include "openvid/runtime/mpi_session.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <sstream>

namespace ov {
namespace detail {
void throw_mpi_failed(int rc, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
  std::ostringstream os;
  os << "MPI call failed: " << call << ": " << std::string(text, static_cast<size_t>(len)) << " (code "
     << rc << ") at " << file << ":" << line;
  throw Error(os.str());
}
}  // namespace detail

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

int run_mpi_main(int argc, char** argv, const std::function<int(int, char**)>& body) {
  int provided = 0;
  if (MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
    std::fprintf(stderr, "%s: MPI_Init_thread failed\n", host_name().c_str());
    return kExitFailure;
  }
  // Errors come back as return codes (checked by OV_MPI_CHECK) instead of killing the job silently.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  const std::string program =
      argc > 0 ? std::filesystem::path(argv[0]).filename().string() : std::string("openvid");
  int code = kExitOk;
  try {
    if (provided < MPI_THREAD_MULTIPLE) {
      throw Error("the MPI library does not provide MPI_THREAD_MULTIPLE (got level " +
                  std::to_string(provided) + "); build openvid against an MPI with thread support");
    }
    code = body(argc, argv);
  } catch (const CollectiveExit& e) {
    if (world_rank() == 0) {
      const std::string line = program + ": error: " + e.what() + "\n";
      std::fwrite(line.data(), 1, line.size(), stderr);
      std::fflush(stderr);
    }
    code = e.exit_code();
  } catch (const std::exception& e) {
    abort_job(e.what());
  } catch (...) {
    abort_job("unknown exception");
  }
  std::fflush(stdout);
  MPI_Finalize();
  return code;
}

void agree_on_errors(MPI_Comm comm, const std::string& local_error, int exit_code) {
  int rank = 0, size = 1;
  OV_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  OV_MPI_CHECK(MPI_Comm_size(comm, &size));
  int mine = local_error.empty() ? size : rank;
  int first = size;
  OV_MPI_CHECK(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm));
  if (first == size) return;
  int failing = local_error.empty() ? 0 : 1, num_failing = 0;
  OV_MPI_CHECK(MPI_Allreduce(&failing, &num_failing, 1, MPI_INT, MPI_SUM, comm));
  std::string message = broadcast_string(comm, local_error, first);
  if (num_failing < size) {
    message = "on rank " + std::to_string(first) + " (and " + std::to_string(num_failing - 1) +
              " other rank(s)): " + message;
  }
  throw CollectiveExit(message, exit_code);
}

std::vector<std::string> gather_strings(MPI_Comm comm, const std::string& mine, int root) {
  int rank = 0, size = 1;
  OV_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  OV_MPI_CHECK(MPI_Comm_size(comm, &size));
  const int len = static_cast<int>(mine.size());
  std::vector<int> lens(rank == root ? static_cast<size_t>(size) : 0);
  OV_MPI_CHECK(MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, root, comm));
  std::vector<int> displs(lens.size(), 0);
  int total = 0;
  for (size_t i = 0; i < lens.size(); ++i) {
    displs[i] = total;
    total += lens[i];
  }
  std::string all(static_cast<size_t>(total), '\0');
  OV_MPI_CHECK(MPI_Gatherv(mine.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(), MPI_CHAR,
                           root, comm));
  std::vector<std::string> out;
  for (size_t i = 0; i < lens.size(); ++i) {
    out.push_back(all.substr(static_cast<size_t>(displs[i]), static_cast<size_t>(lens[i])));
  }
  return out;
}

std::string broadcast_string(MPI_Comm comm, const std::string& value, int root) {
  int rank = 0;
  OV_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  int len = rank == root ? static_cast<int>(value.size()) : 0;
  OV_MPI_CHECK(MPI_Bcast(&len, 1, MPI_INT, root, comm));
  std::string out = rank == root ? value : std::string(static_cast<size_t>(len), '\0');
  OV_MPI_CHECK(MPI_Bcast(out.data(), len, MPI_CHAR, root, comm));
  return out;
}

}  // namespace ov
