#include "openvid/preprocess/pipeline.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>

#include "openvid/config/options.h"
#include "openvid/preprocess/clip_decoding.h"
#include "openvid/data/manifest.h"
#include "openvid/data/shard_writer.h"
#include "openvid/runtime/error.h"
#include "openvid/runtime/files.h"
#include "openvid/runtime/mpi_session.h"
#include "openvid/runtime/universe.h"
#include "openvid/text/t5_encoder.h"
#include "openvid/text/tokenizer.h"
#include "openvid/video/video_io.h"

namespace ov::preprocess {
namespace fs = std::filesystem;
using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

std::string options_record(const PreprocessOptions& o) {
  json j;
  j["csv"] = o.csv;
  j["video_root"] = o.video_root;
  j["video_column"] = o.video_column;
  j["caption_column"] = o.caption_column;
  j["filters"] = json::array();
  for (const Filter& f : o.filters) j["filters"].push_back(f.text);
  j["buckets"] = json::array();
  for (const LatentShape& b : o.buckets) j["buckets"].push_back(data::bucket_name(b[0], b[1], b[2]));
  j["frame_stride"] = o.sampling.stride;
  j["target_fps"] = o.sampling.target_fps;
  j["start_seconds"] = o.sampling.start;
  j["video_encoder"] = o.video_encoder;
  j["temporal_compression"] = o.compression.temporal;
  j["spatial_compression"] = o.compression.spatial;
  j["latent_scale"] = o.latent_scale;
  j["latent_shift"] = o.latent_shift;
  j["text_encoder"] = o.text_encoder;
  j["tokenizer"] = o.tokenizer;
  j["text_tokens"] = o.text_tokens;
  j["precision"] = o.precision;
  j["clips_per_shard"] = o.clips_per_shard;
  j["caption_bytes"] = o.caption_bytes;
  j["max_clips"] = o.max_clips;
  return j.dump(1);
}

namespace {

std::string part_name(int64_t p, const char* ext) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "part-%05lld.%s", static_cast<long long>(p), ext);
  return buf;
}

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }


struct Encoders {
  video::LatentCodec video;
  text::Tokenizer tokenizer;
  text::T5Encoder text;
};

struct StageTimes {
  double decode = 0, video_encode = 0, text_encode = 0, write = 0;
};

