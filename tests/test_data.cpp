#define BOOST_TEST_MODULE data
#include "mpi_fixture.h"

#include <ATen/ATen.h>
#include <hdf5.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <algorithm>
#include <set>

#include "openvid/data/dataset.h"
#include "openvid/data/device_batch.h"
#include "openvid/data/manifest.h"
#include "openvid/data/prefetch.h"
#include "openvid/data/sampler.h"
#include "openvid/data/synthetic.h"
#include "openvid/runtime/error.h"
#include "openvid/runtime/mesh.h"
#include "openvid/runtime/mpi_session.h"

using namespace ov::data;

namespace {

// A fresh directory name, the same on every rank (rank 0 chooses it).
std::string shared_dir(const std::string& tag) {
  static int n = 0;
  const std::string mine = (std::filesystem::temp_directory_path() / ("openvid_data_" + std::to_string(::getpid()) + "_" + tag + "_" + std::to_string(n++))).string();
  return ov::broadcast_string(MPI_COMM_WORLD, mine, 0);
}

struct DirGuard {
  std::string path;
  ~DirGuard() {
    MPI_Barrier(MPI_COMM_WORLD);
    if (ov::world_rank() == 0) std::filesystem::remove_all(path);
  }
};

SyntheticSpec small_spec(const std::string& dir) {
  SyntheticSpec s;
  s.directory = dir;
  s.shapes = {{4, 4, 6}, {8, 2, 4}};
  s.samples_per_bucket = 22;
  s.channels = 3;
  s.text_tokens = 5;
  s.text_dim = 8;
  s.caption_bytes = 64;
  s.shards = 3;
  s.seed = 9;
  return s;
}

std::string collective_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const ov::CollectiveExit& e) {
    return e.what();
  }
  return "";
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Edits a shard on rank 0 with serial HDF5 while the others wait.
void on_rank0(const std::function<void()>& f) {
  if (ov::world_rank() == 0) f();
  MPI_Barrier(MPI_COMM_WORLD);
}

}  // namespace

