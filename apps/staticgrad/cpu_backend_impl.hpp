#pragma once
// Definition of make_cpu_backend (model_commands.hpp), included only by the
// generated per-shape translation units cpu_backend_<S>.cpp
// (cpu_backend.cpp.in): the CPU backend of `finetune` (model, AdamW,
// memory planning) is compiled apart from the `loss` / `logits` commands of
// the same shape (model_shape.cpp.in), so each TU stays under 30 s.
#include <memory>
#include <string>

#include "model_commands.hpp"
#include "staticgrad/train/cpu_backend.hpp"

namespace staticgrad::cli {

template <class S>
std::unique_ptr<train::backend> make_cpu_backend(const std::string& model_dir, const io::lora_config& lora,
                                                 const train::adamw_options& optim, const train::memory_request& mem) {
  return std::make_unique<train::cpu_backend<S>>(model_dir, lora, optim, mem);
}

}  // namespace staticgrad::cli
