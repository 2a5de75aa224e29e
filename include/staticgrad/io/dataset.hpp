#pragma once
// Training data: JSONL files -> tokenized examples -> shuffled -> packed (or
// padded) rows -> batches of fixed shape [rows, seq_len]. docs/data.md shows
// each input shape and what the model sees.
//
// Contract with the trainer (what a `batch` holds):
//  - input_ids, labels, positions: int32, rows x seq_len, row-major
//    (token t of row r at r * seq_len + t). seq_len == options.max_len always,
//    so every full batch has the same shape (CUDA graphs need that).
//  - labels are aligned with input_ids as in Hugging Face: the loss shifts
//    them inside (position t is trained to predict labels[t + 1]); -100 means
//    ignored. The label of the FIRST token of every example is -100, so the
//    shifted loss never trains the last token of one packed example to
//    predict the first token of the next (alone in a row it is never used).
//  - positions restart at 0 at every example (and at the padding run).
//  - cu_seqlens: cumulative segment starts over the whole flattened batch, as
//    flash-attention's varlen API takes them: {0, s1, s2, ..., rows*seq_len}.
//    A segment is one example or the padding run at the end of a row; every
//    row starts a segment. Attention must stay inside a segment.
//  - Padding uses pad_id (<|endoftext|> 151643, as Qwen does) with label -100.
//
// Streaming: lines are read one at a time; memory holds the shuffle buffer
// (shuffle_buffer tokenized examples), the open packing rows (pack_bins) and
// the batch being built; never the whole file.
// Determinism: the order of batches depends only on the files, the options
// and the seed (std::mt19937_64, whose sequence the C++ standard fixes).
#include <algorithm>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "staticgrad/core/error.hpp"
#include "staticgrad/io/bounds.hpp"
#include "staticgrad/io/dataset_shapes.hpp"
#include "staticgrad/io/jsonl.hpp"
#include "staticgrad/io/tokenizer.hpp"

