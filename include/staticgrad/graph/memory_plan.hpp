#pragma once
// Memory from a budget: which saved values a model step keeps, and which it
// rebuilds in backward, chosen from the plan's own cost model.
//
// A policy has two parts, both interpreted by both executors:
//   * tier k (0 .. schedule.n_recompute): every layer rebuilds the first k
//     recompute candidates of the block plan (graph/recompute.hpp: one row op
//     each, e.g. m = swiglu(gate, up) from the saved gate and up) just before
//     backward reads them; they live in one region shared by all layers, so a
//     layer keeps keep_act_width[k] act elements per token instead of
//     saved_act_width. The schedule's recompute entries run iff their tier <= k.
//   * block_layers n (0 .. L): the first n layers keep nothing but their input
//     x_l (which the residual stream keeps anyway); their forward writes into
//     one saved arena shared by those layers, and backward re-runs the layer's
//     forward into it just before the layer's backward.
//   * lm_head_chunk C (CUDA only; 0: the step's ce_chunk option): tokens per
//     chunk of the LM head, whose scratch is C x V logits (f32) and their
//     gradient (bf16), 6 C V bytes (1.74 GiB at C = 2048, V = 151936). The
//     planner may halve it, down to 128, never raise it above the option.
//   * offload_layers m (0 .. L; CUDA only): the inputs x_0 .. x_{m-1} of the
//     first m layers wait in pinned host memory between forward and backward.
//     On the device they pass through a ring of R = min(m, offload_ring)
//     buffers (x_l in buffer l % R); the last R stay there, each earlier one is
//     copied out after it is written and back before its layer's backward, on
//     a copy stream of its own that overlaps the layers' compute. A layer input is all a whole-block layer
//     keeps, so with n = m = L only a few [T, H] buffers of the residual
//     stream stay on the device.
//
// The cost model (per step of T tokens; seconds from the schedule's entries):
//   GEMM entries 2 * in * out FLOPs per token (LoRA: 2 r (in + out)), backward
//   the same for dX (+ the LoRA products); attention 4 * ctx * heads * head_dim
//   per token forward with ctx the mean causal context (seq_len / 2), 2.5x that
//   backward; row groups their bytes per token moved; a recompute entry the
//   bytes it moves; the LM head (CUDA) its two products per token
//   (2 * 2 H V FLOPs), the 12 V bytes per token its logits and their
//   gradient move, three launches per chunk and each product's last, partly
//   filled wave of 128 x 128 output tiles (lm_head_seconds); an offloaded layer input the part of its two copies
//   ([T, H] bf16 each way over the host link) that its layer's forward and
//   backward do not hide. Rates: `device_rates` (achieved, not peak: only
//   ratios of costs decide the choice, and the predicted slowdown is a ratio).
// plan_memory() enumerates every (k, n, m, C), keeps those whose bytes (the
// caller's exact allocation formula for that policy) fit the budget, and picks
// the fastest; ties go to the one that offloads less (a hidden copy still
// takes host memory and link time), then to the one that uses less memory.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "staticgrad/graph/schedule.hpp"

