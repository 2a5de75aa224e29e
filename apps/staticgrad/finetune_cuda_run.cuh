#pragma once
// The body of `finetune --device cuda` for one CUDA plan (cuda::plans::<size>::model):
// compiled once per size, each in its own translation unit (the build writes
// finetune_cuda_<plan>.cu from finetune_cuda_plan.cu.in for every
// models::gpu_shapes entry), so no TU instantiates more than one model.
#include <cuda_runtime.h>

#include <cstdio>
#include <iostream>
#include <string>

#include "finetune_cuda.hpp"
#include "staticgrad/train/cuda_trainer.cuh"

namespace staticgrad::cli {

namespace finetune_detail {

// snprintf into a string (no fmt in nvcc TUs: its host pass rejects fmt 9's constexpr code).
template <class... A>
inline std::string strf(const char* f, A... a) {
  const int n = std::snprintf(nullptr, 0, f, a...);
  std::string s(static_cast<std::size_t>(n > 0 ? n : 0), '\0');
  std::snprintf(s.data(), s.size() + 1, f, a...);
  return s;
}
inline long long ll(std::int64_t x) { return static_cast<long long>(x); }

inline std::int64_t trainable(const io::lora_adapter& ad) {
  std::int64_t n = 0;
  for (std::int64_t l = 0; l < ad.num_layers; ++l)
    for (auto t : ad.config.target_modules) n += std::int64_t(ad.at(l, t).a.size() + ad.at(l, t).b.size());
  return n;
}

}  // namespace finetune_detail

template <class Model>
int run_finetune_plan(const finetune_request& r) {
  using namespace finetune_detail;
  const std::string label = std::string(Model::name) + " block, CUDA plan";
  auto tok = io::tokenizer::from_file(r.tokenizer);
  train::cuda_trainer<Model> tr(r.model, tok, r.data, r.train);
  const auto& cfg = tr.config();
  if (r.train.log)
    *r.train.log << strf("finetune: %s (%s, %lld layers, vocab %lld) on CUDA, LoRA r %lld alpha %g on %zu modules, "
                         "%lld trainable parameters; %lld rows x %lld tokens per batch (T = %lld), %lld steps",
                         r.model.c_str(), label.c_str(), ll(cfg.num_hidden_layers), ll(cfg.vocab_size), ll(r.train.lora.r),
                         r.train.lora.lora_alpha, r.train.lora.target_modules.size(), ll(trainable(tr.adapter())),
                         ll(tr.rows()), ll(r.train.max_len), ll(tr.tokens_per_step()), ll(r.train.steps))
                 << std::endl;
  const auto res = tr.run();
  if (r.train.log) {
    const auto& d = res.data;
    *r.train.log << "data: " << d.examples_read << " examples read, " << d.examples_used << " used, " << d.truncated
                 << " truncated, " << d.dropped_too_long << " dropped as too long, " << d.dropped_no_targets
                 << " dropped without targets, " << d.bad_lines_skipped << " bad lines skipped (last epoch)"
                 << "\n"
                 << "saved the PEFT adapter to " << r.train.out.string() << std::endl;
  }
  return 0;
}


}  // namespace staticgrad::cli
