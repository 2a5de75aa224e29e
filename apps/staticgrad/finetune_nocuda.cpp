// `staticgrad finetune --device cuda` in a build without the CUDA backend
// (STATICGRAD_CUDA OFF): a clear error instead of the GPU backend.
#include "finetune_cuda.hpp"
#include "staticgrad/core/error.hpp"

namespace staticgrad::cli {

bool have_cuda_finetune() { return false; }

std::unique_ptr<train::backend> make_cuda_backend(const cuda_backend_request&) {
  throw error("--device cuda: this build has no CUDA backend; configure with nvcc available (cmake --preset default)",
              {"", "--device", {}});
}

}  // namespace staticgrad::cli
