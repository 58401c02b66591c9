// openvid_preprocess: videos and captions -> a dataset of latents and T5 text states (docs/dataset.md), on
// the MPI ranks it is launched on (docs/preprocess.md).
//
//   mpirun -np 8 openvid_preprocess --csv OpenVid-1M.csv --video_root videos/ --out data/openvid
//     --bucket 16x60x80 --bucket 16x64x64 --target_fps 24 --filter 'aesthetic score>=4.5'
//     --video_encoder Cosmos-0.1-Tokenizer-CV4x8x8/encoder.jit --text_encoder FLUX.1-dev/text_encoder_2
//     --tokenizer FLUX.1-dev/tokenizer_2 --device cuda
#include <boost/program_options.hpp>

#include <iostream>

#include "openvid/config/options.h"
#include "openvid/data/synthetic.h"
#include "openvid/preprocess/pipeline.h"
#include "openvid/runtime/mpi_session.h"

namespace po = boost::program_options;

namespace {

int preprocess(int argc, char** argv) {
  ov::preprocess::PreprocessOptions o;
  std::vector<std::string> buckets, filters;
  po::options_description desc(
      "openvid_preprocess: videos and captions -> latents and T5 text states in openvid's dataset format, on many MPI ranks.\n"
      "Restarting the same command resumes a killed job; clips that cannot be used are skipped and reported");
  desc.add_options()("help,h", "print this help")
      ("csv", po::value(&o.csv)->required(), "clip list: a CSV file with a header row")
      ("video_root", po::value(&o.video_root)->required(), "folder the CSV's video paths are relative to")
      ("out", po::value(&o.out)->required(), "dataset folder to write (dataset.json, part-*.h5, preprocess_report.json)")
      ("video_column", po::value(&o.video_column)->default_value(o.video_column), "CSV column with the video path")
      ("caption_column", po::value(&o.caption_column)->default_value(o.caption_column), "CSV column with the caption")
      ("filter", po::value(&filters)->multitoken(), "keep rows where 'COLUMN OP NUMBER' holds (OP: >= <= > < == !=); repeat for more")
      ("bucket", po::value(&buckets)->multitoken(), "latent shape FRAMESxHEIGHTxWIDTH of a bucket (video: 1 + tc*(FRAMES-1) frames of "
                                                     "HEIGHT*sc x WIDTH*sc pixels); repeat for more")
      ("model_time_patch", po::value(&o.model_time_patch)->default_value(o.model_time_patch), "the model's time patch: warn at the start for buckets "
                                                                                           "whose FRAMES do not divide by it (the trainer refuses them)")
      ("model_patch", po::value(&o.model_patch)->default_value(o.model_patch), "the model's spatial patch: warn for HEIGHT or WIDTH not divisible by it")
      ("frame_stride", po::value(&o.sampling.stride)->default_value(o.sampling.stride), "take every N-th source frame")
      ("target_fps", po::value(&o.sampling.target_fps)->default_value(o.sampling.target_fps), "take frames 1/F s apart (overrides --frame_stride when > 0)")
      ("start_seconds", po::value(&o.sampling.start)->default_value(o.sampling.start), "skip this much of each clip's start")
      ("video_encoder", po::value(&o.video_encoder)->required(), "TorchScript video encoder (e.g. Cosmos-0.1-Tokenizer-CV4x8x8/encoder.jit)")
      ("temporal_compression", po::value(&o.compression.temporal)->default_value(o.compression.temporal), "video frames per latent frame (tc)")
      ("spatial_compression", po::value(&o.compression.spatial)->default_value(o.compression.spatial), "pixels per latent pixel (sc)")
      ("latent_scale", po::value(&o.latent_scale)->default_value(o.latent_scale), "stored latent = (encoder output - shift) * scale")
      ("latent_shift", po::value(&o.latent_shift)->default_value(o.latent_shift), "see --latent_scale")
      ("text_encoder", po::value(&o.text_encoder)->required(), "Hugging Face T5 encoder folder (config.json, model*.safetensors)")
      ("tokenizer", po::value(&o.tokenizer)->default_value(""), "spiece.model or its folder (default: in --text_encoder)")
      ("text_tokens", po::value(&o.text_tokens)->default_value(o.text_tokens), "tokens per caption (padded, cut, with EOS)")
      ("device", po::value(&o.device)->default_value(o.device), "cpu | cuda | auto (a node's ranks take its GPUs by node-local rank, sharing them when fewer)")
      ("precision", po::value(&o.precision)->default_value(o.precision), "auto (bf16 on GPUs, fp32 on CPUs) | fp32 | bf16")
      ("decode_threads", po::value(&o.decode_threads)->default_value(o.decode_threads), "FFmpeg decoding threads per rank (0: one per core)")
      ("batch_size", po::value(&o.batch_size)->default_value(o.batch_size), "clips per encoder call")
      ("clips_per_shard", po::value(&o.clips_per_shard)->default_value(o.clips_per_shard), "clips per part file (the unit of work and of resuming)")
      ("caption_bytes", po::value(&o.caption_bytes)->default_value(o.caption_bytes), "bytes of each stored caption")
      ("max_clips", po::value(&o.max_clips)->default_value(o.max_clips), "use only the first N clips that pass the filters (0: all)");
  po::variables_map vm;
  ov::all_ranks_check(MPI_COMM_WORLD, [&] {
    ov::parse_tool_command_line(desc, argc, argv, vm);
    for (const auto& b : buckets) o.buckets.push_back(ov::data::parse_latent_shape(b, "--bucket"));
    for (const auto& f : filters) o.filters.push_back(ov::preprocess::parse_filter(f));
  });
  if (vm.count("help")) {
    if (ov::world_rank() == 0) std::cout << desc << "\n";
    return 0;
  }
  return ov::preprocess::run_preprocess(MPI_COMM_WORLD, o);
}

}  // namespace

int main(int argc, char** argv) { return ov::run_mpi_main(argc, argv, preprocess); }
