// See finetune_reference.hpp and test_finetune_cuda.cu.
//
// Setup: the Qwen2.5-0.5B block shape (hidden 896, 14/2 heads, head dim 64,
// intermediate 4864), 2 layers, vocabulary 512, untied head, random f32
// weights (matrices std 0.02, embeddings and head std 0.1, norms 1, biases 0:
// logits of std ~3, a first loss of ~11, falling to ~10 in 6 steps);
// data: the demo's cycle-walking sequences (vocab 512, cycle 32, 64 lines of
// 40 tokens: learnable, so the loss must fall), max_len 64, batch_tokens 512
// (8 rows of 64: every row holds one 40-token sequence, the GPU pads each batch
// to T = 512 with a padding segment); LoRA r 8, alpha 16 on q_proj, v_proj and
// down_proj only (the other four are held at 0 on the GPU), 6 steps, lr 1e-3,
// cosine schedule, max_grad_norm 1, seed 3; the eval loss of the same data
// every 3 steps; then a GPU run killed after step 4 and resumed from its
// checkpoint-3 against the uninterrupted GPU run; then --lora-dropout 0.1
// --grad-accum 2 on both devices (the CPU's masks for the same seeds: the
// same tolerances; and the GPU-vs-CPU update difference must be below what
// dropout itself changes in the CPU's update); then --memory-budget: a large
// budget keeps everything and prints both ends (keeping everything, the
// smallest plan), a budget halfway between recomputes and gives the same
// per-step losses (recomputed values are the saved ones bit for bit), and one
// below the smallest plan fails naming --memory-budget and the minimum.
//
// Tolerances:
//  - per-step loss, GPU vs CPU: 2e-2 relative. The GPU runs bf16 weights and
//    activations (x_l, hn, dlogits) against the f32 CPU model; test_model_step
//    measures ~1e-4..1e-3 relative for one step's loss. Over 6 steps the
//    adapters drift apart a little (AdamW's first steps move every element by
//    ~lr sign(g), so gradients within bf16 noise of 0 may step the other way),
//    which changes the later losses by O(lr * fraction of flips): far below 2e-2
//    of a loss of ~10 (0.2 absolute). (At lr 5e-3 the loss falls from 11 to 2 in
//    6 steps: too steep a slope to compare trajectories; hence 1e-3);
//  - the whole adapter (all A and B), relative Frobenius: 5e-2. A starts from
//    the same seeded init (norm ~ sqrt(r * in) / sqrt(3 in) per tensor) and
//    moves by at most ~6 lr per element; B starts at 0 and grows to ~6 lr per
//    element; elements that flip differ by <= 2 * 6 lr = 1.2e-2 absolute, and only
//    a small fraction flips: a few 1e-3 relative expected;
//  - the update (adapter - init), relative Frobenius: 0.5. Only flips differ:
//    a fraction f of flips gives ~2 sqrt(f); a missing, wrong-signed or
//    mis-scaled update (or the wrong modules trained) gives >= 1.
#include "finetune_reference.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "staticgrad/io/hf_config.hpp"
#include "staticgrad/io/peft_adapter.hpp"
#include "staticgrad/io/safetensors_writer.hpp"
#include "staticgrad/train/demo_task.hpp"
#include "staticgrad/train/lora_init.hpp"
#include "staticgrad/train/metrics.hpp"
#include "support/adapter_compare.hpp"
#include "support/memory_line.hpp"

