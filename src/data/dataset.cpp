#include "openvid/data/dataset.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <chrono>
#include <filesystem>
#include <map>

#include "openvid/data/hdf5.h"
#include "openvid/runtime/error.h"
#include "openvid/runtime/mpi_session.h"

namespace ov::data {

namespace {

// The datasets of one bucket inside one shard file.
struct Part {
  std::string file;
  int64_t first = 0, count = 0;  // rows [first, first + count) of the bucket live here, at rows [0, count)
  H5Id latents, text, captions;
};

struct Shard {
  std::string path;
  H5Id file;
};

H5Id open_dataset(hid_t file, const std::string& path, const std::string& where) {
  if (H5Lexists(file, path.c_str(), H5P_DEFAULT) <= 0) throw InputError(where + ": dataset '" + path + "' is missing");
  return H5Id(OV_H5(H5Dopen2(file, path.c_str(), H5P_DEFAULT), where + ": opening " + path), H5Dclose);
}

std::vector<hsize_t> dims_of(hid_t dset) {
  H5Id space(OV_H5(H5Dget_space(dset), "H5Dget_space"), H5Sclose);
  const int rank = OV_H5(H5Sget_simple_extent_ndims(space), "H5Sget_simple_extent_ndims");
  std::vector<hsize_t> d(static_cast<size_t>(rank));
  OV_H5(H5Sget_simple_extent_dims(space, d.data(), nullptr), "H5Sget_simple_extent_dims");
  return d;
}

std::string dims_str(const std::vector<hsize_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

void expect_dims(hid_t dset, const std::vector<hsize_t>& want, const std::string& where) {
  const std::vector<hsize_t> got = dims_of(dset);
  if (got != want) throw InputError(where + " has shape " + dims_str(got) + ", the manifest implies " + dims_str(want));
}

void expect_half(hid_t dset, const std::string& where) {
  H5Id type(OV_H5(H5Dget_type(dset), "H5Dget_type"), H5Tclose);
  if (!is_ieee_half(type)) throw InputError(where + " is not stored as IEEE half (float16), which the format requires");
}

std::string read_string_attr(hid_t obj, const char* name, const std::string& where) {
  if (H5Aexists(obj, name) <= 0) throw InputError(where + ": attribute '" + name + "' is missing");
  H5Id attr(OV_H5(H5Aopen(obj, name, H5P_DEFAULT), where + ": opening attribute " + name), H5Aclose);
  H5Id type(OV_H5(H5Aget_type(attr), "H5Aget_type"), H5Tclose);
  if (H5Tget_class(type) != H5T_STRING) throw InputError(where + ": attribute '" + name + "' is not a string");
  if (H5Tis_variable_str(type) > 0) {
    char* value = nullptr;
    H5Id mem(OV_H5(H5Tcopy(H5T_C_S1), "H5Tcopy"), H5Tclose);
    OV_H5(H5Tset_size(mem, H5T_VARIABLE), "H5Tset_size");
    OV_H5(H5Tset_cset(mem, H5Tget_cset(type)), "H5Tset_cset");  // h5py writes UTF-8; HDF5 won't convert
    OV_H5(H5Aread(attr, mem, &value), where + ": reading attribute " + name);
    std::string s = value != nullptr ? value : "";
    H5free_memory(value);
    return s;
  }
  std::string s(H5Tget_size(type), '\0');
  OV_H5(H5Aread(attr, type, s.data()), where + ": reading attribute " + name);
  return s.substr(0, s.find('\0'));
}

int64_t read_int_attr(hid_t obj, const char* name, const std::string& where) {
  if (H5Aexists(obj, name) <= 0) throw InputError(where + ": attribute '" + name + "' is missing");
  H5Id attr(OV_H5(H5Aopen(obj, name, H5P_DEFAULT), where + ": opening attribute " + name), H5Aclose);
  int64_t v = 0;
  OV_H5(H5Aread(attr, H5T_NATIVE_INT64, &v), where + ": reading attribute " + name + " as an integer");
  return v;
}

}  // namespace

struct Dataset::Impl {
  MPI_Comm comm = MPI_COMM_NULL;
  DatasetOptions options;
  Manifest manifest;
  std::vector<Shard> shards;
  std::vector<std::vector<Part>> parts;  // per bucket, in manifest order
  H5Id dxpl;
  ReadStats stats;
  static constexpr size_t kPoolSize = 16;
  std::vector<at::Tensor> pool;  // output buffers, reused once released

