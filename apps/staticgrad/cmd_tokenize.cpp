// `staticgrad tokenize`: JSONL of strings -> JSONL of id arrays, or the
// reverse with --decode. See docs/cli.md.
#include <filesystem>
#include <iostream>
#include <memory>

#include "commands.hpp"
#include "staticgrad/io/tokenize_jsonl.hpp"

namespace {

struct tokenize_opts {
  std::string tokenizer = std::string(STATICGRAD_SOURCE_DIR) + "/data/qwen2-tokenizer";
  std::string jsonl = "-";
  bool decode = false;
  bool skip_special = false;
  bool no_split_special = false;
  bool dataset = false;
  unsigned threads = 1;
};

staticgrad::cli::command_registrar reg{{"tokenize", [](CLI::App& app) {
  auto* sub = app.add_subcommand("tokenize", "Encode JSONL strings to token ids, or decode ids back (--decode)");
  auto o = std::make_shared<tokenize_opts>();
  sub->add_option("--tokenizer", o->tokenizer, "tokenizer.json(.gz) or a directory holding one")
      ->capture_default_str();
  sub->add_option("--jsonl", o->jsonl, "input: one JSON string per line (or a JSON array of ids with --decode); - = stdin")
      ->capture_default_str();
  sub->add_flag("--decode", o->decode, "decode: each line a JSON array of ids, print a JSON string");
  sub->add_flag("--skip-special", o->skip_special, "with --decode: leave special tokens out");
  sub->add_flag("--no-split-special", o->no_split_special, "encode <|im_start|> etc. written in the text as plain text");
  sub->add_flag("--dataset", o->dataset,
                "read --jsonl as training data (text/messages/instruction/input_ids lines) and show each example's "
                "tokens, '+' marking those trained on");
  sub->add_option("--threads", o->threads, "encoding threads")->capture_default_str();
  return std::function<int()>([o] {
    auto tok = staticgrad::io::tokenizer::from_file(o->tokenizer);
    staticgrad::io::line_reader in(o->jsonl);
    std::ios::sync_with_stdio(false);
    if (o->dataset) {
      staticgrad::io::show_dataset(tok, in, std::cout);
      std::cout.flush();
      return std::cout ? 0 : 1;
    }
    staticgrad::io::tokenize_jsonl(tok, in, std::cout,
                                   {o->decode, o->skip_special, !o->no_split_special, std::max(1u, o->threads)});
    std::cout.flush();
    return std::cout ? 0 : 1;
  });
}}};

}  // namespace
