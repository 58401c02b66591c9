// openvid_modelcheck: runs the DiT on given weights and inputs and writes its output (and gradients), so
// openvid can be checked against any other implementation of the model, e.g. when porting weights.
//
//   openvid_modelcheck --config model.ini --weights w.safetensors --inputs in.safetensors
//                      --out out.safetensors [--grad] [--compare expected.safetensors [--rtol 1e-4]]
//
// in.safetensors: x [B,C,T,H,W], text [B,Lc,Dc], t [B], rope_offset (int64 [3]: t, h, w window start),
// and, for --grad, probe (shaped like x). out.safetensors: v, and with --grad the gradient of
// sum(v * probe) for every parameter under its reference name. fp32 on the CPU.
#include <ATen/ATen.h>
#include <boost/program_options.hpp>

#include <cmath>
#include <iostream>

#include "openvid/config/options.h"
#include "openvid/model/dit.h"
#include "openvid/model/safetensors.h"
#include "openvid/model/state_dict.h"
#include "openvid/runtime/error.h"

namespace po = boost::program_options;
using ov::model::TensorMap;

namespace {

at::Tensor need(const TensorMap& m, const std::string& name, const std::string& file) {
  const auto it = m.find(name);
  if (it == m.end()) throw ov::InputError("inputs file '" + file + "' has no tensor '" + name + "'");
  return it->second;
}

// ||a - b|| / ||b|| (absolute when b is zero), in double.
double relative_error(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor a64 = a.to(at::kDouble), b64 = b.to(at::kDouble);
  const double diff = (a64 - b64).norm().item<double>(), ref = b64.norm().item<double>();
  return ref > 0 ? diff / ref : diff;
}

int modelcheck(int argc, char** argv) {
  std::string config, weights, inputs, out, compare;
  double rtol = 1e-4;  // fp32 against a float64 reference: see docs/model.md
  po::options_description desc(
      "openvid_modelcheck: the DiT's output (and gradients) for given weights and inputs, fp32 on the CPU");
  desc.add_options()("help,h", "print this help")
      ("config", po::value(&config)->required(), "INI file with the model options ([model] section or model_* keys)")
      ("weights", po::value(&weights)->required(), "safetensors file, index.json of a sharded set, or directory")
      ("inputs", po::value(&inputs)->required(), "safetensors with x, text, t, rope_offset (and probe for --grad)")
      ("out", po::value(&out)->required(), "safetensors to write: v (and parameter gradients with --grad)")
      ("grad", "also write the gradient of sum(v * probe) for every parameter")
      ("compare", po::value(&compare), "safetensors of expected tensors: report relative errors, fail above --rtol")
      ("rtol", po::value(&rtol)->default_value(rtol), "largest relative error --compare accepts");
  po::variables_map vm;
  ov::parse_tool_command_line(desc, argc, argv, vm);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  const bool grad = vm.count("grad") > 0;

  const ov::Options options = ov::parse_command_line({"--config", config}).options;
  ov::model::DiT model(options.model);
  ov::model::load_state_dict(*model, ov::model::read_weights(weights), weights);

  const TensorMap in = ov::model::read_safetensors(inputs).tensors;
  const at::Tensor x = need(in, "x", inputs).to(at::kFloat), text = need(in, "text", inputs).to(at::kFloat),
                   t = need(in, "t", inputs).to(at::kFloat);
  std::array<int64_t, 3> offset{0, 0, 0};
  if (in.count("rope_offset")) {
    const at::Tensor o = in.at("rope_offset").to(at::kLong);
    if (o.numel() != 3) throw ov::InputError("rope_offset in '" + inputs + "' must hold 3 values (t, h, w)");
    for (int i = 0; i < 3; ++i) offset[static_cast<size_t>(i)] = o[i].item<int64_t>();
  }

  TensorMap result;
  if (grad) {
    const at::Tensor probe = need(in, "probe", inputs).to(at::kFloat);
    const at::Tensor v = model->forward(x, text, t, offset);
    (v * probe).sum().backward();
    result["v"] = v.detach();
    for (const auto& item : model->named_parameters()) {
      const at::Tensor g = item.value().grad();
      result[item.key()] = g.defined() ? g : at::zeros_like(item.value());  // unused parameters: zero
    }
  } else {
    at::NoGradGuard no_grad;
    result["v"] = model->forward(x, text, t, offset);
  }
  ov::model::write_safetensors(out, result, {{"producer", ov::version_string() + " openvid_modelcheck"}});
  std::cout << "wrote " << result.size() << " tensor(s) to " << out << "\n";

  if (compare.empty()) return 0;
  const TensorMap expected = ov::model::read_safetensors(compare).tensors;
  double worst = 0;
  std::string worst_name;
  int failures = 0;
  for (const auto& [name, e] : expected) {
    if (name == "x" || name == "text" || name == "t" || name == "rope_offset" || name == "probe") continue;
    const auto it = result.find(name);
    if (it == result.end()) {
      std::cout << "  " << name << ": not produced (run with --grad?)\n";
      ++failures;
      continue;
    }
    const double err = it->second.sizes() == e.sizes() ? relative_error(it->second, e) : INFINITY;
    if (err > worst) {
      worst = err;
      worst_name = name;
    }
    if (!(err <= rtol)) {
      std::cout << "  " << name << ": relative error " << err << " > " << rtol << "\n";
      ++failures;
    }
  }
  std::cout << "compared " << expected.size() << " tensor(s) with " << compare << ": largest relative error " << worst
            << (worst_name.empty() ? "" : " (" + worst_name + ")") << ", " << failures << " above " << rtol << "\n";
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) { return ov::run_tool_main("openvid_modelcheck", modelcheck, argc, argv); }
