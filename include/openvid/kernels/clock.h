#pragma once
// The GPU's clock on a stream, for the emulated ranks' collectives (comm/emulated_communicator.h): a
// stand-in for a network transfer must occupy its stream for the time the network model gives, measured
// from when the stream reaches it, whatever else (the output's fill) runs between. No CUDA API does that
// (cudaLaunchHostFunc would block the stream on a host thread; ATen's sleep counts clock cycles, which vary
// with the GPU's clock), hence these two kernels on the GPU's global timer (nanoseconds).
#include <cstdint>

#include "openvid/kernels/launch.h"

namespace ov::kernels {

// *slot = the GPU's global time, in ns, when the stream reaches this point (one thread).
void stamp_time(int64_t* slot, Stream stream);
// Holds the stream until the global time is *slot + nanoseconds (one thread sleeping in short naps: it
// occupies one SM slot, not the SM).
void spin_until(const int64_t* slot, int64_t nanoseconds, Stream stream);

}  // namespace ov::kernels
