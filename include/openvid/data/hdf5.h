#pragma once
// Small RAII and checking layer over the HDF5 C API (the C++ API has no MPI-IO support): move-only
// identifiers closed by the matching H5?close, a check macro that turns a failed call into ov::Error
// with HDF5's own innermost message, and the IEEE half type HDF5 1.10 does not predefine.
#include <hdf5.h>
#include <mpi.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace ov::data {

class H5Id {
 public:
  using Closer = herr_t (*)(hid_t);
  H5Id() = default;
  H5Id(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  H5Id(H5Id&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)), closer_(o.closer_) {}
  H5Id& operator=(H5Id&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
      closer_ = o.closer_;
    }
    return *this;
  }
  H5Id(const H5Id&) = delete;
  H5Id& operator=(const H5Id&) = delete;
  ~H5Id() { reset(); }

  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }  // NOLINT: passes straight into the C API
  void reset() {
    if (id_ >= 0 && closer_ != nullptr) closer_(id_);
    id_ = H5I_INVALID_HID;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer closer_ = nullptr;
};

// Throws ov::Error: "<what>: <HDF5's innermost error description> [file:line]".
[[noreturn]] void throw_h5_failed(const std::string& what, const char* file, int line);

// HDF5 prints its error stack on every failure; openvid reports errors itself. Call once per process.
void silence_hdf5_errors();

// IEEE 754 binary16, little-endian: what h5py writes for numpy float16.
H5Id ieee_half_type();
// True when `type` is a 2-byte float with half's layout (5 exponent bits, bias 15, 10 mantissa bits).
bool is_ieee_half(hid_t type);

// Writing: a scalar string or number attribute, and a contiguous, unfilled dataset of `dims` rows.
void write_string_attr(hid_t obj, const char* name, const std::string& value);
void write_int64_attr(hid_t obj, const char* name, int64_t value);
void write_double_attr(hid_t obj, const char* name, double value);
H5Id create_contiguous_dataset(hid_t group, const char* name, hid_t type, const std::vector<hsize_t>& dims);
// A fixed-length, NUL-padded byte-string type of `bytes` bytes (captions, source ids).
H5Id fixed_string_type(size_t bytes);

// ---- Parallel HDF5 (MPI-IO): the one set-up that the collective reader and the writers share.
// File access over `comm` with collective metadata operations; `file_locking` false for readers (many
// parallel file systems do not support HDF5's locks; a writer keeps them).
H5Id mpio_file_access(MPI_Comm comm, bool file_locking);
// A data transfer in which every rank of the file's communicator takes part (collective MPI-IO).
H5Id collective_transfer();
// Collective: this rank writes rows [first, first + count) of `dset` from `data` (count may be 0: it takes
// part and writes nothing).
void write_rows(hid_t dset, hid_t type, hid_t dxpl, hsize_t first, hsize_t count, const void* data);

}  // namespace ov::data

#define OV_H5(call, what)                                                           \
  ([&]() {                                                                          \
    auto ov_h5_rc_ = (call);                                                        \
    if (ov_h5_rc_ < 0) ::ov::data::throw_h5_failed((what), __FILE__, __LINE__);     \
    return ov_h5_rc_;                                                               \
  }())
