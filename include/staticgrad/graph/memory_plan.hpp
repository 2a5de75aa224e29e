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
//   bytes it moves; an offloaded layer input the part of its two copies
//   ([T, H] bf16 each way over the host link) that its layer's forward and
//   backward do not hide. Rates: `device_rates` (achieved, not peak: only
//   ratios of costs decide the choice, and the predicted slowdown is a ratio).
// plan_memory() enumerates every (k, n, m), keeps those whose bytes (the
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
};

// Seconds per step of one layer's parts, for T tokens of sequences of seq_len.
struct layer_seconds {
  double forward = 0, backward = 0;
  std::array<double, max_recompute + 1> tier{};  // recompute entries of tiers 1..k together
  double offload_copy = 0;                       // one layer input [T, H] over the host link, one way
};

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
  return layers * (c.forward + c.backward + c.tier[p.tier]) + p.block_layers * c.forward +
         offload_round_trips(p) * (exposed(c.offload_copy, c.forward) + exposed(c.offload_copy, c.backward));
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


constexpr std::int64_t stride_of(std::int64_t T) { return (T + 127) / 128 * 128; }

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
  const double C = double(std::min<std::int64_t>((std::max<std::int64_t>(a.ce_chunk, 1) + 127) / 128 * 128, stride_of(a.tokens)));
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
// whose residual stream is host memory already; `layers` on CUDA).
template <class BytesOf, class SecondsOf>
memory_choice plan_memory(int tiers, int layers, double budget, BytesOf&& bytes_of, SecondsOf&& seconds_of,
                          int max_offload = 0) {
  memory_choice best{}, smallest{};
  best.base_seconds = smallest.base_seconds = seconds_of(memory_policy{});
  bool have_small = false;
  auto better = [](const memory_policy& p, double t, double b, const memory_choice& c) {
    if (t != c.seconds) return t < c.seconds;
    if (p.offload_layers != c.policy.offload_layers) return p.offload_layers < c.policy.offload_layers;
    return b < c.bytes;
  };
  for (int m = 0; m <= max_offload && m <= layers; ++m)
    for (int n = 0; n <= layers; ++n)
      for (int k = 0; k <= tiers; ++k) {
        const memory_policy p{k, n, m};
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
