// The commands that run the CPU model: `loss`, `logits` (model_commands.hpp:
// one generated translation unit per block shape runs them) and `demo`
// (run_finetune, train_run.cpp). See docs/cli.md.
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>

#include <fmt/format.h>

#include "commands.hpp"
#include "demo_chat_answers.hpp"
#include "finetune_run.hpp"
#include "model_commands.hpp"
#include "staticgrad/io/hf_config.hpp"
#include "staticgrad/models/qwen2.hpp"
#include "staticgrad/train/demo_chat.hpp"
#include "staticgrad/train/demo_task.hpp"

namespace {

namespace fs = std::filesystem;
using namespace staticgrad;
using cli::model_job;
using cli::model_request;

constexpr const char* tokenizer_help =
    "tokenizer for text lines (default: the model directory's tokenizer.json, else the vendored Qwen2 tokenizer "
    "installed with staticgrad)";

int dispatch(const model_request& r) {
  const auto cfg_path = (fs::path(r.model) / "config.json").string();
  const auto cfg = io::read_hf_config(fs::path(r.model));
  return models::dispatch_shape(cfg, cfg_path, [&]<class S>() { return cli::run_model_command<S>(r); });
}

void require_file(const std::string& path, const char* option) {
  std::error_code ec;
  require(fs::exists(path, ec), "no such file or directory", {path, option, {}});
}

// ---- loss -----------------------------------------------------------------------

staticgrad::cli::command_registrar reg_loss{{"loss", [](CLI::App& app) {
  auto* sub = app.add_subcommand("loss", "Mean token cross-entropy of a JSONL file (and its LoRA gradients)");
  auto r = std::make_shared<model_request>();
  sub->add_option("--model", r->model, "Hugging Face checkpoint directory (config.json + safetensors)")->required();
  sub->add_option("--data", r->data, "JSONL: input_ids/labels, text, messages or instruction lines")->required();
  sub->add_option("--adapter", r->adapter, "PEFT adapter directory (default: none, the base model)");
  sub->add_option("--grads-out", r->grads_out,
                  "write d loss / d LoRA A and B (F32 safetensors, PEFT key names); needs --adapter");
  sub->add_option("--tokenizer", r->tokenizer, tokenizer_help);
  return std::function<int()>([r] {
    require(r->grads_out.empty() || !r->adapter.empty(),
            "--grads-out needs --adapter: the gradients are those of an adapter's A and B (its r and targets)",
            {"", "--grads-out", {}});
    require_file(r->data, "--data");
    r->what = model_job::loss;
    return dispatch(*r);
  });
}}};

// ---- logits ---------------------------------------------------------------------

staticgrad::cli::command_registrar reg_logits{{"logits", [](CLI::App& app) {
  auto* sub = app.add_subcommand("logits", "Per-line logits as safetensors logits.<line> F32 [len, vocab] (parity checks)");
  auto r = std::make_shared<model_request>();
  sub->add_option("--model", r->model, "Hugging Face checkpoint directory")->required();
  sub->add_option("--data", r->data, "JSONL lines (each line is run alone)")->required();
  sub->add_option("--adapter", r->adapter, "PEFT adapter directory (default: none)");
  sub->add_option("--out", r->out, "output .safetensors file")->required();
  sub->add_option("--tokenizer", r->tokenizer, tokenizer_help);
  return std::function<int()>([r] {
    require_file(r->data, "--data");
    r->what = model_job::logits;
    return dispatch(*r);
  });
}}};

// ---- demo -----------------------------------------------------------------------

struct demo_cli {
  std::string out;
  std::int64_t steps = 150;
  std::uint64_t seed = 0;
  bool chat = false;
  CLI::Option* steps_opt = nullptr;
};

// demo --chat (train/demo_chat.hpp): the real vocabulary, chat data through
// the real tokenizer and template, then the questions asked again.
int run_demo_chat(const demo_cli& d, const fs::path& dir, std::chrono::steady_clock::time_point t0) {
  train::demo_chat task;
  task.model.seed = d.seed;
  train::write_demo_chat(dir, task);
  std::cout << fmt::format("demo --chat: a random {}-layer Qwen2.5-architecture model (hidden 128) with the real "
                           "vocabulary ({} rows) in {}; {} question/answer chats in {} (Qwen2 tokenizer, ChatML)",
                           task.model.layers, task.model.vocab, (dir / "model").string(), task.facts.size(),
                           (dir / "chat.jsonl").string())
            << std::endl;
  cli::finetune_job r;
  r.model = (dir / "model").string();
  r.data = {(dir / "chat.jsonl").string()};
  r.train.lora.r = 16;
  r.train.lora.lora_alpha = 32;
  r.train.lora.target_modules = {io::all_lora_targets.begin(), io::all_lora_targets.end()};
  r.train.lora.base_model_name_or_path = r.model;
  r.train.steps = d.steps_opt && d.steps_opt->count() ? d.steps : 60;
  r.train.max_len = 64;
  r.train.batch_tokens = 64 * std::int64_t(task.facts.size());  // every chat in each step
  r.train.seed = d.seed;
  r.train.optim.lr = 3e-3;
  r.train.optim.weight_decay = 0.0;
  r.train.warmup_steps = 3;
  r.train.out = dir / "adapter";
  const auto res = cli::run_finetune(r);
  const auto& s = res.steps;
  std::cout << fmt::format("demo --chat: loss {:.3f} -> {:.3f} after {} steps; asking the questions again:",
                           s.front().loss, s.back().loss, s.size())
            << std::endl;
  const int right = cli::answer_demo_questions(dir, task);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << fmt::format("demo --chat: {} of {} answers as taught ({:.1f} s). Try:\n  staticgrad generate --model {} "
                           "--adapter {} --system \"{}\" --prompt \"{}\"",
                           right, task.facts.size(), secs, (dir / "model").string(), (dir / "adapter").string(),
                           task.system, task.facts.front().first)
            << std::endl;
  return 0;
}

staticgrad::cli::command_registrar reg_demo{{"demo", [](CLI::App& app) {
  auto* sub = app.add_subcommand(
      "demo", "Make a tiny random Qwen2.5-architecture model and a synthetic task, fine-tune it with LoRA on the CPU");
  auto d = std::make_shared<demo_cli>();
  sub->add_option("--out", d->out, "directory for model/, data.jsonl, adapter/ (default: a new temporary directory)");
  d->steps_opt = sub->add_option("--steps", d->steps, "optimizer steps (--chat: 60)")->capture_default_str();
  sub->add_option("--seed", d->seed, "seed of the model, the data and the training")->capture_default_str();
  sub->add_flag("--chat", d->chat,
                "instead: a tiny model with the real 151,936-token vocabulary learns a few chats (real tokenizer and "
                "template), then answers them through generate");
  return std::function<int()>([d] {
    const auto t0 = std::chrono::steady_clock::now();
    fs::path dir = d->out;
    if (dir.empty()) {
      std::string tmpl = (fs::temp_directory_path() / "staticgrad-demo-XXXXXX").string();
      require(::mkdtemp(tmpl.data()) != nullptr, "cannot create a temporary directory", {tmpl, "", {}});
      dir = tmpl;
    }
    fs::create_directories(dir);
    if (d->chat) return run_demo_chat(*d, dir, t0);
    train::demo_task task;
    task.seed = d->seed;
    train::write_demo_checkpoint(dir / "model", task);
    train::write_demo_data(dir / "data.jsonl", task);
    std::cout << fmt::format(
                     "demo: a random {}-layer Qwen2.5-architecture model (hidden 128, vocab {}) in {}; data: {} "
                     "sequences walking a fixed cycle of {} tokens ({}). LoRA should take the loss from ~ln({}) = "
                     "{:.2f} towards 0.",
                     task.layers, task.vocab, (dir / "model").string(), task.lines, task.cycle,
                     (dir / "data.jsonl").string(), task.vocab, std::log(double(task.vocab)))
              << std::endl;
    cli::finetune_job r;
    r.model = (dir / "model").string();
    r.data = {(dir / "data.jsonl").string()};
    r.train.lora.r = 8;
    r.train.lora.lora_alpha = 16;
    r.train.lora.target_modules = {io::all_lora_targets.begin(), io::all_lora_targets.end()};
    r.train.lora.base_model_name_or_path = r.model;
    r.train.steps = d->steps;
    r.train.batch_tokens = 256;
    r.train.max_len = 64;
    r.train.seed = d->seed;
    r.train.optim.lr = 1e-2;
    r.train.optim.weight_decay = 0.0;
    r.train.warmup_steps = 5;
    r.train.out = dir / "adapter";
    const auto res = cli::run_finetune(r);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto& s = res.steps;
    std::cout << fmt::format("demo: first loss {:.4f}, last loss {:.4f} after {} steps ({:.1f} s)", s.front().loss,
                             s.back().loss, s.size(), secs)
              << std::endl;
    return 0;
  });
}}};

}  // namespace