namespace staticgrad::io {

inline constexpr std::int32_t ignore_index = -100;

enum class row_layout { pack, pad };
enum class overflow_policy { truncate, drop };

struct data_options {
  std::size_t max_len = 2048;  // tokens per row (the sequence length)
  std::size_t rows = 8;        // rows per batch
  row_layout layout = row_layout::pack;
  overflow_policy overflow = overflow_policy::truncate;  // examples longer than max_len
  // {"text"} documents longer than max_len become several examples of at
  // most max_len tokens (shapes::windows) instead of following `overflow`.
  bool split_long_text = true;
  std::uint64_t seed = 0;
  // Examples held for shuffling; <= 1 keeps file order. Each new example
  // swaps with a random one of the buffer, which leaves; at the end the rest
  // leave in random order.
  std::size_t shuffle_buffer = 4096;
  // Open rows first-fit packing may place an example in; when all are too full
  // for the next example, the fullest leaves. More bins, less padding.
  std::size_t pack_bins = 8;
  bool skip_bad_lines = false;
  bool drop_last = false;       // drop a final batch with fewer than `rows` rows
  bool text_append_eos = true;  // {"text"} examples end with <|endoftext|> (trained on)
  std::int32_t pad_id = 151643;
  std::string default_system = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
};

struct data_stats {
  std::size_t lines = 0;              // lines read, blank ones included
  std::size_t examples_read = 0;      // lines that parsed into an example
  std::size_t bad_lines_skipped = 0;  // with skip_bad_lines
  std::size_t truncated = 0;          // longer than max_len, cut to max_len
  std::size_t dropped_too_long = 0;   // longer than max_len, dropped (overflow = drop)
  std::size_t dropped_no_targets = 0; // no label left to train on (e.g. truncated away)
  std::size_t truncated_no_targets = 0; // of those: truncation removed every trained token
  std::size_t split_documents = 0;    // text documents longer than max_len split into windows
  std::size_t windows = 0;            // examples those documents became
  std::size_t examples_used = 0;      // examples placed in rows
  std::size_t tokens = 0;             // example tokens placed in rows (pads not counted)
  std::size_t trained_tokens = 0;     // labels != -100 placed in rows
  std::size_t pad_tokens = 0;
  std::size_t rows = 0;
  std::size_t batches = 0;
};

inline nlohmann::json stats_json(const data_stats& s) {
  return {{"lines", s.lines},
          {"examples_read", s.examples_read},
          {"bad_lines_skipped", s.bad_lines_skipped},
          {"truncated", s.truncated},
          {"dropped_too_long", s.dropped_too_long},
          {"dropped_no_targets", s.dropped_no_targets},
          {"truncated_no_targets", s.truncated_no_targets},
          {"split_documents", s.split_documents},
          {"windows", s.windows},
          {"examples_used", s.examples_used},
          {"tokens", s.tokens},
          {"trained_tokens", s.trained_tokens},
          {"pad_tokens", s.pad_tokens},
          {"rows", s.rows},
          {"batches", s.batches}};
}

struct example {
  std::vector<std::int32_t> input_ids;
  std::vector<std::int32_t> labels;  // same length; -100 = not trained on
  bool document = false;             // a {"text"} line: may be split into windows
};

struct batch {
  std::size_t rows = 0, seq_len = 0;
  std::vector<std::int32_t> input_ids, labels, positions;  // rows * seq_len
  std::vector<std::int32_t> cu_seqlens;                     // segments + 1
  std::size_t examples = 0;
};

// ---- one JSON line -> one example -------------------------------------------

namespace detail {

struct line_ctx {
  const std::string& file;
  std::size_t line;
  error_context at(const std::string& field) const { return {file, field, line}; }
};

inline const std::string& get_string(const nlohmann::json& obj, const char* key, const std::string& field,
                                     const line_ctx& c) {
  require(obj.contains(key), "missing field", c.at(field));
  require(obj[key].is_string(), "must be a string", c.at(field));
  return obj[key].get_ref<const std::string&>();
}

inline void encode_checked(const tokenizer& tok, std::string_view text, std::vector<std::int32_t>& ids,
                           std::vector<token_span>* spans, const std::string& field, const line_ctx& c) {
  try {
    tok.encode_into(text, ids, spans);
  } catch (const error& e) {
    throw error(e.message(), c.at(field));
  }
}

// Renders ChatML and trains on assistant content plus its <|im_end|>. The
// whole conversation is tokenized as one text (exactly what the model sees at
// inference); a token is trained when its bytes overlap a trained range.
struct chat_turn {
  std::string role, content;
  std::optional<bool> trained;  // default: assistant turns are
};

inline example render_chat(const tokenizer& tok, const std::vector<chat_turn>& turns, const data_options& o,
                           const line_ctx& c, const char* field = "messages") {
  std::vector<shapes::segment> segs;
  auto add = [&](const std::string& role, const std::string& content, bool train) {
    segs.push_back({"<|im_start|>" + role + "\n", false});
    segs.push_back({content + "<|im_end|>", train});
    segs.push_back({"\n", false});
  };
  if (turns.empty() || turns.front().role != "system") add("system", o.default_system, false);
  for (const auto& t : turns) add(t.role, t.content, t.trained.value_or(t.role == "assistant"));
  example ex;
  shapes::encode_segments(tok, segs, ex.input_ids, ex.labels, c.at(field));
  return ex;
}

// An integer of a JSON array as int64, without wrapping: nlohmann stores
// integers above INT64_MAX as unsigned, and get<int64_t> would turn
// 2^64 - 100 into -100 (the ignore label).
inline std::int64_t json_token_id(const nlohmann::json& v, const error_context& at) {
  require(v.is_number_integer(), "must be an integer", at);
  if (v.is_number_unsigned() && v.get<std::uint64_t>() > std::uint64_t(INT64_MAX))
    throw error("token id " + std::to_string(v.get<std::uint64_t>()) + " outside the vocabulary", at);
  return v.get<std::int64_t>();
}

inline std::vector<std::int32_t> get_ids(const nlohmann::json& obj, const char* key, const tokenizer& tok,
                                         bool allow_ignore, const line_ctx& c) {
  const auto& a = obj[key];
  require(a.is_array(), "must be an array of integers", c.at(key));
  std::vector<std::int32_t> v;
  v.reserve(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    std::string field = std::string(key) + "[" + std::to_string(i) + "]";
    const auto x = json_token_id(a[i], c.at(field));
    bool ok = (x >= 0 && std::uint64_t(x) < tok.vocab_size()) || (allow_ignore && x == ignore_index);
    require(ok, "token id " + std::to_string(x) + " outside the vocabulary (0.." + std::to_string(tok.vocab_size() - 1) +
                    (allow_ignore ? ", or -100)" : ")"),
            c.at(field));
    v.push_back(std::int32_t(x));
  }
  return v;
}

}  // namespace detail

// Which of the four shapes a line is, and its tokens and labels (unshifted;
// label[0] set to -100 as the contract above says). Throws staticgrad::error
// naming file, line and field on anything malformed.
inline example parse_example(const nlohmann::json& j, const tokenizer& tok, const data_options& o,
                             const std::string& file, std::size_t line) {
  detail::line_ctx c{file, line};
  require(j.is_object(), "each line must be a JSON object", c.at("(json)"));
  example ex;
  if (j.contains("input_ids")) {
    ex.input_ids = detail::get_ids(j, "input_ids", tok, false, c);
    require(!ex.input_ids.empty(), "must not be empty", c.at("input_ids"));
    if (j.contains("labels") && !j["labels"].is_null()) {
      ex.labels = detail::get_ids(j, "labels", tok, true, c);
      require(ex.labels.size() == ex.input_ids.size(),
              "has " + std::to_string(ex.labels.size()) + " entries, input_ids " + std::to_string(ex.input_ids.size()),
              c.at("labels"));
    } else {
      ex.labels = ex.input_ids;
    }
  } else if (j.contains("messages")) {
    const auto& m = j["messages"];
    require(m.is_array() && !m.empty(), "must be a non-empty array of {role, content}", c.at("messages"));
    std::vector<detail::chat_turn> turns;
    bool has_assistant = false;
    for (std::size_t i = 0; i < m.size(); ++i) {
      std::string f = "messages[" + std::to_string(i) + "]";
      require(m[i].is_object(), "must be an object {role, content}", c.at(f));
      const auto& role = detail::get_string(m[i], "role", f + ".role", c);
      require(!role.empty(), "must not be empty", c.at(f + ".role"));
      const auto& content = detail::get_string(m[i], "content", f + ".content", c);
      has_assistant |= role == "assistant";
      turns.push_back({role, content});
    }
    require(has_assistant, "no assistant message: nothing to train on", c.at("messages"));
    ex = detail::render_chat(tok, turns, o, c);
  } else if (j.contains("conversations")) {  // ShareGPT (dataset_shapes.hpp)
    std::vector<detail::chat_turn> turns;
    for (auto& t : shapes::sharegpt_turns(j, file, line)) turns.push_back({t.role, t.content, t.trained});
    ex = detail::render_chat(tok, turns, o, c, "conversations");
  } else if (j.contains("prompt") || j.contains("completion")) {  // dataset_shapes.hpp
    auto pc = shapes::parse_prompt_completion(j, file, line);
    if (pc.turns.empty()) {
      std::int32_t eos = tok.token_to_id("<|endoftext|>");
      require(eos >= 0, "the tokenizer has no <|endoftext|> to end the completion with", c.at("completion"));
      shapes::encode_segments(tok, pc.text, ex.input_ids, ex.labels, c.at("prompt"));
      ex.input_ids.push_back(eos);
      ex.labels.push_back(eos);
    } else {
      std::vector<detail::chat_turn> turns;
      for (auto& t : pc.turns) turns.push_back({t.role, t.content, t.trained});
      ex = detail::render_chat(tok, turns, o, c, "prompt");
    }
  } else if (j.contains("instruction") || j.contains("output")) {
    const auto& instruction = detail::get_string(j, "instruction", "instruction", c);
    const auto& output = detail::get_string(j, "output", "output", c);
    std::string user = instruction;
    if (j.contains("input") && !j["input"].is_null()) {
      const auto& input = detail::get_string(j, "input", "input", c);
      if (!input.empty()) user += "\n\n" + input;
    }
    ex = detail::render_chat(tok, {{"user", user}, {"assistant", output}}, o, c);
  } else if (j.contains("text")) {
    const auto& text = detail::get_string(j, "text", "text", c);
    detail::encode_checked(tok, text, ex.input_ids, nullptr, "text", c);
    if (o.text_append_eos) {
      std::int32_t eos = tok.token_to_id("<|endoftext|>");
      require(eos >= 0, "the tokenizer has no <|endoftext|> to end text examples with", c.at("text"));
      ex.input_ids.push_back(eos);
    }
    ex.labels = ex.input_ids;
    ex.document = true;
  } else {
    throw error("unknown example shape: expected a field text, messages, conversations, prompt/completion, "
                "instruction/output or input_ids",
                c.at("(record)"));
  }
  if (!ex.labels.empty()) ex.labels[0] = ignore_index;
  return ex;
}

// ---- the streaming loader -------------------------------------------------------

class data_loader {
 public:
  data_loader(std::vector<std::string> files, const tokenizer& tok, data_options o)
      : files_(std::move(files)), tok_(tok), o_(std::move(o)), rng_(o_.seed) {
    require(!files_.empty(), "no data files given");
    check_sizes(o_);
    if (o_.pack_bins == 0) o_.pack_bins = 1;
  }

