// openvid_sample: videos from a trained model, by the rectified flow's Euler sampler with classifier-free
// guidance (model/sampler.h), for text prompts (encoded here by the T5 encoder) or precomputed text states,
// decoded to MP4 files and a contact sheet by a TorchScript video decoder (Cosmos' decoder.jit contract).
//
//   openvid_sample --config RUN/config.ini --weights RUN/model.safetensors --shape 16x64x64 --out latents.safetensors
//                  (--text_states text.safetensors | --prompt "a red fox in snow" ... | --prompts_file prompts.txt
//                   --text_encoder FLUX.1-dev/text_encoder_2 [--tokenizer FLUX.1-dev/tokenizer_2])
//                  [--video_decoder Cosmos-0.1-Tokenizer-CV4x8x8/decoder.jit --video_out samples/]
//                  [--steps 50] [--guidance 6] [--seed 0] [--device cuda --precision bf16]
//
// text.safetensors: text_states [B, Lc, Dc]. out: latents [B, C, T, H, W] fp32 with the steps, guidance and
// seed in its metadata. video_out: sample_000.mp4, ... (one per prompt), contact_sheet.png (a row of frames
// per sample) and prompts.txt. The same seed gives the same latents on any device. Under mpirun -np N the N
// ranks sample together with context parallelism (each its slice of the latent frames, attention over all
// of them, as in training): the same latents as one process, for videos longer than one device holds.
#include <unistd.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <boost/program_options.hpp>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>


#include "openvid/comm/process_groups.h"
#include "openvid/config/options.h"
#include "openvid/parallel/parallelize.h"
#include "openvid/runtime/mpi_session.h"
#include "openvid/runtime/universe.h"
#include "openvid/data/synthetic.h"
#include "openvid/model/dit.h"
#include "openvid/model/safetensors.h"
#include "openvid/model/sampler.h"
#include "openvid/model/state_dict.h"
#include "openvid/runtime/error.h"
#include "openvid/text/t5_encoder.h"
#include "openvid/video/latent_codec.h"
#include "openvid/video/render.h"
#if OPENVID_HAVE_PREPROCESS
#include "openvid/text/tokenizer.h"
#endif

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace {

#if !OPENVID_HAVE_PREPROCESS
[[noreturn]] void needs_preprocessing_libraries(const char* what) {
  throw ov::InputError(std::string(what) + " needs SentencePiece and FFmpeg, which this build of openvid was made without: install "
                       "libsentencepiece-dev libavformat-dev libavcodec-dev libswscale-dev and rebuild (tools/setup.sh does both)");
}
#endif

std::vector<std::string> read_prompts(const std::vector<std::string>& prompts, const std::string& file) {
  std::vector<std::string> all = prompts;
  if (!file.empty()) {
    std::ifstream in(file);
    if (!in) throw ov::InputError("--prompts_file '" + file + "' cannot be read");
    for (std::string line; std::getline(in, line);) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!line.empty()) all.push_back(line);
    }
  }
  return all;
}

// Text states [B, Lc, Dc] for the prompts, by the T5 encoder (its tokenizer as in preprocessing).
at::Tensor encode_prompts(const std::vector<std::string>& prompts, const std::string& encoder, const std::string& tokenizer, int64_t tokens,
                          const at::Device& device, at::ScalarType dtype) {
#if OPENVID_HAVE_PREPROCESS
  const ov::text::Tokenizer tok(tokenizer.empty() ? encoder : tokenizer);
  const ov::text::T5Encoder t5(encoder, device, dtype);
  return t5.encode(tok.encode(prompts, tokens)).to(at::kFloat);
#else
  (void)prompts, (void)encoder, (void)tokenizer, (void)tokens, (void)device, (void)dtype;
  needs_preprocessing_libraries("--prompt");
#endif
}

// Decodes each sample's latent to video (video/render.h, as the trainer's samples): MP4 files and a contact
// sheet of up to 8 frames per sample, at full size.
void write_videos(const at::Tensor& latents, const ov::video::LatentCodec& dec, double scale, double shift, const std::string& dir, int fps) {
  fs::create_directories(dir);
  const ov::video::RenderedSheet sheet = ov::video::render_samples(dec, latents, ov::video::RenderOptions{scale, shift, fps, 8, 1 << 20}, [&](int64_t i) {
    char name[32];
    std::snprintf(name, sizeof(name), "sample_%03lld.mp4", static_cast<long long>(i));
    return (fs::path(dir) / name).string();
  });
  std::ofstream((fs::path(dir) / "contact_sheet.png").string(), std::ios::binary) << sheet.png;
}

