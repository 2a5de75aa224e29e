// staticgrad explain --size 1.5b [--rank 16] [--out-of-place]
//                    [--memory-budget GiB --tokens T [--seq-len S] [--layers L] [--vocab V]]
// Prints the compiled plan of the Qwen2.5 block of that size with LoRA on all
// seven projections: both schedules, the saved values, the buffer plan. With
// --memory-budget, also the memory plan a CUDA model step of T tokens would
// use under that budget (graph/memory_plan.hpp): what is kept and what is
// recomputed, the predicted peak and the predicted slowdown.
#include <fmt/format.h>

#include <cstdio>

#include "commands.hpp"
#include "staticgrad/graph/explain.hpp"
#include "staticgrad/graph/memory_plan.hpp"
#include "staticgrad/models/qwen2.hpp"
#include "staticgrad/models/qwen2_model.hpp"

namespace {

struct explain_opts {
  std::string size = "0.5b";
  int rank = 16;
  bool out_of_place = false;
  double budget_gib = 0;
  std::int64_t tokens = 0, seq_len = 2048, vocab = 0;
  int layers = 0;
};

// Layers, vocabulary and tying of the published Qwen2.5 configs (docs/models.md).
struct size_defaults {
  int layers;
  std::int64_t vocab;
  bool tied;
};
size_defaults defaults_of(const std::string& size) {
  if (size == "tiny") return {2, 1000, true};
  if (size == "0.5b") return {24, 151936, true};
  if (size == "1.5b") return {28, 151936, true};
  if (size == "3b") return {36, 151936, true};
  if (size == "7b") return {28, 152064, false};
  if (size == "14b") return {48, 152064, false};
  if (size == "32b") return {64, 152064, false};
  return {80, 152064, false};  // 72b
}

template <class S>
std::string memory_text(const explain_opts& o) {
  using namespace staticgrad;
  constexpr auto& blk = graph::schedule_of<models::qwen2_block<S>>;
  constexpr auto& head = graph::schedule_of<models::qwen2_head_graph<S::hidden>>;
  constexpr auto& emb = graph::schedule_of<models::qwen2_embedding_graph<S::hidden>>;
  const auto d = defaults_of(models::shape_name<S>::value);
  const graph::step_layout a{.tokens = o.tokens, .layers = o.layers ? o.layers : d.layers, .vocab = o.vocab ? o.vocab : d.vocab,
                             .tied = d.tied, .rank = o.rank};
  const double batch = 20.0 * double(o.tokens) + 4096;  // ids, targets, positions, starts, loss; scalars
  auto bytes = [&](const graph::memory_policy& p) { return graph::cuda_step_bytes(blk, head, emb, a, p).total() + batch; };
  const graph::device_rates rates{};
  const auto c = graph::with_lm_head(graph::layer_costs(blk, double(o.tokens), double(o.seq_len), o.rank, rates), o.tokens,
                                     S::hidden, a.vocab, a.ce_chunk, rates);
  auto secs = [&](const graph::memory_policy& p) { return graph::step_seconds(c, a.layers, p); };
  const double gib = double(1ull << 30), budget = o.budget_gib * gib;
  const std::int64_t chunk0 = graph::lm_head_chunk_tokens(a.ce_chunk, a.tokens, {});
  // CUDA: offload too, and the LM-head chunk
  const auto ch = graph::plan_memory(blk.n_recompute, a.layers, budget, bytes, secs, a.layers, chunk0);
  std::string t = fmt::format(
      "\nmemory plan of a CUDA step: {} tokens (sequences of {}), {} layers, vocabulary {}, LoRA r = {}, budget {:.2f} GiB\n",
      o.tokens, o.seq_len, a.layers, a.vocab, o.rank, o.budget_gib);
  t += fmt::format("  keep everything     {:8.2f} GiB\n", bytes({}) / gib);
  t += fmt::format("  smallest plan       {:8.2f} GiB (every layer re-run, every layer input offloaded, LM head in chunks of 128)\n",
                   bytes({blk.n_recompute, a.layers, a.layers, 128}) / gib);
  if (const auto hb = graph::cuda_step_bytes(blk, head, emb, a, ch.policy).host_pinned; hb > 0)
    t += fmt::format("  pinned host memory  {:8.2f} GiB (the offloaded layer inputs)\n", hb / gib);
  const std::int64_t chunk = graph::lm_head_chunk_tokens(a.ce_chunk, a.tokens, ch.policy);
  t += fmt::format("  LM-head chunk       {:8} tokens ({:.2f} GiB of logits and their gradient; {} by default)\n", chunk,
                   graph::cuda_step_bytes(blk, head, emb, a, ch.policy).lm_head_chunk / gib, chunk0);
  t += fmt::format("  chosen{}: {}\n", ch.fits ? "" : " (NOTHING FITS: the smallest plan)",
                   graph::policy_text(blk, ch.policy, a.layers));
  t += fmt::format("  predicted peak      {:8.2f} GiB\n  predicted slowdown  {:8.3f}x (cost model of graph/memory_plan.hpp)\n",
                   ch.bytes / gib, ch.slowdown());
  return t;
}

staticgrad::cli::command_registrar reg{{"explain", [](CLI::App& app) {
  auto o = std::make_shared<explain_opts>();
  auto* sub = app.add_subcommand("explain", "Print the compiled training plan of a Qwen2.5 block (LoRA on all seven projections)");
  sub->add_option("size", o->size, "Model size: tiny, 0.5b, 1.5b, 3b, 7b, 14b, 32b, 72b")->capture_default_str();
  sub->add_option("--size", o->size, "Model size (same as the positional argument)");
  sub->add_option("--rank", o->rank, "LoRA rank r, for the bytes of the saved Z = dropout(x) A^T")
      ->check(CLI::Range(1, 4096))->capture_default_str();
  sub->add_flag("--out-of-place", o->out_of_place, "Explain the block written without in-place ops, for comparison");
  auto* mb = sub->add_option("--memory-budget", o->budget_gib, "GiB of device memory for a step: print the memory plan chosen")
                 ->check(CLI::PositiveNumber);
  auto* tk = sub->add_option("--tokens", o->tokens, "Tokens per step (with --memory-budget)")->check(CLI::PositiveNumber);
  mb->needs(tk);
  tk->needs(mb);
  sub->add_option("--seq-len", o->seq_len, "Sequence length, for attention's cost")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--layers", o->layers, "Layers (default: the published config of the size)")->check(CLI::PositiveNumber);
  sub->add_option("--vocab", o->vocab, "Vocabulary (default: the published config of the size)")->check(CLI::PositiveNumber);
  return std::function<int()>([o] {
    using namespace staticgrad;
    models::dispatch_shape_name(o->size, [&]<class S>() {
      const std::string title = "Qwen2.5 block " + models::shape_text<S>() + ", LoRA on q, k, v, o, gate, up, down" +
                                (o->out_of_place ? ", out of place" : "");
      const graph::explain_options eo{o->rank, title};
      std::string text = o->out_of_place ? graph::explain<models::qwen2_block<S, models::lora_mask::all_seven, false>>(eo)
                                         : graph::explain<models::qwen2_block<S>>(eo);
      if (o->budget_gib > 0) text += memory_text<S>(*o);
      std::fputs(text.c_str(), stdout);
    });
    return 0;
  });
}}};

}  // namespace