BOOST_AUTO_TEST_CASE(every_sample_once_per_epoch_with_exact_values_for_every_layout) {
  const SyntheticSpec spec = small_spec(shared_dir("roundtrip"));
  DirGuard guard{spec.directory};
  write_synthetic_dataset(MPI_COMM_WORLD, spec);
  auto ds = Dataset::open(spec.directory, MPI_COMM_WORLD);
  const int world = ov::world_size(), me = ov::world_rank();
  int layouts = 0;
  for (auto [fs_, cp] : layouts_for(world)) {
    if (cp > 2) continue;  // the 4-frame bucket has 2 video tokens (time_patch 2): cp 4 cannot split it
    ++layouts;
    const ov::Mesh mesh = ov::Mesh::make(world, fs_, cp);
    const ReaderLayout layout{mesh.data_rank(me), mesh.num_data_ranks(), mesh.coord(me).cp, cp, 2};
    BOOST_CHECK_NO_THROW(ds->check_layout(layout));
    const Sampler sampler({22, 22}, 5, 2 * layout.num_data_ranks, 0.1);
    std::vector<int64_t> mine;  // bucket * 1000 + sample, delivered to my data rank (recorded by cp rank 0)
    for (int64_t step = 0; step < sampler.steps_per_epoch(); ++step) {
      const GlobalBatch gb = sampler.batch({0, step});
      const HostBatch hb = ds->read(gb, layout);
      BOOST_CHECK_EQUAL(hb.t_count * cp, hb.frames);
      BOOST_CHECK_EQUAL(hb.t_begin, layout.cp_rank * hb.t_count);
      const std::vector<int64_t> share(gb.samples.begin() + layout.data_rank * 2, gb.samples.begin() + layout.data_rank * 2 + 2);
      BOOST_CHECK(hb.samples == share);  // this data rank's share, in the batch's order
      for (size_t i = 0; i < hb.samples.size(); ++i) {
        const SyntheticSample want = synthetic_sample(spec, gb.bucket, hb.samples[i]);
        BOOST_CHECK(at::equal(hb.latents[static_cast<int64_t>(i)], want.latent.narrow(1, hb.t_begin, hb.t_count)));
        BOOST_CHECK(at::equal(hb.text[static_cast<int64_t>(i)], want.text));
        BOOST_CHECK_EQUAL(hb.captions[i], want.caption);
        if (layout.cp_rank == 0 && static_cast<int64_t>(i) < hb.valid) mine.push_back(gb.bucket * 1000 + hb.samples[i]);
      }
    }
    // Gather what every data rank received as real samples: each training sample exactly once (the
    // remainders' padding repeats samples, marked as padding by `valid`).
    int n = static_cast<int>(mine.size());
    std::vector<int> counts(static_cast<size_t>(world));
    MPI_Allgather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, MPI_COMM_WORLD);
    std::vector<int> displs(static_cast<size_t>(world), 0);
    for (int r = 1; r < world; ++r) displs[static_cast<size_t>(r)] = displs[static_cast<size_t>(r - 1)] + counts[static_cast<size_t>(r - 1)];
    std::vector<int64_t> all(static_cast<size_t>(displs.back() + counts.back()));
    MPI_Allgatherv(mine.data(), n, MPI_INT64_T, all.data(), counts.data(), displs.data(), MPI_INT64_T, MPI_COMM_WORLD);
    const std::set<int64_t> distinct(all.begin(), all.end());
    BOOST_CHECK_EQUAL(distinct.size(), all.size());
    BOOST_CHECK_EQUAL(static_cast<int64_t>(all.size()), static_cast<int64_t>(sampler.training(0).size() + sampler.training(1).size()));
    for (int64_t b = 0; b < 2; ++b) {
      for (int64_t s : sampler.heldout(b)) BOOST_CHECK(!distinct.count(b * 1000 + s));  // held-out never trained on
      int64_t seen = 0;
      for (int64_t s : sampler.training(b)) seen += distinct.count(b * 1000 + s);
      BOOST_CHECK_EQUAL(seen, static_cast<int64_t>(sampler.training(b).size()));
    }
  }
  BOOST_CHECK_GT(layouts, 0);
  const ReadStats& st = ds->stats();
  BOOST_CHECK_GT(st.reads, 0);
  BOOST_CHECK_EQUAL(st.collective_reads, st.reads);  // HDF5 says every latent/text read was collective
  BOOST_CHECK_EQUAL(st.independent_reads, 0);
  BOOST_CHECK_GT(st.bytes, 0);
}

// ... and in the batch's order (read in file order, put back): positions carry meaning, e.g. the padding of
// an evaluation batch is its last positions.
BOOST_AUTO_TEST_CASE(a_sample_drawn_twice_is_delivered_twice) {
  const SyntheticSpec spec = small_spec(shared_dir("dup"));
  DirGuard guard{spec.directory};
  write_synthetic_dataset(MPI_COMM_WORLD, spec);
  auto ds = Dataset::open(spec.directory, MPI_COMM_WORLD);
  const int world = ov::world_size(), me = ov::world_rank();
  GlobalBatch gb;
  gb.bucket = 1;
  for (int r = 0; r < world; ++r) gb.samples.insert(gb.samples.end(), {17, 3, 17, 8});  // 17 twice, across shards
  const HostBatch hb = ds->read(gb, ReaderLayout{me, world, 0, 1, 2});
  BOOST_CHECK(hb.samples == (std::vector<int64_t>{17, 3, 17, 8}));
  for (size_t i = 0; i < 4; ++i) {
    const SyntheticSample want = synthetic_sample(spec, 1, hb.samples[i]);
    BOOST_CHECK(at::equal(hb.latents[static_cast<int64_t>(i)], want.latent));
    BOOST_CHECK(at::equal(hb.text[static_cast<int64_t>(i)], want.text));
    BOOST_CHECK_EQUAL(hb.captions[i], want.caption);
  }
  BOOST_CHECK_EQUAL(hb.global_valid, 4 * world);  // valid -1: every sample real
  BOOST_CHECK_EQUAL(hb.valid, 4);
  // A padded batch (a remainder's, 4 * world - 3 real samples): the padding is the last ranks' last positions.
  gb.valid = 4 * world - 3;
  const HostBatch padded = ds->read(gb, ReaderLayout{me, world, 0, 1, 2});
  BOOST_CHECK_EQUAL(padded.global_valid, 4 * world - 3);
  BOOST_CHECK_EQUAL(padded.valid, me + 1 < world ? 4 : 1);
}

