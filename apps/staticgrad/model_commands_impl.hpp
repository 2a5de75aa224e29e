#pragma once
// Definition of run_model_command (model_commands.hpp), included only by the
// generated per-shape translation units model_shape_<S>.cpp (model_shape.cpp.in):
// the calls into the CPU model. Reading the tokenizer, adapter and data, and
// writing the results, do not depend on the shape: model_commands.cpp, once.
// make_cpu_backend is in cpu_backend_impl.hpp, its own generated TU per shape.
#include <memory>

#include "model_commands.hpp"
#include "staticgrad/models/qwen2_model.hpp"
#include "staticgrad/train/evaluate.hpp"

namespace staticgrad::cli {

// model_commands.cpp: the shape-independent halves of run_model_command.
struct model_inputs {
  io::lora_adapter adapter;  // --adapter, or a zero adapter (the base model exactly)
  std::vector<train::file_example> examples;
};
model_inputs read_model_inputs(const model_request& r, const io::hf_config& cfg);
int write_logits(const model_request& r, const std::vector<std::vector<float>>& logits, std::int64_t vocab);
// Exit 1 when the loss is not finite (naming the weight at fault when there is one); else the result.
int write_loss(const model_request& r, const io::hf_config& cfg, const train::file_loss& fl,
               const io::lora_adapter* grads);

template <class S>
int run_model_command(const model_request& r) {
  auto model = models::qwen2_model<S>::load(r.model);
  const auto& cfg = model->config();
  auto in = read_model_inputs(r, cfg);
  if (r.what == model_job::logits) {
    model->attach(&in.adapter);
    return write_logits(r, train::line_logits(*model, in.examples, r.data), model->vocab());
  }
  // loss
  const bool grads = !r.grads_out.empty();
  auto g = io::make_lora_adapter(in.adapter.config, cfg);
  model->attach(&in.adapter, grads ? &g : nullptr);
  const auto fl = train::evaluate_file(*model, in.examples, r.data, grads);
  return write_loss(r, cfg, fl, grads ? &g : nullptr);
}

}  // namespace staticgrad::cli
