#include "openvid/data/synthetic.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>
#include <sstream>

#include "openvid/data/hdf5.h"
#include "openvid/data/shard_writer.h"
#include "openvid/runtime/error.h"
#include "openvid/runtime/mpi_session.h"
#include "openvid/runtime/random.h"

namespace ov::data {

SyntheticSample synthetic_sample(const SyntheticSpec& spec, int64_t bucket, int64_t index) {
  const auto& s = spec.shapes[static_cast<size_t>(bucket)];
  OV_CHECK(spec.classes >= 1, "a synthetic dataset needs at least one class");
  SyntheticSample out;
  out.label = index % spec.classes;
  // The class's mean and text states: the same for every sample of the class, in every bucket.
  constexpr uint64_t kClassStream = 0xC1A55;
  at::Generator cg = at::make_generator<at::CPUGeneratorImpl>(mix_seed(spec.seed, kClassStream, static_cast<uint64_t>(out.label)));
  const at::Tensor mean = at::normal(0, 1, {spec.channels, 1, 1, 1}, cg);
  const at::Tensor states = at::normal(0, 1, {spec.text_tokens, spec.text_dim}, cg);
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(mix_seed(spec.seed, static_cast<uint64_t>(bucket), static_cast<uint64_t>(index)));
  out.latent = (mean + 0.3 * at::normal(0, 1, {spec.channels, s[0], s[1], s[2]}, g)).to(at::kHalf);
  out.text = (states + 0.1 * at::normal(0, 1, {spec.text_tokens, spec.text_dim}, g)).to(at::kHalf);
  out.caption = "synthetic sample " + std::to_string(index) + " of class " + std::to_string(out.label) + ", " + bucket_name(s[0], s[1], s[2]);
  return out;
}

std::array<int64_t, 3> parse_latent_shape(const std::string& text, const std::string& option) {
  std::array<int64_t, 3> v{};
  char x1 = 0, x2 = 0;
  std::istringstream in(text);
  if (!(in >> v[0] >> x1 >> v[1] >> x2 >> v[2]) || x1 != 'x' || x2 != 'x' || !in.eof() || v[0] < 1 || v[1] < 1 || v[2] < 1) {
    throw InputError(option + " '" + text + "' is not FRAMESxHEIGHTxWIDTH of the latent (e.g. 16x32x32)");
  }
  return v;
}


Manifest write_synthetic_dataset(MPI_Comm comm, const SyntheticSpec& spec) {
  silence_hdf5_errors();
  int rank = 0, size = 1;
  OV_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  OV_MPI_CHECK(MPI_Comm_size(comm, &size));
  OV_CHECK(!spec.shapes.empty() && spec.samples_per_bucket >= 1 && spec.shards >= 1, "a synthetic dataset needs shapes, samples and shards");
  root_check(comm, [&] {
    std::error_code ec;
    std::filesystem::create_directories(spec.directory, ec);
    if (ec) throw InputError("cannot create the dataset directory '" + spec.directory + "': " + ec.message());
  });

  Manifest m;
  m.directory = spec.directory;
  m.latent_channels = spec.channels;
  m.text_tokens = spec.text_tokens;
  m.text_dim = spec.text_dim;
  m.caption_bytes = spec.caption_bytes;
  m.latent_encoder = "synthetic (standard normal)";
  m.text_encoder = "synthetic (standard normal)";
  for (const auto& s : spec.shapes) {
    Bucket b{bucket_name(s[0], s[1], s[2]), s[0], s[1], s[2], spec.samples_per_bucket, {}};
    for (int sh = 0; sh < spec.shards; ++sh) {
      const int64_t lo = spec.samples_per_bucket * sh / spec.shards, hi = spec.samples_per_bucket * (sh + 1) / spec.shards;
      b.shards.push_back({"shard-" + std::to_string(100000 + sh).substr(1) + ".h5", hi - lo});
    }
    m.buckets.push_back(std::move(b));
  }

  const H5Id half = ieee_half_type();
  const H5Id str = fixed_string_type(static_cast<size_t>(spec.caption_bytes));
  const H5Id dxpl = collective_transfer();

  for (int sh = 0; sh < spec.shards; ++sh) {
    const std::string path = m.shard_path(m.buckets[0].shards[static_cast<size_t>(sh)].file);
    const H5Id fapl = mpio_file_access(comm, /*file_locking=*/true);
    H5Id file(OV_H5(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl), "creating '" + path + "'"), H5Fclose);
    write_shard_attributes(file, Provenance{m.latent_encoder, m.text_encoder, m.latent_scale, m.latent_shift});
    H5Id buckets(OV_H5(H5Gcreate2(file, "buckets", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "H5Gcreate2"), H5Gclose);
    for (size_t b = 0; b < m.buckets.size(); ++b) {
      const Bucket& bucket = m.buckets[b];
      const int64_t lo = spec.samples_per_bucket * sh / spec.shards, n = bucket.shards[static_cast<size_t>(sh)].count;
      const H5Id g(create_bucket_group(buckets, bucket.frames, bucket.height, bucket.width), H5Gclose);
      const hsize_t N = static_cast<hsize_t>(n);
      H5Id lat = create_contiguous_dataset(g, "latents", half, {N, static_cast<hsize_t>(spec.channels), static_cast<hsize_t>(bucket.frames),
                                                     static_cast<hsize_t>(bucket.height), static_cast<hsize_t>(bucket.width)});
      H5Id txt = create_contiguous_dataset(g, "text", half, {N, static_cast<hsize_t>(spec.text_tokens), static_cast<hsize_t>(spec.text_dim)});
      H5Id cap = create_contiguous_dataset(g, "captions", str, {N});
      H5Id src = create_contiguous_dataset(g, "source_ids", str, {N});
      // This rank's contiguous share of the rows.
      const int64_t first = n * rank / size, count = n * (rank + 1) / size - first;
      std::vector<at::Tensor> lats, txts;
      std::string caps(static_cast<size_t>(std::max<int64_t>(count, 1) * spec.caption_bytes), '\0'), srcs = caps;
      for (int64_t i = 0; i < count; ++i) {
        const SyntheticSample s = synthetic_sample(spec, static_cast<int64_t>(b), lo + first + i);
        lats.push_back(s.latent);
        txts.push_back(s.text);
        caps.replace(static_cast<size_t>(i * spec.caption_bytes), std::min<size_t>(s.caption.size(), static_cast<size_t>(spec.caption_bytes)), s.caption);
        const std::string id = "synthetic:" + std::to_string(spec.seed) + ":" + bucket.name + ":" + std::to_string(lo + first + i);
        srcs.replace(static_cast<size_t>(i * spec.caption_bytes), std::min<size_t>(id.size(), static_cast<size_t>(spec.caption_bytes)), id);
      }
      const at::Tensor lat_data = count > 0 ? at::stack(lats).contiguous() : at::Tensor();
      const at::Tensor txt_data = count > 0 ? at::stack(txts).contiguous() : at::Tensor();
      write_rows(lat, half, dxpl, static_cast<hsize_t>(first), static_cast<hsize_t>(count), count > 0 ? lat_data.data_ptr() : nullptr);
      write_rows(txt, half, dxpl, static_cast<hsize_t>(first), static_cast<hsize_t>(count), count > 0 ? txt_data.data_ptr() : nullptr);
      write_rows(cap, str, dxpl, static_cast<hsize_t>(first), static_cast<hsize_t>(count), caps.data());
      write_rows(src, str, dxpl, static_cast<hsize_t>(first), static_cast<hsize_t>(count), srcs.data());
    }
  }
  root_check<std::exception>(comm, [&] { write_manifest(m); }, kExitFailure);
  return m;
}

}  // namespace ov::data
