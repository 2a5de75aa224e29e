// The commands that run the model: `loss`, `logits`, `finetune`, `demo`.
// They live in one translation unit so that each compiled block shape's
// model (models::qwen2_model<S>, the heavy template) is instantiated once:
// every command goes through run_model_command<S>. See docs/cli.md.
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "demo_chat_answers.hpp"
#include "finetune_cuda.hpp"
#include "staticgrad/io/hf_config.hpp"
#include "staticgrad/io/peft_adapter.hpp"
#include "staticgrad/io/safetensors_writer.hpp"
#include "staticgrad/io/tokenizer.hpp"
#include "staticgrad/io/tokenizer_location.hpp"
#include "staticgrad/models/qwen2_model.hpp"
#include "staticgrad/train/demo_task.hpp"
#include "staticgrad/train/evaluate.hpp"
#include "staticgrad/train/trainer.hpp"

namespace {

namespace fs = std::filesystem;
using namespace staticgrad;

enum class job { loss, logits, finetune };

struct model_request {
  job what = job::loss;
  std::string model, data, adapter, grads_out, out;
  std::vector<std::string> data_files;  // finetune: every --data file (data = the first)
  std::string tokenizer;                // empty: io::resolve_tokenizer (the model's, else the vendored one)
  train::train_options train;
};

struct model_response {
  int rc = 0;
  train::train_result trained;
};

// An adapter whose every B is zero: the base model exactly (r = 1, q_proj).
io::lora_adapter zero_adapter(const io::hf_config& c) {
  io::lora_config lc;
  lc.r = 1;
  lc.target_modules = {io::lora_target::q_proj};
  return io::make_lora_adapter(lc, c);
}

io::lora_adapter read_or_zero_adapter(const std::string& dir, const io::hf_config& c) {
  if (dir.empty()) return zero_adapter(c);
  return io::read_peft_adapter(dir, c);
}

std::vector<io::lora_target> parse_targets(const std::string& list) {
  if (list == "all-linear") return {io::all_lora_targets.begin(), io::all_lora_targets.end()};  // PEFT's spelling
  std::vector<io::lora_target> ts;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    auto t = io::target_from_name(item);
    require(t.has_value(), "unknown target module \"" + item +
                               "\" (expected a comma list of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)",
            {"", "--target-modules", {}});
    ts.push_back(*t);
  }
  require(!ts.empty(), "no target modules given", {"", "--target-modules", {}});
  std::vector<io::lora_target> canon;  // canonical order, no duplicates
  for (auto t : io::all_lora_targets)
    if (std::find(ts.begin(), ts.end(), t) != ts.end()) canon.push_back(t);
  return canon;
}

std::int64_t trainable_parameters(const io::lora_adapter& ad) {
  std::int64_t n = 0;
  for (std::int64_t l = 0; l < ad.num_layers; ++l)
    for (auto t : ad.config.target_modules) n += std::int64_t(ad.at(l, t).a.size() + ad.at(l, t).b.size());
  return n;
}

