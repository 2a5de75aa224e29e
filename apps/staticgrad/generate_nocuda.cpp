// `staticgrad generate|chat --device cuda` in a build without CUDA
// (STATICGRAD_CUDA OFF): a clear error instead of the CUDA decoder.
#include "make_decoder.hpp"
#include "staticgrad/core/error.hpp"

namespace staticgrad::cli {

std::unique_ptr<infer::decoder> make_cuda_decoder(const std::filesystem::path&, const std::filesystem::path&) {
  throw error("--device cuda: this staticgrad was built without CUDA; rebuild with nvcc available "
              "(cmake --preset default) or generate with --device cpu",
              {"", "--device", {}});
}

}  // namespace staticgrad::cli
