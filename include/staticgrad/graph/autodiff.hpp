#pragma once
// Reverse-mode autodiff over a node table, at compile time.
//
// Input: the lowered forward graph. Output: the backward graph as a list of
// steps, in execution order (reverse topological order of the forward ops),
// each step being the backward rule of one forward op (op_traits):
//   step = { forward node, gradient it reads (dy), gradient it writes per
//            input (dx[k]) and whether it accumulates into it (acc[k]) }.
// Gradient *values* are numbered separately from forward values; grad_of[v]
// is the gradient value of forward value v.
//
// Identity gradients (add, bias_add) are aliased, not computed: the input's
// gradient *is* the output's gradient value, so no kernel runs. An alias is
// only kept where it is safe: when a later accumulation into the shared value
// on behalf of one owner would be seen by a read on behalf of another owner,
// the alias is refused for that owner and a step (copy) is emitted instead.
// For the Qwen2 block this makes the residual-stream gradient one buffer that
// the two RMSNorm backward kernels update in place.
//
// requires_grad: inputs (in<>) and LoRA parameters require gradients, and so
// does every value computed from them; frozen weights and token ids do not.
//
// The saved set follows the gradients actually computed: a step reads, of the
// forward pass, its op's `reads.always` and `reads.grad[k]` for each input k
// whose gradient it computes (op_traits.hpp); the saved set is the union of
// what the steps read. "Needed by backward" means exactly this.
#include <array>

#include "staticgrad/graph/node.hpp"
#include "staticgrad/ops/all.hpp"

