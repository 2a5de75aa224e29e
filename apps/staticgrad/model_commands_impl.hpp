#pragma once
// Definitions of model_commands.hpp, included only by the generated
// per-shape translation units (model_shape.cpp.in).
#include <cmath>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "model_commands.hpp"
#include "staticgrad/io/checkpoint.hpp"
#include "staticgrad/io/safetensors_writer.hpp"
#include "staticgrad/io/tokenizer.hpp"
#include "staticgrad/io/tokenizer_location.hpp"
#include "staticgrad/models/qwen2_model.hpp"
#include "staticgrad/train/cpu_backend.hpp"
#include "staticgrad/train/evaluate.hpp"

namespace staticgrad::cli {

namespace model_detail {

// An adapter whose every B is zero: the base model exactly (r = 1, q_proj).
inline io::lora_adapter zero_adapter(const io::hf_config& c) {
  io::lora_config lc;
  lc.r = 1;
  lc.target_modules = {io::lora_target::q_proj};
  return io::make_lora_adapter(lc, c);
}

inline io::lora_adapter read_or_zero_adapter(const std::string& dir, const io::hf_config& c) {
  if (dir.empty()) return zero_adapter(c);
  return io::read_peft_adapter(dir, c);
}

}  // namespace model_detail

template <class S>
int run_model_command(const model_request& r) {
  using namespace model_detail;
  auto model = models::qwen2_model<S>::load(r.model);
  const auto& cfg = model->config();
  auto tok = io::tokenizer::from_file(io::resolve_tokenizer(r.tokenizer, r.model));
  auto adapter = read_or_zero_adapter(r.adapter, cfg);
  const auto xs = train::read_examples(r.data, tok);
  if (r.what == model_job::logits) {
    model->attach(&adapter);
    const auto logits = train::line_logits(*model, xs, r.data);
    std::vector<io::tensor_data> ts;
    for (std::size_t i = 0; i < logits.size(); ++i)
      ts.push_back(io::f32_tensor("logits." + std::to_string(i),
                                  {std::int64_t(logits[i].size()) / model->vocab(), model->vocab()}, logits[i]));
    io::write_safetensors(r.out, std::move(ts), {{"format", "pt"}});
    std::cout << nlohmann::json{{"lines", logits.size()}, {"out", r.out}}.dump() << "\n";
    return 0;
  }
  // loss
  const bool grads = !r.grads_out.empty();
  auto g = io::make_lora_adapter(adapter.config, cfg);
  model->attach(&adapter, grads ? &g : nullptr);
  const auto fl = train::evaluate_file(*model, xs, r.data, grads);
  if (!std::isfinite(fl.loss_sum)) {  // exit 1, naming the weight at fault when there is one
    io::checkpoint::open(r.model).require_finite();
    throw error("the loss is not finite (NaN or infinity) though every weight is finite", {r.data, "loss", {}});
  }
  if (grads) {
    std::vector<io::tensor_data> ts;
    for (std::int64_t l = 0; l < g.num_layers; ++l)
      for (auto t : g.config.target_modules) {
        const std::int64_t in = io::target_in_features(t, cfg), out = io::target_out_features(t, cfg);
        ts.push_back(io::f32_tensor(io::lora_key(l, t, 'A'), {g.config.r, in}, g.at(l, t).a));
        ts.push_back(io::f32_tensor(io::lora_key(l, t, 'B'), {out, g.config.r}, g.at(l, t).b));
      }
    io::write_safetensors(r.grads_out, std::move(ts), {{"format", "pt"}});
  }
  nlohmann::json j{{"loss", fl.mean()}, {"tokens", fl.tokens}, {"loss_sum", fl.loss_sum}, {"lines", fl.lines}};
  if (grads) j["grads_out"] = r.grads_out;
  std::cout << j.dump() << "\n";
  return 0;
}

template <class S>
std::unique_ptr<train::backend> make_cpu_backend(const std::string& model_dir, const io::lora_config& lora,
                                                 const train::adamw_options& optim, const train::memory_request& mem) {
  return std::make_unique<train::cpu_backend<S>>(model_dir, lora, optim, mem);
}

}  // namespace staticgrad::cli
