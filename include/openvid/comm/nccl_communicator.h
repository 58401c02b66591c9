#pragma once
// NCCL backend of the collectives (CUDA tensors). Only a factory is exposed, so code that merely builds
// communicators compiles without CUDA; the implementation exists when OPENVID_HAVE_NCCL is defined.
//
// Design (after PyTorch c10d's NCCLUtils):
//  * one ncclComm_t per group, created from an ncclUniqueId that group rank 0 makes and broadcasts over
//    the group's MPI communicator, in NCCL's non-blocking mode, so that initialisation and every
//    enqueue can be polled against a deadline instead of hanging on a dead peer;
//  * the communicator owns a CUDA stream; each collective waits (event) for the caller's current stream,
//    runs on its own stream, and records a completion event that Work::wait() makes the caller's stream
//    wait for: no host synchronisation on the step's path;
//  * move-only ownership, an explicit collective finalize(), a local abort(reason) that stores the
//    reason, and a destructor that only aborts (never blocks).
#include <mpi.h>

#include <chrono>
#include <memory>
#include <string>

#include "openvid/comm/communicator.h"

namespace ov::comm {

// True when this build contains the NCCL backend.
bool nccl_compiled();

// Collective over `group` (every rank of it calls this, in the same order as for other groups). Throws
// ov::Error when the backend is not compiled in or NCCL initialisation fails or times out.
std::unique_ptr<Communicator> make_nccl_communicator(MPI_Comm group, std::string name, int cuda_device,
                                                     std::chrono::milliseconds timeout);

}  // namespace ov::comm