namespace staticgrad::graph {

struct memory_policy {
  int tier = 0;            // row-group recompute tier, every layer
  int block_layers = 0;    // layers whose whole block forward is re-run in backward
  int offload_layers = 0;  // layers whose input waits in pinned host memory (CUDA)
  std::int64_t lm_head_chunk = 0;  // tokens per LM-head chunk (CUDA; 0: the step's ce_chunk option)
  constexpr bool operator==(const memory_policy&) const = default;
};

// Device buffers the offloaded layer inputs pass through. Three: in backward,
// layer l reads x_l, its block re-run writes x_{l+1}, and x_{l-1} is copied
// in meanwhile, each in its own buffer.
inline constexpr int offload_ring = 3;

// Achieved rates of the device (defaults: an H100/H200 running this code's
// kernels; the CPU backend passes its own).
struct device_rates {
  double gemm_flops = 4.0e14;       // bf16 tensor-core products, FLOP/s
  double attention_flops = 2.5e14;  // flash attention, FLOP/s
  double bytes = 3.0e12;            // device memory, B/s
  double host_link = 2.5e10;        // pinned host <-> device copies, B/s each way (PCIe 5.0 x16, achieved)
  double launch = 4e-6;             // seconds a kernel adds beyond its work (launch in a graph, ramp, drain)
  int sms = 132;                    // streaming multiprocessors (H100 / H200 SXM): the products' waves
};

// Seconds per step of one layer's parts, for T tokens of sequences of seq_len.
struct layer_seconds {
  double forward = 0, backward = 0;
  std::array<double, max_recompute + 1> tier{};  // recompute entries of tiers 1..k together
  double offload_copy = 0;                       // one layer input [T, H] over the host link, one way
  // The LM head (with_lm_head(); none: vocab 0): tokens, width, vocabulary,
  // the chunk of a policy with lm_head_chunk 0, and the rates.
  double head_tokens = 0, head_width = 0, head_vocab = 0;
  std::int64_t head_chunk = 0;
  device_rates head_rates{};
};

constexpr std::int64_t stride_of(std::int64_t T) { return (T + 127) / 128 * 128; }

// Tokens per LM-head chunk of a step of T tokens under policy p: p's chunk, or
// the step's ce_chunk option, rounded up to 128 and at most T's stride.
constexpr std::int64_t lm_head_chunk_tokens(std::int64_t ce_chunk, std::int64_t T, const memory_policy& p) {
  const std::int64_t c = p.lm_head_chunk > 0 ? p.lm_head_chunk : (ce_chunk > 0 ? ce_chunk : 1);
  const std::int64_t r = (c + 127) / 128 * 128, t = stride_of(T);
  return r < t ? r : t;
}

// The split of the reduction over V that the LM head's dX product is modelled
// with: its output [c, H] is only ceil(c / 128) x ceil(H / 128) tiles (12 at
// c = 128, H = 1536), too few for the SMs, and cuBLASLt splits K = V. A split
// of 4 is what reproduces the measured head times (docs/memory.md: on an
// H100 at 1.5B, 8 x 2048, the head took 28.0, 29.9, 36.3, 61.1 ms at chunks
// of 2048, 512, 256, 128 tokens; the model, scaled to the same 2048 figure,
// 28.0, 31.9, 32.1, 47.6 ms; with no split it would be 28.0, 41, 68, 122).
inline constexpr int lm_head_dx_split = 4;

// Seconds of the LM head of T tokens of width H over a vocabulary of V in
// chunks of C tokens: per chunk the forward product logits [c, V] f32, the
// cross-entropy rows (softmax, loss, dlogits bf16) and dX [c, H] (+)= dl W,
// three launches. Each product's output is cut in 128 x 128 tiles (dX's
// times lm_head_dx_split), run in waves of `sms` tiles; a last, partly
// filled wave is charged whole.
constexpr double lm_head_seconds(double T, double H, double V, std::int64_t C, const device_rates& d) {
  auto ceil_div = [](double a, double b) { return double(static_cast<std::int64_t>((a + b - 1) / b)); };
  auto wave_factor = [&](double tiles) { return ceil_div(tiles, d.sms) * d.sms / tiles; };
  double s = 0;
  for (double c0 = 0; c0 < T; c0 += double(C)) {
    const double c = T - c0 < double(C) ? T - c0 : double(C);
    const double product = 2.0 * c * H * V / d.gemm_flops;
    s += product * wave_factor(ceil_div(c, 128) * ceil_div(V, 128)) +
         product * wave_factor(ceil_div(c, 128) * ceil_div(H, 128) * lm_head_dx_split) + 12.0 * c * V / d.bytes +
         3 * d.launch;
  }
  return s;
}

// c with the LM head of a CUDA step (T tokens, width H, vocabulary V, the
// step's ce_chunk option): step_seconds() then adds the head under each policy's chunk.
constexpr layer_seconds with_lm_head(layer_seconds c, std::int64_t T, int H, std::int64_t V, std::int64_t ce_chunk,
                                     const device_rates& d) {
  c.head_tokens = double(T), c.head_width = H, c.head_vocab = double(V);
  c.head_chunk = lm_head_chunk_tokens(ce_chunk, T, {});
  c.head_rates = d;
  return c;
}

// Elements per token of a block's input x (the residual stream's width).
template <int N>
constexpr int input_width(const schedule<N>& s) {
  int H = 0;
  for (int x = 0; x < s.n_externals; ++x)
    if (s.externals[x].kind == external_kind::input) H = s.externals[x].width;
  return H;
}

template <int N>
constexpr layer_seconds layer_costs(const schedule<N>& s, double T, double seq_len, int r, const device_rates& d,
                                    double act_bytes = 2, double stat_bytes = 4) {
  layer_seconds c{};
  auto gemm = [&](const entry& e) {
    double f = 0;
    if (e.weight >= 0) f += 2.0 * e.dim_in * e.dim_out;
    if (e.adapter >= 0) f += 2.0 * r * (e.dim_in + e.dim_out);
    return T * f / d.gemm_flops;
  };
  auto rows = [&](const entry& e) {
    double w = 0;
    for (int j = 0; j < e.n_buf; ++j) w += e.buf[j].width * (e.buf[j].store == storage::stat ? stat_bytes : act_bytes);
    return T * w / d.bytes;
  };
  auto attn = [&](const entry& e) { return T * 4.0 * (seq_len / 2) * e.heads * e.head_dim / d.attention_flops; };
  for (int i = 0; i < s.n_fwd; ++i) {
    const auto& e = s.fwd[i];
    switch (e.kind) {
      case kernel_kind::row_group: c.forward += rows(e); break;
      case kernel_kind::attention: c.forward += attn(e); break;
      case kernel_kind::linear:
      case kernel_kind::lora:
      case kernel_kind::lora_linear: c.forward += gemm(e); break;
      default: break;
    }
  }
  for (int i = 0; i < s.n_bwd; ++i) {
    const auto& e = s.bwd[i];
    switch (e.kind) {
      case kernel_kind::row_group:
        for (int k = e.recompute; k <= max_recompute && k > 0; ++k) c.tier[k] += rows(e);
        break;
      case kernel_kind::row_group_bwd: c.backward += rows(e); break;
      case kernel_kind::attention_bwd: c.backward += 2.5 * attn(e); break;
      case kernel_kind::linear_bwd: c.backward += gemm(e); break;
      case kernel_kind::lora_bwd: c.backward += 2 * gemm(e); break;  // dB, dZ, dA, dX: twice the forward's LoRA products
      default: break;
    }
  }
  c.offload_copy = T * input_width(s) * act_bytes / d.host_link;
  return c;
}

// Device buffers of the residual stream x_0 .. x_L under policy p, and the
// layer inputs that go to host memory and back.
constexpr int residual_buffers(int layers, const memory_policy& p) {
  return layers + 1 - p.offload_layers + (p.offload_layers < offload_ring ? p.offload_layers : offload_ring);
}
constexpr int offload_round_trips(const memory_policy& p) {
  return p.offload_layers > offload_ring ? p.offload_layers - offload_ring : 0;
}

// Predicted seconds of a step of `layers` layers under policy p. An offloaded
// input's copy out overlaps its layer's forward, its copy in the next layer's
// backward; only what exceeds them counts.
constexpr double step_seconds(const layer_seconds& c, int layers, const memory_policy& p) {
  auto exposed = [](double copy, double hidden_by) { return copy > hidden_by ? copy - hidden_by : 0.0; };
  double head = 0;
  if (c.head_vocab > 0)
    head = lm_head_seconds(c.head_tokens, c.head_width, c.head_vocab,
                           lm_head_chunk_tokens(c.head_chunk, static_cast<std::int64_t>(c.head_tokens), p), c.head_rates);
  return layers * (c.forward + c.backward + c.tier[p.tier]) + p.block_layers * c.forward +
         offload_round_trips(p) * (exposed(c.offload_copy, c.forward) + exposed(c.offload_copy, c.backward)) + head;
}

// Saved bytes of `layers` layers under policy p, per token of stride: the kept
// arenas (one per layer that keeps, one shared by all block-recompute layers)
// and the region of tier-k values shared by all layers.
template <int N>
constexpr double saved_bytes_per_token(const schedule<N>& s, int r, int layers, const memory_policy& p,
                                       double act_bytes = 2, double stat_bytes = 4) {
  const double keep = act_bytes * s.keep_act_width[p.tier] + stat_bytes * s.saved_stat_width +
                      act_bytes * r * s.saved_rank_width;
  const int arenas = layers - p.block_layers + (p.block_layers > 0 ? 1 : 0);
  return arenas * keep + act_bytes * (s.saved_act_width - s.keep_act_width[p.tier]);
}

// The device bytes of one CUDA model step (backend/cuda/model_step.cuh
// allocates exactly these, and predict_bytes() adds its batch arrays): the
// block plan's arenas for `layers` layers under a policy, the head and
// embedding plans, the frozen weights (bf16), the LoRA state (f32 p, g, m, v
// and bf16 copies, each tensor padded to 128 elements), the residual stream
// x_0 .. x_L (offloaded inputs: a ring of offload_ring buffers instead) and
// its gradient, the LM-head chunk (C x V logits f32 + their
// gradient bf16) and the kernel workspaces (cuBLASLt's, attention backward's).
// Arenas use the token stride Tp = T rounded up to 128.
inline constexpr std::size_t cublaslt_workspace_bytes = std::size_t{32} << 20;  // = cuda::kLoraWorkspaceBytes

struct step_layout {
  std::int64_t tokens = 0;
  int layers = 0;
  std::int64_t vocab = 0;
  bool tied = true;
  int rank = 16;
  std::int64_t ce_chunk = 2048;
  bool lora_dropout = false;  // the executor's masked LoRA input buffer (lora_dropout_width elements per token)
};

struct step_bytes {
  double weights = 0, lora = 0, residual = 0, saved = 0, workspace = 0, lm_head_chunk = 0, kernel_workspaces = 0;
  double host_pinned = 0;  // the offloaded layer inputs (host memory: not in total())
  double total() const { return weights + lora + residual + saved + workspace + lm_head_chunk + kernel_workspaces; }
};


// Elements per token of the CUDA executor's LoRA dropout buffer: the widest
// adapter input (one masked X at a time, [T, in] bf16).
template <int N>
constexpr int lora_dropout_width(const schedule<N>& s) {
  int w = 0;
  for (int i = 0; i < s.n_params; ++i)
    if (s.params[i].kind == op_kind::lora_adapter && s.params[i].cols > w) w = s.params[i].cols;
  return w;
}

template <int NB, int NH, int NE>
constexpr step_bytes cuda_step_bytes(const schedule<NB>& blk, const schedule<NH>& head, const schedule<NE>& emb,
                                     const step_layout& a, const memory_policy& p) {
  step_bytes b;
  const double L = a.layers, V = double(a.vocab), r = a.rank, T = double(a.tokens), Tp = double(stride_of(a.tokens));
  auto pad = [](double n) { return double((static_cast<std::int64_t>(n) + 127) / 128 * 128); };
  const int H = input_width(blk);
  double lora_elems = 0;
  for (int i = 0; i < blk.n_params; ++i) {
    const auto& ps = blk.params[i];
    if (ps.kind == op_kind::lora_adapter) lora_elems += pad(r * ps.cols) + pad(double(ps.rows) * r);
    else b.weights += L * 2 * double(ps.rows) * ps.cols;
  }
  b.weights += (a.tied ? 1 : 2) * V * H * 2 + 2.0 * H;
  b.lora = L * lora_elems * (4 * 4 + 2);
  b.residual = residual_buffers(a.layers, p) * T * H * 2 + T * H * 2;
  b.host_pinned = offload_round_trips(p) * T * H * 2;
  auto arena = [&](const auto& s) {
    return Tp * (2.0 * s.saved_act_width + 4.0 * s.saved_stat_width + 2.0 * r * s.saved_rank_width);
  };
  auto work = [&](const auto& s) {
    return Tp * (2.0 * s.workspace_width + 2.0 * r * s.tmp_rank_width + 2.0 * s.tmp_act_width + 4.0 * s.tmp_stat_width);
  };
  b.saved = Tp * saved_bytes_per_token(blk, a.rank, a.layers, p) + arena(head) + arena(emb);
  b.workspace = work(blk) + work(head) + work(emb);
  if (a.lora_dropout) b.workspace += Tp * 2.0 * lora_dropout_width(blk);
  const double C = double(lm_head_chunk_tokens(a.ce_chunk, a.tokens, p));
  b.lm_head_chunk = C * V * (4 + 2);
  int heads = 0;
  for (int i = 0; i < blk.n_fwd; ++i) heads = heads > blk.fwd[i].heads ? heads : blk.fwd[i].heads;
  b.kernel_workspaces = 3.0 * double(cublaslt_workspace_bytes) + Tp * heads * 4;
  return b;
}

struct memory_choice {
  memory_policy policy{};
  double bytes = 0;         // predicted peak of the step's allocations
  double seconds = 0;       // predicted step time under the policy
  double base_seconds = 0;  // ... and keeping everything
  bool fits = false;        // false: nothing fits; policy is then the smallest one
  double slowdown() const { return base_seconds > 0 ? seconds / base_seconds : 1.0; }
};

// bytes_of(memory_policy) -> double, seconds_of(memory_policy) -> double;
// max_offload: the most layer inputs the executor can offload (0 on the CPU,
// whose residual stream is host memory already; `layers` on CUDA);
// head_chunk: the LM-head chunk of a policy with lm_head_chunk 0
// (lm_head_chunk_tokens of the step's option; 0: no chunk to choose, the
// CPU's head uses a fixed small chunk): the planner also tries its halvings
// down to 128 tokens.
template <class BytesOf, class SecondsOf>
memory_choice plan_memory(int tiers, int layers, double budget, BytesOf&& bytes_of, SecondsOf&& seconds_of,
                          int max_offload = 0, std::int64_t head_chunk = 0) {
  memory_choice best{}, smallest{};
  best.base_seconds = smallest.base_seconds = seconds_of(memory_policy{});
  bool have_small = false;
  auto better = [](const memory_policy& p, double t, double b, const memory_choice& c) {
    if (t != c.seconds) return t < c.seconds;
    if (p.offload_layers != c.policy.offload_layers) return p.offload_layers < c.policy.offload_layers;
    return b < c.bytes;
  };
  // 0 (the option's chunk), then C/2, C/4, ... rounded up to 128 (each
  // strictly smaller than the last while it is above 128).
  std::int64_t chunks[64] = {0};
  int n_chunks = 1;
  for (std::int64_t c = head_chunk; c > 128 && n_chunks < 64;) chunks[n_chunks++] = c = (c / 2 + 127) / 128 * 128;
  for (int j = 0; j < n_chunks; ++j)
    for (int m = 0; m <= max_offload && m <= layers; ++m)
      for (int n = 0; n <= layers; ++n)
        for (int k = 0; k <= tiers; ++k) {
          const memory_policy p{k, n, m, chunks[j]};
          const double b = bytes_of(p), t = seconds_of(p);
          if (!have_small || b < smallest.bytes) smallest.policy = p, smallest.bytes = b, smallest.seconds = t, have_small = true;
          if (b > budget) continue;
          if (!best.fits || better(p, t, b, best)) best.policy = p, best.bytes = b, best.seconds = t, best.fits = true;
        }
  return best.fits ? best : smallest;
}

// "recompute h1 (f0), h2 (f9), m (f12) in backward, every layer; re-run ..."
// (each recomputed value named by its value and its forward kernel, as in explain).
template <int N>
std::string policy_text(const schedule<N>& s, const memory_policy& p, int layers) {
  std::string o;
  if (p.tier == 0) o = "keep every saved value";
  else {
    o = "recompute";
    for (int k = 1; k <= p.tier; ++k)
      for (int i = 0; i < s.n_bwd; ++i)
        if (s.bwd[i].recompute == k)
          o += std::string(k > 1 ? ", " : " ") + std::string(s.recompute_names[k - 1].view()) + " (f" +
               std::to_string(s.bwd[i].kernel) + ")";
    o += " in backward, every layer";
  }
  if (p.block_layers > 0)
    o += "; re-run the whole block forward in backward for " + std::to_string(p.block_layers) + " of " +
         std::to_string(layers) + " layers (layers 0.." + std::to_string(p.block_layers - 1) + " keep only their input)";
  if (p.lm_head_chunk > 0)
    o += "; the LM head in chunks of " + std::to_string(p.lm_head_chunk) + " tokens";
  if (const int trips = offload_round_trips(p); trips > 0)
    o += "; the inputs of layers 0.." + std::to_string(trips - 1) +
         " wait in pinned host memory between forward and backward (copies on their own stream), those of layers " +
         std::to_string(trips) + ".." + std::to_string(p.offload_layers - 1) + " in a ring of " +
         std::to_string(offload_ring) + " device buffers";
  return o;
}

// "23.7500 GiB", "512.250 MiB", "96.5 KiB": enough digits that a test can
// pick a budget between two plans of a small model.
inline std::string bytes_text(double bytes) {
  char buf[40];
  if (bytes >= double(1 << 30)) std::snprintf(buf, sizeof buf, "%.4f GiB", bytes / double(1 << 30));
  else if (bytes >= double(1 << 20)) std::snprintf(buf, sizeof buf, "%.3f MiB", bytes / double(1 << 20));
  else std::snprintf(buf, sizeof buf, "%.1f KiB", bytes / 1024.0);
  return buf;
}

// The line a trainer prints when it starts (finetune --memory-budget):
//   "memory: budget 24.0000 GiB (--memory-budget); plan: <policy text>; predicted peak 23.7500 GiB
//    (keeping everything 37.2000 GiB, smallest plan 8.1900 GiB); predicted slowdown 1.14x"
// budget_from: where the budget came from ("--memory-budget", "free device memory less 1 GiB").
inline std::string memory_choice_text(const memory_choice& c, const std::string& policy, double budget,
                                      const std::string& budget_from, double keep_all_bytes, double smallest_bytes) {
  char slow[32];
  std::snprintf(slow, sizeof slow, "%.2fx", c.slowdown());
  return "memory: budget " + bytes_text(budget) + " (" + budget_from + "); plan: " + policy + "; predicted peak " +
         bytes_text(c.bytes) + " (keeping everything " + bytes_text(keep_all_bytes) + ", smallest plan " + bytes_text(smallest_bytes) +
         "); predicted slowdown " + slow;
}

// The error when even the smallest plan exceeds the budget.
inline std::string memory_budget_error(double budget, const std::string& budget_from, double smallest_bytes) {
  return "the memory budget of " + bytes_text(budget) + " (" + budget_from + ") cannot hold a training step: the smallest " +
         "memory plan (every layer re-runs its block in backward; on CUDA their inputs wait in host memory) needs " +
         bytes_text(smallest_bytes) +
         "; raise --memory-budget, or lower --batch-tokens / --max-len / --lora-r";
}

}  // namespace staticgrad::graph
