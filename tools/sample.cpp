// openvid_sample: latents from a trained model for given text states, by the rectified flow's Euler
// sampler with classifier-free guidance (model/sampler.h).
//
//   openvid_sample --config RUN/config.ini --weights RUN/model.safetensors --text_states text.safetensors
//                  --shape 8x16x16 --out latents.safetensors [--steps 50] [--guidance 6] [--seed 0]
//
// text.safetensors: text_states [B, Lc, Dc] (e.g. from the dataset, or a T5 encoder). out: latents
// [B, C, T, H, W] fp32, with the steps, guidance and seed in its metadata. fp32 on the CPU by default;
// --device cuda --precision bf16 on a GPU. The same seed gives the same latents.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <boost/program_options.hpp>

#include <iostream>

#include "openvid/config/options.h"
#include "openvid/data/synthetic.h"
#include "openvid/model/dit.h"
#include "openvid/model/safetensors.h"
#include "openvid/model/sampler.h"
#include "openvid/model/state_dict.h"
#include "openvid/runtime/error.h"

namespace po = boost::program_options;

namespace {

int sample(int argc, char** argv) {
  std::string config, weights, text_path, shape, out, device = "cpu", precision = "fp32";
  ov::model::SamplerOptions so;
  uint64_t seed = 0;
  po::options_description desc("openvid_sample: latents from a trained model for given text states");
  desc.add_options()("help,h", "print this help")
      ("config", po::value(&config)->required(), "the run's config.ini (or any INI with the model options)")
      ("weights", po::value(&weights)->required(), "safetensors file, index.json of a sharded set, or checkpoint directory")
      ("text_states", po::value(&text_path)->required(), "safetensors with text_states [B, Lc, Dc]")
      ("shape", po::value(&shape)->required(), "latent FRAMESxHEIGHTxWIDTH, e.g. 16x64x64")
      ("out", po::value(&out)->required(), "safetensors to write: latents [B, C, T, H, W] fp32")
      ("steps", po::value(&so.steps)->default_value(so.steps), "Euler steps")
      ("guidance", po::value(&so.guidance)->default_value(so.guidance), "classifier-free guidance scale (1: none)")
      ("seed", po::value(&seed)->default_value(seed), "seed of the starting noise")
      ("device", po::value(&device)->default_value(device), "cpu or cuda")
      ("precision", po::value(&precision)->default_value(precision), "fp32 or bf16 compute");
  po::variables_map vm;
  ov::parse_tool_command_line(desc, argc, argv, vm);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (device != "cpu" && device != "cuda") throw ov::InputError("--device must be cpu or cuda (got '" + device + "')");
  if (precision != "fp32" && precision != "bf16") throw ov::InputError("--precision must be fp32 or bf16 (got '" + precision + "')");
  if (so.steps < 1) throw ov::InputError("--steps must be >= 1");
  const ov::Options options = ov::parse_command_line({"--config", config}).options;
  so.shift = options.timestep_shift;
  const auto [frames, height, width] = ov::data::parse_latent_shape(shape, "--shape");

  ov::model::DiT model(options.model);
  model->set_recompute_every(0);
  ov::model::load_state_dict(*model, ov::model::read_weights(weights), weights);
  const at::Device dev = device == "cuda" ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  model->to(dev);
  model->set_compute_dtype(precision == "bf16" ? at::kBFloat16 : at::kFloat);

  const ov::model::TensorMap in = ov::model::read_safetensors(text_path).tensors;
  const auto it = in.find("text_states");
  if (it == in.end()) throw ov::InputError("'" + text_path + "' has no tensor 'text_states'");
  const at::Tensor text = it->second.to(at::kFloat);
  if (text.dim() != 3 || text.size(2) != options.model.text_dim) {
    throw ov::InputError("text_states in '" + text_path + "' are " + c10::str(text.sizes()) + ", the model takes [B, Lc, " +
                         std::to_string(options.model.text_dim) + "]");
  }
  // The noise is drawn on the CPU from the seed alone: the same latents start on any device.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const at::Tensor noise = at::normal(0.0, 1.0, {text.size(0), options.model.in_channels, frames, height, width}, gen);
  const at::Tensor latents = ov::model::sample_latents(model, noise.to(dev), text.to(dev), so).cpu();
  ov::model::write_safetensors(out, {{"latents", latents}},
                               {{"producer", ov::version_string() + " openvid_sample"}, {"steps", std::to_string(so.steps)},
                                {"guidance", std::to_string(so.guidance)}, {"seed", std::to_string(seed)}});
  std::cout << "wrote latents " << c10::str(latents.sizes()) << " (" << so.steps << " steps, guidance " << so.guidance << ", seed "
            << seed << ") to " << out << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return ov::run_tool_main("openvid_sample", sample, argc, argv); }
