// Precompiled header of openvid's C++ targets: the LibTorch headers that most translation units include
// and that dominate their compile time (a DiT or trainer TU spends ~90% of its time in them). Only
// third-party and standard headers: openvid's own headers stay out, so that editing them rebuilds what
// includes them as usual. Boost.Test stays out too: each suite defines BOOST_TEST_MODULE before it.
#pragma once
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>
