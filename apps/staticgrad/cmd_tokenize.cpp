// `staticgrad tokenize`: JSONL of strings -> JSONL of id arrays, or the
// reverse with --decode. See docs/cli.md.
#include <filesystem>
#include <iostream>
#include <memory>

#include "commands.hpp"
#include "staticgrad/io/tokenize_jsonl.hpp"
#include "staticgrad/io/tokenizer_location.hpp"
#include "staticgrad/train/train_options.hpp"

namespace {

// --stats runs the loader as `finetune` does, with finetune's defaults.
const staticgrad::train::train_options finetune_defaults{};

struct tokenize_opts {
  std::string tokenizer, model;  // empty: io::resolve_tokenizer
  std::string jsonl = "-";
  bool decode = false;
  bool skip_special = false;
  bool no_split_special = false;
  bool dataset = false;
  bool stats = false;
  std::size_t max_len = std::size_t(finetune_defaults.max_len), rows = 0;
  std::size_t batch_tokens = std::size_t(finetune_defaults.batch_tokens);
  bool pad = false, drop_long = false, skip_bad_lines = false, truncate_text = false;
  std::uint64_t seed = 0;
  unsigned threads = 1;
};

staticgrad::cli::command_registrar reg{{"tokenize", [](CLI::App& app) {
  auto* sub = app.add_subcommand("tokenize", "Encode JSONL strings to token ids, or decode ids back (--decode)");
  auto o = std::make_shared<tokenize_opts>();
  sub->add_option("--tokenizer", o->tokenizer,
                  "tokenizer.json(.gz) or a directory holding one (default: --model's tokenizer.json, else the "
                  "vendored Qwen2 tokenizer installed with staticgrad)");
  sub->add_option("--model", o->model, "model directory whose tokenizer.json to use (as finetune does)");
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
  sub->add_option("--max-len", o->max_len, "with --stats: tokens per row (finetune's default)")->capture_default_str();
  sub->add_option("--batch-tokens", o->batch_tokens, "with --stats: rows = max(1, N / max-len), as finetune")
      ->capture_default_str();
  sub->add_option("--rows", o->rows, "with --stats: rows per batch (overrides --batch-tokens)");
  sub->add_flag("--pad", o->pad, "with --stats: one example per row, padded (default: pack)");
  sub->add_flag("--drop-long", o->drop_long, "with --stats: drop examples longer than --max-len (default: truncate)");
  sub->add_flag("--truncate-text", o->truncate_text,
                "with --stats: truncate long {\"text\"} documents (default: split them into --max-len windows)");
  sub->add_option("--seed", o->seed, "with --stats: shuffle seed")->capture_default_str();
  sub->add_flag("--skip-bad-lines", o->skip_bad_lines, "with --stats: skip and count malformed lines");
  sub->add_option("--threads", o->threads, "encoding threads")->capture_default_str();
  return std::function<int()>([o] {
    namespace io = staticgrad::io;
    auto tok = io::tokenizer::from_file(io::resolve_tokenizer(o->tokenizer, o->model));
    if (o->stats) {
      io::data_options d;
      d.max_len = o->max_len;
      d.rows = o->rows > 0 ? o->rows : std::max<std::size_t>(1, o->batch_tokens / std::max<std::size_t>(1, o->max_len));
      d.split_long_text = !o->truncate_text;
      d.shuffle_buffer = finetune_defaults.shuffle_buffer;
      d.layout = o->pad ? io::row_layout::pad : io::row_layout::pack;
      d.overflow = o->drop_long ? io::overflow_policy::drop : io::overflow_policy::truncate;
      d.seed = o->seed;
      d.skip_bad_lines = o->skip_bad_lines;
      io::data_loader loader({o->jsonl}, tok, d);
      io::batch b;
      while (loader.next(b)) {}
      const auto& st = loader.stats();
      std::cout << io::stats_json(st).dump(2) << '\n';
      if (st.truncated_no_targets > 0)
        std::cerr << "note: truncation to --max-len " << d.max_len << " removed every trained token of "
                  << st.truncated_no_targets
                  << " example(s) (their trained part starts after the cut); they are left out of training. "
                     "Raise --max-len or shorten them.\n";
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
