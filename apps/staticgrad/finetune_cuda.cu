// `staticgrad finetune --device cuda`: picks the CUDA plan matching the
// checkpoint's block shape (the generated plans of tools/plan_codegen.cpp that
// the CUDA attention supports: Qwen2.5-0.5B and 1.5B, head dim 64 and 128) and
// runs train::cuda_trainer (include/staticgrad/train/cuda_trainer.cuh).
#include <cuda_runtime.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>

#include "finetune_cuda.hpp"
#include "staticgrad/core/error.hpp"
#include "staticgrad/io/hf_config.hpp"
#include "staticgrad/io/tokenizer.hpp"
#include "staticgrad/plans/qwen2_0_5b.cuh"
#include "staticgrad/plans/qwen2_1_5b.cuh"
#include "staticgrad/train/cuda_trainer.cuh"

namespace staticgrad::cli {

namespace {

// snprintf into a string (no fmt in nvcc TUs: its host pass rejects fmt 9's constexpr code).
template <class... A>
std::string strf(const char* f, A... a) {
  const int n = std::snprintf(nullptr, 0, f, a...);
  std::string s(static_cast<std::size_t>(n > 0 ? n : 0), '\0');
  std::snprintf(s.data(), s.size() + 1, f, a...);
  return s;
}
long long ll(std::int64_t x) { return static_cast<long long>(x); }

using plan_0_5b = cuda::plans::qwen2_0_5b::schedule;
using plan_1_5b = cuda::plans::qwen2_1_5b::schedule;

std::int64_t trainable(const io::lora_adapter& ad) {
  std::int64_t n = 0;
  for (std::int64_t l = 0; l < ad.num_layers; ++l)
    for (auto t : ad.config.target_modules) n += std::int64_t(ad.at(l, t).a.size() + ad.at(l, t).b.size());
  return n;
}

template <class Plan>
int run(const finetune_request& r, const char* label) {
  auto tok = io::tokenizer::from_file(r.tokenizer);
  train::cuda_trainer<Plan> tr(r.model, tok, r.data, r.train);
  const auto& cfg = tr.config();
  if (r.train.log)
    *r.train.log << strf("finetune: %s (%s, %lld layers, vocab %lld) on CUDA, LoRA r %lld alpha %g on %zu modules, "
                         "%lld trainable parameters; %lld rows x %lld tokens per batch (T = %lld), %lld steps",
                         r.model.c_str(), label, ll(cfg.num_hidden_layers), ll(cfg.vocab_size), ll(r.train.lora.r),
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

}  // namespace

bool have_cuda_finetune() { return true; }

int run_finetune_cuda(const finetune_request& r) {
  const std::filesystem::path dir(r.model);
  const std::string cfg_file = (dir / "config.json").string();
  const auto cfg = io::read_hf_config(dir);
  // Fail early and clearly, before anything touches the device.
  if (train::cuda_plan_matches<plan_0_5b>(cfg) == false && train::cuda_plan_matches<plan_1_5b>(cfg) == false)
    throw error(strf("--device cuda supports the block shapes %s and %s; this checkpoint has hidden %lld, heads "
                     "%lld/%lld kv, head_dim %lld, intermediate %lld (use --device cpu)",
                     train::cuda_plan_shape<plan_0_5b>("Qwen2.5-0.5B").c_str(),
                     train::cuda_plan_shape<plan_1_5b>("Qwen2.5-1.5B").c_str(), ll(cfg.hidden_size),
                     ll(cfg.num_attention_heads), ll(cfg.num_key_value_heads), ll(cfg.head_dim),
                     ll(cfg.intermediate_size)),
                {cfg_file, "", {}});
  // Options the GPU trainer refuses (cuda_trainer checks them too), before the device.
  require(r.train.lora.lora_dropout == 0,
          "--lora-dropout > 0 is not implemented on CUDA (use --device cpu, or --lora-dropout 0)",
          {"", "--lora-dropout", {}});
  require(r.train.grad_accum == 1, "--grad-accum > 1 is not implemented on CUDA; raise --batch-tokens instead",
          {"", "--grad-accum", {}});
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0)
    throw error(std::string("--device cuda: no usable CUDA device (") +
                (e != cudaSuccess ? cudaGetErrorString(e) : "0 devices") + "); use --device cpu");
  if (train::cuda_plan_matches<plan_0_5b>(cfg)) return run<plan_0_5b>(r, "Qwen2.5-0.5B block, CUDA plan qwen2_0_5b");
  return run<plan_1_5b>(r, "Qwen2.5-1.5B block, CUDA plan qwen2_1_5b");
}

}  // namespace staticgrad::cli