  at::Tensor buffer(at::IntArrayRef sizes);

  ~Impl() {
    pool.clear();
    parts.clear();
    shards.clear();
    dxpl.reset();
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized && comm != MPI_COMM_NULL) MPI_Comm_free(&comm);
  }

  // Collective: reads rows [start of my selection] of `dset` into `out` (rows in ascending file order).
  void collective_read(hid_t dset, const std::vector<hsize_t>& rows, const std::vector<hsize_t>& row_offset,
                       const std::vector<hsize_t>& row_count, void* out, size_t bytes);
};

Dataset::Dataset(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Dataset::~Dataset() = default;
const Manifest& Dataset::manifest() const { return impl_->manifest; }
const ReadStats& Dataset::stats() const { return impl_->stats; }

std::unique_ptr<Dataset> Dataset::open(const std::string& path, MPI_Comm comm, DatasetOptions options) {
  silence_hdf5_errors();
  auto impl = std::make_unique<Impl>();
  OV_MPI_CHECK(MPI_Comm_dup(comm, &impl->comm));
  impl->options = options;

  // Every step below runs identically on every rank (HDF5's collective metadata needs that); errors are
  // agreed on after each step so that no rank goes on into a collective the others left.
  auto agreed = [&](auto&& step) { all_ranks_check(impl->comm, step); };
  agreed([&] { impl->manifest = read_manifest(path); });
  const Manifest& m = impl->manifest;

  std::map<std::string, size_t> shard_index;
  agreed([&] {
    for (const Bucket& b : m.buckets)
      for (const ShardPart& p : b.shards) {
        if (shard_index.count(p.file)) continue;
        const std::string sp = m.shard_path(p.file);
        if (!std::filesystem::exists(sp)) throw InputError("dataset shard '" + sp + "' (listed in the manifest) does not exist");
        if (H5Fis_hdf5(sp.c_str()) <= 0) throw InputError("dataset shard '" + sp + "' is not an HDF5 file");
        shard_index[p.file] = impl->shards.size();
        impl->shards.push_back({sp, H5Id()});
      }
  });
  for (Shard& s : impl->shards) {
    agreed([&] {
      H5Id fapl = mpio_file_access(impl->comm, /*file_locking=*/false);
      const hid_t f = H5Fopen(s.path.c_str(), H5F_ACC_RDONLY, fapl);
      if (f < 0) throw InputError("dataset shard '" + s.path + "' cannot be opened as HDF5 with MPI-IO");
      s.file = H5Id(f, H5Fclose);
      const std::string format = read_string_attr(s.file, "format", "dataset shard '" + s.path + "'");
      if (format != kFormatName) {
        throw InputError("dataset shard '" + s.path + "' has format '" + format + "', expected '" + kFormatName + "'");
      }
      const int64_t version = read_int_attr(s.file, "format_version", "dataset shard '" + s.path + "'");
      if (version != kFormatVersion) {
        throw InputError("dataset shard '" + s.path + "' has format version " + std::to_string(version) +
                         "; this openvid reads version " + std::to_string(kFormatVersion));
      }
    });
  }
  impl->parts.resize(m.buckets.size());
  for (size_t b = 0; b < m.buckets.size(); ++b) {
    const Bucket& bucket = m.buckets[b];
    int64_t first = 0;
    for (const ShardPart& sp : bucket.shards) {
      agreed([&] {
        const Shard& shard = impl->shards[shard_index.at(sp.file)];
        const std::string group = "/buckets/" + bucket.name;
        const std::string where = "dataset shard '" + shard.path + "', " + group;
        if (H5Lexists(shard.file, "/buckets", H5P_DEFAULT) <= 0 || H5Lexists(shard.file, group.c_str(), H5P_DEFAULT) <= 0) {
          throw InputError(where + " is missing (the manifest lists the bucket in this shard)");
        }
        H5Id g(OV_H5(H5Gopen2(shard.file, group.c_str(), H5P_DEFAULT), where), H5Gclose);
        const int64_t t = read_int_attr(g, "frames", where), h = read_int_attr(g, "height", where),
                      w = read_int_attr(g, "width", where);
        if (t != bucket.frames || h != bucket.height || w != bucket.width) {
          throw InputError(where + " holds latents of " + std::to_string(t) + "x" + std::to_string(h) + "x" + std::to_string(w) +
                           " (frames x height x width) but the manifest says " + std::to_string(bucket.frames) + "x" +
                           std::to_string(bucket.height) + "x" + std::to_string(bucket.width));
        }
        Part part{sp.file, first, sp.count, {}, {}, {}};
        const hsize_t n = static_cast<hsize_t>(sp.count);
        part.latents = open_dataset(shard.file, group + "/latents", "dataset shard '" + shard.path + "'");
        expect_dims(part.latents,
                    {n, static_cast<hsize_t>(m.latent_channels), static_cast<hsize_t>(t), static_cast<hsize_t>(h),
                     static_cast<hsize_t>(w)},
                    where + "/latents");
        expect_half(part.latents, where + "/latents");
        part.text = open_dataset(shard.file, group + "/text", "dataset shard '" + shard.path + "'");
        expect_dims(part.text, {n, static_cast<hsize_t>(m.text_tokens), static_cast<hsize_t>(m.text_dim)}, where + "/text");
        expect_half(part.text, where + "/text");
        part.captions = open_dataset(shard.file, group + "/captions", "dataset shard '" + shard.path + "'");
        expect_dims(part.captions, {n}, where + "/captions");
        H5Id ct(OV_H5(H5Dget_type(part.captions), "H5Dget_type"), H5Tclose);
        if (H5Tget_class(ct) != H5T_STRING || H5Tis_variable_str(ct) > 0) {
          throw InputError(where + "/captions must hold fixed-length byte strings");
        }
        impl->parts[b].push_back(std::move(part));
      });
      first += sp.count;
    }
  }
  impl->dxpl = collective_transfer();
  return std::unique_ptr<Dataset>(new Dataset(std::move(impl)));
}

void check_layout(const Manifest& manifest, const ReaderLayout& layout) {
  // Frames divide by the time patch (the model's check, before this one); cp splits whole video tokens.
  for (const Bucket& b : manifest.buckets) {
    if (b.frames % layout.time_granule != 0) {
      throw InputError("bucket '" + b.name + "' has " + std::to_string(b.frames) + " latent frames, not a multiple of the model's time patch " +
                       std::to_string(layout.time_granule) + " (--model_time_patch)");
    }
    const int64_t tokens = b.frames / layout.time_granule;
    if (tokens % layout.cp_size != 0) {
      throw InputError("bucket '" + b.name + "' has " + std::to_string(tokens) + " video tokens in time (" + std::to_string(b.frames) +
                       " latent frames, " + std::to_string(layout.time_granule) + " per token), which do not split into " +
                       std::to_string(layout.cp_size) + " context-parallel slices: choose --cp dividing " + std::to_string(tokens));
    }
  }
}

void Dataset::Impl::collective_read(hid_t dset, const std::vector<hsize_t>& rows, const std::vector<hsize_t>& row_offset,
                                    const std::vector<hsize_t>& row_count, void* out, size_t bytes) {
  H5Id file_space(OV_H5(H5Dget_space(dset), "H5Dget_space"), H5Sclose);
  std::vector<hsize_t> mem_dims = row_count;
  mem_dims[0] = std::max<hsize_t>(rows.size(), 1);
  H5Id mem_space(OV_H5(H5Screate_simple(static_cast<int>(mem_dims.size()), mem_dims.data(), nullptr), "H5Screate_simple"), H5Sclose);
  if (rows.empty()) {
    OV_H5(H5Sselect_none(file_space), "H5Sselect_none");
    OV_H5(H5Sselect_none(mem_space), "H5Sselect_none");
  } else {
    OV_H5(H5Sselect_none(file_space), "H5Sselect_none");
    std::vector<hsize_t> start = row_offset;
    for (hsize_t r : rows) {
      start[0] = r;
      OV_H5(H5Sselect_hyperslab(file_space, H5S_SELECT_OR, start.data(), nullptr, row_count.data(), nullptr),
            "H5Sselect_hyperslab");
    }
  }
  // Memory type = the stored type: a conversion would make HDF5 fall back to independent I/O.
  H5Id type(OV_H5(H5Dget_type(dset), "H5Dget_type"), H5Tclose);
  const auto t0 = std::chrono::steady_clock::now();
  OV_H5(H5Dread(dset, type, mem_space, file_space, dxpl, rows.empty() ? nullptr : out), "collective H5Dread");
  stats.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  H5D_mpio_actual_io_mode_t mode = H5D_MPIO_NO_COLLECTIVE;
  OV_H5(H5Pget_mpio_actual_io_mode(dxpl, &mode), "H5Pget_mpio_actual_io_mode");
  ++stats.reads;
  if (mode == H5D_MPIO_NO_COLLECTIVE) ++stats.independent_reads;
  else ++stats.collective_reads;
  stats.bytes += static_cast<int64_t>(rows.empty() ? 0 : bytes);
}

at::Tensor Dataset::Impl::buffer(at::IntArrayRef sizes) {
  // Reused once the consumer has let go of it and of every view of it: fresh 20 MB buffers each step
  // would cost a page fault per 4 KiB, which showed as most of the read time.
  for (const at::Tensor& t : pool) {
    // Free when the pool's handle is the only one (a handed-out batch copies the handle, which shares
    // the TensorImpl) and no view holds the storage.
    if (t.sizes() == sizes && t.use_count() == 1 && t.storage().use_count() == 1) return t;
  }
  at::Tensor t = at::empty(sizes, at::TensorOptions().dtype(at::kHalf).pinned_memory(at::hasCUDA()));
  if (pool.size() >= kPoolSize) pool.erase(pool.begin());
  pool.push_back(t);
  return t;
}

namespace {

// Rows were read in file order (out.samples sorted); puts them, their captions and out.samples in the
// order of `share` (this rank's part of the global batch) by following the permutation's cycles in place.
void put_in_batch_order(HostBatch& out, const std::vector<int64_t>& share) {
  const int64_t n = static_cast<int64_t>(share.size());
  std::vector<std::pair<int64_t, int64_t>> keyed;  // (sample, batch position), sorted: position i of the rows
  for (int64_t j = 0; j < n; ++j) keyed.emplace_back(share[static_cast<size_t>(j)], j);
  std::sort(keyed.begin(), keyed.end());
  std::vector<int64_t> from(static_cast<size_t>(n));  // batch position j takes row from[j]
  for (int64_t i = 0; i < n; ++i) from[static_cast<size_t>(keyed[static_cast<size_t>(i)].second)] = i;
  std::vector<bool> done(static_cast<size_t>(n), false);
  for (at::Tensor rows : {out.latents, out.text}) {
    std::fill(done.begin(), done.end(), false);
    const auto bytes = static_cast<size_t>(rows.nbytes() / std::max<int64_t>(n, 1));
    auto* base = static_cast<char*>(rows.data_ptr());
    std::vector<char> held(bytes);
    for (int64_t s = 0; s < n; ++s) {
      if (done[static_cast<size_t>(s)] || from[static_cast<size_t>(s)] == s) continue;
      std::memcpy(held.data(), base + s * bytes, bytes);
      int64_t j = s;
      for (;;) {
        done[static_cast<size_t>(j)] = true;
        const int64_t k = from[static_cast<size_t>(j)];
        if (k == s) {
          std::memcpy(base + j * bytes, held.data(), bytes);
          break;
        }
        std::memcpy(base + j * bytes, base + k * bytes, bytes);
        j = k;
      }
    }
  }
  std::vector<std::string> captions(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) captions[static_cast<size_t>(j)] = out.captions[static_cast<size_t>(from[static_cast<size_t>(j)])];
  out.captions = std::move(captions);
  out.samples = share;
}

}  // namespace

HostBatch Dataset::read(const GlobalBatch& gb, const ReaderLayout& layout) {
  Impl& d = *impl_;
  const Manifest& m = d.manifest;
  OV_CHECK(gb.bucket >= 0 && gb.bucket < static_cast<int64_t>(m.buckets.size()), "batch of an unknown bucket");
  const Bucket& bucket = m.buckets[static_cast<size_t>(gb.bucket)];
  const int64_t total = static_cast<int64_t>(gb.samples.size());
  OV_CHECK(total % layout.num_data_ranks == 0, "global batch not divisible by the data ranks");
  const int64_t per_rank = total / layout.num_data_ranks;
  HostBatch out;
  out.bucket = gb.bucket;
  // This rank's share in file order: each shard part's rows then land in one contiguous range of the
  // output, read in place (HDF5 returns a union of rows in file order anyway).
  const std::vector<int64_t> share(gb.samples.begin() + layout.data_rank * per_rank, gb.samples.begin() + (layout.data_rank + 1) * per_rank);
  out.samples = share;
  std::sort(out.samples.begin(), out.samples.end());
  out.global_valid = gb.real();
  out.valid = std::clamp<int64_t>(out.global_valid - layout.data_rank * per_rank, 0, per_rank);
  out.frames = bucket.frames;
  out.t_count = bucket.frames / layout.cp_size;
  out.t_begin = layout.cp_rank * out.t_count;
  const int64_t C = m.latent_channels, H = bucket.height, W = bucket.width, Lc = m.text_tokens, Dc = m.text_dim;
  out.latents = d.buffer({per_rank, C, out.t_count, H, W});
  out.text = d.buffer({per_rank, Lc, Dc});
  out.captions.resize(static_cast<size_t>(per_rank));

  for (const Part& part : d.parts[static_cast<size_t>(gb.bucket)]) {
    // Every rank takes part in the reads of every shard part the global batch touches.
    const auto in_part = [&](int64_t s) { return s >= part.first && s < part.first + part.count; };
    if (std::none_of(gb.samples.begin(), gb.samples.end(), in_part)) continue;
    const auto lo = std::lower_bound(out.samples.begin(), out.samples.end(), part.first);
    const auto hi = std::lower_bound(out.samples.begin(), out.samples.end(), part.first + part.count);
    const int64_t p0 = lo - out.samples.begin(), n = hi - lo;
    std::vector<hsize_t> rows;  // distinct, ascending
    for (auto it = lo; it != hi; ++it) rows.push_back(static_cast<hsize_t>(*it - part.first));
    rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
    const int64_t k = static_cast<int64_t>(rows.size());
    // In place unless a sample was drawn twice (padded evaluation batches): then via a scratch buffer.
    const bool direct = k == n;
    at::Tensor lat = direct ? out.latents.narrow(0, p0, n) : at::empty({std::max<int64_t>(k, 1), C, out.t_count, H, W}, at::kHalf);
    at::Tensor txt = direct ? out.text.narrow(0, p0, n) : at::empty({std::max<int64_t>(k, 1), Lc, Dc}, at::kHalf);
    d.collective_read(part.latents, rows, {0, 0, static_cast<hsize_t>(out.t_begin), 0, 0},
                      {1, static_cast<hsize_t>(C), static_cast<hsize_t>(out.t_count), static_cast<hsize_t>(H), static_cast<hsize_t>(W)},
                      k > 0 ? lat.data_ptr() : nullptr, static_cast<size_t>(k * C * out.t_count * H * W * 2));
    d.collective_read(part.text, rows, {0, 0, 0}, {1, static_cast<hsize_t>(Lc), static_cast<hsize_t>(Dc)},
                      k > 0 ? txt.data_ptr() : nullptr, static_cast<size_t>(k * Lc * Dc * 2));
    std::vector<int64_t> src;  // for each output position of this part, its index among `rows`
    for (auto it = lo; it != hi; ++it) {
      src.push_back(std::lower_bound(rows.begin(), rows.end(), static_cast<hsize_t>(*it - part.first)) - rows.begin());
    }
    if (!direct && n > 0) {
      const at::Tensor si = at::tensor(src, at::kLong);
      out.latents.narrow(0, p0, n).copy_(lat.index_select(0, si));
      out.text.narrow(0, p0, n).copy_(txt.index_select(0, si));
    }
    // Captions: fixed-length strings, read with their stored type (any length) and trimmed.
    H5Id ct(OV_H5(H5Dget_type(part.captions), "H5Dget_type"), H5Tclose);
    const size_t len = H5Tget_size(ct);
    std::string caps(static_cast<size_t>(std::max<int64_t>(k, 1)) * len, '\0');
    H5Id file_space(OV_H5(H5Dget_space(part.captions), "H5Dget_space"), H5Sclose);
    const hsize_t mdim = static_cast<hsize_t>(std::max<int64_t>(k, 1));
    H5Id mem_space(OV_H5(H5Screate_simple(1, &mdim, nullptr), "H5Screate_simple"), H5Sclose);
    OV_H5(H5Sselect_none(file_space), "H5Sselect_none");
    if (k == 0) OV_H5(H5Sselect_none(mem_space), "H5Sselect_none");
    for (hsize_t r : rows) {
      const hsize_t one = 1;
      OV_H5(H5Sselect_hyperslab(file_space, H5S_SELECT_OR, &r, nullptr, &one, nullptr), "H5Sselect_hyperslab");
    }
    OV_H5(H5Dread(part.captions, ct, mem_space, file_space, d.dxpl, k == 0 ? nullptr : caps.data()), "collective H5Dread of captions");
    for (int64_t i = 0; i < n; ++i) {
      const std::string c = caps.substr(static_cast<size_t>(src[static_cast<size_t>(i)]) * len, len);
      out.captions[static_cast<size_t>(p0 + i)] = c.substr(0, c.find('\0'));
    }
  }

  put_in_batch_order(out, share);

  if (d.options.check_finite) {
    std::string bad;
    for (int64_t i = 0; i < per_rank && bad.empty(); ++i) {
      if (!at::isfinite(out.latents[i]).all().item<bool>() || !at::isfinite(out.text[i]).all().item<bool>()) {
        const int64_t s = out.samples[static_cast<size_t>(i)];
        for (const Part& p : d.parts[static_cast<size_t>(gb.bucket)]) {
          if (s >= p.first && s < p.first + p.count) {
            bad = "dataset shard '" + m.shard_path(p.file) + "', bucket '" + bucket.name + "', row " + std::to_string(s - p.first) +
                  ": the latent or text states hold NaN or Inf (re-encode the sample, or drop it from the dataset)";
          }
        }
      }
    }
    agree_on_errors(d.comm, bad);  // one message, every rank ends
  }
  return out;
}

}  // namespace ov::data