namespace staticgrad::graph {

struct bwd_step {
  int fwd = -1;                                   // forward node whose rule runs
  int dy = -1;                                    // gradient value read
  std::array<int, max_inputs> dx{-1, -1, -1};     // gradient value written per input
  std::array<bool, max_inputs> acc{};             // accumulate (true) or overwrite
  int time = 0;                                   // position in the backward order
  reads_desc reads{};                             // forward values this step reads
};

template <int N>
struct backward_graph {
  std::array<bool, N> requires_grad{};
  std::array<bool, N> active{};         // receives a gradient that reaches something trainable
  std::array<int, N> grad_of{};         // gradient value of forward value v, or -1
  std::array<int, N> grad_owner{};      // forward value that created gradient value g
  std::array<bool, N> grad_external{};  // gradient value bound by the caller (outputs' dy, inputs' dx)
  int n_grads = 0;
  std::array<bwd_step, N> steps{};
  int n_steps = 0;
  std::array<int, N> bind_time{};       // when grad_of[v] was bound (-1: before backward)
  std::array<int, N> read_time{};       // when v's own backward read it (large: after backward)
  std::array<bool, N> alias_refused{};  // identity gradient materialised for safety
  // The saved set: forward values and aux outputs that some step reads.
  std::array<bool, N> saved{};
  std::array<bool, N> saved_aux{};
  std::array<int, N> saved_by{};        // the first step's node that reads v (for messages)
};

namespace detail {

constexpr bool is_param(op_kind k) {
  return k == op_kind::frozen_matrix || k == op_kind::frozen_vector || k == op_kind::lora_adapter ||
         k == op_kind::token_ids;
}

template <int N>
constexpr backward_graph<N> build_backward(const node_table<N>& t, const std::array<bool, N>& refuse) {
  backward_graph<N> b{};
  b.alias_refused = refuse;
  for (int v = 0; v < N; ++v) {
    b.grad_of[v] = -1;
    b.grad_owner[v] = -1;
    b.bind_time[v] = 1 << 29;
    b.read_time[v] = 1 << 30;
    b.saved_by[v] = -1;
  }
  // requires_grad, forward.
  for (int v = 0; v < t.count; ++v) {
    const auto& n = t.nodes[v];
    if (n.kind == op_kind::input || n.kind == op_kind::lora_adapter) b.requires_grad[v] = true;
    else if (!is_leaf(n.kind))
      for (int k = 0; k < n.n_in; ++k) b.requires_grad[v] = b.requires_grad[v] || b.requires_grad[n.in[k]];
  }
  // active, backward: a value is active if it requires grad and a gradient
  // reaches it (it is an output, or an active consumer propagates to it).
  for (int v = t.count - 1; v >= 0; --v) {
    const auto& n = t.nodes[v];
    if (n.output && b.requires_grad[v]) b.active[v] = true;
    if (!b.active[v] || is_leaf(n.kind)) continue;
    const auto tr = traits_of(n.kind);
    for (int k = 0; k < n.n_in; ++k) {
      const int in = n.in[k];
      if (t.nodes[in].kind == op_kind::lora_adapter) b.active[in] = true;
      else if (tr.grad_in[k] && b.requires_grad[in]) b.active[in] = true;
    }
  }
  // Outputs' gradients come from the caller.
  for (int v = 0; v < t.count; ++v)
    if (t.nodes[v].output && b.active[v]) {
      b.grad_of[v] = b.n_grads;
      b.grad_owner[b.n_grads] = v;
      b.grad_external[b.n_grads] = true;
      ++b.n_grads;
      b.bind_time[v] = -1;
    }
  int time = 0;
  for (int v = t.count - 1; v >= 0; --v) {
    const auto& n = t.nodes[v];
    if (is_leaf(n.kind) || !b.active[v]) continue;
    if (b.grad_of[v] < 0) throw "staticgrad: autodiff reached an active value without a gradient (internal error)";
    const auto tr = traits_of(n.kind);
    bwd_step s{.fwd = v, .dy = b.grad_of[v], .time = time};
    bool need_step = n.kind == op_kind::lora;  // parameter gradients dA, dB
    for (int k = 0; k < n.n_in; ++k) {
      const int in = n.in[k];
      if (!tr.grad_in[k] || !b.requires_grad[in] || is_param(t.nodes[in].kind)) continue;
      if (tr.identity_grad[k] && b.grad_of[in] < 0 && !refuse[in]) {
        b.grad_of[in] = b.grad_of[v];
        b.bind_time[in] = time;
        continue;
      }
      if (b.grad_of[in] < 0) {
        b.grad_of[in] = b.n_grads;
        b.grad_owner[b.n_grads] = in;
        ++b.n_grads;
        b.bind_time[in] = time;
        s.acc[k] = false;
      } else {
        s.acc[k] = true;
      }
      s.dx[k] = b.grad_of[in];
      need_step = true;
    }
    b.read_time[v] = time;
    if (need_step) {
      // What this step reads: always, plus per gradient it computes.
      s.reads = tr.reads.always;
      for (int k = 0; k < n.n_in; ++k) {
        if (s.dx[k] < 0) continue;
        const auto& g = tr.reads.grad[k];
        for (int j = 0; j < max_inputs; ++j) s.reads.in[j] = s.reads.in[j] || g.in[j];
        s.reads.out = s.reads.out || g.out;
        s.reads.aux = s.reads.aux || g.aux;
      }
      for (int j = 0; j < n.n_in; ++j)
        if (s.reads.in[j] && is_param(t.nodes[n.in[j]].kind)) s.reads.in[j] = false;  // parameters are not saved
      b.steps[b.n_steps++] = s;
      // The saved set.
      for (int k = 0; k < n.n_in; ++k)
        if (s.reads.in[k]) {
          b.saved[n.in[k]] = true;
          if (b.saved_by[n.in[k]] < 0) b.saved_by[n.in[k]] = v;
        }
      if (s.reads.out) {
        b.saved[v] = true;
        if (b.saved_by[v] < 0) b.saved_by[v] = v;
      }
      if (s.reads.aux) b.saved_aux[v] = true;
    }
    ++time;
  }
  // Inputs' gradients go back to the caller.
  for (int v = 0; v < t.count; ++v)
    if (t.nodes[v].kind == op_kind::input && b.grad_of[v] >= 0) b.grad_external[b.grad_of[v]] = true;
  return b;
}

// An accumulation on behalf of owner a into a gradient value shared with
// owner b, while b's gradient is bound and not yet read (or is being read by
// the very same step, as dy of a GEMM that would then read what it writes),
// would corrupt b's gradient. Returns the owner whose alias must be refused, or -1.
template <int N>
constexpr int find_alias_hazard(const node_table<N>& t, const backward_graph<N>& b) {
  for (int i = 0; i < b.n_steps; ++i) {
    const auto& s = b.steps[i];
    const auto& n = t.nodes[s.fwd];
    for (int k = 0; k < n.n_in; ++k) {
      if (s.dx[k] < 0) continue;
      const int a = n.in[k];
      for (int o = 0; o < t.count; ++o)
        if (o != a && b.grad_of[o] == s.dx[k] && b.bind_time[o] < s.time && s.time <= b.read_time[o]) return a;
    }
  }
  return -1;
}

}  // namespace detail

template <int N>
constexpr backward_graph<N> autodiff(const node_table<N>& t) {
  if (t.failed()) return {};  // reported by compiled<G>; nothing to differentiate
  // Each round refuses one more alias; at most one per value, so this ends.
  std::array<bool, N> refuse{};
  auto b = detail::build_backward<N>(t, refuse);
  for (int a = detail::find_alias_hazard<N>(t, b); a >= 0; a = detail::find_alias_hazard<N>(t, b)) {
    if (refuse[a]) throw "staticgrad: autodiff could not resolve gradient aliasing (internal error)";
    refuse[a] = true;
    b = detail::build_backward<N>(t, refuse);
  }
  return b;
}

}  // namespace staticgrad::graph
