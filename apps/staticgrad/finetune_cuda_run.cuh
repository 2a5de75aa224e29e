#pragma once
// The CUDA backend of `finetune --device cuda` for one plan
// (cuda::plans::<size>::model): compiled once per size, each in its own
// translation unit (the build writes finetune_cuda_<plan>.cu from
// finetune_cuda_plan.cu.in for every models::gpu_shapes entry), so no TU
// instantiates more than one model.
#include <memory>

#include "finetune_cuda.hpp"
#include "staticgrad/train/cuda_backend.cuh"

namespace staticgrad::cli {

template <class Model>
std::unique_ptr<train::backend> make_cuda_backend_plan(const cuda_backend_request& r) {
  return std::make_unique<train::cuda_backend<Model>>(r.model, r.lora, r.optim, r.tokens, r.memory);
}

}  // namespace staticgrad::cli
