#include "openvid/runtime/mpi_session.h"


#include <algorithm>
#include <map>
#include <atomic>
#include <chrono>
#include <thread>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <sstream>

#include "openvid/runtime/placement.h"

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

namespace {
std::atomic<double> g_collective_timeout{600.0};
}

void set_collective_timeout(double seconds) { g_collective_timeout.store(seconds); }
double collective_timeout() { return g_collective_timeout.load(); }

void wait_or_abort(MPI_Request& request, const std::string& what, double seconds) {
  const double limit = seconds < 0 ? collective_timeout() : seconds;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(limit);
  for (int spins = 0;; ++spins) {
    int done = 0;
    OV_MPI_CHECK(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
    if (done) return;
    if (spins > 2000) {
      if (std::chrono::steady_clock::now() > deadline) {
        std::ostringstream os;
        os << what << " did not complete within " << limit
           << " s: a peer rank died, hangs, or called something else. Aborting the job (raise --collective_timeout if "
              "this is legitimately this slow)";
        abort_job(os.str());
      }
      std::this_thread::sleep_for(std::chrono::microseconds(spins > 20000 ? 1000 : 50));
    }
  }
}

int agree_int(MPI_Comm comm, int value, MPI_Op op, const std::string& what) {
  int out = 0;
  MPI_Request req = MPI_REQUEST_NULL;
  OV_MPI_CHECK(MPI_Iallreduce(&value, &out, 1, MPI_INT, op, comm, &req));
  wait_or_abort(req, what);
  return out;
}

void agree_on_errors(MPI_Comm comm, const std::string& local_error, int exit_code) {
  int rank = 0, size = 1;
  OV_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  OV_MPI_CHECK(MPI_Comm_size(comm, &size));
  const int first = agree_int(comm, local_error.empty() ? size : rank, MPI_MIN, "the agreement on errors (agree_on_errors)");
  if (first == size) return;
  const int num_failing = agree_int(comm, local_error.empty() ? 0 : 1, MPI_SUM, "the agreement on errors (agree_on_errors)");
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
  MPI_Request req = MPI_REQUEST_NULL;
  OV_MPI_CHECK(MPI_Igather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, root, comm, &req));
  wait_or_abort(req, "gather_strings");
  std::vector<int> displs(lens.size(), 0);
  int total = 0;
  for (size_t i = 0; i < lens.size(); ++i) {
    displs[i] = total;
    total += lens[i];
  }
  std::string all(static_cast<size_t>(total), '\0');
  OV_MPI_CHECK(MPI_Igatherv(mine.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(), MPI_CHAR, root, comm, &req));
  wait_or_abort(req, "gather_strings");
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
  MPI_Request req = MPI_REQUEST_NULL;
  OV_MPI_CHECK(MPI_Ibcast(&len, 1, MPI_INT, root, comm, &req));
  wait_or_abort(req, "broadcast_string");
  std::string out = rank == root ? value : std::string(static_cast<size_t>(len), '\0');
  OV_MPI_CHECK(MPI_Ibcast(out.data(), len, MPI_CHAR, root, comm, &req));
  wait_or_abort(req, "broadcast_string");
  return out;
}

void agree_on_value(MPI_Comm comm, const std::string& what, const std::string& value, const std::string& advice) {
  const std::vector<std::string> all = gather_strings(comm, value + "\t" + host_name());
  root_check(comm, [&] {
    std::vector<std::string> values;  // in the order of their first rank
    std::map<std::string, std::pair<std::vector<int>, std::vector<std::string>>> where;  // value -> ranks, hosts
    for (size_t r = 0; r < all.size(); ++r) {
      const size_t tab = all[r].rfind('\t');
      const std::string v = all[r].substr(0, tab), host = all[r].substr(tab + 1);
      auto& [ranks, hosts] = where[v];
      if (ranks.empty()) values.push_back(v);
      ranks.push_back(static_cast<int>(r));
      if (std::find(hosts.begin(), hosts.end(), host) == hosts.end()) hosts.push_back(host);
    }
    if (values.size() < 2) return;
    std::string message = "ranks differ in " + what + ":";
    for (size_t i = 0; i < values.size(); ++i) {
      const auto& [ranks, hosts] = where[values[i]];
      std::string host_list;
      for (size_t h = 0; h < hosts.size() && h < 4; ++h) host_list += (h ? "," : "") + hosts[h];
      if (hosts.size() > 4) host_list += ",... (" + std::to_string(hosts.size()) + " hosts)";
      message += std::string(i ? ";" : "") + " " + values[i] + " on " + (hosts.size() > 1 ? "hosts " : "host ") + host_list + " (ranks " +
                 rank_ranges(ranks) + ")";
    }
    throw InputError(message + ". " + advice);
  });
}

}  // namespace ov