namespace staticgrad::test {

namespace {

namespace fs = std::filesystem;

io::hf_config write_checkpoint(const fs::path& dir) {
  io::hf_config c;
  c.hidden_size = 896, c.intermediate_size = 4864, c.num_hidden_layers = 2;
  c.num_attention_heads = 14, c.num_key_value_heads = 2, c.head_dim = 64;
  c.vocab_size = 512, c.rope_theta = 1e6, c.rms_norm_eps = 1e-6, c.tie_word_embeddings = false;
  fs::create_directories(dir);
  std::mt19937_64 g(12345);
  std::normal_distribution<float> nd(0.f, 1.f);  // any numbers will do: both devices read the same file
  std::vector<std::vector<float>> store;
  std::vector<io::tensor_data> ts;
  store.reserve(64);
  auto add = [&](const std::string& name, std::vector<std::int64_t> shape, float std_or_one) {
    std::int64_t n = 1;
    for (auto s : shape) n *= s;
    std::vector<float> v(static_cast<std::size_t>(n));
    for (float& x : v) x = std_or_one < 0 ? 1.f : std_or_one * nd(g);
    store.push_back(std::move(v));
    ts.push_back(io::f32_tensor(name, std::move(shape), store.back()));
  };
  const std::int64_t H = 896, I = 4864, Q = 896, K = 128, V = 512;
  add("model.embed_tokens.weight", {V, H}, 0.1f);
  add("model.norm.weight", {H}, -1);
  add("lm_head.weight", {V, H}, 0.1f);
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {H}, -1);
    add(p + "post_attention_layernorm.weight", {H}, -1);
    add(p + "self_attn.q_proj.weight", {Q, H}, 0.02f);
    add(p + "self_attn.q_proj.bias", {Q}, 0.f);
    add(p + "self_attn.k_proj.weight", {K, H}, 0.02f);
    add(p + "self_attn.k_proj.bias", {K}, 0.f);
    add(p + "self_attn.v_proj.weight", {K, H}, 0.02f);
    add(p + "self_attn.v_proj.bias", {K}, 0.f);
    add(p + "self_attn.o_proj.weight", {H, Q}, 0.02f);
    add(p + "mlp.gate_proj.weight", {I, H}, 0.02f);
    add(p + "mlp.up_proj.weight", {I, H}, 0.02f);
    add(p + "mlp.down_proj.weight", {H, I}, 0.02f);
  }
  io::write_safetensors(dir / "model.safetensors", std::move(ts), {{"format", "pt"}});
  io::write_hf_config(dir / "config.json", c);
  return io::read_hf_config(dir);
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The number after `key` on every line starting with `prefix`
// ("step k/N  loss X ...", "eval step k/N  eval_loss X ...").
std::vector<double> values(const std::string& log, const char* prefix = "step ", const char* key = "loss ") {
  std::vector<double> v;
  std::istringstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) != 0) continue;
    const auto k = line.find(key);
    if (k != std::string::npos) v.push_back(std::strtod(line.c_str() + k + std::strlen(key), nullptr));
  }
  return v;
}
std::vector<double> losses(const std::string& log) { return values(log); }

int run(const std::string& cmd, const fs::path& log) {
  const std::string full = cmd + " > '" + log.string() + "' 2>&1";
  std::printf("$ %s\n", cmd.c_str());
  std::fflush(stdout);
  const int rc = std::system(full.c_str());
  std::printf("%s", slurp(log).c_str());
  return rc;
}

// Relative Frobenius distance over all targeted tensors; base: subtracted from both.
double rel(const io::lora_adapter& a, const io::lora_adapter& b, const io::lora_adapter* base) {
  return sgtest::adapter_frobenius_rel(a, b, base);
}

// The checkpoint, the data and the tool's common arguments of both checks.
// $STATICGRAD_FINETUNE_DIR: work there and keep the files (scripts/gpu_trainer.sh reuses the checkpoint).
struct workspace {
  fs::path dir;
  const char* keep;
  io::hf_config cfg;
  std::string common;
};
workspace prepare(const char* tool, const char* tag) {
  workspace w;
  w.keep = std::getenv("STATICGRAD_FINETUNE_DIR");
  w.dir = w.keep ? fs::path(w.keep) : fs::temp_directory_path() / (tag + std::to_string(std::random_device{}()));
  if (w.keep) fs::remove_all(w.dir);
  fs::create_directories(w.dir);
  w.cfg = write_checkpoint(w.dir / "model");
  train::demo_task task;
  task.vocab = 512, task.cycle = 32, task.lines = 64, task.length = 40, task.seed = 7;
  train::write_demo_data(w.dir / "data.jsonl", task);
  // The tool loads a tokenizer even for input_ids lines: the repository's, from the
  // working directory (the GPU machine runs from the repository root) or the source tree.
  fs::path tokenizer = fs::current_path() / "data" / "qwen2-tokenizer";
  if (!fs::exists(tokenizer)) tokenizer = fs::path(STATICGRAD_SOURCE_DIR) / "data" / "qwen2-tokenizer";
  w.common = std::string("'") + tool + "' finetune --tokenizer '" + tokenizer.string() + "' --model '" +
             (w.dir / "model").string() + "' --data '" + (w.dir / "data.jsonl").string() +
             "' --steps 6 --batch-tokens 512 --max-len 64 --lr 1e-3 --lora-r 8 --lora-alpha 16 "
             "--target-modules q_proj,v_proj,down_proj --seed 3 --max-grad-norm 1 --eval-data '" +
             (w.dir / "data.jsonl").string() + "' --eval-every 3";
  return w;
}

}  // namespace

