#pragma once
// openvid_preprocess's job: a clip list (CSV) and a video folder in, a dataset of latents and T5 text
// states out (docs/dataset.md), on many MPI ranks. docs/preprocess.md describes it for users.
//
// Work is cut into parts of `clips_per_shard` consecutive clips of the (filtered) list; rank r takes parts
// r, r + ranks, ... Each part is decoded (a thread, one clip ahead of the encoders), encoded in batches
// (video: per bucket; text: per part) and written as out/part-NNNNN.h5, then out/part-NNNNN.json (its
// counts, skipped clips, stage times) last: a part is finished when its .json exists, so a restarted job
// skips finished parts and redoes the rest, and the dataset it ends with is the uninterrupted run's.
// Clips that cannot be used (missing, unreadable, too short for every bucket, filtered out) are skipped
// and reported with the reason, never fatal. At the end rank 0 writes dataset.json and
// preprocess_report.json and prints the report.
#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "openvid/preprocess/buckets.h"
#include "openvid/preprocess/clip_list.h"
#include "openvid/video/latent_codec.h"

namespace ov::preprocess {

struct PreprocessOptions {
  std::string csv, video_root, out;
  std::string video_column = "video", caption_column = "caption";
  std::vector<Filter> filters;
  std::vector<LatentShape> buckets;
  Sampling sampling;
  std::string video_encoder;  // TorchScript encoder.jit
  video::Compression compression;
  double latent_scale = 1.0, latent_shift = 0.0;  // stored latent = (encoder output - shift) * scale
  std::string text_encoder;   // Hugging Face T5 encoder folder
  std::string tokenizer;      // spiece.model or its folder ("" = the text encoder's folder)
  int64_t text_tokens = 512;
  std::string device = "cpu";     // cpu | cuda | auto (each rank's GPU by the trainer's binding rule; ranks may share one)
  std::string precision = "auto"; // auto (bf16 on GPUs, fp32 on CPUs) | fp32 | bf16
  int64_t batch_size = 4, clips_per_shard = 64, caption_bytes = 512, max_clips = 0;
  int decode_threads = 2;  // FFmpeg's threads per rank
  int64_t model_patch = 2, model_time_patch = 2;  // the model's patch sizes the buckets are checked against (not recorded)
};

// The options as recorded in out/preprocess.json: a restart must repeat them (the device may change).
std::string options_record(const PreprocessOptions& o);

// Collective over `comm`: runs the job. Bad options or inputs that stop every clip (missing CSV columns,
// encoder files) end it on every rank with InputError's exit; returns 0 when the dataset is written.
int run_preprocess(MPI_Comm comm, const PreprocessOptions& options);

}  // namespace ov::preprocess
