// run_finetune (finetune_run.hpp): checks, backend, the one training loop.
//   config.json read -> check_options(options, config) -> --out probed
//   -> backend: cpu_backend<S> of the checkpoint's shape (a generated TU per
//      shape, model_commands.hpp) or the CUDA backend (finetune_cuda.hpp)
//   -> train::training_loop(backend, tokenizer, data, options).run()
// Under a launcher (RANK, WORLD_SIZE, ...: `finetune --gpus N` or torchrun) this
// process is one rank: the NCCL communicator first (it picks the GPU
// LOCAL_RANK), then the same steps; only rank 0 logs and writes (docs/multi_gpu.md).
#include <filesystem>
#include <iostream>
#include <memory>

#include <fmt/format.h>

#include "distributed_run.hpp"
#include "finetune_cuda.hpp"
#include "finetune_run.hpp"
#include "model_commands.hpp"
#include "staticgrad/io/atomic_file.hpp"
#include "staticgrad/io/tokenizer.hpp"
#include "staticgrad/io/tokenizer_location.hpp"
#include "staticgrad/train/loop.hpp"

namespace staticgrad::cli {

namespace {

std::int64_t trainable_parameters(const io::lora_config& lc, const io::hf_config& c) {
  std::int64_t n = 0;
  for (auto t : lc.target_modules) n += lc.r * (io::target_in_features(t, c) + io::target_out_features(t, c));
  return n * c.num_hidden_layers;
}

}  // namespace

train::train_result run_finetune(const finetune_job& job) {
  namespace fs = std::filesystem;
  const fs::path dir(job.model);
  const std::string cfg_file = (dir / "config.json").string();
  const auto cfg = io::read_hf_config(dir);
  auto o = job.train;
  train::check_options(o, &cfg);  // before the weights are read or anything allocated
  require(!job.data.empty(), "no training data", {"", "--data", {}});
  const auto env = train::dist_env_from();
  std::unique_ptr<train::communicator> comm;
  if (env && (env->world > 1 || (have_nccl() && job.device == "cuda"))) {  // one CPU rank: alone
    require(job.device == "cuda", "WORLD_SIZE " + std::to_string(env->world) +
                                      ": data-parallel training runs on CUDA only (use --device cuda)",
            {"", "--device", {}});
    comm = make_nccl_communicator(*env);  // before the backend: it sets the device
  }
  const bool rank0 = !comm || comm->rank() == 0;
  if (!rank0) o.log = nullptr;
  if (rank0 && !o.out.empty()) train::check_out_dir(o.out);
  if (rank0 && !o.out.empty() && !job.config_yaml.empty()) io::write_text_atomic(o.out / "config.yaml", job.config_yaml);
  const auto tok = io::tokenizer::from_file(io::resolve_tokenizer(job.tokenizer, job.model));
  const std::int64_t rows = std::max<std::int64_t>(1, o.batch_tokens / o.max_len);
  const std::string shape =
      models::dispatch_shape(cfg, cfg_file, []<class S>() { return std::string(models::shape_name<S>::value); });
  std::unique_ptr<train::backend> backend;
  const train::memory_request mem{o.memory_budget_gib * double(std::uint64_t{1} << 30), rows * o.max_len, o.max_len};
  if (job.device == "cuda")
    backend = make_cuda_backend({job.model, o.lora, o.optim, rows * o.max_len, mem});
  else
    backend = models::dispatch_shape(cfg, cfg_file,
                                     [&]<class S>() { return make_cpu_backend<S>(job.model, o.lora, o.optim, mem); });
  train::training_loop loop(*backend, tok, job.data, o, comm.get());
  if (o.log)
    *o.log << fmt::format("finetune: {} ({}, {} layers, vocab {}) on {}, LoRA r {} alpha {} on {} modules, {} trainable "
                          "parameters; {} rows x {} tokens per micro-batch",
                          job.model, shape, cfg.num_hidden_layers, cfg.vocab_size,
                          comm ? fmt::format("{} x {} rank{} (data-parallel, NCCL)", job.device, comm->world(),
                                             comm->world() == 1 ? "" : "s")
                               : job.device,
                          o.lora.r,
                          o.lora.lora_alpha, o.lora.target_modules.size(), trainable_parameters(o.lora, cfg), rows,
                          o.max_len)
           << std::endl;
  if (o.log && !backend->memory_plan().empty()) *o.log << backend->memory_plan() << std::endl;
  auto res = loop.run();
  if (o.log) {
    const auto& d = res.data;
    *o.log << fmt::format("data: {} examples read, {} used, {} truncated, {} dropped as too long, {} dropped without "
                          "targets, {} bad lines skipped (last epoch)",
                          d.examples_read, d.examples_used, d.truncated, d.dropped_too_long, d.dropped_no_targets,
                          d.bad_lines_skipped)
           << std::endl;
    if (!res.stopped_by_signal && !o.out.empty())
      *o.log << fmt::format("saved the PEFT adapter to {} after {} steps{}", o.out.string(),
                            res.steps.empty() ? loop.total_steps() : res.steps.back().step,
                            res.early_stopped ? " (early stopping)" : "")
             << std::endl;
  }
  return res;
}

}  // namespace staticgrad::cli