  // Bounds on the options that size allocations: a batch holds rows *
  // max_len tokens and cu_seqlens indexes them with int32.
  static constexpr std::size_t max_seq_len = std::size_t(1) << 20;
  static constexpr std::size_t max_batch_tokens = std::size_t(INT32_MAX);
  static constexpr std::size_t max_buffered = std::size_t(1) << 20;  // shuffle_buffer, pack_bins

  static void check_sizes(const data_options& o) {
    require(o.max_len >= 2 && o.max_len <= max_seq_len,
            "max_len " + std::to_string(o.max_len) + " outside [2, " + std::to_string(max_seq_len) + "]",
            {"", "max_len", {}});
    require(o.rows >= 1 && o.rows <= max_batch_tokens / o.max_len,
            "rows " + std::to_string(o.rows) + " times max_len " + std::to_string(o.max_len) + " must be in [1, " +
                std::to_string(max_batch_tokens) + "] tokens per batch",
            {"", "rows", {}});
    require(o.shuffle_buffer <= max_buffered, "shuffle_buffer above the limit of " + std::to_string(max_buffered),
            {"", "shuffle_buffer", {}});
    require(o.pack_bins <= max_buffered, "pack_bins above the limit of " + std::to_string(max_buffered),
            {"", "pack_bins", {}});
    require_fits_memory(std::uint64_t(o.rows) * o.max_len * 3 * sizeof(std::int32_t),
                        "a batch of " + std::to_string(o.rows) + " rows of " + std::to_string(o.max_len) + " tokens",
                        {"", "max_len", {}});
  }

