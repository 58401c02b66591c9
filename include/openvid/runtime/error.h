#pragma once
// Errors and the two ways a job ends on one (after LAMMPS's Error::all / Error::one):
//  * Deterministic errors every rank reaches with the same verdict (bad options, bad config, bad input
//    files) are thrown locally as ov::InputError, then agreed on collectively (agree_on_errors in
//    runtime/mpi_session.h). Every rank then throws ov::CollectiveExit, the main wrapper prints the
//    message once and every rank exits with the same non-zero code after MPI_Finalize.
//  * Anything else (a failed MPI/CUDA/NCCL call, a bug, a timeout) is known to one rank only: it prints
//    "rank N (host): message" and aborts the whole job (abort_job), so no peer waits forever.
#include <stdexcept>
#include <string>

namespace ov {

// Exit codes shared by every openvid executable (documented in README.md).
enum ExitCode : int {
  kExitOk = 0,
  kExitFailure = 1,       // runtime failure on some rank: the job was aborted
  kExitInputError = 2,    // bad options, configuration or input files; nothing was changed
  kExitRequeue = 3,       // stopped by SIGUSR1/SIGTERM after writing a checkpoint: requeue the job
};

// A generic failure with a message that already says what went wrong and where.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Bad input from the user (options, config, files). Thrown on the rank that sees it; turned into a
// job-wide clean exit once all ranks have agreed on it.
class InputError : public Error {
 public:
  using Error::Error;
};

// Thrown on *every* rank after they agreed that the job must stop; carries the message to print once.
class CollectiveExit : public Error {
 public:
  CollectiveExit(const std::string& message, int exit_code) : Error(message), code_(exit_code) {}
  int exit_code() const { return code_; }

 private:
  int code_;
};

// "rank N (host)" for messages; valid before and after MPI is up ("rank ? (host)" when unknown).
std::string rank_tag();

// One rank: print "rank N (host): message" on stderr and abort every rank of the job (MPI_Abort).
[[noreturn]] void abort_job(const std::string& message, int exit_code = kExitFailure);
// Its two halves, for a failure that must be told before a clean-up that may take a while (the NCCL
// watchdog): print the message (one write, flushed), then end the job.
void print_rank_message(const std::string& message);
[[noreturn]] void end_job(int exit_code = kExitFailure);

// The main of a single-process tool: runs `tool`, and turns an InputError into "<name>: error: message"
// with exit 2 and any other exception into "<name>: message" with exit 1.
int run_tool_main(const char* name, int (*tool)(int, char**), int argc, char** argv);

namespace detail {
[[noreturn]] void throw_check_failed(const char* expr, const std::string& message, const char* file,
                                     int line);
}  // namespace detail

}  // namespace ov

// Internal invariant checks: a failure throws ov::Error naming the condition, file and line.
#define OV_CHECK(cond, message)                                                      \
  do {                                                                               \
    if (!(cond)) ::ov::detail::throw_check_failed(#cond, (message), __FILE__, __LINE__); \
  } while (0)
