#include "openvid/data/hdf5.h"

#include <algorithm>

#include "openvid/runtime/error.h"

namespace ov::data {

namespace {
herr_t innermost(unsigned, const H5E_error2_t* err, void* out) {
  auto* s = static_cast<std::string*>(out);
  if (s->empty() && err->desc != nullptr) *s = err->desc;  // walked from the innermost frame
  return 0;
}
}  // namespace

void throw_h5_failed(const std::string& what, const char* file, int line) {
  std::string detail;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost, &detail);
  H5Eclear2(H5E_DEFAULT);
  throw Error(what + (detail.empty() ? "" : ": " + detail) + " [" + file + ":" + std::to_string(line) + "]");
}

void silence_hdf5_errors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

H5Id ieee_half_type() {
  H5Id t(OV_H5(H5Tcopy(H5T_IEEE_F32LE), "H5Tcopy"), H5Tclose);
  OV_H5(H5Tset_fields(t, 15, 10, 5, 0, 10), "H5Tset_fields");
  OV_H5(H5Tset_size(t, 2), "H5Tset_size");
  OV_H5(H5Tset_ebias(t, 15), "H5Tset_ebias");
  return t;
}

bool is_ieee_half(hid_t type) {
  if (H5Tget_class(type) != H5T_FLOAT || H5Tget_size(type) != 2 || H5Tget_order(type) != H5T_ORDER_LE) return false;
  size_t spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0;
  if (H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize) < 0) return false;
  return spos == 15 && epos == 10 && esize == 5 && mpos == 0 && msize == 10 && H5Tget_ebias(type) == 15;
}

void write_string_attr(hid_t obj, const char* name, const std::string& value) {
  H5Id type(OV_H5(H5Tcopy(H5T_C_S1), "H5Tcopy"), H5Tclose);
  OV_H5(H5Tset_size(type, std::max<size_t>(value.size(), 1)), "H5Tset_size");
  H5Id space(OV_H5(H5Screate(H5S_SCALAR), "H5Screate"), H5Sclose);
  H5Id attr(OV_H5(H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT), std::string("H5Acreate2 ") + name), H5Aclose);
  const std::string v = value.empty() ? std::string(1, '\0') : value;
  OV_H5(H5Awrite(attr, type, v.data()), "H5Awrite");
}

namespace {

template <typename T>
void write_scalar_attr(hid_t obj, const char* name, hid_t type, T value) {
  H5Id space(OV_H5(H5Screate(H5S_SCALAR), "H5Screate"), H5Sclose);
  H5Id attr(OV_H5(H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT), std::string("H5Acreate2 ") + name), H5Aclose);
  OV_H5(H5Awrite(attr, type, &value), "H5Awrite");
}

}  // namespace

void write_int64_attr(hid_t obj, const char* name, int64_t value) { write_scalar_attr(obj, name, H5T_NATIVE_INT64, value); }
void write_double_attr(hid_t obj, const char* name, double value) { write_scalar_attr(obj, name, H5T_NATIVE_DOUBLE, value); }

H5Id create_contiguous_dataset(hid_t group, const char* name, hid_t type, const std::vector<hsize_t>& dims) {
  H5Id space(OV_H5(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), "H5Screate_simple"), H5Sclose);
  H5Id dcpl(OV_H5(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate"), H5Pclose);
  OV_H5(H5Pset_layout(dcpl, H5D_CONTIGUOUS), "H5Pset_layout");
  OV_H5(H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER), "H5Pset_fill_time");  // every row is written anyway
  return H5Id(OV_H5(H5Dcreate2(group, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT), std::string("H5Dcreate2 ") + name),
              H5Dclose);
}

H5Id fixed_string_type(size_t bytes) {
  H5Id t(OV_H5(H5Tcopy(H5T_C_S1), "H5Tcopy"), H5Tclose);
  OV_H5(H5Tset_size(t, std::max<size_t>(bytes, 1)), "H5Tset_size");
  OV_H5(H5Tset_strpad(t, H5T_STR_NULLPAD), "H5Tset_strpad");
  return t;
}

H5Id mpio_file_access(MPI_Comm comm, bool file_locking) {
  H5Id fapl(OV_H5(H5Pcreate(H5P_FILE_ACCESS), "H5Pcreate"), H5Pclose);
  OV_H5(H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL), "H5Pset_fapl_mpio");
  OV_H5(H5Pset_all_coll_metadata_ops(fapl, true), "H5Pset_all_coll_metadata_ops");
  OV_H5(H5Pset_coll_metadata_write(fapl, true), "H5Pset_coll_metadata_write");
#if H5_VERSION_GE(1, 10, 7)
  if (!file_locking) OV_H5(H5Pset_file_locking(fapl, false, true), "H5Pset_file_locking");
#else
  static_cast<void>(file_locking);
#endif
  return fapl;
}

H5Id collective_transfer() {
  H5Id dxpl(OV_H5(H5Pcreate(H5P_DATASET_XFER), "H5Pcreate"), H5Pclose);
  OV_H5(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE), "H5Pset_dxpl_mpio");
  return dxpl;
}

void write_rows(hid_t dset, hid_t type, hid_t dxpl, hsize_t first, hsize_t count, const void* data) {
  H5Id file_space(OV_H5(H5Dget_space(dset), "H5Dget_space"), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(file_space);
  std::vector<hsize_t> dims(static_cast<size_t>(rank)), start(static_cast<size_t>(rank), 0);
  H5Sget_simple_extent_dims(file_space, dims.data(), nullptr);
  std::vector<hsize_t> block = dims;
  block[0] = std::max<hsize_t>(count, 1);
  H5Id mem_space(OV_H5(H5Screate_simple(rank, block.data(), nullptr), "H5Screate_simple"), H5Sclose);
  if (count == 0) {
    OV_H5(H5Sselect_none(file_space), "H5Sselect_none");
    OV_H5(H5Sselect_none(mem_space), "H5Sselect_none");
  } else {
    start[0] = first;
    OV_H5(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start.data(), nullptr, block.data(), nullptr), "H5Sselect_hyperslab");
  }
  OV_H5(H5Dwrite(dset, type, mem_space, file_space, dxpl, count == 0 ? nullptr : data), "collective H5Dwrite");
}

}  // namespace ov::data