  // Fills `out` with the next batch; false when the data is exhausted.
  bool next(batch& out) {
    while (ready_.size() < o_.rows && !flushed_) {
      example ex;
      if (next_shuffled(ex)) {
        place(std::move(ex));
      } else {
        for (auto& b : bins_) ready_.push_back(std::move(b));
        bins_.clear();
        flushed_ = true;
      }
    }
    if (ready_.empty() || (ready_.size() < o_.rows && o_.drop_last)) return false;
    std::size_t n = std::min(ready_.size(), o_.rows);
    assemble(n, out);
    ready_.erase(ready_.begin(), ready_.begin() + std::ptrdiff_t(n));
    return true;
  }

  const data_stats& stats() const noexcept { return stats_; }
  const data_options& options() const noexcept { return o_; }

 private:
  struct row {
    std::vector<std::int32_t> ids, labels;
    std::vector<std::int32_t> starts;  // example starts within the row
  };

  // Next example from the files, or false at the end of the last file.
  bool read_example(example& ex) {
    std::string line;
    for (;;) {
      if (!windows_.empty()) {  // the rest of a split document
        ex = std::move(windows_.front());
        windows_.pop_front();
        return true;
      }
      if (!reader_) {
        if (file_index_ == files_.size()) return false;
        reader_ = std::make_unique<line_reader>(files_[file_index_++]);
      }
      if (!reader_->next(line)) {
        reader_.reset();
        continue;
      }
      ++stats_.lines;
      if (is_blank(line)) continue;
      try {
        auto j = parse_json_line(line, reader_->path(), reader_->line_no());
        ex = parse_example(j, tok_, o_, reader_->path(), reader_->line_no());
      } catch (const error&) {
        if (!o_.skip_bad_lines) throw;
        ++stats_.bad_lines_skipped;
        continue;
      }
      ++stats_.examples_read;
      if (ex.document && o_.split_long_text && ex.input_ids.size() > o_.max_len) {
        for (auto [b, e] : shapes::windows(ex.input_ids.size(), o_.max_len)) {
          example w;
          w.input_ids.assign(ex.input_ids.begin() + std::ptrdiff_t(b), ex.input_ids.begin() + std::ptrdiff_t(e));
          w.labels.assign(ex.labels.begin() + std::ptrdiff_t(b), ex.labels.begin() + std::ptrdiff_t(e));
          w.labels[0] = ignore_index;
          windows_.push_back(std::move(w));
        }
        ++stats_.split_documents;
        stats_.windows += windows_.size();
        continue;
      }
      const bool had_targets = std::any_of(ex.labels.begin(), ex.labels.end(), [](std::int32_t l) { return l != ignore_index; });
      if (ex.input_ids.size() > o_.max_len) {
        if (o_.overflow == overflow_policy::drop) {
          ++stats_.dropped_too_long;
          continue;
        }
        ex.input_ids.resize(o_.max_len);
        ex.labels.resize(o_.max_len);
        ++stats_.truncated;
      }
      if (std::none_of(ex.labels.begin(), ex.labels.end(), [](std::int32_t l) { return l != ignore_index; })) {
        ++stats_.dropped_no_targets;
        if (had_targets) ++stats_.truncated_no_targets;
        continue;
      }
      return true;
    }
  }

