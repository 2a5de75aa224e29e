#pragma once
// What `staticgrad tokenize` does, as library functions (so tests call the
// same code the command runs):
//  encode: each line a JSON string -> a line with the JSON array of its ids;
//  decode: each line a JSON array of ids -> a line with the JSON string;
//  dataset: each line a training example (dataset.hpp) -> what the model sees:
//    its tokens, the trained ones marked with '+'.
// Blank lines are skipped; any other line that is not the expected JSON gets a
// staticgrad::error naming the file and line. Lines are encoded in blocks on
// `threads` threads; output order is input order.
#include <ostream>
#include <string>
#include <vector>

#include "staticgrad/io/dataset.hpp"
#include "staticgrad/io/jsonl.hpp"
#include "staticgrad/io/tokenizer.hpp"

namespace staticgrad::io {

struct tokenize_options {
  bool decode = false;
  bool skip_special = false;  // decode: leave special tokens out of the text
  bool split_added = true;    // encode: match <|im_start|> etc. in the text
  unsigned threads = 1;
};

inline void write_ids(std::ostream& out, const std::vector<std::int32_t>& ids) {
  std::string s;
  s.reserve(ids.size() * 7 + 3);
  s += '[';
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(ids[i]);
  }
  s += "]\n";
  out << s;
}

inline void tokenize_jsonl(const tokenizer& tok, line_reader& in, std::ostream& out, const tokenize_options& o = {}) {
  std::string line;
  if (o.decode) {
    std::vector<std::int32_t> ids;
    while (in.next(line)) {
      if (is_blank(line)) continue;
      auto j = parse_json_line(line, in.path(), in.line_no());
      error_context ctx{in.path(), "(ids)", in.line_no()};
      require(j.is_array(), "expected a JSON array of token ids", ctx);
      ids.clear();
      for (const auto& v : j) {
        require(v.is_number_integer(), "token ids must be integers", ctx);
        auto id = v.get<std::int64_t>();
        require(id >= 0 && std::uint64_t(id) < tok.vocab_size(), "token id out of range: " + std::to_string(id), ctx);
        ids.push_back(std::int32_t(id));
      }
      out << nlohmann::json(tok.decode(ids, o.skip_special)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
          << '\n';
    }
    return;
  }
  // Encode in blocks so that threads have work and memory stays bounded.
  constexpr std::size_t block = 4096;
  std::vector<std::string> texts;
  std::vector<std::size_t> line_nos;
  auto flush = [&] {
    std::vector<std::vector<std::int32_t>> ids;
    try {
      ids = tok.encode_batch(texts, o.threads, o.split_added);
    } catch (const error&) {
      // Find the offending line to name it.
      for (std::size_t i = 0; i < texts.size(); ++i) {
        try {
          tok.encode(texts[i], o.split_added);
        } catch (const error& e) {
          throw error(e.message(), {in.path(), "(text)", line_nos[i]});
        }
      }
      throw;
    }
    for (auto& v : ids) write_ids(out, v);
    texts.clear();
    line_nos.clear();
  };
  while (in.next(line)) {
    if (is_blank(line)) continue;
    auto j = parse_json_line(line, in.path(), in.line_no());
    require(j.is_string(), "expected a JSON string", {in.path(), "(text)", in.line_no()});
    texts.push_back(j.get<std::string>());
    line_nos.push_back(in.line_no());
    if (texts.size() == block) flush();
  }
  if (!texts.empty()) flush();
}

// Prints, for each example line, its shape, counts and tokens: each token as
// the JSON string of its text, prefixed by '+' when it is trained on (its
// label is not -100). Labels follow dataset.hpp (the first token never).
inline void show_dataset(const tokenizer& tok, line_reader& in, std::ostream& out, const data_options& o = {}) {
  std::string line;
  while (in.next(line)) {
    if (is_blank(line)) continue;
    auto j = parse_json_line(line, in.path(), in.line_no());
    auto ex = parse_example(j, tok, o, in.path(), in.line_no());
    const char* shape = j.contains("input_ids")       ? "input_ids"
                        : j.contains("messages")      ? "messages"
                        : j.contains("conversations") ? "sharegpt"
                        : j.contains("prompt") || j.contains("completion") ? "prompt/completion"
                        : j.contains("text") && !j.contains("output")      ? "text"
                                                                           : "instruction";
    std::size_t trained = 0;
    for (auto l : ex.labels) trained += l != ignore_index;
    out << "line " << in.line_no() << " (" << shape << "): " << ex.input_ids.size() << " tokens, " << trained
        << " trained\n";
    std::string row;
    for (std::size_t i = 0; i < ex.input_ids.size(); ++i) {
      if (i) row += ' ';
      if (ex.labels[i] != ignore_index) row += '+';
      row += nlohmann::json(tok.decode(std::span<const std::int32_t>(&ex.input_ids[i], 1)))
                 .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
    out << row << "\n";
  }
}

}  // namespace staticgrad::io
