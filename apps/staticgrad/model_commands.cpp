// The shape-independent halves of `staticgrad loss` and `logits`
// (model_commands_impl.hpp: run_model_command<S>, one generated TU per shape,
// calls these): inputs read and results written once for every shape.
#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model_commands_impl.hpp"
#include "staticgrad/io/checkpoint.hpp"
#include "staticgrad/io/safetensors_writer.hpp"
#include "staticgrad/io/tokenizer.hpp"
#include "staticgrad/io/tokenizer_location.hpp"

namespace staticgrad::cli {

namespace {

// An adapter whose every B is zero: the base model exactly (r = 1, q_proj).
io::lora_adapter zero_adapter(const io::hf_config& c) {
  io::lora_config lc;
  lc.r = 1;
  lc.target_modules = {io::lora_target::q_proj};
  return io::make_lora_adapter(lc, c);
}

}  // namespace

model_inputs read_model_inputs(const model_request& r, const io::hf_config& cfg) {
  auto tok = io::tokenizer::from_file(io::resolve_tokenizer(r.tokenizer, r.model));
  model_inputs in;
  in.adapter = r.adapter.empty() ? zero_adapter(cfg) : io::read_peft_adapter(r.adapter, cfg);
  in.examples = train::read_examples(r.data, tok);
  return in;
}

int write_logits(const model_request& r, const std::vector<std::vector<float>>& logits, std::int64_t vocab) {
  std::vector<io::tensor_data> ts;
  for (std::size_t i = 0; i < logits.size(); ++i)
    ts.push_back(io::f32_tensor("logits." + std::to_string(i), {std::int64_t(logits[i].size()) / vocab, vocab},
                                logits[i]));
  io::write_safetensors(r.out, std::move(ts), {{"format", "pt"}});
  std::cout << nlohmann::json{{"lines", logits.size()}, {"out", r.out}}.dump() << "\n";
  return 0;
}

int write_loss(const model_request& r, const io::hf_config& cfg, const train::file_loss& fl,
               const io::lora_adapter* grads) {
  if (!std::isfinite(fl.loss_sum)) {  // exit 1, naming the weight at fault when there is one
    io::checkpoint::open(r.model).require_finite();
    throw error("the loss is not finite (NaN or infinity) though every weight is finite", {r.data, "loss", {}});
  }
  if (grads) {
    const auto& g = *grads;
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

}  // namespace staticgrad::cli