int finetune_cuda_check(const char* tool) {
  try {
    const auto w = prepare(tool, "sg_finetune_cuda_");
    const fs::path& dir = w.dir;
    const char* keep = w.keep;
    const auto& cfg = w.cfg;
    const std::string& common = w.common;
    int fails = 0;
    auto check = [&](bool ok, const std::string& what) {
      std::printf("%s: %s\n", ok ? "ok  " : "FAIL", what.c_str());
      fails += !ok;
    };
    const int rc_gpu = run(common + " --device cuda --out '" + (dir / "gpu").string() + "'", dir / "gpu.log");
    const int rc_cpu = run(common + " --device cpu --out '" + (dir / "cpu").string() + "'", dir / "cpu.log");
    check(rc_gpu == 0, "finetune --device cuda exits 0");
    check(rc_cpu == 0, "finetune --device cpu exits 0");
    if (rc_gpu || rc_cpu) return 1;
    const auto lg = losses(slurp(dir / "gpu.log")), lc = losses(slurp(dir / "cpu.log"));
    check(lg.size() == 6 && lc.size() == 6, "six progress lines each");
    if (lg.size() != 6 || lc.size() != 6) return 1;
    double worst = 0;
    for (std::size_t i = 0; i < 6; ++i) {
      const double r = std::abs(lg[i] - lc[i]) / std::abs(lc[i]);
      worst = std::max(worst, r);
      std::printf("  step %zu  loss gpu %.6f  cpu %.6f  rel %.2e\n", i + 1, lg[i], lc[i], r);
    }
    check(worst < 2e-2, "per-step losses agree to 2e-2 relative (worst " + std::to_string(worst) + ")");
    check(lg.back() < lg.front(), "the GPU loss decreases (" + std::to_string(lg.front()) + " -> " +
                                      std::to_string(lg.back()) + ")");
    // Evaluation (the chunked head on both devices): at steps 3 and 6.
    const auto eg = values(slurp(dir / "gpu.log"), "eval step ", "eval_loss "),
               ec = values(slurp(dir / "cpu.log"), "eval step ", "eval_loss ");
    check(eg.size() == 2 && ec.size() == 2, "two eval lines each");
    for (std::size_t i = 0; i < std::min(eg.size(), ec.size()); ++i) {
      const double r = std::abs(eg[i] - ec[i]) / std::abs(ec[i]);
      std::printf("  eval %zu  gpu %.6f  cpu %.6f  rel %.2e\n", i + 1, eg[i], ec[i], r);
      check(r < 2e-2, "eval loss GPU vs CPU within 2e-2 relative");
    }
    const auto ag = io::read_peft_adapter(dir / "gpu", cfg), ac = io::read_peft_adapter(dir / "cpu", cfg);
    check(ag.config.target_modules == ac.config.target_modules && ag.config.r == ac.config.r,
          "the adapters have the same config");
    auto init = io::make_lora_adapter(ac.config, cfg);
    train::init_lora(init, cfg, 3);
    const double r_all = rel(ag, ac, nullptr), r_upd = rel(ag, ac, &init);
    check(r_all < 5e-2, "adapter GPU vs CPU, relative Frobenius " + std::to_string(r_all) + " < 5e-2");
    check(r_upd < 0.5, "update (adapter - init) GPU vs CPU, relative Frobenius " + std::to_string(r_upd) + " < 0.5");
    check(rel(init, ac, nullptr) > 1e-3, "the CPU adapter moved away from its init");
    // Resume on the GPU: a run killed (SIGKILL) after step 4, resumed from its
    // checkpoint-3, ends where the uninterrupted GPU run ended: the same
    // weights, moments, step and data; only bf16 / reduction-order noise may
    // differ, so the bf16 tolerance of the CPU comparison (5e-2) bounds it.
    const int rc_kill = run("STATICGRAD_CRASH_AT=step@4 " + common + " --device cuda --save-every 3 --out '" +
                                (dir / "gpu_resume").string() + "'",
                            dir / "kill.log");
    check(rc_kill != 0 && fs::exists(dir / "gpu_resume" / "checkpoint-3" / "trainer_state.json"),
          "the killed GPU run left checkpoint-3");
    const int rc_res = run(common + " --device cuda --save-every 3 --out '" + (dir / "gpu_resume").string() +
                               "' --resume '" + (dir / "gpu_resume").string() + "'",
                           dir / "resume.log");
    check(rc_res == 0, "the GPU run resumes from checkpoint-3");
    if (rc_res == 0) {
      const auto ar = io::read_peft_adapter(dir / "gpu_resume", cfg);
      const double r_res = rel(ar, ag, nullptr), r_res_upd = rel(ar, ag, &init);
      std::printf("  resumed vs uninterrupted GPU: adapter %.3e, update %.3e (relative Frobenius)\n", r_res, r_res_upd);
      check(r_res < 5e-2, "resumed GPU adapter vs uninterrupted, relative Frobenius " + std::to_string(r_res) + " < 5e-2");
      const auto lr = losses(slurp(dir / "resume.log"));
      check(lr.size() == 3, "the resumed run ran steps 4..6");
      for (std::size_t i = 0; i < lr.size() && i + 3 < lg.size(); ++i)
        check(std::abs(lr[i] - lg[i + 3]) / std::abs(lg[i + 3]) < 2e-2, "resumed step " + std::to_string(i + 4) +
                                                                           " loss within 2e-2 of the uninterrupted GPU run");
    }
    // LoRA dropout 0.1 with 2 micro-batches a step: the CPU's masks for the same seeds.
    {
      const std::string drop = common + " --lora-dropout 0.1 --grad-accum 2";
      const int rg = run(drop + " --device cuda --out '" + (dir / "gpu_drop").string() + "'", dir / "gpu_drop.log");
      const int rc = run(drop + " --device cpu --out '" + (dir / "cpu_drop").string() + "'", dir / "cpu_drop.log");
      check(rg == 0 && rc == 0, "finetune --lora-dropout 0.1 --grad-accum 2 exits 0 on both devices");
      if (rg == 0 && rc == 0) {
        const auto dg = losses(slurp(dir / "gpu_drop.log")), dc = losses(slurp(dir / "cpu_drop.log"));
        check(dg.size() == 6 && dc.size() == 6, "dropout: six progress lines each");
        double w = 0;
        for (std::size_t i = 0; i < std::min(dg.size(), dc.size()); ++i) {
          w = std::max(w, std::abs(dg[i] - dc[i]) / std::abs(dc[i]));
          std::printf("  dropout step %zu  loss gpu %.6f  cpu %.6f\n", i + 1, dg[i], dc[i]);
        }
        check(w < 2e-2, "dropout: per-step losses agree to 2e-2 relative (worst " + std::to_string(w) + ")");
        const auto adg = io::read_peft_adapter(dir / "gpu_drop", cfg), adc = io::read_peft_adapter(dir / "cpu_drop", cfg);
        const double d_all = rel(adg, adc, nullptr), d_upd = rel(adg, adc, &init);
        const double effect = rel(adc, ac, &init);  // the CPU's dropout update against its no-dropout update
        std::printf("  dropout: adapter %.3e, update %.3e GPU vs CPU; dropout moves the CPU update by %.3e\n", d_all,
                    d_upd, effect);
        check(d_all < 5e-2, "dropout: adapter GPU vs CPU, relative Frobenius " + std::to_string(d_all) + " < 5e-2");
        check(d_upd < 0.5, "dropout: update GPU vs CPU, relative Frobenius " + std::to_string(d_upd) + " < 0.5");
        check(d_upd < effect, "dropout: GPU vs CPU closer than dropout vs none (the masks are the CPU's)");
      }
    }
    // --memory-budget: the plan is printed; a budget between the smallest plan
    // and keeping everything recomputes, and recomputed values are the saved
    // values bit for bit (docs/memory.md), so every loss is the same number.
    {
      const std::string base = common + " --device cuda";
      const int r1 = run(base + " --memory-budget 100 --out '" + (dir / "mem_keep").string() + "'", dir / "mem_keep.log");
      const std::string log1 = slurp(dir / "mem_keep.log");
      const double keep_b = memory_line_bytes(log1, "keeping everything "), small_b = memory_line_bytes(log1, "smallest plan ");
      check(r1 == 0 && memory_line(log1).find("plan: keep every saved value;") != std::string::npos,
            "--memory-budget 100: keeps everything, and prints the plan");
      check(small_b > 0 && small_b < keep_b, "the memory line gives the smallest plan below keeping everything");
      if (r1 == 0 && small_b > 0 && small_b < keep_b) {
        const double mid = 0.5 * (keep_b + small_b);
        const int r2 = run(base + " --memory-budget " + budget_gib(mid) + " --out '" + (dir / "mem_mid").string() + "'",
                           dir / "mem_mid.log");
        const std::string log2 = slurp(dir / "mem_mid.log"), line = memory_line(log2);
        check(r2 == 0, "finetune --device cuda at a budget between the plans exits 0");
        check(line.find("plan: recompute") != std::string::npos || line.find("re-run the whole block") != std::string::npos,
              "the plan line names what is recomputed: " + line);
        check(memory_line_bytes(log2, "predicted peak ") <= mid, "the predicted peak is within the budget");
        const auto mk = losses(log1), mm = losses(log2);
        check(mk.size() == 6 && mm == mk, "the losses under recompute equal the unconstrained run's");
        const int r3 = run(base + " --memory-budget " + budget_gib(0.5 * small_b) + " --out '" +
                               (dir / "mem_small").string() + "'",
                           dir / "mem_small.log");
        const std::string log3 = slurp(dir / "mem_small.log");
        check(r3 != 0 && log3.find("--memory-budget") != std::string::npos &&
                  log3.find("the smallest memory plan") != std::string::npos,
              "a budget below the smallest plan fails naming --memory-budget and the minimum");
      }
    }
    if (!fails && !keep) fs::remove_all(dir);
    else std::printf("files kept in %s\n", dir.string().c_str());
    std::printf("%s\n", fails ? "FAILED" : "PASSED");
    return fails ? 1 : 0;
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
}

namespace {

// Full-precision per-step losses of OUT/metrics.jsonl (the log prints 4 decimals).
std::vector<double> metric_losses(const fs::path& out, bool eval = false) {
  std::vector<double> v;
  for (const auto& r : train::read_metrics(out / "metrics.jsonl", 1 << 30))
    if (!eval) v.push_back(r.loss);
    else if (!std::isnan(r.eval_loss)) v.push_back(r.eval_loss);
  return v;
}

double worst_rel(const std::vector<double>& a, const std::vector<double>& b) {
  double w = 0;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) w = std::max(w, std::abs(a[i] - b[i]) / std::abs(b[i]));
  return w;
}

}  // namespace