// Read buffers are reused only once released: a batch still held (or a view of it) keeps its values.
BOOST_AUTO_TEST_CASE(held_batches_are_never_overwritten) {
  const SyntheticSpec spec = small_spec(shared_dir("reuse"));
  DirGuard guard{spec.directory};
  write_synthetic_dataset(MPI_COMM_WORLD, spec);
  auto ds = Dataset::open(spec.directory, MPI_COMM_WORLD);
  const int world = ov::world_size(), me = ov::world_rank();
  const ReaderLayout layout{me, world, 0, 1, 2};
  auto batch_of = [&](int64_t first) {
    GlobalBatch gb;
    gb.bucket = 0;
    for (int r = 0; r < world; ++r) gb.samples.insert(gb.samples.end(), {first, first + 1});
    return gb;
  };
  HostBatch held = ds->read(batch_of(0), layout);
  const at::Tensor view = ds->read(batch_of(4), layout).latents.narrow(0, 1, 1);  // only a view survives
  std::vector<HostBatch> later;
  for (int64_t first = 8; first < 20; first += 2) later.push_back(ds->read(batch_of(first), layout));
  BOOST_CHECK(at::equal(held.latents[0], synthetic_sample(spec, 0, 0).latent));
  BOOST_CHECK(at::equal(held.text[1], synthetic_sample(spec, 0, 1).text));
  BOOST_CHECK(at::equal(view[0], synthetic_sample(spec, 0, 5).latent));
  for (size_t i = 0; i < later.size(); ++i)
    BOOST_CHECK(at::equal(later[i].latents[1], synthetic_sample(spec, 0, 8 + 2 * static_cast<int64_t>(i) + 1).latent));
  // Released buffers are reused: reading on does not grow memory without bound (the pool is capped).
  later.clear();
  held = HostBatch{};
  for (int i = 0; i < 40; ++i) ds->read(batch_of(2 * (i % 10)), layout);
}

BOOST_AUTO_TEST_CASE(prefetcher_delivers_the_sampler_sequence_and_stops_cleanly) {
  const SyntheticSpec spec = small_spec(shared_dir("prefetch"));
  DirGuard guard{spec.directory};
  write_synthetic_dataset(MPI_COMM_WORLD, spec);
  auto ds = Dataset::open(spec.directory, MPI_COMM_WORLD);
  const int world = ov::world_size(), me = ov::world_rank();
  const ReaderLayout layout{me, world, 0, 1, 2};
  const Sampler sampler({22, 22}, 3, world, 0.0);
  const Position start = sampler.position_after(3);
  {
    Prefetcher pf(*ds, sampler, start, 6, layout, 2);
    Position p = start;
    for (int i = 0; i < 6; ++i, p = sampler.next(p)) {
      const Prefetcher::Item item = pf.next();
      BOOST_CHECK(item.position == p);
      BOOST_CHECK(item.batch.samples == std::vector<int64_t>{sampler.batch(p).samples[static_cast<size_t>(me)]});
      BOOST_CHECK(at::equal(item.batch.latents[0], synthetic_sample(spec, item.batch.bucket, item.batch.samples[0]).latent));
    }
    BOOST_CHECK_THROW(pf.next(), ov::Error);  // only 6 steps were planned
  }
  {
    // Dropped after 2 of 100 planned steps: must neither hang nor leave a rank in a collective read.
    Prefetcher pf(*ds, sampler, start, 100, layout, 3);
    pf.next();
    pf.next();
  }
  // The dataset is still usable collectively afterwards: the ranks stopped at the same read.
  const HostBatch hb = ds->read(sampler.batch({0, 0}), layout);
  BOOST_CHECK_EQUAL(hb.samples.size(), 1u);
  // To the compute device (the CPU here) in the compute dtype, values unchanged.
  const DeviceBatch db = to_device(hb, at::Device(at::kCPU), at::kFloat);
  BOOST_CHECK(db.latents.scalar_type() == at::kFloat && db.text.scalar_type() == at::kFloat);
  BOOST_CHECK(at::equal(db.latents, hb.latents.to(at::kFloat)));
  BOOST_CHECK(db.samples == hb.samples);
}