template <class S>
model_response run_model_command(const model_request& r) {
  model_response res;
  auto model = models::qwen2_model<S>::load(r.model);
  const auto& cfg = model->config();
  auto tok = io::tokenizer::from_file(io::resolve_tokenizer(r.tokenizer, r.model));
  if (r.what == job::finetune) {
    train::trainer<S> tr(*model, tok, r.data_files.empty() ? std::vector<std::string>{r.data} : r.data_files, r.train);
    if (r.train.log)
      *r.train.log << fmt::format(
                          "finetune: {} ({}, {} layers, vocab {}), LoRA r {} alpha {} on {} modules, {} trainable "
                          "parameters; {} rows x {} tokens per micro-batch, {} steps",
                          r.model, models::shape_name<S>::value, cfg.num_hidden_layers, cfg.vocab_size,
                          r.train.lora.r, r.train.lora.lora_alpha, r.train.lora.target_modules.size(),
                          trainable_parameters(tr.adapter()), tr.rows(), r.train.max_len, r.train.steps)
                   << std::endl;
    res.trained = tr.run();
    if (r.train.log) {
      const auto& d = res.trained.data;
      *r.train.log << fmt::format("data: {} examples read, {} used, {} truncated, {} dropped as too long, {} dropped "
                                  "without targets, {} bad lines skipped (last epoch)",
                                  d.examples_read, d.examples_used, d.truncated, d.dropped_too_long, d.dropped_no_targets,
                                  d.bad_lines_skipped)
                   << "\n"
                   << "saved the PEFT adapter to " << r.train.out.string() << std::endl;
    }
    return res;
  }
  auto adapter = read_or_zero_adapter(r.adapter, cfg);
  const auto xs = train::read_examples(r.data, tok);
  if (r.what == job::logits) {
    model->attach(&adapter);
    const auto logits = train::line_logits(*model, xs, r.data);
    std::vector<io::tensor_data> ts;
    for (std::size_t i = 0; i < logits.size(); ++i)
      ts.push_back(io::f32_tensor("logits." + std::to_string(i),
                                  {std::int64_t(logits[i].size()) / model->vocab(), model->vocab()}, logits[i]));
    io::write_safetensors(r.out, std::move(ts), {{"format", "pt"}});
    std::cout << nlohmann::json{{"lines", logits.size()}, {"out", r.out}}.dump() << "\n";
    return res;
  }
  // loss
  const bool grads = !r.grads_out.empty();
  auto g = io::make_lora_adapter(adapter.config, cfg);
  model->attach(&adapter, grads ? &g : nullptr);
  const auto fl = train::evaluate_file(*model, xs, r.data, grads);
  if (!std::isfinite(fl.loss_sum)) {  // exit 1, naming the weight at fault when there is one
    io::checkpoint::open(r.model).require_finite();
    throw error("the loss is not finite (NaN or infinity) though every weight is finite", {r.data, "loss", {}});
  }
  if (grads) {
    std::vector<io::tensor_data> ts;
    for (std::int64_t l = 0; l < g.num_layers; ++l)
      for (auto t : g.config.target_modules) {
        const std::int64_t in = io::target_in_features(t, cfg), out = io::target_out_features(t, cfg);
        ts.push_back(io::f32_tensor(io::lora_key(l, t, 'A'), {g.config.r, in}, g.at(l, t).a));
        ts.push_back(io::f32_tensor(io::lora_key(l, t, 'B'), {out, g.config.r}, g.at(l, t).b));
      }
    io::write_safetensors(r.grads_out, std::move(ts), {{"format", "pt"}});
  }
  nlohmann::json j{{"loss", fl.mean()}, {"tokens", fl.tokens}, {"loss_sum", fl.loss_sum}, {"lines", fl.lines}};
  if (grads) j["grads_out"] = r.grads_out;
  std::cout << j.dump() << "\n";
  return res;
}

constexpr const char* tokenizer_help =
    "tokenizer for text lines (default: the model directory's tokenizer.json, else the vendored Qwen2 tokenizer "
    "installed with staticgrad)";

model_response dispatch(const model_request& r) {
  const auto cfg_path = (fs::path(r.model) / "config.json").string();
  const auto cfg = io::read_hf_config(fs::path(r.model));
  return models::dispatch_shape(cfg, cfg_path, [&]<class S>() { return run_model_command<S>(r); });
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
    r->what = job::loss;
    return dispatch(*r).rc;
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
    r->what = job::logits;
    return dispatch(*r).rc;
  });
}}};

// ---- finetune -------------------------------------------------------------------

struct finetune_cli {
  std::string targets = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj";
  std::string schedule = "cosine";
  std::string out;
  std::string device = "cpu";
  bool rslora = false;
};

