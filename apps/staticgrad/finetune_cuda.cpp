// `staticgrad finetune --device cuda`: picks the CUDA plan matching the
// checkpoint's block shape (models::gpu_shapes: every Qwen2.5 size, one
// generated plan each; the dispatch is models::dispatch_shape over them) and
// builds a train::cuda_backend on it. This file is the host half, compiled
// once by g++ (include/staticgrad/train/cuda_backend.hpp: checkpoint, adapters,
// batches); each plan's model step is in its own nvcc translation unit
// (finetune_cuda_run.cuh, finetune_cuda_plan.cu.in), reached through
// train::cuda_model_plan.
#include <cuda_runtime.h>

#include <filesystem>
#include <memory>
#include <string>

#include "finetune_cuda.hpp"
#include "staticgrad/core/error.hpp"
#include "staticgrad/io/hf_config.hpp"
#include "staticgrad/models/qwen2.hpp"
#include "staticgrad/train/cuda_backend.hpp"

namespace staticgrad::cli {

// Defined in finetune_cuda_run.cuh, instantiated once per plan in its own TU.
template <class Shape>
const train::cuda_model_plan& cuda_model_plan_for();

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
    return std::make_unique<train::cuda_backend>(cuda_model_plan_for<Shape>(), r.model, r.lora, r.optim, r.tokens,
                                                 r.memory);
  };
  return models::dispatch_shape(cfg, cfg_file, make, models::gpu_shapes{});
}

}  // namespace staticgrad::cli
