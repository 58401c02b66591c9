#pragma once
// MPI start-up and shut-down, the main-function wrapper that turns errors into job-wide exits, and the
// collective agreement on errors that every rank must reach before branching.
#include <mpi.h>

#include <functional>
#include <string>
#include <vector>

#include "openvid/runtime/error.h"
#include "openvid/runtime/process.h"

// Checks an MPI call's return code; a failure throws ov::Error with MPI's message, the call, file and line.
#define OV_MPI_CHECK(call)                                                                 \
  do {                                                                                     \
    const int ov_mpi_rc_ = (call);                                                         \
    if (ov_mpi_rc_ != MPI_SUCCESS) ::ov::detail::throw_mpi_failed(ov_mpi_rc_, #call, __FILE__, __LINE__); \
  } while (0)

namespace ov {
namespace detail {
[[noreturn]] void throw_mpi_failed(int rc, const char* call, const char* file, int line);
}

// Runs `body` between MPI_Init_thread (MPI_THREAD_MULTIPLE: the data prefetch thread does MPI-IO while
// the main thread communicates) and MPI_Finalize, with MPI errors returned rather than fatal, and maps
// its outcome to the job's exit:
//  * returns normally      -> every rank returns body's code;
//  * ov::CollectiveExit    -> (all ranks) world rank 0 prints "<program>: error: <message>" once;
//                             every rank finalizes and returns the carried code;
//  * any other exception   -> (one rank) abort_job: "rank N (host): <message>", MPI_Abort of the world.
// Called once, from main(), by every process of the job.
int run_mpi_main(int argc, char** argv, const std::function<int(int, char**)>& body);


// How long any rank waits for its peers in a collective before it aborts the job (--collective_timeout;
// 600 s until set). Every wait of the runtime's own agreements below is bounded by it.
void set_collective_timeout(double seconds);
double collective_timeout();

// Waits for a non-blocking MPI operation, polling against `seconds` (collective_timeout() when negative);
// past it the job is aborted with a message naming `what` (a peer died, hangs, or called something else).
void wait_or_abort(MPI_Request& request, const std::string& what, double seconds = -1);

// Collective over `comm`: a sum (op MPI_SUM), minimum or maximum of one int over the ranks, bounded.
int agree_int(MPI_Comm comm, int value, MPI_Op op, const std::string& what);

// Collective over `comm`: every rank passes its local error message ("" for none). If any rank has one,
// every rank throws CollectiveExit carrying the message of the lowest failing rank (prefixed with that
// rank when not all ranks failed) and `exit_code`; otherwise returns on every rank.
void agree_on_errors(MPI_Comm comm, const std::string& local_error, int exit_code = kExitInputError);

// The two ways to decide an error together (after LAMMPS's Error::all and Error::one), each call site one
// line. Both are collective over `comm` and end the job on every rank with CollectiveExit(`exit_code`) when
// the check fails; an exception of another type than E is a one-rank failure and aborts the job as usual.
//   all_ranks_check: every rank runs `check` (a verdict every rank can reach, e.g. a parsed option);
//   root_check:      only `root` runs `work` (a file only it reads or writes); its verdict is broadcast.
template <typename E = InputError, typename Fn>
void all_ranks_check(MPI_Comm comm, Fn&& check, int exit_code = kExitInputError);
template <typename E = InputError, typename Fn>
void root_check(MPI_Comm comm, Fn&& work, int exit_code = kExitInputError, int root = 0);

// Collective over `comm`: returns on `root` each rank's string in rank order; empty elsewhere.
std::vector<std::string> gather_strings(MPI_Comm comm, const std::string& mine, int root = 0);

// Collective over `comm`: every rank passes its `value` of one setting that must be the same everywhere
// (e.g. "device cuda, backend nccl, compute bf16"). When the ranks differ, every rank throws CollectiveExit
// (kExitInputError) with one message: "ranks differ in <what>: <value> on host(s) <hosts> (ranks <ranges>); ...
// <advice>".
void agree_on_value(MPI_Comm comm, const std::string& what, const std::string& value, const std::string& advice);

// Collective over `comm`: root's string on every rank.
std::string broadcast_string(MPI_Comm comm, const std::string& value, int root = 0);

template <typename E, typename Fn>
void all_ranks_check(MPI_Comm comm, Fn&& check, int exit_code) {
  std::string error;
  try {
    check();
  } catch (const E& e) {
    error = e.what();
  }
  agree_on_errors(comm, error, exit_code);
}

template <typename E, typename Fn>
void root_check(MPI_Comm comm, Fn&& work, int exit_code, int root) {
  int rank = 0;
  OV_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  std::string error;
  if (rank == root) {
    try {
      work();
    } catch (const E& e) {
      error = e.what();
    }
  }
  agree_on_errors(comm, broadcast_string(comm, error, root), exit_code);
}

}  // namespace ov