// The weights to sample with: the moving average (ema.safetensors, written beside model.safetensors by a run
// with --ema_decay) when it is there and `ema` is auto or on, else `weights` itself.
std::string pick_weights(const std::string& weights, const std::string& ema) {
  if (ema != "auto" && ema != "on" && ema != "off") throw ov::InputError("--ema must be auto, on or off (got '" + ema + "')");
  const fs::path p(weights);
  const fs::path beside = (fs::is_directory(p) ? p : p.parent_path()) / "ema.safetensors";
  const bool usable = fs::is_directory(p) || p.filename() == "model.safetensors";
  if (ema != "off" && usable && fs::exists(beside)) return beside.string();
  if (ema == "on") throw ov::InputError("--ema on, but there is no ema.safetensors beside '" + weights + "' (train with --ema_decay)");
  return weights;
}

int sample(int argc, char** argv) {
  const int world = ov::world_size(), rank = ov::world_rank();
  std::string config, weights, text_path, shape, out, device = "cpu", precision = "fp32";
  std::vector<std::string> prompts;
  std::string prompts_file, text_encoder, tokenizer, video_decoder, video_out = "samples", ema = "auto", video_shape;
  int64_t batch_size = 0;
  int64_t text_tokens = 512;
  int fps = 24;
  double latent_scale = 1.0, latent_shift = 0.0;
  ov::video::Compression compression;
  ov::model::SamplerOptions so;
  uint64_t seed = 0;
  po::options_description desc("openvid_sample: videos from a trained model for text prompts or text states");
  desc.add_options()("help,h", "print this help")
      ("config", po::value(&config)->required(), "the run's config.ini (or any INI with the model options)")
      ("weights", po::value(&weights)->required(), "safetensors file, index.json of a sharded set, or run/checkpoint directory")
      ("ema", po::value(&ema)->default_value(ema), "auto: the moving average of the weights (ema.safetensors beside them) when there; on; off")
      ("text_states", po::value(&text_path), "safetensors with text_states [B, Lc, Dc] (instead of prompts)")
      ("prompt", po::value(&prompts)->multitoken(), "a text prompt; repeat for more (needs --text_encoder)")
      ("prompts_file", po::value(&prompts_file), "a file of prompts, one per line")
      ("text_encoder", po::value(&text_encoder), "Hugging Face T5 encoder folder for the prompts")
      ("tokenizer", po::value(&tokenizer), "spiece.model or its folder (default: in --text_encoder)")
      ("text_tokens", po::value(&text_tokens)->default_value(text_tokens), "tokens per prompt (as in preprocessing)")
      ("shape", po::value(&shape), "latent FRAMESxHEIGHTxWIDTH, e.g. 16x64x64")
      ("video_shape", po::value(&video_shape), "or the video's FRAMESxHEIGHTxWIDTH in pixels, e.g. 61x512x512 (by the compression factors)")
      ("batch_size", po::value(&batch_size)->default_value(batch_size), "samples per model call (0: all at once); each sample keeps its noise, so results agree up to rounding")
      ("out", po::value(&out)->required(), "safetensors to write: latents [B, C, T, H, W] fp32")
      ("video_decoder", po::value(&video_decoder), "TorchScript video decoder: also write MP4 files and a contact sheet")
      ("video_out", po::value(&video_out)->default_value(video_out), "folder for the videos")
      ("fps", po::value(&fps)->default_value(fps), "frame rate of the videos")
      ("temporal_compression", po::value(&compression.temporal)->default_value(compression.temporal), "the decoder's frames per latent frame")
      ("spatial_compression", po::value(&compression.spatial)->default_value(compression.spatial), "the decoder's pixels per latent pixel")
      ("latent_scale", po::value(&latent_scale)->default_value(latent_scale), "the dataset's latent_scale (decoded: latent / scale + shift)")
      ("latent_shift", po::value(&latent_shift)->default_value(latent_shift), "the dataset's latent_shift")
      ("steps", po::value(&so.steps)->default_value(so.steps), "Euler steps")
      ("guidance", po::value(&so.guidance)->default_value(so.guidance), "classifier-free guidance scale (1: none)")
      ("seed", po::value(&seed)->default_value(seed), "seed of the starting noise")
      ("device", po::value(&device)->default_value(device), "cpu, cuda or auto (a GPU when there is one)")
      ("precision", po::value(&precision)->default_value(precision), "fp32, bf16 or auto (bf16 on GPUs) compute");
  po::variables_map vm;
  ov::all_ranks_check(MPI_COMM_WORLD, [&] { ov::parse_tool_command_line(desc, argc, argv, vm); });
  if (vm.count("help")) {
    if (rank == 0) std::cout << desc << "\n";
    return 0;
  }
  // Everything a rank can find wrong before sampling, agreed on by every rank (one message, exit 2).
  ov::Options options;
  at::Tensor text;
  ov::model::DiT model{nullptr};
  ov::model::TokenWindow window;
  int64_t frames = 0, height = 0, width = 0;
  at::Device dev = at::kCPU;
  at::ScalarType dtype = at::kFloat;
  std::vector<std::string> all_prompts;
  std::string chosen;
  ov::DeviceRequest request = ov::DeviceRequest::kCpu;
  ov::Precision compute = ov::Precision::kFp32;
  ov::all_ranks_check(MPI_COMM_WORLD, [&] {
    request = ov::parse_device("device", device);
    compute = ov::parse_precision("precision", precision, "openvid_sample");
  });
  // Context parallelism over the ranks (the self-attention gathers every rank's keys and values); each rank's
  // GPU and compute dtype by the trainer's rules, the GPU made current before anything touches CUDA.
  ov::Universe u = ov::Universe::create(MPI_COMM_WORLD, 1, world, request);
  if (u.device().kind == ov::DeviceKind::kCuda) dev = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(u.device().index));
  dtype = ov::compute_dtype(compute, u.device());
  ov::all_ranks_check(MPI_COMM_WORLD, [&] {
    if (so.steps < 1) throw ov::InputError("--steps must be >= 1");
    if (latent_scale == 0) throw ov::InputError("--latent_scale must not be 0");
    all_prompts = read_prompts(prompts, prompts_file);
    if (all_prompts.empty() == text_path.empty()) throw ov::InputError("give either --text_states or prompts (--prompt, --prompts_file)");
    if (!all_prompts.empty() && text_encoder.empty()) throw ov::InputError("prompts need --text_encoder (a Hugging Face T5 encoder folder)");
    options = ov::parse_command_line({"--config", config}).options;
    so.shift = options.timestep_shift;
    if (shape.empty() == video_shape.empty()) throw ov::InputError("give the size as --shape (latent) or --video_shape (pixels)");
    if (!video_shape.empty()) {  // pixels -> latent by the decoder's compression
      const auto [f, h, w] = ov::data::parse_latent_shape(video_shape, "--video_shape");
      const int64_t tc = compression.temporal, sc = compression.spatial;
      if ((f - 1) % tc || h % sc || w % sc) {
        throw ov::InputError("--video_shape " + video_shape + " is not 1 + " + std::to_string(tc) + "k frames of multiples of " + std::to_string(sc) +
                             " pixels (--temporal_compression, --spatial_compression)");
      }
      shape = std::to_string(1 + (f - 1) / tc) + "x" + std::to_string(h / sc) + "x" + std::to_string(w / sc);
    }
    if (batch_size < 0) throw ov::InputError("--batch_size must be >= 0");
    std::tie(frames, height, width) = std::tuple_cat(ov::data::parse_latent_shape(shape, "--shape"));
    const ov::model::DiTConfig& mc = options.model;
    window.t = frames / mc.time_patch;
    window.h = height / mc.patch;
    window.w = width / mc.patch;
    if (frames % mc.time_patch || height % mc.patch || width % mc.patch || window.t % world) {
      throw ov::InputError("--shape " + shape + " does not fit the model (frames a multiple of time_patch " + std::to_string(mc.time_patch) +
                           ", height and width of patch " + std::to_string(mc.patch) + ") and " + std::to_string(world) +
                           " rank(s) (its latent frames / time_patch split evenly over them)");
    }
    window.t_count = window.t / world;
    window.t_begin = rank * window.t_count;

    // The weights against the config first: when they differ (another text width, say), the config is what
    // is wrong, not the text encoder checked after it.
    model = ov::model::DiT(options.model);
    chosen = pick_weights(weights, ema);
    try {
      ov::model::load_state_dict(*model, ov::model::read_weights(chosen), chosen);
    } catch (const ov::InputError& e) {
      throw ov::InputError(std::string(e.what()) + ". The model is built from --config '" + config +
                           "': give the config.ini of the run that trained these weights");
    }
    if (!text_path.empty()) {
      const ov::model::TensorMap in = ov::model::read_safetensors(text_path).tensors;
      const auto it = in.find("text_states");
      if (it == in.end()) throw ov::InputError("'" + text_path + "' has no tensor 'text_states'");
      text = it->second.to(at::kFloat);
    } else {
      text = encode_prompts(all_prompts, text_encoder, tokenizer, text_tokens, dev, dtype);
    }
    if (text.dim() != 3 || text.size(2) != options.model.text_dim) {
      throw ov::InputError("the text states are " + c10::str(text.sizes()) + ", the model (and its weights) take [B, Lc, " +
                           std::to_string(options.model.text_dim) + "]: is the text encoder the one the training data was made with?");
    }
    model->to(dev);
    model->set_compute_dtype(dtype);
  });
  // Rank 0's video decoder, tried on one latent of the asked shape before any sampling (a video encoder
  // given in its place is recognised and named).
  std::optional<ov::video::LatentCodec> decoder;
  if (!video_decoder.empty()) {
    ov::root_check(MPI_COMM_WORLD, [&] {
      if (!ov::video::can_write_videos()) {
        throw ov::InputError("--video_decoder writes MP4 files through FFmpeg, which this build of openvid was made without: install "
                             "libavformat-dev libavcodec-dev libswscale-dev and rebuild (tools/setup.sh does both)");
      }
      if (!fs::is_regular_file(video_decoder)) throw ov::InputError("--video_decoder '" + video_decoder + "' does not exist");
      decoder.emplace(video_decoder, ov::video::LatentCodec::Part::kDecoder, compression, dev, dtype);
      decoder->check(frames, height, width, options.model.in_channels);
    });
  }
  if (rank == 0) std::cout << "weights: " << chosen << (chosen != weights ? " (the moving average)" : "") << "\n";
  auto groups = ov::comm::ProcessGroups::create(u, dev.is_cuda() && world > 1 ? ov::comm::Backend::kNccl : ov::comm::Backend::kMpi,
                                                std::chrono::milliseconds(600000));
  ov::parallel::parallelize(model, ov::parallel::Parallelism{&groups.cp(), 0});  // the time slices over the ranks; nothing recomputed
  // The noise is drawn on the CPU from the seed alone: the same latents start on any device.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const at::Tensor noise = at::normal(0.0, 1.0, {text.size(0), options.model.in_channels, frames, height, width}, gen);
  if (rank == 0) {
    // A terminal gets one line redrawn in place; a file or pipe (a Slurm log) whole lines, about ten per batch.
    so.progress = [terminal = ::isatty(STDOUT_FILENO) == 1](int64_t done, int64_t steps) {
      if (terminal) {
        std::cout << "\rsampling: step " << done << "/" << steps << (done == steps ? "\n" : "") << std::flush;
      } else if (done == 1 || done == steps || done % std::max<int64_t>(1, steps / 10) == 0) {
        std::cout << "sampling: step " << done << "/" << steps << "\n" << std::flush;
      }
    };
  }
  const int64_t tp = options.model.time_patch;
  const at::Tensor local_noise = noise.narrow(2, window.t_begin * tp, window.t_count * tp).contiguous();
  std::vector<at::Tensor> parts;  // batch by batch: each sample's noise is its own whatever the batch size
  const int64_t n = text.size(0), step = batch_size > 0 ? batch_size : n;
  for (int64_t first = 0; first < n; first += step) {
    const int64_t count = std::min(step, n - first);
    parts.push_back(ov::model::sample_latents(model, local_noise.narrow(0, first, count).to(dev), text.narrow(0, first, count).to(dev), so,
                                              world > 1 ? &window : nullptr));
  }
  const at::Tensor local = at::cat(parts);
  at::Tensor latents = local.cpu();
  if (world > 1) {  // every rank's time slice, in rank order
    at::Tensor all = at::empty({world * local.numel()}, local.options());
    groups.cp().all_gather(all, local.contiguous().view(-1)).wait();
    latents = all.view({world, local.size(0), local.size(1), local.size(2), local.size(3), local.size(4)})
                  .permute({1, 2, 0, 3, 4, 5})
                  .reshape({local.size(0), local.size(1), world * local.size(2), local.size(3), local.size(4)})
                  .cpu();
  }
  groups.finalize();
  if (rank != 0) return 0;
  if (fs::path(out).has_parent_path()) fs::create_directories(fs::path(out).parent_path());
  ov::model::write_safetensors(out, {{"latents", latents}},
                               {{"producer", ov::version_string() + " openvid_sample"}, {"steps", std::to_string(so.steps)},
                                {"guidance", std::to_string(so.guidance)}, {"seed", std::to_string(seed)}});
  std::cout << "wrote latents " << c10::str(latents.sizes()) << " (" << so.steps << " steps, guidance " << so.guidance << ", seed "
            << seed << ") to " << out << "\n";
  if (!video_decoder.empty()) {
    write_videos(latents, *decoder, latent_scale, latent_shift, video_out, fps);
    if (!all_prompts.empty()) {
      std::ofstream p(fs::path(video_out) / "prompts.txt");
      for (size_t i = 0; i < all_prompts.size(); ++i) p << "sample_" << (i < 10 ? "00" : i < 100 ? "0" : "") << i << ".mp4\t" << all_prompts[i] << "\n";
    }
    std::cout << "wrote " << latents.size(0) << " video(s) and contact_sheet.png to " << video_out << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return ov::run_mpi_main(argc, argv, sample); }
