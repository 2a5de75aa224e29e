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
  bool stats = false;
  std::size_t max_len = 2048, rows = 8;
  bool pad = false, drop_long = false, skip_bad_lines = false;
  std::uint64_t seed = 0;
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
  sub->add_flag("--stats", o->stats,
                "run the training-data pipeline over --jsonl (shuffle, truncate/drop, pack/pad into batches) and "
                "print its counts as JSON");
  sub->add_option("--max-len", o->max_len, "with --stats: tokens per row")->capture_default_str();
  sub->add_option("--rows", o->rows, "with --stats: rows per batch")->capture_default_str();
  sub->add_flag("--pad", o->pad, "with --stats: one example per row, padded (default: pack)");
  sub->add_flag("--drop-long", o->drop_long, "with --stats: drop examples longer than --max-len (default: truncate)");
  sub->add_option("--seed", o->seed, "with --stats: shuffle seed")->capture_default_str();
  sub->add_flag("--skip-bad-lines", o->skip_bad_lines, "with --stats: skip and count malformed lines");
  sub->add_option("--threads", o->threads, "encoding threads")->capture_default_str();
  return std::function<int()>([o] {
    namespace io = staticgrad::io;
    auto tok = io::tokenizer::from_file(o->tokenizer);
    if (o->stats) {
      io::data_options d;
      d.max_len = o->max_len;
      d.rows = o->rows;
      d.layout = o->pad ? io::row_layout::pad : io::row_layout::pack;
      d.overflow = o->drop_long ? io::overflow_policy::drop : io::overflow_policy::truncate;
      d.seed = o->seed;
      d.skip_bad_lines = o->skip_bad_lines;
      io::data_loader loader({o->jsonl}, tok, d);
      io::batch b;
      while (loader.next(b)) {}
      std::cout << io::stats_json(loader.stats()).dump(2) << '\n';
      return std::cout ? 0 : 1;
    }
    io::line_reader in(o->jsonl);
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
