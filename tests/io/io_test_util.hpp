#pragma once
// Helpers shared by the io tests: fixture paths, scratch directories, and a
// check that an expression throws staticgrad::error with given context.
#include <doctest/doctest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <unistd.h>

#include "staticgrad/core/error.hpp"

namespace sg_test {

inline std::filesystem::path fixture(const std::string& rel) {
  return std::filesystem::path(STATICGRAD_SOURCE_DIR) / "tests" / "fixtures" / rel;
}

// A fresh directory under the system temp dir, removed at scope exit.
struct scratch_dir {
  std::filesystem::path path;
  scratch_dir() {
    static std::atomic<int> counter{0};
    path = std::filesystem::temp_directory_path() /
           ("sg_io_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~scratch_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::filesystem::path operator/(const std::string& s) const { return path / s; }
};

inline std::string read_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
inline void write_bytes(const std::filesystem::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary);
  out << s;
}

}  // namespace sg_test

// Asserts that `expr` throws staticgrad::error whose text contains `substr`
// and whose context names `file_substr` (file) and `tensor` (exact; "" = any).
#define SG_CHECK_ERROR(expr, substr, file_substr, tensor_name)                                   \
  do {                                                                                            \
    bool sg_thrown_ = false;                                                                      \
    try {                                                                                         \
      (void)(expr);                                                                               \
    } catch (const staticgrad::error& e) {                                                        \
      sg_thrown_ = true;                                                                          \
      INFO("error: " << std::string(e.what()));                                                              \
      CHECK(std::string(e.what()).find(substr) != std::string::npos);                             \
      CHECK(e.context().file.find(file_substr) != std::string::npos);                             \
      if (std::string(tensor_name).size()) CHECK(e.context().tensor == std::string(tensor_name)); \
    }                                                                                             \
    CHECK_MESSAGE(sg_thrown_, "expected staticgrad::error from " #expr);                         \
  } while (0)
