#pragma once
// The device half of train::cuda_backend (cuda_backend.hpp, the host half):
// one cuda::model_step<Plan> behind train::cuda_model, and the plan's facts
// behind train::cuda_model_plan (cuda_model.hpp). nvcc only.
//
//   train::cuda_backend b(train::cuda_model_plan_of<cuda::plans::qwen2_7b::model>(), dir, lora, optim, T);
//
// The project's tool compiles this once per plan (apps/staticgrad/finetune_cuda_plan.cu.in)
// and the host half once, with g++ (finetune_cuda.cpp).
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "staticgrad/backend/cuda/check.cuh"
#include "staticgrad/backend/cuda/model_step.cuh"
#include "staticgrad/models/qwen2_shapes.hpp"
#include "staticgrad/train/cuda_model.hpp"

namespace staticgrad::train {

template <class Plan>
class cuda_model_of final : public cuda_model {
 public:
  cuda_model_of(std::int64_t T, const cuda::model_options& o) : m_(T, o) {}
  cuda::model_step<Plan>& step_object() { return m_; }

  void* embedding() override { return m_.embedding(); }
  void* final_norm() override { return m_.final_norm(); }
  void* lm_head() override { return m_.lm_head(); }
  void* layer_weight(int l, const std::string& name) override { return m_.layer_weight(l, name); }
  const std::vector<cuda::weight_info>& layer_weights() const override { return m_.layer_weights(); }

  const std::vector<cuda::lora_slot>& lora_slots() const override { return m_.lora_slots(); }
  const cuda::lora_slot& slot(int l, const std::string& adapter) const override { return m_.slot(l, adapter); }
  std::size_t lora_elems() const override { return m_.lora_elems(); }
  float* lora_params() override { return m_.lora_params(); }
  float* lora_grads() override { return m_.lora_grads(); }
  float* adam_m() override { return m_.adam_m(); }
  float* adam_v() override { return m_.adam_v(); }
  std::int64_t adam_steps() const override { return m_.adam_steps(); }
  void set_adam_steps(std::int64_t t) override { m_.set_adam_steps(t); }
  void sync_lora_bf16(bool reset_optimizer) override { m_.sync_lora_bf16(reset_optimizer); }

  void upload(void* device_dst, const void* host_src, std::size_t bytes) override {
    SG_CUDA_CHECK(cudaMemcpy(device_dst, host_src, bytes, cudaMemcpyHostToDevice));
  }
  void download(void* host_dst, const void* device_src, std::size_t bytes) override {
    SG_CUDA_CHECK(cudaMemcpy(host_dst, device_src, bytes, cudaMemcpyDeviceToHost));
  }

  void set_batch(std::span<const std::int32_t> ids, std::span<const std::int32_t> labels,
                 std::span<const std::int32_t> seq_lens) override {
    m_.set_batch(ids, labels, seq_lens);
  }
  std::int64_t counted() const override { return m_.counted(); }
  void set_dropout(float p, std::uint64_t seed) override { m_.set_dropout(p, seed); }
  double step(const cuda::adamw_hparams& h, double lr) override { return m_.step(h, lr); }
  void zero_grads() override { m_.zero_grads(); }
  cuda::model_loss forward_backward(double seed_scale, bool accumulate) override {
    return m_.forward_backward(seed_scale, accumulate);
  }
  void set_after_layer_backward(std::function<void(int)> f) override { m_.set_after_layer_backward(std::move(f)); }
  void optimizer_step(const cuda::adamw_hparams& h, double lr) override { m_.optimizer_step(h, lr); }
  double last_grad_norm() override { return m_.last_grad_norm(); }
  cuda::model_loss forward_loss() override { return m_.forward_loss(); }

  void* stream() const override { return m_.stream(); }
  void synchronize() override { m_.synchronize(); }
  std::size_t allocated_bytes() const override { return m_.allocated_bytes(); }

 private:
  cuda::model_step<Plan> m_;
};

template <class Plan>
class cuda_model_plan_impl final : public cuda_model_plan {
  using step_t = cuda::model_step<Plan>;

 public:
  std::string name() const override { return Plan::name; }
  models::shape_sizes sizes() const override { return models::sizes_of<typename Plan::shape>(); }
  std::string shape_text() const override { return models::shape_text<typename Plan::shape>(); }
  std::int64_t hidden() const override { return Plan::block::input_width; }
  double default_budget() const override { return step_t::default_budget(); }
  graph::memory_choice choose_memory(std::int64_t T, std::int64_t seq_len, const cuda::model_options& o,
                                     double budget) const override {
    return step_t::choose_memory(T, seq_len, o, budget);
  }
  std::string memory_text(const graph::memory_policy& p, int layers) const override {
    return step_t::memory_text(p, layers);
  }
  double predict_total_bytes(std::int64_t T, const cuda::model_options& o) const override {
    return static_cast<double>(step_t::predict_bytes(T, o).total());
  }
  std::unique_ptr<cuda_model> make(std::int64_t T, const cuda::model_options& o) const override {
    return std::make_unique<cuda_model_of<Plan>>(T, o);
  }
};

// The plan's cuda_model_plan (one per program).
template <class Plan>
const cuda_model_plan& cuda_model_plan_of() {
  static const cuda_model_plan_impl<Plan> p;
  return p;
}

}  // namespace staticgrad::train
