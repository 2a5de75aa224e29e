#pragma once
// `staticgrad finetune --device cuda`: the boundary between the CLI (host C++,
// cmd_model.cpp, which instantiates the CPU models) and the CUDA trainer
// (finetune_cuda.cu, compiled by nvcc only when STATICGRAD_CUDA is ON; nvcc
// cannot include the CPU model headers, so only this plain struct crosses).
#include <string>
#include <vector>

#include "staticgrad/train/train_options.hpp"

namespace staticgrad::cli {

struct finetune_request {
  std::string model;      // Hugging Face checkpoint directory
  std::vector<std::string> data;  // JSONL training data files
  std::string tokenizer;  // for text lines
  train::train_options train;
};

// Whether this build has the CUDA backend (finetune_cuda.cu was compiled in).
bool have_cuda_finetune();

// Runs the whole fine-tuning on the GPU (prints the same lines as the CPU
// path, writes the adapter). Throws staticgrad::error (no device, unsupported
// block shape, lora_dropout > 0, grad_accum > 1, data errors). Returns 0.
int run_finetune_cuda(const finetune_request& r);

}  // namespace staticgrad::cli