BOOST_AUTO_TEST_CASE(layouts_that_split_a_token_are_refused) {
  const SyntheticSpec spec = small_spec(shared_dir("layout"));
  DirGuard guard{spec.directory};
  write_synthetic_dataset(MPI_COMM_WORLD, spec);
  auto ds = Dataset::open(spec.directory, MPI_COMM_WORLD);
  try {
    ds->check_layout(ReaderLayout{0, 1, 0, 4, 2});
    BOOST_ERROR("cp 4 of a 4-frame bucket with time_patch 2 must be refused");
  } catch (const ov::InputError& e) {
    BOOST_CHECK_MESSAGE(has(e.what(), "t4_h4_w6") && has(e.what(), "choose --cp dividing 2"), e.what());
  }
}

BOOST_AUTO_TEST_CASE(bad_datasets_end_every_rank_with_one_clear_message) {
  const SyntheticSpec spec = small_spec(shared_dir("bad"));
  DirGuard guard{spec.directory};
  const std::string shard0 = spec.directory + "/shard-00000.h5", manifest = spec.directory + "/dataset.json";
  auto fresh = [&] { write_synthetic_dataset(MPI_COMM_WORLD, spec); };
  auto open_error = [&] { return collective_error([&] { Dataset::open(spec.directory, MPI_COMM_WORLD); }); };

  std::string e = collective_error([&] { Dataset::open(spec.directory + "/nowhere", MPI_COMM_WORLD); });
  BOOST_CHECK_MESSAGE(has(e, "nowhere' does not exist"), e);

  fresh();
  on_rank0([&] { std::ofstream(manifest) << "{ not json"; });
  e = open_error();
  BOOST_CHECK_MESSAGE(has(e, "dataset.json' is not valid JSON"), e);

  fresh();
  on_rank0([&] {
    std::ifstream in(manifest);
    std::string text((std::istreambuf_iterator<char>(in)), {});
    text.replace(text.find("\"format_version\": 1"), 19, "\"format_version\": 7");
    std::ofstream(manifest) << text;
  });
  e = open_error();
  BOOST_CHECK_MESSAGE(has(e, "format version 7; this openvid reads version 1"), e);

  fresh();
  on_rank0([&] { std::filesystem::remove(spec.directory + "/shard-00001.h5"); });
  e = open_error();
  BOOST_CHECK_MESSAGE(has(e, "shard-00001.h5' (listed in the manifest) does not exist"), e);

  fresh();
  on_rank0([&] { std::ofstream(shard0) << "this is not an HDF5 file"; });
  e = open_error();
  BOOST_CHECK_MESSAGE(has(e, "shard-00000.h5' is not an HDF5 file"), e);

  fresh();
  on_rank0([&] {
    const hid_t f = H5Fopen(shard0.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    const int64_t two = 2;
    const hid_t a = H5Aopen(f, "format_version", H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT64, &two);
    H5Aclose(a);
    H5Fclose(f);
  });
  e = open_error();
  BOOST_CHECK_MESSAGE(has(e, "shard-00000.h5' has format version 2"), e);

  fresh();
  on_rank0([&] {
    const hid_t f = H5Fopen(shard0.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(f, "/buckets/t8_h2_w4/text", H5P_DEFAULT);
    H5Fclose(f);
  });
  e = open_error();
  BOOST_CHECK_MESSAGE(has(e, "shard-00000.h5'") && has(e, "'/buckets/t8_h2_w4/text' is missing"), e);

  fresh();
  on_rank0([&] {
    const hid_t f = H5Fopen(shard0.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(f, "/buckets/t4_h4_w6/latents", H5P_DEFAULT);
    const hsize_t dims[5] = {7, 3, 4, 4, 6};
    const hid_t space = H5Screate_simple(5, dims, nullptr);
    const hid_t d = H5Dcreate2(f, "/buckets/t4_h4_w6/latents", H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(d);
    H5Sclose(space);
    H5Fclose(f);
  });
  e = open_error();
  BOOST_CHECK_MESSAGE(has(e, "/buckets/t4_h4_w6/latents is not stored as IEEE half"), e);

  fresh();
  on_rank0([&] {  // the manifest claims one more row in shard 0 than the file holds (counts kept consistent)
    std::ifstream in(manifest);
    std::string text((std::istreambuf_iterator<char>(in)), {});
    text.replace(text.find("\"count\": 22"), 11, "\"count\": 23");
    text.replace(text.find("\"count\": 7"), 10, "\"count\": 8");
    std::ofstream(manifest) << text;
  });
  e = open_error();
  BOOST_CHECK_MESSAGE(has(e, "/latents has shape [7, 3, 4, 4, 6], the manifest implies [8, 3, 4, 4, 6]"), e);

  fresh();
  on_rank0([&] {
    std::ifstream in(manifest);
    std::string text((std::istreambuf_iterator<char>(in)), {});
    text.replace(text.find("\"count\": 22"), 11, "\"count\": 21");
    std::ofstream(manifest) << text;
  });
  e = open_error();
  BOOST_CHECK_MESSAGE(has(e, "counts 21 samples but its shards hold 22"), e);

  fresh();
  on_rank0([&] {  // NaN in row 2 of bucket t4_h4_w6 in shard 0
    const hid_t f = H5Fopen(shard0.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    const hid_t d = H5Dopen2(f, "/buckets/t4_h4_w6/latents", H5P_DEFAULT);
    const hid_t space = H5Dget_space(d);
    const hsize_t start[5] = {2, 1, 3, 2, 5}, one[5] = {1, 1, 1, 1, 1};
    H5Sselect_hyperslab(space, H5S_SELECT_SET, start, nullptr, one, nullptr);
    const hid_t mem = H5Screate_simple(5, one, nullptr);
    const float nan = NAN;
    H5Dwrite(d, H5T_NATIVE_FLOAT, mem, space, H5P_DEFAULT, &nan);
    H5Sclose(mem);
    H5Sclose(space);
    H5Dclose(d);
    H5Fclose(f);
  });
  {
    auto ds = Dataset::open(spec.directory, MPI_COMM_WORLD, DatasetOptions{true});
    GlobalBatch gb;
    gb.bucket = 0;
    for (int r = 0; r < ov::world_size(); ++r) gb.samples.push_back(r == ov::world_size() - 1 ? 2 : 9);
    e = collective_error([&] { ds->read(gb, ReaderLayout{ov::world_rank(), ov::world_size(), 0, 1, 2}); });
    BOOST_CHECK_MESSAGE(has(e, "shard-00000.h5', bucket 't4_h4_w6', row 2: the latent or text states hold NaN or Inf"), e);
  }
}

BOOST_AUTO_TEST_CASE(a_dataset_written_by_h5py_is_read) {
  const char* dir = std::getenv("OPENVID_H5PY_DATASET");
  BOOST_TEST_REQUIRE(dir != nullptr, "OPENVID_H5PY_DATASET names the directory tests/write_h5py_dataset.py wrote");
  auto ds = Dataset::open(dir, MPI_COMM_WORLD);
  const Manifest& m = ds->manifest();
  BOOST_CHECK_EQUAL(m.latent_encoder, "formula");
  const int world = ov::world_size(), me = ov::world_rank();
  const int cp = world % 2 == 0 ? 2 : 1;  // with an even world size, also read time slices
  GlobalBatch gb;
  gb.bucket = 0;
  for (int r = 0; r < world / cp; ++r) gb.samples.push_back((r * 5 + 1) % 6);
  const ReaderLayout layout{me / cp, world / cp, me % cp, cp, 1};
  const HostBatch hb = ds->read(gb, layout);
  const int64_t i = hb.samples[0];
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t t = 0; t < hb.t_count; ++t)
      for (int64_t h = 0; h < 2; ++h)
        for (int64_t w = 0; w < 3; ++w) {
          const double want = ((i * 7 + c * 3 + (t + hb.t_begin) * 5 + h * 11 + w * 13) % 17 - 8) / 4.0;
          BOOST_CHECK_EQUAL(hb.latents[0][c][t][h][w].item<double>(), want);
        }
  for (int64_t l = 0; l < 5; ++l)
    for (int64_t d = 0; d < 7; ++d) BOOST_CHECK_EQUAL(hb.text[0][l][d].item<double>(), ((i + l * 3 + d * 5) % 13 - 6) / 2.0);
  BOOST_CHECK_EQUAL(hb.captions[0], "h5py sample " + std::to_string(i));
  BOOST_CHECK_EQUAL(ds->stats().independent_reads, 0);
}