// Encodes, writes and records part `p` (clips [first, last) of the list).
json process_part(int64_t p, const std::vector<Clip>& clips, size_t first, size_t last, Encoders& enc, const PreprocessOptions& o) {
  StageTimes t;
  std::vector<Skip> skipped;
  std::vector<std::string> notes;
  const auto note = [&](const Clip& c, const std::string& what) {
    notes.push_back("row " + std::to_string(c.row) + " (line " + std::to_string(c.line) + ", " + c.video + "): " + what);
  };
  // Per bucket: the clips kept (indices into `clips`) and their latents, in list order.
  std::map<int, std::vector<size_t>> kept;
  std::map<int, std::vector<at::Tensor>> latents;
  std::map<int, std::vector<std::pair<size_t, at::Tensor>>> pending;
  auto encode_pending = [&](int b) {
    auto& batch = pending[b];
    if (batch.empty()) return;
    const auto t0 = Clock::now();
    std::vector<at::Tensor> videos;
    for (auto& [i, v] : batch) videos.push_back(v);
    const at::Tensor z = enc.video.run(at::stack(videos)).sub(o.latent_shift).mul(o.latent_scale).cpu();
    for (size_t k = 0; k < batch.size(); ++k) {
      kept[b].push_back(batch[k].first);
      latents[b].push_back(z[static_cast<int64_t>(k)]);
    }
    batch.clear();
    t.video_encode += seconds_since(t0);
  };
  // Decoding runs one clip ahead of the encoder, on its own thread.
  auto decode_async = [&](size_t i) { return std::async(std::launch::async, [&, i] { return decode_clip(clips[i], o); }); };
  std::future<Decoded> next = decode_async(first);
  for (size_t i = first; i < last; ++i) {
    Decoded d = next.get();
    if (i + 1 < last) next = decode_async(i + 1);
    t.decode += d.seconds;
    if (d.skip) {
      skipped.push_back(*d.skip);
      continue;
    }
    if (!d.note.empty()) note(clips[i], d.note);
    pending[d.bucket].emplace_back(i, d.video);
    if (static_cast<int64_t>(pending[d.bucket].size()) >= o.batch_size) encode_pending(d.bucket);
  }
  for (auto& [b, batch] : pending) encode_pending(b);

  // Text states, bucket by bucket in the buckets' order, batched.
  std::vector<data::ShardRows> rows;
  json counts = json::object();
  int64_t channels = 0, text_dim = 0;
  for (auto& [b, members] : kept) {
    data::ShardRows r;
    const LatentShape& shape = o.buckets[static_cast<size_t>(b)];
    r.frames = shape[0];
    r.height = shape[1];
    r.width = shape[2];
    r.latents = at::stack(latents[b]);
    std::vector<at::Tensor> states;
    const auto t0 = Clock::now();
    for (size_t k = 0; k < members.size(); k += static_cast<size_t>(o.batch_size)) {
      const size_t end = std::min(members.size(), k + static_cast<size_t>(o.batch_size));
      at::Tensor ids = at::empty({static_cast<int64_t>(end - k), o.text_tokens}, at::kLong);  // each caption tokenized once
      for (size_t m = k; m < end; ++m) {
        const Clip& c = clips[members[m]];
        bool cut = false;
        const std::vector<int64_t> row = enc.tokenizer.encode(c.caption, o.text_tokens, &cut);
        std::copy(row.begin(), row.end(), ids[static_cast<int64_t>(m - k)].data_ptr<int64_t>());
        if (cut) note(c, "caption cut to " + std::to_string(o.text_tokens - 1) + " tokens and EOS");
        if (static_cast<int64_t>(c.caption.size()) > o.caption_bytes) note(c, "caption stored cut to " + std::to_string(o.caption_bytes) + " bytes");
      }
      states.push_back(enc.text.encode(ids).cpu());
    }
    t.text_encode += seconds_since(t0);
    r.text = at::cat(states);
    for (size_t m : members) {
      r.captions.push_back(clips[m].caption);
      r.source_ids.push_back(clips[m].video);
    }
    channels = r.latents.size(1);
    text_dim = r.text.size(2);
    counts[data::bucket_name(r.frames, r.height, r.width)] = static_cast<int64_t>(members.size());
    rows.push_back(std::move(r));
  }
  const auto t0 = Clock::now();
  data::Provenance prov{o.video_encoder, o.text_encoder, o.latent_scale, o.latent_shift};
  if (!rows.empty()) data::write_shard((fs::path(o.out) / part_name(p, "h5")).string(), rows, prov, o.caption_bytes);
  t.write = seconds_since(t0);

  json j;
  j["part"] = p;
  j["first_clip"] = static_cast<int64_t>(first);
  j["clips"] = static_cast<int64_t>(last - first);
  j["file"] = rows.empty() ? "" : part_name(p, "h5");
  j["buckets"] = counts;
  j["latent_channels"] = channels;
  j["text_dim"] = text_dim;
  j["skipped"] = json::array();
  for (const Skip& s : skipped) {
    j["skipped"].push_back({{"row", s.row}, {"line", s.line}, {"video", s.video}, {"kind", s.kind}, {"reason", s.reason}});
  }
  j["notes"] = notes;
  j["seconds"] = {{"decode", t.decode}, {"video_encode", t.video_encode}, {"text_encode", t.text_encode}, {"write", t.write}};
  write_file_durably((fs::path(o.out) / part_name(p, "json")).string(), j.dump(1) + "\n");  // last: the part is finished
  return j;
}

}  // namespace

