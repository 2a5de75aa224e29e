#pragma once
// What the training loop (loop.hpp) needs from a device: the small interface
// both the CPU model (cpu_backend.hpp) and the CUDA model step
// (cuda_backend.cuh) implement, so that data, epochs, schedule, checks,
// logging, evaluation and checkpoints are written once, in the loop.
//
//   loop --token_batch (kept segments, no padding)--> backend::train_step / eval_loss
//   loop <--io::lora_adapter + optimizer_state-----> backend (init, checkpoint, resume)
//
// Plain host C++ that nvcc's host pass also accepts (no fmt, no CPU model
// headers): the CUDA backend is compiled by nvcc and reached through this
// class from the g++ translation units.
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "staticgrad/io/hf_config.hpp"
#include "staticgrad/io/peft_adapter.hpp"

namespace staticgrad::train {

class communicator;  // distributed.hpp

// One micro-batch: the loader batch's segments that have a token to count,
// concatenated (positions restart at 0 in each segment). A device with
// static shapes pads it itself.
struct token_batch {
  std::vector<std::int32_t> input_ids, labels, positions;  // [T]
  std::vector<std::int32_t> seq_lens;                      // [S], summing to T
  std::int64_t counted = 0;                                // tokens whose shifted label counts
  std::int64_t tokens() const { return static_cast<std::int64_t>(input_ids.size()); }
};

// AdamW's state in the adapter's layout: exp_avg (m) and exp_avg_sq (v) of
// every targeted A and B, and the number of updates done (t).
struct optimizer_state {
  std::int64_t steps = 0;
  io::lora_adapter m, v;
};

struct backend_features {
  const char* device = "cpu";
  bool lora_dropout = false;  // honours lora_config::lora_dropout (seeded masks)
};

// What a backend keeps for backward (graph/memory_plan.hpp), from finetune
// --memory-budget: the budget in bytes for the step's buffers (0: the
// backend's default: CUDA the free device memory less 1 GiB; CPU keep every
// saved value), for micro-batches of `tokens` tokens in rows of seq_len.
struct memory_request {
  double budget_bytes = 0;
  std::int64_t tokens = 0, seq_len = 0;
};

// The inputs of one optimizer step.
struct step_inputs {
  std::span<const token_batch> micro;         // grad_accum micro-batches
  std::span<const std::uint64_t> dropout_seed; // one per micro-batch (mix_seed(mix_seed(seed, step), m))
  double seed_scale = 0;                      // 1 / counted tokens of the whole step
  double lr = 0;                              // the schedule's value for this step
  // Data-parallel (distributed.hpp): the group whose ranks run the other
  // micro-batches of this step. The backend sums the LoRA gradients over it
  // before clipping and AdamW (every rank then applies the same update);
  // loss_sum stays this rank's. nullptr: one process.
  communicator* comm = nullptr;
};

struct step_outputs {
  double loss_sum = 0;   // summed token cross-entropy over the step's counted tokens
  double grad_norm = 0;  // global L2 norm before clipping
};

class backend {
 public:
  virtual ~backend() = default;
  virtual const io::hf_config& config() const = 0;
  virtual backend_features features() const = 0;
  // Most tokens one token_batch may hold (the CUDA model's static T; 0: no limit).
  virtual std::int64_t max_batch_tokens() const = 0;

  // Parameters in (init, resume) and out (saves). set_adapter resets nothing
  // else; set_optimizer restores AdamW's moments and step count.
  virtual void set_adapter(const io::lora_adapter& a) = 0;
  virtual io::lora_adapter adapter() = 0;
  virtual void set_optimizer(const optimizer_state& s) = 0;
  virtual optimizer_state optimizer() = 0;

  // Forward and backward of every micro-batch (gradients of the step's mean
  // loss, accumulated), clipping and the AdamW update.
  virtual step_outputs train_step(const step_inputs& in) = 0;
  // Summed token cross-entropy of one batch through the chunked LM head (no
  // update, no dropout; logits are never materialised).
  virtual double eval_loss_sum(const token_batch& b) = 0;

  // After a non-finite loss or gradient norm: the first LoRA tensor whose
  // gradient (in the order backward computes them: last layer first) or
  // value is not finite, e.g. "the gradient of model.layers.1.mlp.down_proj
  // lora_B"; empty when every one is finite.
  virtual std::string first_non_finite() = 0;
  // Memory the device holds for training (bytes; the CPU: peak resident set).
  virtual std::uint64_t memory_bytes() = 0;
  // The memory plan chosen from the memory_request (graph::memory_choice_text:
  // budget, kept / recomputed values, predicted peak and slowdown), one line
  // for the start of a run; empty: none was chosen.
  virtual std::string memory_plan() const { return {}; }
};

// The LoRA tensors of an adapter in the order backward produces their
// gradients: layers from the last to the first, modules from down_proj to
// q_proj, B before A. f(layer, target, 'A' or 'B', values).
template <class F>
void for_each_lora_backward_order(const io::lora_adapter& a, F&& f) {
  const auto& ts = a.config.target_modules;
  for (std::int64_t l = a.num_layers - 1; l >= 0; --l)
    for (auto it = ts.rbegin(); it != ts.rend(); ++it) {
      const auto& p = a.at(l, *it);
      f(l, *it, 'B', p.b);
      f(l, *it, 'A', p.a);
    }
}

// The first non-finite tensor of `grads` (then of `params`) in backward order, described.
inline std::string describe_first_non_finite(const io::lora_adapter& grads, const io::lora_adapter& params) {
  std::string found;
  auto scan = [&](const io::lora_adapter& a, const char* what) {
    for_each_lora_backward_order(a, [&](std::int64_t l, io::lora_target t, char w, const std::vector<float>& v) {
      if (!found.empty()) return;
      for (float x : v)
        if (!std::isfinite(x)) {
          found = std::string(what) + io::base_module_name(l, t) + " lora_" + std::string(1, w) + " (layer " +
                  std::to_string(l) + ", " + std::string(io::target_name(t)) + ")";
          return;
        }
    });
  };
  scan(grads, "the gradient of ");
  if (found.empty()) scan(params, "the value of ");
  return found;
}

}  // namespace staticgrad::train
