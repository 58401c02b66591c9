#include "openvid/data/hdf5.h"

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

}  // namespace ov::data
