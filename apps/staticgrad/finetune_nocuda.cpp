// `staticgrad finetune --device cuda` in a build without the CUDA backend
// (STATICGRAD_CUDA OFF): a clear error instead of the GPU trainer.
#include "finetune_cuda.hpp"
#include "staticgrad/core/error.hpp"

namespace staticgrad::cli {

bool have_cuda_finetune() { return false; }

int run_finetune_cuda(const finetune_request&) {
  throw error("--device cuda: this build has no CUDA backend; configure with nvcc available (cmake --preset default)",
              {"", "--device", {}});
}

}  // namespace staticgrad::cli
