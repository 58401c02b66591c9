#pragma once
// The flat layout of a sharded unit (one per DiT block, one for everything else): its parameters laid out
// back to back in one flat buffer, each starting at a multiple of kAlignElements, the whole padded to a
// multiple of (shard size x kAlignElements) so that every rank's slice starts aligned too.
//
// Why the alignment: the module's parameters are views into the gathered buffer, and a view whose address
// is not 16-byte aligned makes cuBLAS fall back to its slow unaligned kernels (a 1-element lambda_param
// packed right before a weight shifted every later matrix of the block by 2 bytes; aligning the offsets
// halved the step time on an H100). 128 elements are 256 bytes in bf16 and 512 in fp32.
//
// The offsets depend on the parameters alone, never on the shard count: a checkpoint's flat optimizer state
// keeps its meaning on any layout, and the geometry written beside it says where each parameter sits.
#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace torch::nn {
class Module;
}

namespace ov::parallel {

constexpr int64_t kAlignElements = 128;

struct FlatParam {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0, numel = 0;  // where it sits in the unit's flat buffer
};

struct FlatUnit {
  std::string name;  // "blocks.<i>", "blocks.<i>.float8" or "root"
  std::vector<FlatParam> params;
  int64_t extent = 0;       // end of the last parameter
  int64_t padded = 0;       // flat buffer length: a multiple of shard_size * kAlignElements
  int64_t shard_numel = 0;  // padded / shard_size: each rank's slice
  bool float8 = false;      // its parameters are gathered as float8 e4m3 (parallel/sharded_model.h)

  // `flat` [padded] viewed as parameter i (its shape).
  at::Tensor view(const at::Tensor& flat, size_t i) const;
  // A zero flat buffer [padded] with each tensor of `values` (named like params) copied into its place;
  // `values(i)` gives parameter i's tensor (any dtype, its numel).
  at::Tensor pack(const std::function<at::Tensor(size_t)>& values, const at::TensorOptions& options) const;
};

// The units of `module`'s parameters in registration order: "blocks.<i>.*" -> unit "blocks.<i>", the rest
// -> "root" (wherever it appears), laid out for `shard_size` ranks. Parameters for which `float8(name)` holds
// go to a unit of their own per block, "blocks.<i>.float8" (gathered as float8 bytes).
std::vector<FlatUnit> flat_units(const torch::nn::Module& module, int64_t shard_size,
                                 const std::function<bool(const std::string&)>& float8 = {});
// The same from names and shapes in registration order (model::parameter_shapes): the units a module of
// that configuration gets, without building it (the dry run's plan).
std::vector<FlatUnit> flat_units(const std::vector<std::pair<std::string, std::vector<int64_t>>>& shapes, int64_t shard_size,
                                 const std::function<bool(const std::string&)>& float8 = {});

}  // namespace ov::parallel
