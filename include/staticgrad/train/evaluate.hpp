#pragma once
// Loss (and LoRA gradients) of a whole JSONL file, and per-line logits: what
// `staticgrad loss` and `staticgrad logits` compute.
//
//   loss = (sum over lines of the summed token CE) / (total counted tokens)
// — the mean over every counted token of the file, not a mean of per-line
// means; a line with nothing to count contributes nothing. Lines are never
// truncated; several are packed into one forward (attention stays inside a
// line, so packing changes nothing but speed). The gradient is that of this
// loss: every forward's backward is seeded with 1 / (total counted tokens).
#include <cstdint>
#include <string>
#include <vector>

#include "staticgrad/io/dataset.hpp"
#include "staticgrad/io/jsonl.hpp"
#include "staticgrad/models/qwen2_model.hpp"
#include "staticgrad/train/batching.hpp"

namespace staticgrad::train {

struct file_example {
  io::example ex;
  std::size_t line = 0;  // 1-based line of the file
};

// Every non-blank line of `file` as an example (any of the loader's shapes).
inline std::vector<file_example> read_examples(const std::string& file, const io::tokenizer& tok,
                                               const io::data_options& o = {}) {
  io::line_reader in(file);
  std::vector<file_example> v;
  std::string line;
  while (in.next(line)) {
    if (io::is_blank(line)) continue;
    auto j = io::parse_json_line(line, in.path(), in.line_no());
    v.push_back({io::parse_example(j, tok, o, in.path(), in.line_no()), in.line_no()});
  }
  require(!v.empty(), "no examples in the file", {file, "", {}});
  return v;
}

struct file_loss {
  double loss_sum = 0;
  std::int64_t tokens = 0;  // counted
  std::int64_t lines = 0;
  double mean() const { return tokens ? loss_sum / double(tokens) : 0.0; }
};

// The model must have an adapter attached (and gradients, for backward).
// `pack_tokens`: tokens per forward (lines are packed up to it; a longer line
// runs alone).
template <class Model>
file_loss evaluate_file(Model& model, const std::vector<file_example>& xs, const std::string& file, bool backward,
                        std::int64_t pack_tokens = 4096) {
  file_loss res;
  res.lines = std::int64_t(xs.size());
  std::int64_t total = 0;
  for (const auto& x : xs)
    total += counted_targets(x.ex.labels.data(), 0, std::int64_t(x.ex.labels.size()));
  require(total > 0, "no line has a label to count (every label is -100 after the shift)", {file, "labels", {}});
  token_batch b;
  auto flush = [&] {
    if (b.input_ids.empty()) return;
    const auto layout = cpu_layout(b);
    const auto r = model.step({b.input_ids, b.labels, layout.view()}, backward, 1.0 / double(total));
    res.loss_sum += r.loss_sum;
    res.tokens += r.counted;
    b = token_batch{};
  };
  for (const auto& x : xs) {
    const std::int64_t n = std::int64_t(x.ex.input_ids.size());
    if (b.tokens() > 0 && b.tokens() + n > pack_tokens) flush();
    append_sequence(b, x.ex.input_ids.data(), x.ex.labels.data(), nullptr, n, model.vocab(),
                    file + ":" + std::to_string(x.line));
  }
  flush();
  return res;
}

// Logits [len_i, vocab] of each line run alone (no gradients).
template <class Model>
std::vector<std::vector<float>> line_logits(Model& model, const std::vector<file_example>& xs, const std::string& file) {
  std::vector<std::vector<float>> out;
  for (const auto& x : xs) {
    const auto& ids = x.ex.input_ids;
    const std::int64_t n = std::int64_t(ids.size());
    for (auto id : ids)
      require(id >= 0 && id < model.vocab(),
              "token id " + std::to_string(id) + " is outside the model's vocabulary (vocab_size " +
                  std::to_string(model.vocab()) + ")",
              {file, "input_ids", x.line});
    const auto layout = cpu::make_packed_layout(std::vector<std::int64_t>{n});
    model.step({ids, {}, layout.view()}, false);
    out.push_back(model.logits(n));
  }
  return out;
}

}  // namespace staticgrad::train