int finetune_nccl_check(const char* tool, int gpus) {
  try {
    const auto w = prepare(tool, "sg_finetune_nccl_");
    int fails = 0;
    auto check = [&](bool ok, const std::string& what) {
      std::printf("%s: %s\n", ok ? "ok  " : "FAIL", what.c_str());
      fails += !ok;
    };
    auto finetune = [&](const std::string& extra, const char* out, const std::string& env = "") {
      return run(env + w.common + " --device cuda " + extra + " --out '" + (w.dir / out).string() + "'",
                 w.dir / (std::string(out) + ".log"));
    };
    // The reference: one GPU, two micro-batches per step (the accumulation path, no NCCL).
    check(finetune("--grad-accum 2", "one") == 0, "one GPU, --grad-accum 2 exits 0");
    const auto l1 = metric_losses(w.dir / "one"), e1 = metric_losses(w.dir / "one", true);
    const auto a1 = io::read_peft_adapter(w.dir / "one", w.cfg);
    if (gpus == 1) {
      // One rank through the communicator (the per-layer all-reduce hook, NCCL with one
      // rank, the host reductions) against the plain run. The bound is the plain run
      // against itself (the GPU's run-to-run noise), times 4 so that noise of the same
      // size passes; when the GPU is deterministic it is 0: bit for bit.
      check(finetune("--grad-accum 2", "again") == 0, "the same run again exits 0");
      check(finetune("--grad-accum 2 --gpus 1", "rank") == 0, "--gpus 1 --grad-accum 2 exits 0");
      check(slurp(w.dir / "rank.log").find("cuda x 1 rank (data-parallel, NCCL)") != std::string::npos,
            "--gpus 1 ran as one NCCL rank");
      const auto l0 = metric_losses(w.dir / "again"), lr = metric_losses(w.dir / "rank");
      check(l1.size() == 6 && l0.size() == 6 && lr.size() == 6, "six steps each");
      const double base = worst_rel(l0, l1), got = worst_rel(lr, l1);
      const double a_base = rel(io::read_peft_adapter(w.dir / "again", w.cfg), a1, nullptr);
      const double a_got = rel(io::read_peft_adapter(w.dir / "rank", w.cfg), a1, nullptr);
      std::printf("  losses: one rank vs plain %.3e, plain vs plain %.3e; adapters %.3e, %.3e\n", got, base, a_got, a_base);
      check(got <= 4 * base, "per-step losses of one NCCL rank within 4x the plain run's run-to-run difference");
      check(a_got <= 4 * a_base, "the adapter of one NCCL rank within 4x the plain run's run-to-run difference");
      check(worst_rel(metric_losses(w.dir / "rank", true), e1) <=
                4 * worst_rel(metric_losses(w.dir / "again", true), e1),
            "eval losses likewise");
    } else {
      // Two GPUs, one micro-batch each per step = one GPU with two: the same data and
      // seeds, the gradients summed by NCCL instead of accumulated; bf16 bounds of
      // finetune_cuda_check (the resume comparison): 2e-2 per-step loss, 5e-2 adapter.
      check(finetune("--grad-accum 1 --gpus 2", "two") == 0, "--gpus 2 --grad-accum 1 exits 0");
      const std::string log = slurp(w.dir / "two.log");
      check(log.find("cuda x 2 ranks (data-parallel, NCCL)") != std::string::npos, "two NCCL ranks");
      const auto l2 = metric_losses(w.dir / "two"), e2 = metric_losses(w.dir / "two", true);
      check(l2.size() == 6 && losses(log).size() == 6, "six steps, one progress line each (rank 1 logs nothing)");
      for (std::size_t i = 0; i < std::min(l1.size(), l2.size()); ++i)
        std::printf("  step %zu  loss 2 GPUs %.8f  1 GPU %.8f\n", i + 1, l2[i], l1[i]);
      check(worst_rel(l2, l1) < 2e-2, "per-step losses within 2e-2 (worst " + std::to_string(worst_rel(l2, l1)) + ")");
      check(e2.size() == 2 && worst_rel(e2, e1) < 2e-2, "eval losses within 2e-2");
      const double ra = rel(io::read_peft_adapter(w.dir / "two", w.cfg), a1, nullptr);
      std::printf("  adapter 2 GPUs vs 1: relative Frobenius %.3e%s\n", ra, ra == 0 ? " (bit for bit)" : "");
      check(ra < 5e-2, "adapter within 5e-2 relative Frobenius");
      // A rank that dies ends the job: rank 1 SIGKILLed after step 3.
      const auto t0 = std::chrono::steady_clock::now();
      const int rc = finetune("--grad-accum 1 --gpus 2", "killed", "STATICGRAD_CRASH_AT=step@3 STATICGRAD_CRASH_RANK=1 ");
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      check(rc != 0 && slurp(w.dir / "killed.log").find("rank 1 was killed by signal 9") != std::string::npos,
            "a killed rank ends the job with a message naming it");
      check(secs < 120, "... within 120 s (" + std::to_string(secs) + " s)");
    }
    if (!fails && !w.keep) fs::remove_all(w.dir);
    else std::printf("files kept in %s\n", w.dir.string().c_str());
    std::printf("%s\n", fails ? "FAILED" : "PASSED");
    return fails ? 1 : 0;
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
}

}  // namespace staticgrad::test
