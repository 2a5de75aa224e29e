// `staticgrad finetune --device cuda`: picks the CUDA plan matching the
// checkpoint's block shape (models::gpu_shapes: every Qwen2.5 size, one
// generated plan each; the dispatch is models::dispatch_shape over them) and
// builds its train::cuda_backend (include/staticgrad/train/cuda_backend.cuh) in
// that plan's translation unit (finetune_cuda_run.cuh, finetune_cuda_plan.cu.in).
#include <cuda_runtime.h>

#include <filesystem>
#include <string>

#include "finetune_cuda.hpp"
#include "staticgrad/core/error.hpp"
#include "staticgrad/io/hf_config.hpp"
#include "staticgrad/models/qwen2.hpp"
#include "staticgrad/plans/all.cuh"

namespace staticgrad::cli {

// Defined in finetune_cuda_run.cuh, instantiated once per plan in its own TU.
template <class Model>
std::unique_ptr<train::backend> make_cuda_backend_plan(const cuda_backend_request& r);

bool have_cuda_finetune() { return true; }

std::unique_ptr<train::backend> make_cuda_backend(const cuda_backend_request& r) {
  const std::filesystem::path dir(r.model);
  const std::string cfg_file = (dir / "config.json").string();
  const auto cfg = io::read_hf_config(dir);
  // The shape is checked before anything touches the device (the error lists every CUDA shape).
  auto make = [&]<class Shape>() -> std::unique_ptr<train::backend> {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0)
      throw error(std::string("--device cuda: no usable CUDA device (") +
                  (e != cudaSuccess ? cudaGetErrorString(e) : "0 devices") + "); use --device cpu");
    return make_cuda_backend_plan<typename cuda::plan_of<Shape>::type>(r);
  };
  return models::dispatch_shape(cfg, cfg_file, make, models::gpu_shapes{});
}

}  // namespace staticgrad::cli