  bool next_shuffled(example& ex) {
    if (o_.shuffle_buffer <= 1) return read_example(ex);
    while (!source_done_ && buffer_.size() < o_.shuffle_buffer) {
      example e;
      if (!read_example(e)) { source_done_ = true; break; }
      buffer_.push_back(std::move(e));
    }
    if (buffer_.empty()) return false;
    std::size_t j = std::size_t(rng_() % buffer_.size());
    ex = std::move(buffer_[j]);
    if (!source_done_) {
      example e;
      if (read_example(e)) {
        buffer_[j] = std::move(e);
        return true;
      }
      source_done_ = true;
    }
    buffer_[j] = std::move(buffer_.back());
    buffer_.pop_back();
    return true;
  }

  void append(row& r, example&& ex) {
    r.starts.push_back(std::int32_t(r.ids.size()));
    r.ids.insert(r.ids.end(), ex.input_ids.begin(), ex.input_ids.end());
    r.labels.insert(r.labels.end(), ex.labels.begin(), ex.labels.end());
  }

  void place(example&& ex) {
    if (o_.layout == row_layout::pad) {
      row r;
      append(r, std::move(ex));
      ready_.push_back(std::move(r));
      return;
    }
    const std::size_t n = ex.input_ids.size();
    std::size_t k = 0;
    while (k < bins_.size() && bins_[k].ids.size() + n > o_.max_len) ++k;
    if (k == bins_.size()) {
      if (bins_.size() == o_.pack_bins) {
        auto fullest = std::max_element(bins_.begin(), bins_.end(),
                                        [](const row& a, const row& b) { return a.ids.size() < b.ids.size(); });
        ready_.push_back(std::move(*fullest));
        bins_.erase(fullest);
      }
      bins_.emplace_back();
      k = bins_.size() - 1;
    }
    append(bins_[k], std::move(ex));
    if (bins_[k].ids.size() == o_.max_len) {
      ready_.push_back(std::move(bins_[k]));
      bins_.erase(bins_.begin() + std::ptrdiff_t(k));
    }
  }

  void assemble(std::size_t n, batch& b) {
    const std::size_t L = o_.max_len;
    b.rows = n;
    b.seq_len = L;
    b.examples = 0;
    b.input_ids.assign(n * L, o_.pad_id);
    b.labels.assign(n * L, ignore_index);
    b.positions.assign(n * L, 0);
    b.cu_seqlens.clear();
    for (std::size_t r = 0; r < n; ++r) {
      const row& w = ready_[r];
      std::int32_t* ids = b.input_ids.data() + r * L;
      std::int32_t* lab = b.labels.data() + r * L;
      std::int32_t* pos = b.positions.data() + r * L;
      std::copy(w.ids.begin(), w.ids.end(), ids);
      std::copy(w.labels.begin(), w.labels.end(), lab);
      std::vector<std::int32_t> seg = w.starts;
      if (w.ids.size() < L) seg.push_back(std::int32_t(w.ids.size()));  // the padding run
      for (std::size_t s = 0; s < seg.size(); ++s) {
        std::size_t from = std::size_t(seg[s]), to = s + 1 < seg.size() ? std::size_t(seg[s + 1]) : L;
        for (std::size_t t = from; t < to; ++t) pos[t] = std::int32_t(t - from);
        b.cu_seqlens.push_back(std::int32_t(r * L + from));
      }
      b.examples += w.starts.size();
      stats_.examples_used += w.starts.size();
      stats_.tokens += w.ids.size();
      stats_.pad_tokens += L - w.ids.size();
      stats_.trained_tokens += std::size_t(
          std::count_if(w.labels.begin(), w.labels.end(), [](std::int32_t l) { return l != ignore_index; }));
    }
    b.cu_seqlens.push_back(std::int32_t(n * L));
    stats_.rows += n;
    ++stats_.batches;
  }

  std::vector<std::string> files_;
  const tokenizer& tok_;
  data_options o_;
  std::mt19937_64 rng_;
  std::size_t file_index_ = 0;
  std::unique_ptr<line_reader> reader_;
  std::deque<example> windows_;  // windows of a split document not yet returned
  bool source_done_ = false;
  bool flushed_ = false;
  std::vector<example> buffer_;
  std::vector<row> bins_;
  std::vector<row> ready_;
  data_stats stats_;
};

}  // namespace staticgrad::io