int run_preprocess(MPI_Comm comm, const PreprocessOptions& o) {
  const auto start = Clock::now();
  int rank = 0, ranks = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &ranks);
  const bool root = rank == 0;

  // Inputs every rank checks alike: the options, the clip list, the encoders (each rank loads its own).
  ClipList list;
  std::optional<Encoders> enc;
  DeviceRequest request = DeviceRequest::kCpu;
  Precision precision = Precision::kAuto;
  all_ranks_check(comm, [&] {
    request = parse_device("device", o.device);
    precision = parse_precision("precision", o.precision, "openvid_preprocess");
  });
  // Each rank's GPU and compute dtype by the trainer's rules; ranks may share a GPU here (inference, no NCCL).
  const DeviceChoice choice = choose_device(comm, request, GpuSharing::kAllow);
  const at::Device device = choice.kind == DeviceKind::kCuda ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(choice.index)) : at::Device(at::kCPU);
  const at::ScalarType dtype = compute_dtype(precision, choice);
  all_ranks_check(comm, [&] {
    if (o.buckets.empty()) throw InputError("give at least one --bucket FRAMESxHEIGHTxWIDTH (latent shape, e.g. 16x64x64)");
    if (o.batch_size < 1 || o.clips_per_shard < 1 || o.text_tokens < 1 || o.caption_bytes < 1) {
      throw InputError("--batch_size, --clips_per_shard, --text_tokens and --caption_bytes must be positive");
    }
    if (o.model_patch < 1 || o.model_time_patch < 1) throw InputError("--model_patch and --model_time_patch must be positive");
    if (o.sampling.stride < 1 || o.sampling.target_fps < 0 || o.sampling.start < 0) {
      throw InputError("--frame_stride must be >= 1, --target_fps and --start_seconds >= 0");
    }
    if (!fs::is_directory(o.video_root)) throw InputError("--video_root '" + o.video_root + "' is not a directory");
    list = read_clip_list(o.csv, o.video_column, o.caption_column, o.filters);
    if (o.max_clips > 0 && static_cast<int64_t>(list.clips.size()) > o.max_clips) list.clips.resize(static_cast<size_t>(o.max_clips));
    enc.emplace(Encoders{video::LatentCodec(o.video_encoder, video::LatentCodec::Part::kEncoder, o.compression, device, dtype),
                         text::Tokenizer(o.tokenizer.empty() ? o.text_encoder : o.tokenizer), text::T5Encoder(o.text_encoder, device, dtype)});
    // One clip of the smallest bucket through the video encoder before anything is written (16 latent
    // channels, Cosmos's, only to recognise a decoder given in its place).
    const LatentShape& small = *std::min_element(o.buckets.begin(), o.buckets.end(), [](const LatentShape& a, const LatentShape& b) {
      return a[0] * a[1] * a[2] < b[0] * b[1] * b[2];
    });
    enc->video.check(small[0], small[1], small[2], 16);
  });
  if (root) std::cout << patch_warning(o.buckets, o.model_patch, o.model_time_patch) << std::flush;
  // The output directory: new, or a restart of this very job.
  const std::string record = options_record(o);
  root_check(comm, [&] {
    std::error_code ec;
    fs::create_directories(o.out, ec);
    if (ec) throw InputError("cannot create --out '" + o.out + "': " + ec.message());
    const fs::path rec = fs::path(o.out) / "preprocess.json", manifest = fs::path(o.out) / data::kManifestName;
    if (fs::exists(rec)) {
      std::ifstream in(rec);
      const std::string old((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      bool finished_part = false;  // a start that failed before finishing a part leaves nothing to keep
      for (const auto& e : fs::directory_iterator(o.out)) {
        const std::string name = e.path().filename().string();
        finished_part = finished_part || (name.rfind("part-", 0) == 0 && e.path().extension() == ".json");
      }
      if (old != record + "\n" && finished_part) {
        throw InputError("--out '" + o.out + "' holds a preprocessing job with other options (" + rec.string() +
                         "): repeat them to resume it, or choose another --out");
      }
      if (old != record + "\n") {
        std::cout << "preprocess: --out " << o.out << " holds a job with other options that finished no part: starting this one there\n";
        write_file_durably(rec.string(), record + "\n");
      }
    }
    if (fs::exists(manifest)) {  // finished: nothing is rewritten
      throw InputError("--out '" + o.out + "' already holds a finished dataset (" + manifest.string() +
                       (fs::exists(rec) ? ", made by this very command" : "") + "): train on it with --dataset " + o.out +
                       ", or choose another --out to preprocess again");
    }
    if (!fs::exists(rec)) write_file_durably(rec.string(), record + "\n");
    for (const auto& e : fs::directory_iterator(o.out)) {  // a killed job's unfinished files
      if (e.path().extension() == ".tmp") fs::remove(e.path());
    }
  });

  const auto n = static_cast<int64_t>(list.clips.size());
  const int64_t parts = (n + o.clips_per_shard - 1) / o.clips_per_shard;
  // The clips of the parts not finished yet (a restart's remaining work), for rank 0's ETA.
  int64_t todo = 0;
  for (int64_t p = 0; root && p < parts; ++p) {
    if (!fs::exists(fs::path(o.out) / part_name(p, "json"))) todo += std::min(n, (p + 1) * o.clips_per_shard) - p * o.clips_per_shard;
  }
  int64_t done_here = 0;
  const auto t_work = Clock::now();
  for (int64_t p = rank; p < parts; p += ranks) {
    if (fs::exists(fs::path(o.out) / part_name(p, "json"))) continue;  // finished by an earlier run
    const auto first = static_cast<size_t>(p * o.clips_per_shard), last = static_cast<size_t>(std::min(n, (p + 1) * o.clips_per_shard));
    const json j = process_part(p, list.clips, first, last, *enc, o);
    done_here += static_cast<int64_t>(last - first);
    if (root) {
      const double rate = static_cast<double>(done_here) / seconds_since(t_work);
      const double left = static_cast<double>(todo) - static_cast<double>(done_here) * ranks;
      std::cout << "preprocess: part " << p + 1 << " of " << parts << " (" << j["clips"].get<int64_t>() << " clips, " << j["skipped"].size()
                << " skipped); rank 0 at " << std::fixed << std::setprecision(2) << rate << " clips/s, ~" << rate * ranks
                << " clips/s on " << ranks << " ranks, ETA " << std::setprecision(0) << std::max(0.0, left / (rate * ranks)) << " s\n"
                << std::defaultfloat << std::flush;
    }
  }
  // Every rank's parts are on disk before the manifest names them. (A plain barrier: ranks legitimately
  // finish hours apart; a rank that dies ends the job through mpiexec.)
  OV_MPI_CHECK(MPI_Barrier(comm));

  root_check(comm, [&] {
    data::Manifest m;
    m.directory = o.out;
    m.text_tokens = o.text_tokens;
    m.caption_bytes = o.caption_bytes;
    m.latent_encoder = o.video_encoder;
    m.text_encoder = o.text_encoder;
    m.latent_scale = o.latent_scale;
    m.latent_shift = o.latent_shift;
    std::vector<data::Bucket> buckets;
    for (const LatentShape& b : o.buckets) buckets.push_back({data::bucket_name(b[0], b[1], b[2]), b[0], b[1], b[2], 0, {}});
    json skipped = json::array(), notes = json::array(), filtered = json::array();
    std::map<std::string, int64_t> skip_kinds;
    StageTimes total;
    int64_t channels = 0, text_dim = 0;
    for (int64_t p = 0; p < parts; ++p) {
      std::ifstream in(fs::path(o.out) / part_name(p, "json"));
      if (!in) throw Error("part " + std::to_string(p) + " has no record after every rank finished: " + part_name(p, "json"));
      const json j = json::parse(in);
      for (data::Bucket& b : buckets) {
        if (!j["buckets"].contains(b.name)) continue;
        const int64_t c = j["buckets"][b.name].get<int64_t>();
        b.count += c;
        b.shards.push_back({j["file"].get<std::string>(), c});
      }
      if (j["latent_channels"].get<int64_t>() > 0) {
        channels = j["latent_channels"].get<int64_t>();
        text_dim = j["text_dim"].get<int64_t>();
      }
      for (const json& s : j["skipped"]) {
        skipped.push_back(s);
        ++skip_kinds[s["kind"].get<std::string>()];
      }
      for (const json& s : j["notes"]) notes.push_back(s);
      total.decode += j["seconds"]["decode"].get<double>();
      total.video_encode += j["seconds"]["video_encode"].get<double>();
      total.text_encode += j["seconds"]["text_encode"].get<double>();
      total.write += j["seconds"]["write"].get<double>();
    }
    for (const auto& [clip, reason] : list.filtered_out) {
      filtered.push_back({{"row", clip.row}, {"line", clip.line}, {"video", clip.video}, {"reason", reason}});
    }
    for (data::Bucket& b : buckets) {
      if (b.count > 0) m.buckets.push_back(b);
    }
    const double wall = seconds_since(start);
    int64_t kept = 0;
    for (const data::Bucket& b : m.buckets) kept += b.count;
    auto rate = [&](double s) { return s > 0 ? static_cast<double>(n) / s : 0.0; };
    json report;
    report["clips_listed"] = n + static_cast<int64_t>(list.filtered_out.size());
    report["clips_kept"] = kept;
    report["filtered_out"] = static_cast<int64_t>(list.filtered_out.size());
    report["skipped"] = static_cast<int64_t>(skipped.size());
    report["buckets"] = json::object();
    for (const data::Bucket& b : m.buckets) report["buckets"][b.name] = b.count;
    report["skipped_by_kind"] = skip_kinds;
    report["wall_seconds"] = wall;
    report["ranks"] = ranks;
    report["clips_per_second"] = static_cast<double>(n) / wall;
    // Per stage: clips per second of one rank's time in it (stages overlap: decoding runs beside encoding).
    report["stage_clips_per_second_per_rank"] = {{"decode", rate(total.decode)}, {"video_encode", rate(total.video_encode)},
                                                 {"text_encode", rate(total.text_encode)}, {"write", rate(total.write)}};
    report["stage_seconds"] = {{"decode", total.decode}, {"video_encode", total.video_encode}, {"text_encode", total.text_encode}, {"write", total.write}};
    report["skipped_clips"] = skipped;
    report["filtered_out_clips"] = filtered;
    report["notes"] = notes;
    write_file_durably((fs::path(o.out) / "preprocess_report.json").string(), report.dump(1) + "\n");

    std::cout << "preprocess: " << kept << " of " << report["clips_listed"].get<int64_t>() << " clips kept";
    for (const data::Bucket& b : m.buckets) std::cout << (&b == &m.buckets.front() ? " (" : ", ") << b.name << ": " << b.count;
    std::cout << (m.buckets.empty() ? "" : ")") << "; " << skipped.size() << " skipped";
    for (const auto& [kind, count] : skip_kinds) std::cout << (kind == skip_kinds.begin()->first ? " (" : ", ") << kind << ": " << count;
    std::cout << (skip_kinds.empty() ? "" : ")") << ", " << list.filtered_out.size() << " filtered out; " << notes.size() << " notes\n";
    const std::pair<const char*, double> stages[] = {{"decode", total.decode}, {"video encode", total.video_encode},
                                                     {"text encode", total.text_encode}, {"write", total.write}};
    const auto* slowest = &stages[0];
    std::cout << "preprocess: clips/s per rank by stage:";
    for (const auto& s : stages) {
      std::cout << " " << s.first << " " << std::fixed << std::setprecision(1) << rate(s.second);
      if (s.second > slowest->second) slowest = &s;
    }
    std::cout << std::defaultfloat << "; slowest: " << slowest->first << "\npreprocess: " << std::fixed << std::setprecision(1) << wall
              << " s on " << ranks << " rank(s), " << static_cast<double>(n) / wall << " clips/s; report " << o.out
              << "/preprocess_report.json\n" << std::defaultfloat << std::flush;
    if (kept == 0) {
      throw InputError("no clip could be used (" + std::to_string(skipped.size()) + " skipped, " + std::to_string(list.filtered_out.size()) +
                       " filtered out): see " + o.out + "/preprocess_report.json for the reasons");
    }
    m.latent_channels = channels;
    m.text_dim = text_dim;
    data::write_manifest(m);
    (void)data::read_manifest(o.out);  // what trainers will read: checked as they check it
    std::cout << "preprocess: wrote " << o.out << "/" << data::kManifestName << "\n" << std::flush;
  });
  return 0;
}

}  // namespace ov::preprocess
