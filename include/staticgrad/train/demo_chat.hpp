#pragma once
// `staticgrad demo --chat`: a tiny Qwen2.5-architecture model with the REAL
// 151,936-entry vocabulary, fine-tuned with LoRA on a few question/answer
// chats that go through the real tokenizer and the ChatML template, then asked
// the questions again through the generation path (infer/).
//
// Model: demo_task's random checkpoint (tiny block shape, hidden 128, 2
// layers, untied head) at vocab 151,936, embedding and lm_head ~ N(0, 0.2):
// with a unit-RMS final state (norm sqrt(128)) a head row of norm
// 0.2 sqrt(128) = 2.3 gives the learned answer a logit of up to ~25 against
// a maximum of ~11 over the 151,935 others (their logits ~ N(0, 2.3^2)), so
// greedy decoding can pick it; at 0.1 the margin is too thin to train in a
// few steps. The embedding and the head dominate the cost
// (2 x 151,936 x 128 floats = 156 MB), but only trained tokens (the answers)
// go through the chunked LM head, so a step costs little.
// Files in DIR: model/ (config.json, model.safetensors, generation_config.json:
// greedy, stop at <|im_end|> / <|endoftext|>), chat.jsonl (messages lines).
// Training: LoRA r 16 on all seven projections, lr 3e-3 (at 1e-2 and above
// the loss stalls above 2 and greedy answers collapse to one), 60 steps of
// all six chats; measured in docs/training.md.
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "staticgrad/io/atomic_file.hpp"
#include "staticgrad/train/demo_task.hpp"

namespace staticgrad::train {

inline constexpr std::int64_t qwen2_vocab = 151936;  // Qwen2.5's embedding rows (tokenizer: 151,665 ids)

struct demo_chat {
  demo_task model{.layers = 2, .vocab = qwen2_vocab, .seed = 0, .head_std = 0.2};
  // A short system message: with Qwen's default one (20 tokens the same in
  // every chat) the question is a smaller part of what attention averages at
  // the start of the answer, and 60 steps do not separate the answers.
  std::string system = "Answer in one word.";
  // The facts taught: (question, answer).
  std::vector<std::pair<std::string, std::string>> facts = {
      {"What is the capital of France?", "Paris."},
      {"What colour is the sky?", "Blue."},
      {"How many legs does a spider have?", "Eight."},
      {"What do bees make?", "Honey."},
      {"What is the opposite of hot?", "Cold."},
      {"Which planet is red?", "Mars."},
  };
};

inline void write_demo_chat(const std::filesystem::path& dir, const demo_chat& d) {
  write_demo_checkpoint(dir / "model", d.model);
  io::write_text_atomic(dir / "model" / "generation_config.json",
                        nlohmann::json{{"do_sample", false}, {"eos_token_id", {151645, 151643}}, {"max_new_tokens", 16}}
                                .dump(2) +
                            "\n");
  std::string lines;
  for (const auto& [q, a] : d.facts)
    lines += nlohmann::json{{"messages",
                             {{{"role", "system"}, {"content", d.system}},
                              {{"role", "user"}, {"content", q}},
                              {{"role", "assistant"}, {"content", a}}}}}
                 .dump() +
             "\n";
  io::write_text_atomic(dir / "chat.jsonl", lines);
}

}  // namespace staticgrad::train
