#pragma once
// The device half of `finetune --device cuda` for one block shape: its CUDA
// plan's model step behind train::cuda_model_plan (train/cuda_backend.cuh).
// Compiled once per plan, each in its own translation unit (the build writes
// finetune_cuda_<plan>.cu from finetune_cuda_plan.cu.in for every
// models::gpu_shapes entry), so no TU instantiates more than one model step.
// The host half (checkpoint, adapters, batches: train/cuda_backend.hpp) is
// compiled once, by g++, in finetune_cuda.cpp.
#include "staticgrad/train/cuda_backend.cuh"

namespace staticgrad::cuda {
template <class Shape>
struct plan_of;  // Shape -> plans::<size>::model, specialised by each generated plan header
}  // namespace staticgrad::cuda

namespace staticgrad::cli {

template <class Shape>
const train::cuda_model_plan& cuda_model_plan_for() {
  return train::cuda_model_plan_of<typename cuda::plan_of<Shape>::type>();
}

}  // namespace staticgrad::cli
