#pragma once
// Small helpers the test suites share: a temporary directory, the message of an InputError, substring checks.
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>

#include "openvid/runtime/error.h"

namespace ov::test {

// A fresh directory under the system's temporary directory, removed with everything in it at scope exit.
struct TempDir {
  explicit TempDir(const std::string& prefix = "openvid_test")
      : path(std::filesystem::temp_directory_path() / (prefix + "_" + std::to_string(::getpid()) + "_" + std::to_string(n++))) {
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path / name).string(); }
  std::filesystem::path path;
  static inline int n = 0;
};

// What `f` throws as ov::InputError, or "" when it throws nothing.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ov::InputError& e) {
    return e.what();
  }
  return "";
}

inline bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace ov::test
