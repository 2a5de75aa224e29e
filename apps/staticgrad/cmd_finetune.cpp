// `staticgrad finetune`: the command line (flags, --config YAML, the
// resolved OUT/config.yaml) in front of run_finetune (train_run.cpp). See
// docs/cli.md and docs/training.md.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <sstream>

#include "commands.hpp"
#include "config_yaml.hpp"
#include "distributed_run.hpp"
#include "finetune_run.hpp"
#include "staticgrad/io/peft_adapter.hpp"

namespace {

namespace fs = std::filesystem;
using namespace staticgrad;

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

struct finetune_cli {
  cli::finetune_job job;
  std::string targets = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj";
  std::string schedule = "cosine";
  std::string out, resume, config;
  bool rslora = false;
  int gpus = 0;  // --gpus: 0 = this process alone (or one rank of an outside launcher)
  CLI::Option *steps = nullptr, *epochs = nullptr;
};

void add_options(CLI::App* sub, finetune_cli& f) {
  auto& o = f.job.train;
  sub->add_option("--config", f.config, "YAML file of options (keys: these long names without dashes); flags win");
  sub->add_option("--model", f.job.model, "Hugging Face checkpoint directory (required)");
  sub->add_option("--data", f.job.data,
                  "JSONL training data, one or more files (text, messages, conversations, prompt/completion, "
                  "instruction or input_ids lines) (required)");
  sub->add_option("--out", f.out, "output directory: PEFT adapter, checkpoints, metrics.jsonl, training.html (required)");
  sub->add_option("--tokenizer", f.job.tokenizer,
                  "tokenizer for text lines (default: the model directory's tokenizer.json, else the vendored Qwen2 "
                  "tokenizer installed with staticgrad)");
  sub->add_option("--device", f.job.device, "cpu, or cuda (the GPU backend: every Qwen2.5 size)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  sub->add_option("--gpus", f.gpus,
                  "data-parallel over N GPUs of this host: one rank per GPU over NCCL (with --device cuda; "
                  "--grad-accum is per GPU, the global batch N x that; docs/multi_gpu.md)")
      ->check(CLI::Range(1, 1024));
  sub->add_option("--memory-budget", o.memory_budget_gib,
                  "GiB for a training step's buffers: the fastest memory plan that fits (keep or recompute saved "
                  "values in backward; on CUDA also offload layer inputs to host memory; printed at the start). "
                  "0 = the default: --device cuda the free device memory "
                  "less 1 GiB, --device cpu keep every saved value")
      ->capture_default_str();
  sub->add_option("--lora-r", o.lora.r, "LoRA rank")->capture_default_str();
  sub->add_option("--lora-alpha", o.lora.lora_alpha, "LoRA alpha (scaling alpha/r, or alpha/sqrt(r) with --use-rslora)")
      ->capture_default_str();
  sub->add_option("--lora-dropout", o.lora.lora_dropout, "dropout on the LoRA input")->capture_default_str();
  sub->add_flag("--use-rslora", f.rslora, "rank-stabilised scaling alpha/sqrt(r)");
  sub->add_option("--target-modules", f.targets, "comma list of projections to adapt, or all-linear (all seven)")
      ->capture_default_str();
  sub->add_option("--lr", o.optim.lr, "peak learning rate")->capture_default_str();
  f.steps = sub->add_option("--steps", o.steps, "optimizer steps")->capture_default_str();
  f.epochs = sub->add_option("--epochs", o.epochs, "passes over the data instead of --steps (may be fractional)");
  sub->add_option("--batch-tokens", o.batch_tokens, "tokens per micro-batch: rows = max(1, N / max_len)")
      ->capture_default_str();
  sub->add_option("--grad-accum", o.grad_accum, "micro-batches per optimizer step")->capture_default_str();
  sub->add_option("--max-len", o.max_len, "tokens per row; longer examples are truncated")->capture_default_str();
  sub->add_option("--seed", o.seed, "seed of data order, LoRA init and dropout")->capture_default_str();
  sub->add_option("--warmup-steps", o.warmup_steps, "linear warmup steps")->capture_default_str();
  sub->add_option("--warmup-ratio", o.warmup_ratio, "warmup as a fraction of the steps (instead of --warmup-steps)")
      ->capture_default_str();
  sub->add_option("--schedule", f.schedule, "constant, cosine or linear (after warmup)")->capture_default_str();
  sub->add_option("--min-lr-ratio", o.min_lr_ratio, "a decaying schedule ends at this fraction of --lr, in (0, 1]")
      ->capture_default_str();
  sub->add_option("--weight-decay", o.optim.weight_decay, "AdamW decoupled weight decay")->capture_default_str();
  sub->add_option("--max-grad-norm", o.optim.max_grad_norm, "clip the global gradient norm (0 = off)")
      ->capture_default_str();
  sub->add_flag("--skip-bad-lines", o.skip_bad_lines, "skip and count malformed data lines instead of stopping");
  sub->add_flag("--drop-long", o.drop_long, "drop examples longer than --max-len instead of truncating them");
  sub->add_flag("--truncate-text", o.truncate_text,
                "truncate {\"text\"} documents longer than --max-len (default: split them into --max-len windows)");
  sub->add_option("--save-every", o.save_every, "also save OUT/checkpoint-<step> every N steps (0 = only at the end)")
      ->capture_default_str();
  sub->add_option("--save-total-limit", o.save_total_limit, "keep only the newest K checkpoints (0 = all)")
      ->capture_default_str();
  sub->add_option("--resume", f.resume, "continue from a checkpoint directory, or from the newest one under a directory");
  sub->add_option("--eval-data", o.eval_files, "JSONL evaluation data, one or more files (loss at --eval-every and at the end)");
  sub->add_option("--eval-every", o.eval_every, "evaluate every N steps (0 = only at the end)")->capture_default_str();
  sub->add_option("--early-stopping-patience", o.early_stopping_patience,
                  "stop after P evaluations without a new best eval loss (0 = never)")
      ->capture_default_str();
  sub->add_option("--log-every", o.log_every,
                  "a plain progress line every N steps (0 = a live line on a terminal, else every step)")
      ->capture_default_str();
}

// After the command line and --config: the options the flags do not set directly.
void finish(finetune_cli& f) {
  auto& o = f.job.train;
  auto given = [](const CLI::Option* opt) { return opt->count() > 0; };
  require(!(given(f.steps) && given(f.epochs)), "give --steps or --epochs, not both", {"", "--epochs", {}});
  require(!f.job.model.empty(), "the option --model is required (on the command line or in --config)", {"", "--model", {}});
  require(!f.job.data.empty(), "the option --data is required (on the command line or in --config)", {"", "--data", {}});
  require(!f.out.empty(), "the option --out is required (on the command line or in --config)", {"", "--out", {}});
  std::error_code ec;
  for (const auto& d : f.job.data) require(fs::is_regular_file(d, ec), "no such file", {d, "--data", {}});
  for (const auto& d : o.eval_files) require(fs::is_regular_file(d, ec), "no such file", {d, "--eval-data", {}});
  o.lora.target_modules = parse_targets(f.targets);
  o.lora.use_rslora = f.rslora;
  o.lora.base_model_name_or_path = f.job.model;
  o.schedule = train::parse_schedule(f.schedule);
  o.out = f.out;
  o.resume = f.resume;
}

staticgrad::cli::command_registrar reg_finetune{{"finetune", [](CLI::App& app) {
  auto* sub = app.add_subcommand("finetune", "LoRA fine-tuning on the CPU or a CUDA GPU; writes a PEFT adapter");
  auto f = std::make_shared<finetune_cli>();
  add_options(sub, *f);
  return std::function<int()>([sub, f] {
    if (!f->config.empty()) cli::apply_yaml_config(*sub, f->config);
    finish(*f);
    if (f->gpus > 0 && !std::getenv(cli::rank_of_gpus_env)) {  // the parent of the ranks
      require(f->job.device == "cuda", "--gpus runs on CUDA GPUs (add --device cuda)", {"", "--gpus", {}});
      require(!std::getenv("WORLD_SIZE"),
              "--gpus starts its own ranks; under a launcher that sets WORLD_SIZE (torchrun) leave --gpus out",
              {"", "--gpus", {}});
      require(cli::have_nccl() || f->gpus == 1,
              "--gpus " + std::to_string(f->gpus) +
                  ": this build has no NCCL (nccl.h and libnccl were not found in the CUDA toolkit when it was "
                  "configured; STATICGRAD_NCCL is OFF), so it trains on one GPU only",
              {"", "--gpus", {}});
      if (cli::have_nccl()) return cli::launch_ranks(f->gpus);
    }
    f->job.config_yaml = cli::resolved_yaml(*sub);
    return cli::exit_status(cli::run_finetune(f->job));
  });
}}};

}  // namespace
