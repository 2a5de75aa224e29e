#pragma once
// The seam between the CUDA backend's host half and its device half.
//
//   train::cuda_backend (cuda_backend.hpp)  g++, compiled once: checkpoint reading,
//       |                                   adapter layout, batch padding, data-parallel buckets
//       | cuda_model_plan / cuda_model      (this header: plain types, no CUDA)
//       v
//   cuda_backend.cuh: cuda_model_of<Plan>   nvcc, one translation unit per plan: a
//                                           cuda::model_step<Plan> behind these interfaces
//
// Every call is one virtual call into a model step that does milliseconds of
// work; what crosses is pointers to device memory (void*), host spans and the
// plain structs of backend/cuda/model_step_types.hpp. Splitting here keeps
// the host code (JSON, safetensors, the adapter format) out of nvcc, which
// would parse and instantiate it four times per plan (cudafe++, cicc for
// sm_90a and for compute_90, the host compiler).
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "staticgrad/backend/cuda/model_step_types.hpp"
#include "staticgrad/graph/memory_plan.hpp"
#include "staticgrad/models/qwen2_shapes.hpp"  // not qwen2.hpp: its config reader would bring JSON into nvcc

namespace staticgrad::train {

// One constructed cuda::model_step<Plan> (model_step.cuh documents each call).
class cuda_model {
 public:
  virtual ~cuda_model() = default;

  // Device memory of the frozen weights (bf16): embedding [V, H], final norm [H],
  // LM head [V, H] (the embedding when tied), layer l's tensor `name` (layer_weights()).
  virtual void* embedding() = 0;
  virtual void* final_norm() = 0;
  virtual void* lm_head() = 0;
  virtual void* layer_weight(int l, const std::string& name) = 0;
  virtual const std::vector<cuda::weight_info>& layer_weights() const = 0;

  // The flat f32 LoRA arrays (device; the layout of lora_slots(), lora_elems() elements each).
  virtual const std::vector<cuda::lora_slot>& lora_slots() const = 0;
  virtual const cuda::lora_slot& slot(int l, const std::string& adapter) const = 0;
  virtual std::size_t lora_elems() const = 0;
  virtual float* lora_params() = 0;
  virtual float* lora_grads() = 0;
  virtual float* adam_m() = 0;
  virtual float* adam_v() = 0;
  virtual std::int64_t adam_steps() const = 0;
  virtual void set_adam_steps(std::int64_t t) = 0;
  virtual void sync_lora_bf16(bool reset_optimizer) = 0;

  // Host <-> device copies (synchronous), so the host half needs no CUDA header.
  virtual void upload(void* device_dst, const void* host_src, std::size_t bytes) = 0;
  virtual void download(void* host_dst, const void* device_src, std::size_t bytes) = 0;

  // The step.
  virtual void set_batch(std::span<const std::int32_t> ids, std::span<const std::int32_t> labels,
                         std::span<const std::int32_t> seq_lens) = 0;
  virtual std::int64_t counted() const = 0;
  virtual void set_dropout(float p, std::uint64_t seed) = 0;
  virtual double step(const cuda::adamw_hparams& h, double lr) = 0;
  virtual void zero_grads() = 0;
  virtual cuda::model_loss forward_backward(double seed_scale, bool accumulate) = 0;
  virtual void set_after_layer_backward(std::function<void(int)> f) = 0;
  virtual void optimizer_step(const cuda::adamw_hparams& h, double lr) = 0;
  virtual double last_grad_norm() = 0;
  virtual cuda::model_loss forward_loss() = 0;

  virtual void* stream() const = 0;  // the model's cudaStream_t
  virtual void synchronize() = 0;
  virtual std::size_t allocated_bytes() const = 0;
};

// What the backend asks of a plan before any device memory exists: its shape
// (to check the checkpoint), its memory model, and the constructor.
class cuda_model_plan {
 public:
  virtual ~cuda_model_plan() = default;
  virtual std::string name() const = 0;                                   // "qwen2_7b"
  virtual models::shape_sizes sizes() const = 0;                         // the block shape (models::shape_matches)
  virtual std::string shape_text() const = 0;                             // models::shape_text
  virtual std::int64_t hidden() const = 0;                                // H, the block's input width
  virtual double default_budget() const = 0;                              // free device memory less 1 GiB
  virtual graph::memory_choice choose_memory(std::int64_t T, std::int64_t seq_len, const cuda::model_options& o,
                                             double budget) const = 0;
  virtual std::string memory_text(const graph::memory_policy& p, int layers) const = 0;
  virtual double predict_total_bytes(std::int64_t T, const cuda::model_options& o) const = 0;
  virtual std::unique_ptr<cuda_model> make(std::int64_t T, const cuda::model_options& o) const = 0;
};

}  // namespace staticgrad::train
