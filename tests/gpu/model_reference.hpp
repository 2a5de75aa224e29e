#pragma once
// The CPU reference of a whole Qwen2.5 model step (0.5B, 3B or 7B block shape),
// behind plain functions: test_model_step.cu cannot instantiate the graph types
// (nvcc), so model_reference.cpp (g++) runs models::qwen2_model<Shape> (loaded
// from a safetensors + config.json it writes to a temporary directory) and
// train::adamw_lora, and this header is all the .cu sees.
#include <cstdint>

namespace staticgrad::test {

// The LoRA target modules in io::all_lora_targets order (t = 0..6):
// "self_attn.q_proj", ..., "mlp.down_proj".
const char* model_reference_target(int t);

struct model_reference_args {
  const char* shape = "0.5b";  // the block shape: "0.5b", "3b" or "7b" (models::shape_name)
  int layers = 0, vocab = 0, rank = 0;
  double lora_alpha = 0;  // scaling = alpha / r
  double eps = 1e-6, rope_theta = 1e6;
  // Frozen weights by checkpoint name (model.embed_tokens.weight, model.norm.weight,
  // lm_head.weight, model.layers.N.*): f32 data, shape [rows, cols] or [cols] (rows = 0).
  int n_weights = 0;
  const char* const* names = nullptr;
  const float* const* data = nullptr;
  const std::int64_t* rows = nullptr;
  const std::int64_t* cols = nullptr;
  // LoRA A [r, in], B [out, r] of layer l, target t at index l * 7 + t (read).
  const float* const* A = nullptr;
  const float* const* B = nullptr;
  // The batch.
  int T = 0, nseq = 0;
  const std::int32_t* ids = nullptr;
  const std::int32_t* labels = nullptr;
  const std::int32_t* seq_lens = nullptr;
  // LoRA dropout and gradient accumulation: `micro` passes over the batch,
  // pass m with dropout p = lora_dropout and mask seed dropout_seeds[m] (null:
  // 0), each seeded with 1 / (micro * counted), accumulated. loss_sum: their sum.
  double lora_dropout = 0;
  int micro = 1;
  const std::uint64_t* dropout_seeds = nullptr;
  // AdamW.
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8, weight_decay = 0.01, max_grad_norm = 0;
};

struct model_reference_out {
  double loss_sum = 0;
  std::int64_t counted = 0;
  double grad_norm = 0;
  double loss_sum_after = 0;  // the loss of the same batch with the updated adapter (forward only)
  // Written at index l * 7 + t: dA, dB (before the step) and A, B after one AdamW step.
  float* const* dA = nullptr;
  float* const* dB = nullptr;
  float* const* newA = nullptr;
  float* const* newB = nullptr;
};

// Returns 0, or -1 with a message on stderr.
int model_reference_run(const model_reference_args& a, model_reference_out& out);

// One AdamW step (train::adamw, global-norm clipping as clip_grad_norm_) on a
// flat array: p [n] updated in place with gradients g [n] (not modified).
int adamw_reference_flat(float* p, const float* g, std::int64_t n, double lr, double beta1, double beta2, double eps,
                         double weight_decay, double max_grad_norm);

}  // namespace staticgrad::test
