#pragma once
// `staticgrad finetune --device cuda`: the boundary between the host C++ of
// the CLI and the training loop (g++) and the CUDA backend (when
// STATICGRAD_CUDA is ON: its host half include/staticgrad/train/cuda_backend.hpp
// in finetune_cuda.cpp, g++; its device half train/cuda_backend.cuh in one
// nvcc finetune_cuda_<plan>.cu per plan). What crosses is this plain request
// and the train::backend interface.
#include <cstdint>
#include <memory>
#include <string>

#include "staticgrad/io/peft_adapter.hpp"
#include "staticgrad/train/adamw.hpp"
#include "staticgrad/train/backend.hpp"

namespace staticgrad::cli {

struct cuda_backend_request {
  std::string model;  // Hugging Face checkpoint directory
  io::lora_config lora;
  train::adamw_options optim;
  std::int64_t tokens = 0;  // T: rows * max_len, the static batch size
  train::memory_request memory;  // --memory-budget (0: free device memory less 1 GiB), rows of --max-len
};

// Whether this build has the CUDA backend (finetune_cuda.cpp was compiled in).
bool have_cuda_finetune();

// The GPU model step of the checkpoint's shape, weights uploaded. Throws
// staticgrad::error (no backend in this build, no device, unsupported block
// shape, a --memory-budget no plan fits, not enough device memory).
std::unique_ptr<train::backend> make_cuda_backend(const cuda_backend_request& r);

}  // namespace staticgrad::cli
