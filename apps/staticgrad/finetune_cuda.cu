// `staticgrad finetune --device cuda`: picks the CUDA plan matching the
// checkpoint's block shape (models::gpu_shapes: every Qwen2.5 size, one
// generated plan each; the dispatch is models::dispatch_shape over them) and
// runs train::cuda_trainer (include/staticgrad/train/cuda_trainer.cuh) in that
// plan's translation unit (finetune_cuda_run.cuh, finetune_cuda_plan.cu.in).
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
int run_finetune_plan(const finetune_request& r);

bool have_cuda_finetune() { return true; }

int run_finetune_cuda(const finetune_request& r) {
  const std::filesystem::path dir(r.model);
  const std::string cfg_file = (dir / "config.json").string();
  const auto cfg = io::read_hf_config(dir);
  // Options the GPU trainer refuses (cuda_trainer checks them too), before the device.
  require(r.train.lora.lora_dropout == 0,
          "--lora-dropout > 0 is not implemented on CUDA (use --device cpu, or --lora-dropout 0)",
          {"", "--lora-dropout", {}});
  // The shape is checked before anything touches the device (the error lists every CUDA shape).
  auto run = [&]<class Shape>() -> int {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0)
      throw error(std::string("--device cuda: no usable CUDA device (") +
                  (e != cudaSuccess ? cudaGetErrorString(e) : "0 devices") + "); use --device cpu");
    return run_finetune_plan<typename cuda::plan_of<Shape>::type>(r);
  };
  return models::dispatch_shape(cfg, cfg_file, run, models::gpu_shapes{});
}

}  // namespace staticgrad::cli
