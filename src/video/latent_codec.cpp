#include "openvid/video/latent_codec.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/script.h>

#include <algorithm>
#include <filesystem>

#include "openvid/runtime/error.h"

namespace ov::video {

LatentCodec::LatentCodec(const std::string& path, Part part, Compression compression, const at::Device& device, at::ScalarType dtype)
    : path_(path), part_(part), compression_(compression), device_(device), dtype_(dtype) {
  const char* what = part == Part::kEncoder ? "video encoder" : "video decoder";
  if (!std::filesystem::is_regular_file(path)) {
    throw InputError(std::string(what) + " '" + path + "' does not exist: pass a TorchScript file (e.g. Cosmos-0.1-Tokenizer-CV4x8x8/" +
                     (part == Part::kEncoder ? "encoder.jit" : "decoder.jit") + ")");
  }
  if (compression.temporal < 1 || compression.spatial < 1) throw InputError(std::string(what) + ": compression factors must be positive");
  try {
    module_ = std::make_unique<torch::jit::Module>(torch::jit::load(path, device));
  } catch (const c10::Error& e) {
    throw InputError(std::string(what) + " '" + path + "' is not a TorchScript module (" + e.what_without_backtrace() +
                     "): pass the .jit file saved by torch.jit.save");
  }
  module_->eval();
  module_->to(dtype);
}

LatentCodec::~LatentCodec() = default;
LatentCodec::LatentCodec(LatentCodec&&) noexcept = default;

namespace {

// What a TorchScript failure says, without its traceback: the last "SomethingError: ..." line, else the
// last line.
std::string short_error(const std::string& what) {
  std::string last, error;
  size_t from = 0;
  while (from <= what.size()) {
    const size_t to = std::min(what.find('\n', from), what.size());
    const std::string line = what.substr(from, to - from);
    if (line.find_first_not_of(" \t") != std::string::npos) last = line;
    const size_t colon = line.find("Error: ");
    if (colon != std::string::npos && line.find(' ') > colon) error = line;
    from = to + 1;
  }
  return error.empty() ? last : error;
}

const char* name_of(LatentCodec::Part part) { return part == LatentCodec::Part::kEncoder ? "video encoder" : "video decoder"; }

}  // namespace

at::Tensor LatentCodec::run(const at::Tensor& input) const { return apply(input, part_); }

at::Tensor LatentCodec::apply(const at::Tensor& input, Part as) const {
  c10::InferenceMode inference;
  const bool enc = as == Part::kEncoder;
  const char* what = name_of(as);
  const int64_t tf = compression_.temporal, sf = compression_.spatial;
  if (input.dim() != 5 || (enc && (input.size(1) != 3 || (input.size(2) - 1) % tf != 0 || input.size(3) % sf || input.size(4) % sf))) {
    throw InputError(std::string(what) + " '" + path_ + "': input " + c10::str(input.sizes()) +
                     (enc ? " is not [B, 3, 1 + " + std::to_string(tf) + "k, H, W] with H, W multiples of " + std::to_string(sf)
                          : " is not [B, C, T, h, w]"));
  }
  c10::IValue out;
  try {
    out = module_->forward({input.to(device_, dtype_)});
  } catch (const std::exception& e) {
    throw InputError(std::string(what) + " '" + path_ + "' failed on an input of shape " + c10::str(input.sizes()) + ": " + short_error(e.what()));
  }
  at::Tensor y;
  if (out.isTensor()) y = out.toTensor();
  else if (out.isTuple() && !out.toTupleRef().elements().empty() && out.toTupleRef().elements()[0].isTensor())
    y = out.toTupleRef().elements()[0].toTensor();
  else if (out.isTensorList() && !out.toTensorList().empty())
    y = out.toTensorList().get(0);
  else
    throw InputError(std::string(what) + " '" + path_ + "' returned neither a tensor nor a tuple starting with one");
  const int64_t b = input.size(0), t = input.size(2), h = input.size(3), w = input.size(4);
  const bool ok = enc ? (y.dim() == 5 && y.size(0) == b && y.size(2) == 1 + (t - 1) / tf && y.size(3) == h / sf && y.size(4) == w / sf)
                      : (y.dim() == 5 && y.size(0) == b && y.size(1) == 3 && y.size(2) == 1 + tf * (t - 1) && y.size(3) == h * sf &&
                         y.size(4) == w * sf);
  if (!ok) {
    throw InputError(std::string(what) + " '" + path_ + "' maps " + c10::str(input.sizes()) + " to " + c10::str(y.sizes()) +
                     ", not what temporal compression " + std::to_string(tf) + " and spatial compression " + std::to_string(sf) +
                     " give: is this the right file, or are --temporal_compression / --spatial_compression different for it?");
  }
  return y.to(at::kFloat);
}

void LatentCodec::check(int64_t frames, int64_t height, int64_t width, int64_t channels) const {
  const int64_t sf = compression_.spatial;
  const at::Tensor latent = at::zeros({1, channels, frames, height, width});
  const at::Tensor video = at::zeros({1, 3, compression_.video_frames(frames), height * sf, width * sf});
  const bool enc = part_ == Part::kEncoder;
  std::string problem;
  try {
    apply(enc ? video : latent, part_);
    return;
  } catch (const InputError& e) {
    problem = e.what();
  }
  // What the file is instead: the other part's contract on the same shapes.
  const Part other = enc ? Part::kDecoder : Part::kEncoder;
  std::string instead;
  try {
    const at::Tensor y = apply(enc ? latent : video, other);
    instead = " It works as a " + std::string(name_of(other)) + " instead (" + c10::str((enc ? latent : video).sizes()) + " -> " +
              c10::str(y.sizes()) + "): pass the " + (enc ? "encoder (e.g. encoder.jit beside it)" : "decoder (e.g. decoder.jit beside it)");
  } catch (const InputError&) {
  }
  throw InputError(problem + " (a trial call before anything is written)." + instead);
}

}  // namespace ov::video
