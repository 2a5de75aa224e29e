#pragma once
// The plain types of cuda::model_step (model_step.cuh): its options, the
// layout of its flat LoRA arrays and frozen weights, its results. No CUDA
// here, so host code compiled by g++ (train/cuda_backend.hpp, through the
// train::cuda_model interface) uses the same types as the nvcc side.
#include <cstddef>
#include <cstdint>
#include <string>

#include "staticgrad/graph/memory_plan.hpp"

namespace staticgrad::cuda {

struct model_options {
  int layers = 0;
  std::int64_t vocab = 0;
  bool tied = true;          // LM head = embedding (no separate lm_head allocation)
  int rank = 16;             // LoRA r
  float lora_scaling = 2.0f; // alpha / r (or alpha / sqrt(r))
  float eps = 1e-6f;         // rms_norm_eps
  float rope_theta = 1e6f;
  std::int64_t ce_chunk = 2048;  // tokens per LM-head chunk (rounded up to 128): C * V * 6 bytes of scratch
  bool graphs = true;        // step(): capture once per batch shape, then replay
  // What is kept for backward (graph/memory_plan.hpp): recompute tier and
  // whole-block recompute layers; choose_memory() picks one from a budget.
  graph::memory_policy memory{};
  float lora_dropout = 0;    // > 0: allocate the LoRA dropout buffer (set_dropout() then applies it)
};

// torch.optim.AdamW options (train::adamw_options, without its host-only header).
struct adamw_hparams {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.01;
  double max_grad_norm = 0;  // > 0: clip the global gradient norm first
};

struct model_loss {
  double loss_sum = 0;
  std::int64_t counted = 0;
  double mean() const { return counted ? loss_sum / static_cast<double>(counted) : 0.0; }
};

// What model_step allocates, from the plans (bytes).
struct model_bytes {
  std::size_t weights = 0, lora = 0, residual = 0, saved = 0, workspace = 0, lm_head_chunk = 0, kernel_workspaces = 0,
              batch = 0;
  std::size_t host_pinned = 0;  // offloaded layer inputs (host memory, not in total())
  std::size_t total() const { return weights + lora + residual + saved + workspace + lm_head_chunk + kernel_workspaces + batch; }
};

// One adapter tensor pair of one layer in the flat LoRA arrays (offsets in elements).
struct lora_slot {
  int layer;
  std::string adapter;  // "self_attn.q_proj", ... (the plan's names)
  std::int64_t in, out;
  std::size_t a_off, b_off;
};
// A frozen per-layer tensor: matrix [rows, cols] or vector (rows = 0, cols = width).
struct weight_info {
  std::string name;  // "self_attn.q_proj.weight", "input_layernorm.weight", ... (HF names under model.layers.N.)
  std::int64_t rows, cols;
  int slot;          // the block plan's parameter slot
  std::size_t elems() const { return static_cast<std::size_t>(rows ? rows : 1) * static_cast<std::size_t>(cols); }
};

}  // namespace staticgrad::cuda