void add_training_options(CLI::App* sub, model_request& r, finetune_cli& f) {
  auto& o = r.train;
  sub->add_option("--lora-r", o.lora.r, "LoRA rank")->capture_default_str();
  sub->add_option("--lora-alpha", o.lora.lora_alpha, "LoRA alpha (scaling alpha/r, or alpha/sqrt(r) with --use-rslora)")
      ->capture_default_str();
  sub->add_option("--lora-dropout", o.lora.lora_dropout, "dropout on the LoRA input")->capture_default_str();
  sub->add_flag("--use-rslora", f.rslora, "rank-stabilised scaling alpha/sqrt(r)");
  sub->add_option("--target-modules", f.targets, "comma list of projections to adapt, or all-linear (all seven)")
      ->capture_default_str();
  sub->add_option("--lr", o.optim.lr, "peak learning rate")->capture_default_str();
  sub->add_option("--steps", o.steps, "optimizer steps")->capture_default_str();
  sub->add_option("--batch-tokens", o.batch_tokens, "tokens per micro-batch: rows = max(1, N / max_len)")
      ->capture_default_str();
  sub->add_option("--grad-accum", o.grad_accum, "micro-batches per optimizer step")->capture_default_str();
  sub->add_option("--max-len", o.max_len, "tokens per row; longer examples are truncated")->capture_default_str();
  sub->add_option("--seed", o.seed, "seed of data order, LoRA init and dropout")->capture_default_str();
  sub->add_option("--warmup-steps", o.warmup_steps, "linear warmup steps")->capture_default_str();
  sub->add_option("--schedule", f.schedule, "constant, cosine or linear (after warmup)")->capture_default_str();
  sub->add_option("--weight-decay", o.optim.weight_decay, "AdamW decoupled weight decay")->capture_default_str();
  sub->add_option("--max-grad-norm", o.optim.max_grad_norm, "clip the global gradient norm (0 = off)")
      ->capture_default_str();
  sub->add_flag("--skip-bad-lines", o.skip_bad_lines, "skip and count malformed data lines instead of stopping");
  sub->add_flag("--drop-long", o.drop_long, "drop examples longer than --max-len instead of truncating them");
  sub->add_flag("--truncate-text", o.truncate_text,
                "truncate {\"text\"} documents longer than --max-len (default: split them into --max-len windows)");
  sub->add_option("--save-every", o.save_every, "also save OUT/checkpoint-<step> every N steps (0 = only at the end)")
      ->capture_default_str();
}

void finish_training_options(model_request& r, const finetune_cli& f) {
  r.train.lora.target_modules = parse_targets(f.targets);
  r.train.lora.use_rslora = f.rslora;
  r.train.lora.base_model_name_or_path = r.model;
  r.train.schedule = train::parse_schedule(f.schedule);
  r.train.out = f.out;
}

staticgrad::cli::command_registrar reg_finetune{{"finetune", [](CLI::App& app) {
  auto* sub = app.add_subcommand("finetune", "LoRA fine-tuning on the CPU or a CUDA GPU; writes a PEFT adapter");
  auto r = std::make_shared<model_request>();
  auto f = std::make_shared<finetune_cli>();
  sub->add_option("--model", r->model, "Hugging Face checkpoint directory")->required();
  sub->add_option("--data", r->data_files,
                  "JSONL training data, one or more files (text, messages, conversations, prompt/completion, "
                  "instruction or input_ids lines)")
      ->required();
  sub->add_option("--out", f->out, "output PEFT adapter directory")->required();
  sub->add_option("--tokenizer", r->tokenizer, tokenizer_help);
  sub->add_option("--device", f->device, "cpu, or cuda (the GPU trainer: Qwen2.5-0.5B/1.5B block shapes)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  add_training_options(sub, *r, *f);
  return std::function<int()>([r, f] {
    for (const auto& d : r->data_files) require_file(d, "--data");
    r->data = r->data_files.front();
    finish_training_options(*r, *f);
    r->what = job::finetune;
    if (f->device == "cuda") {
      cli::finetune_request q{r->model, r->data_files, io::resolve_tokenizer(r->tokenizer, r->model), r->train};
      return cli::run_finetune_cuda(q);
    }
    return dispatch(*r).rc;
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
  model_request r;
  r.what = job::finetune;
  r.model = (dir / "model").string();
  r.data = (dir / "chat.jsonl").string();
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
  const auto res = models::dispatch_shape(train::demo_config(task.model), r.model,
                                          [&]<class S>() { return run_model_command<S>(r); });
  const auto& s = res.trained.steps;
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
    model_request r;
    r.what = job::finetune;
    r.model = (dir / "model").string();
    r.data = (dir / "data.jsonl").string();
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
    const auto res = models::dispatch_shape(train::demo_config(task), r.model,
                                            [&]<class S>() { return run_model_command<S>(r); });
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto& s = res.trained.steps;
    std::cout << fmt::format("demo: first loss {:.4f}, last loss {:.4f} after {} steps ({:.1f} s)", s.front().loss,
                             s.back().loss, s.size(), secs)
              << std::endl;
    return 0;
  });
}}};

}  // namespace
