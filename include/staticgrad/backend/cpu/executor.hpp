#pragma once
// The CPU backend: runs a compiled plan (graph/plan.hpp) with Eigen.
//
// Invariants:
//   * The executor does what the plan says and nothing else: one call per
//     kernel of the forward schedule, then of the backward schedule; values
//     live where the buffer plan puts them; a row group is ONE loop over the
//     tokens that runs every op of the group on the token's row, with values
//     internal to the group kept in a per-thread row of scratch.
//   * All arithmetic and storage in the scalar type S (float, or double for
//     gradient checks); weights are given in S.
//   * LoRA parameter gradients accumulate (+=) into the caller's dA, dB; the
//     caller zeroes them between optimizer steps.
//   * Kernels are dispatched with compile-time indices (integer_sequence over
//     the schedules), so each fused group is a loop generated for its op list.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "staticgrad/backend/cpu/attention.hpp"
#include "staticgrad/backend/cpu/cross_entropy.hpp"
#include "staticgrad/backend/cpu/gemm.hpp"
#include "staticgrad/backend/cpu/parallel.hpp"
#include "staticgrad/backend/cpu/segments.hpp"
#include "staticgrad/core/error.hpp"
#include "staticgrad/graph/plan.hpp"

namespace staticgrad::cpu {

// A frozen parameter: [rows, cols] row-major (vectors: rows = 1).
template <class S>
struct frozen_param {
  const S* data = nullptr;
  std::int64_t rows = 0, cols = 0;
};

// A LoRA pair and where its gradients go. A [r, in], B [out, r].
template <class S>
struct lora_param {
  const S* A = nullptr;
  const S* B = nullptr;
  S* dA = nullptr;  // may be null: no gradient wanted
  S* dB = nullptr;
  int rank = 0;
};

// The parameters of one application of a graph (one layer), by DSL name.
template <class S>
struct parameters {
  std::unordered_map<std::string, frozen_param<S>> frozen;
  std::unordered_map<std::string, lora_param<S>> lora;
};

template <class G, class S>
class program {
 public:
  using plan = graph::compiled<G>;
  static constexpr int N = plan::capacity;
  static constexpr auto& table = plan::table;

  // The saved arena of one application (one layer): what backward reads.
  struct saved_state {
    std::vector<S> act, stat, rank;
    void resize(std::int64_t T, int r) {
      act.assign(static_cast<std::size_t>(T * plan::buffers.saved_act_width), S(0));
      stat.assign(static_cast<std::size_t>(T * plan::buffers.saved_stat_width), S(0));
      rank.assign(static_cast<std::size_t>(T * r * plan::buffers.saved_rank_width), S(0));
    }
  };

  // ---- binding ---------------------------------------------------------------
  // Tokens, layout and scalars of the next forward/backward.
  void set_batch(std::int64_t T, const token_layout& layout, const runtime_config& cfg) {
    validate_layout(layout, T);
    T_ = T;
    layout_ = layout;
    cfg_ = cfg;
    // No clearing: the plan writes every slot before it reads it (a gradient's
    // first contribution overwrites).
    workspace_.resize(static_cast<std::size_t>(T * plan::buffers.workspace_width));
  }
  // Resolves every parameter leaf of the graph in `p`; throws naming the first
  // missing or mis-shaped parameter.
  void set_parameters(const parameters<S>& p) {
    for (int v = 0; v < table.count; ++v) {
      const auto& n = table.nodes[v];
      const std::string name(n.param.view());
      if (n.kind == graph::op_kind::frozen_matrix || n.kind == graph::op_kind::frozen_vector) {
        auto it = p.frozen.find(name);
        require(it != p.frozen.end(), "parameter missing", {"", name, std::nullopt});
        const auto& f = it->second;
        const bool vec = n.kind == graph::op_kind::frozen_vector;
        const std::int64_t want_rows = vec ? 1 : n.width, want_cols = vec ? n.width : n.cols;
        require(f.data != nullptr && (want_rows == 0 || f.rows == want_rows) && f.cols == want_cols,
                "parameter has shape [" + std::to_string(f.rows) + ", " + std::to_string(f.cols) +
                    "], the graph expects [" + (want_rows ? std::to_string(want_rows) : std::string("rows")) + ", " +
                    std::to_string(want_cols) + "]",
                {"", name, std::nullopt});
        frozen_[v] = f;
      } else if (n.kind == graph::op_kind::lora_adapter) {
        auto it = p.lora.find(name);
        require(it != p.lora.end(), "LoRA adapter missing", {"", name, std::nullopt});
        require(it->second.A && it->second.B && it->second.rank > 0, "LoRA adapter without A, B or rank",
                {"", name, std::nullopt});
        require(it->second.rank == cfg_.rank, "LoRA adapter rank " + std::to_string(it->second.rank) +
                                                  " differs from the configured rank " + std::to_string(cfg_.rank),
                {"", name, std::nullopt});
        lora_[v] = it->second;
      }
    }
  }
  void set_input(std::string_view name, const S* x) { ext_[node(name, graph::op_kind::input)] = const_cast<S*>(x); }
  void set_ids(std::string_view name, const std::int32_t* ids) { ids_[node(name, graph::op_kind::token_ids)] = ids; }
  void set_output(std::string_view name, S* y) {
    const int v = node(name);
    require(table.nodes[v].output, "not a graph output", {"", std::string(name), std::nullopt});
    ext_[v] = y;
  }
  // The gradient buffer of an output (its dy, read) or of an input (its dx,
  // written). Where the plan aliases an input's gradient to an output's (the
  // residual stream), pass the same buffer for both: backward updates it in place.
  void set_grad(std::string_view name, S* g) { ext_grad_[node(name)] = g; }

  // ---- running -------------------------------------------------------------------
  void forward(saved_state& s) {
    saved_ = &s;
    if (static_cast<std::int64_t>(s.act.size()) != T_ * plan::buffers.saved_act_width ||
        static_cast<std::int64_t>(s.stat.size()) != T_ * plan::buffers.saved_stat_width ||
        static_cast<std::int64_t>(s.rank.size()) != T_ * cfg_.rank * plan::buffers.saved_rank_width)
      s.resize(T_, cfg_.rank);
    check_externals();
    run_forward(std::make_integer_sequence<int, plan::fusion.n_fwd>{});
  }
  void backward(saved_state& s) {
    saved_ = &s;
    check_grad_externals();
    run_backward(std::make_integer_sequence<int, plan::fusion.n_bwd>{});
  }

  // Pointer to the [T, width] rows of a forward value (after forward).
  const S* value(std::string_view name) const { return value_ptr(node(name)); }

 private:
  static int node(std::string_view name) {
    const int v = table.find(name);
    require(v >= 0, "the graph has no value of this name", {"", std::string(name), std::nullopt});
    return v;
  }
  static int node(std::string_view name, graph::op_kind k) {
    const int v = node(name);
    require(table.nodes[v].kind == k, "the graph value has another kind", {"", std::string(name), std::nullopt});
    return v;
  }

  void check_externals() const {
    for (int v = 0; v < table.count; ++v) {
      const auto& n = table.nodes[v];
      if (n.kind == graph::op_kind::input || n.output)
        require(ext_[v] != nullptr, n.output ? "output buffer not set" : "input not set",
                {"", std::string(n.name.view()), std::nullopt});
      if (n.kind == graph::op_kind::token_ids)
        require(ids_[v] != nullptr, "token ids not set", {"", std::string(n.name.view()), std::nullopt});
    }
  }
  void check_grad_externals() {
    // Every external gradient value needs a buffer; owners sharing one value
    // must share one buffer (copy dy into dx's buffer if the caller gave two).
    for (int g = 0; g < plan::backward.n_grads; ++g) {
      if (!plan::backward.grad_external[g]) continue;
      S* buf = nullptr;
      for (int v = 0; v < table.count; ++v)
        if (plan::backward.grad_of[v] == g && table.nodes[v].output) buf = ext_grad_[v];
      for (int v = 0; v < table.count; ++v) {
        if (plan::backward.grad_of[v] != g || table.nodes[v].kind != graph::op_kind::input) continue;
        S* dx = ext_grad_[v];
        require(dx != nullptr, "input gradient buffer not set", {"", std::string(table.nodes[v].name.view()), std::nullopt});
        if (buf && buf != dx) std::copy_n(buf, T_ * table.nodes[v].width, dx);
        buf = dx;
      }
      require(buf != nullptr, "output gradient buffer not set", {"", std::string(table.nodes[plan::backward.grad_owner[g]].name.view()), std::nullopt});
      grad_ext_[g] = buf;
    }
  }

  // ---- where values live ------------------------------------------------------
  S* slot_ptr(const graph::slot& s, int v) const {
    switch (s.where) {
      case graph::arena::workspace: return const_cast<S*>(workspace_.data()) + T_ * s.offset;
      case graph::arena::saved_act: return saved_->act.data() + T_ * s.offset;
      case graph::arena::saved_stat: return saved_->stat.data() + T_ * s.offset;
      case graph::arena::saved_rank: return saved_->rank.data() + T_ * cfg_.rank * s.offset;
      case graph::arena::external: return external_ptr(v);
      case graph::arena::scratch: return nullptr;
    }
    return nullptr;
  }
  // The caller's buffer of an external class: the input or output in the chain.
  S* external_ptr(int v) const {
    const int owner = plan::buffers.value[v].owner;
    for (int u = 0; u < table.count; ++u)
      if (plan::buffers.value[u].owner == owner && (table.nodes[u].kind == graph::op_kind::input || table.nodes[u].output) && ext_[u])
        return ext_[u];
    return ext_[v];
  }
  S* value_ptr(int v) const { return slot_ptr(plan::buffers.value[v], v); }
  S* aux_ptr(int v) const { return slot_ptr(plan::buffers.aux[v], v); }
  S* grad_ptr(int g) const {
    if (plan::buffers.grad[g].where == graph::arena::external) return grad_ext_[g];
    return const_cast<S*>(workspace_.data()) + T_ * plan::buffers.grad[g].offset;
  }
  static constexpr int width_of(int v) { return table.nodes[v].width; }
  int aux_width_of(int v) const { return table.nodes[v].aux_width * (table.nodes[v].aux_rank ? cfg_.rank : 1); }

  // ---- forward ---------------------------------------------------------------
  template <int... K>
  void run_forward(std::integer_sequence<int, K...>) {
    (run_forward_kernel<K>(), ...);
  }
  template <int K>
  void run_forward_kernel() {
    static constexpr const graph::kernel_desc& kd = plan::fusion.fwd[K];
    using kk = graph::kernel_kind;
    if constexpr (kd.kind == kk::row_group) run_row_group<K>(std::make_integer_sequence<int, kd.n>{});
    else if constexpr (kd.kind == kk::lora_linear) run_lora_linear(kd.members[0], kd.members[1], kd.members[2]);
    else if constexpr (kd.kind == kk::linear) run_lora_linear(kd.members[0], -1, kd.members[0]);
    else if constexpr (kd.kind == kk::lora) run_lora_linear(-1, kd.members[0], kd.members[0]);
    else if constexpr (kd.kind == kk::attention) run_attention(kd.members[0]);
    else if constexpr (kd.kind == kk::embedding) run_embedding(kd.members[0]);
    else if constexpr (kd.kind == kk::lm_head_ce) run_lm_head_ce(kd.members[0]);
  }

  // f(t0, t1) over contiguous token ranges, on the CPU threads; rows are
  // independent, so any split gives the same result bit for bit.
  template <class F>
  void for_token_chunks(double work_per_token, F&& f) const {
    const std::int64_t chunks = std::min<std::int64_t>(T_, 64), per = (T_ + chunks - 1) / std::max<std::int64_t>(chunks, 1);
    parallel_for(chunks, work_per_token * static_cast<double>(per), [&](std::int64_t c) {
      f(c * per, std::min(T_, (c + 1) * per));
    });
  }

  // Row pointer of input k of node v at token t, inside a row group whose
  // scratch rows are `scratch` (indexed by node).
  const S* row_in(int v, int k, std::int64_t t, const std::array<S*, N>& scratch) const {
    const int in = table.nodes[v].in[k];
    if (in < 0) return nullptr;
    const auto& n = table.nodes[in];
    if (n.kind == graph::op_kind::frozen_vector) return frozen_[in].data;
    if (scratch[in]) return scratch[in];
    const S* base = n.kind == graph::op_kind::input ? external_ptr(in) : value_ptr(in);
    return base ? base + t * n.width : nullptr;
  }

  template <int K, int... M>
  void run_row_group(std::integer_sequence<int, M...>) {
    static constexpr const graph::kernel_desc& kd = plan::fusion.fwd[K];
    constexpr int widest = [] {
      int w = 1;
      for (int m = 0; m < kd.n; ++m) w = std::max({w, table.nodes[kd.members[m]].width, table.nodes[kd.members[m]].aux_width});
      return w;
    }();
    for_token_chunks(static_cast<double>(widest) * kd.n * 8, [&](std::int64_t t0, std::int64_t t1) {
      // One scratch row per group member that is not materialised (and one
      // for an unsaved aux output).
      std::vector<S> rows(static_cast<std::size_t>(2 * kd.n * widest));
      for (std::int64_t t = t0; t < t1; ++t) {
        std::array<S*, N> scratch{};
        (run_row_op<kd.members[M]>(t, scratch, rows.data() + 2 * M * widest, rows.data() + (2 * M + 1) * widest), ...);
      }
    });
  }

  template <int V>
  void run_row_op(std::int64_t t, std::array<S*, N>& scratch, S* my_row, S* my_aux) const {
    constexpr auto& n = table.nodes[V];
    row_args<S> a;
    for (int k = 0; k < n.n_in; ++k) a.in[k] = row_in(V, k, t, scratch);
    if (plan::fusion.materialized[V]) a.out = value_ptr(V) + t * n.width;
    else scratch[V] = a.out = my_row;
    a.aux = n.aux_width ? (plan::backward.saved_aux[V] ? aux_ptr(V) + t * aux_width_of(V) : my_aux) : nullptr;
    a.width = n.width;
    a.t = t;
    a.pos = layout_.positions[static_cast<std::size_t>(t)];
    a.node = &n;
    a.cfg = &cfg_;
    using ok = graph::op_kind;
    if constexpr (n.kind == ok::rmsnorm) rmsnorm_row_forward(a);
    else if constexpr (n.kind == ok::rope) rope_row_forward(a);
    else if constexpr (n.kind == ok::add) add_row_forward(a);
    else if constexpr (n.kind == ok::bias_add) bias_add_row_forward(a);
    else if constexpr (n.kind == ok::swiglu) swiglu_row_forward(a);
    else if constexpr (n.kind == ok::silu) silu_row_forward(a);
    else if constexpr (n.kind == ok::mul) mul_row_forward(a);
    else static_assert(graph::always_false<S>, "a row group holds an op without a row functor");
  }

  // dropout(X) for adapter `lo` ([T, in]); X itself when p == 0.
  const S* dropped_input(int lo, const S* X, std::vector<S>& buf) const {
    if (cfg_.lora_dropout <= 0.0f) return X;
    const int in = table.nodes[table.nodes[lo].in[0]].width;
    buf.resize(static_cast<std::size_t>(T_ * in));
    const auto stream = adapter_stream(table.nodes[table.nodes[lo].in[1]].name.view(), cfg_.layer);
    for (std::int64_t t = 0; t < T_; ++t)
      for (int i = 0; i < in; ++i)
        buf[t * in + i] = X[t * in + i] * S(dropout_fn::scale(cfg_.lora_dropout, cfg_.seed, stream, t, i));
    return buf.data();
  }

  const S* input_rows(int v, int k) const {
    const int in = table.nodes[v].in[k];
    return table.nodes[in].kind == graph::op_kind::input ? external_ptr(in) : value_ptr(in);
  }

  // Y = X W^T (lin >= 0)  [+ s * Z B^T with Z = dropout(X) A^T (lo >= 0)]  into out's slot.
  void run_lora_linear(int lin, int lo, int out) {
    const int xnode = lin >= 0 ? lin : lo;
    const S* X = input_rows(xnode, 0);
    const int in = table.nodes[table.nodes[xnode].in[0]].width, outw = table.nodes[out].width;
    S* Y = value_ptr(out);
    if (lin >= 0) {
      const auto& W = frozen_[table.nodes[lin].in[1]];
      matmul_nt<S>(T_, outw, in, X, in, W.data, in, Y, outw);
    }
    if (lo >= 0) {
      const auto& P = lora_[table.nodes[lo].in[1]];
      const int r = P.rank;
      std::vector<S> dropped, ztmp;
      const S* Xd = dropped_input(lo, X, dropped);
      S* Z = aux_ptr(lo);
      if (!Z) {
        ztmp.resize(static_cast<std::size_t>(T_ * r));
        Z = ztmp.data();
      }
      matmul_nt<S>(T_, r, in, Xd, in, P.A, in, Z, r);
      matmul_nt<S>(T_, outw, r, Z, r, P.B, r, Y, outw, S(cfg_.lora_scaling), lin >= 0 ? S(1) : S(0));
    }
  }

  void run_attention(int v) {
    const auto& n = table.nodes[v];
    attention_forward<S>(input_rows(v, 0), input_rows(v, 1), input_rows(v, 2), value_ptr(v), aux_ptr_or_tmp(v), layout_,
                         n.attr[0], n.attr[1], n.attr[2]);
  }
  S* aux_ptr_or_tmp(int v) {
    if (S* p = aux_ptr(v)) return p;
    aux_tmp_.resize(static_cast<std::size_t>(T_ * aux_width_of(v)));
    return aux_tmp_.data();
  }

  void run_embedding(int v) {
    const auto& n = table.nodes[v];
    const auto& W = frozen_[n.in[1]];
    const std::int32_t* ids = ids_[n.in[0]];
    S* Y = value_ptr(v);
    for (std::int64_t t = 0; t < T_; ++t) {
      require(ids[t] >= 0 && ids[t] < W.rows,
              "token id " + std::to_string(ids[t]) + " at token " + std::to_string(t) + " is outside the vocabulary [0, " +
                  std::to_string(W.rows) + ")",
              {"", std::string(table.nodes[n.in[0]].name.view()), std::nullopt});
      std::copy_n(W.data + static_cast<std::int64_t>(ids[t]) * n.width, n.width, Y + t * n.width);
    }
  }

  // Per-token cross-entropy of X W^T against targets (backend/cpu/cross_entropy.hpp:
  // chunks of counted tokens, never all logits). With dloss, writes (or adds
  // to) dX = dloss_t * (softmax - onehot) W instead of the losses.
  void lm_head_ce_chunks(int v, S* loss, const S* dloss, S* dX, bool acc) const {
    const auto& n = table.nodes[v];
    const auto& W = frozen_[n.in[1]];
    const std::int64_t chunk = std::max<std::int64_t>(1, (std::int64_t{1} << 22) / std::max<std::int64_t>(W.rows, 1));
    lm_head_ce<S>(input_rows(v, 0), W.data, ids_[n.in[2]], T_, table.nodes[n.in[0]].width, W.rows, chunk, loss, dX, dloss,
                  S(0), acc);
  }
  void run_lm_head_ce(int v) { lm_head_ce_chunks(v, value_ptr(v), nullptr, nullptr, false); }

  // ---- backward --------------------------------------------------------------
  template <int... K>
  void run_backward(std::integer_sequence<int, K...>) {
    (run_backward_kernel<K>(), ...);
  }
  template <int K>
  void run_backward_kernel() {
    static constexpr const graph::kernel_desc& kd = plan::fusion.bwd[K];
    using kk = graph::kernel_kind;
    if constexpr (kd.kind == kk::row_group_bwd) run_row_group_bwd<K>(std::make_integer_sequence<int, kd.n>{});
    else if constexpr (kd.kind == kk::attention_bwd) run_attention_bwd(kd.members[0]);
    else if constexpr (kd.kind == kk::lm_head_ce_bwd) run_lm_head_ce_bwd(kd.members[0]);
    else {
      // linear_bwd, lora_bwd, lora_linear_bwd: each member step in order.
      for (int m = 0; m < kd.n; ++m) run_gemm_step_bwd(kd.members[m]);
    }
  }

  template <int K, int... M>
  void run_row_group_bwd(std::integer_sequence<int, M...>) {
    static constexpr const graph::kernel_desc& kd = plan::fusion.bwd[K];
    constexpr int widest = [] {
      int w = 1;
      for (int m = 0; m < kd.n; ++m) w = std::max(w, table.nodes[plan::backward.steps[kd.members[m]].fwd].width);
      return w;
    }();
    for_token_chunks(static_cast<double>(widest) * kd.n * 8, [&](std::int64_t t0, std::int64_t t1) {
      for (std::int64_t t = t0; t < t1; ++t) (run_row_step_bwd<kd.members[M]>(t), ...);
    });
  }

  template <int I>
  void run_row_step_bwd(std::int64_t t) const {
    constexpr auto& st = plan::backward.steps[I];
    constexpr int V = st.fwd;
    constexpr auto& n = table.nodes[V];
    row_grad_args<S> g;
    std::array<S*, N> none{};
    for (int k = 0; k < n.n_in; ++k) {
      const int in = n.in[k];
      const bool readable = table.nodes[in].kind == graph::op_kind::frozen_vector ||
                            table.nodes[in].kind == graph::op_kind::input || plan::backward.saved[in];
      g.fwd.in[k] = readable ? row_in(V, k, t, none) : nullptr;
      if (st.dx[k] >= 0) {
        g.din[k] = grad_ptr(st.dx[k]) + t * table.nodes[in].width;
        g.acc[k] = st.acc[k];
      }
    }
    g.fwd.out = plan::backward.saved[V] ? value_ptr(V) + t * n.width : nullptr;
    g.fwd.aux = plan::backward.saved_aux[V] ? aux_ptr(V) + t * aux_width_of(V) : nullptr;
    g.fwd.width = n.width;
    g.fwd.t = t;
    g.fwd.pos = layout_.positions[static_cast<std::size_t>(t)];
    g.fwd.node = &n;
    g.fwd.cfg = &cfg_;
    g.dy = grad_ptr(st.dy) + t * n.width;
    using ok = graph::op_kind;
    if constexpr (n.kind == ok::rmsnorm) rmsnorm_row_backward(g);
    else if constexpr (n.kind == ok::rope) rope_row_backward(g);
    else if constexpr (n.kind == ok::add) add_row_backward(g);
    else if constexpr (n.kind == ok::bias_add) bias_add_row_backward(g);
    else if constexpr (n.kind == ok::swiglu) swiglu_row_backward(g);
    else if constexpr (n.kind == ok::silu) silu_row_backward(g);
    else if constexpr (n.kind == ok::mul) mul_row_backward(g);
    else static_assert(graph::always_false<S>, "a backward row group holds an op without a row functor");
  }

  // Backward of a linear or lora step (the members of linear_bwd, lora_bwd,
  // lora_linear_bwd kernels).
  void run_gemm_step_bwd(int i) {
    const auto& st = plan::backward.steps[i];
    const int v = st.fwd;
    const auto& n = table.nodes[v];
    const S* dY = grad_ptr(st.dy);
    const int in = table.nodes[n.in[0]].width, outw = n.width;
    S* dX = st.dx[0] >= 0 ? grad_ptr(st.dx[0]) : nullptr;
    const S beta = st.acc[0] ? S(1) : S(0);
    if (n.kind == graph::op_kind::linear) {
      if (dX) matmul_nn<S>(T_, in, outw, dY, outw, frozen_[n.in[1]].data, in, dX, in, S(1), beta);
      return;
    }
    // LoRA: dB += s dY^T Z; dZ = s dY B; dA += dZ^T dropout(X); dX (+)= mask * (dZ A).
    const auto& P = lora_[n.in[1]];
    const int r = P.rank;
    const S s = S(cfg_.lora_scaling);
    const S* Z = aux_ptr(v);
    std::vector<S> dZ(static_cast<std::size_t>(T_ * r)), dropped;
    if (P.dB) matmul_tn<S>(outw, r, T_, dY, outw, Z, r, P.dB, r, s, S(1));
    matmul_nn<S>(T_, r, outw, dY, outw, P.B, r, dZ.data(), r, s, S(0));
    const S* X = input_rows(v, 0);
    if (P.dA) matmul_tn<S>(r, in, T_, dZ.data(), r, dropped_input(v, X, dropped), in, P.dA, in, S(1), S(1));
    if (!dX) return;
    if (cfg_.lora_dropout <= 0.0f) {
      matmul_nn<S>(T_, in, r, dZ.data(), r, P.A, in, dX, in, S(1), beta);
      return;
    }
    std::vector<S> tmp(static_cast<std::size_t>(T_ * in));
    matmul_nn<S>(T_, in, r, dZ.data(), r, P.A, in, tmp.data(), in);
    const auto stream = adapter_stream(table.nodes[n.in[1]].name.view(), cfg_.layer);
    for (std::int64_t t = 0; t < T_; ++t)
      for (int j = 0; j < in; ++j) {
        const S g = tmp[t * in + j] * S(dropout_fn::scale(cfg_.lora_dropout, cfg_.seed, stream, t, j));
        dX[t * in + j] = (st.acc[0] ? dX[t * in + j] : S(0)) + g;
      }
  }

  void run_attention_bwd(int i) {
    const auto& st = plan::backward.steps[i];
    const int v = st.fwd;
    const auto& n = table.nodes[v];
    std::array<S*, 3> d{};
    std::array<std::vector<S>, 3> tmp;
    for (int k = 0; k < 3; ++k) {
      const int w = table.nodes[n.in[k]].width;
      if (st.dx[k] >= 0 && !st.acc[k]) d[k] = grad_ptr(st.dx[k]);
      else {
        tmp[k].assign(static_cast<std::size_t>(T_ * w), S(0));
        d[k] = tmp[k].data();
      }
    }
    attention_backward<S>(input_rows(v, 0), input_rows(v, 1), input_rows(v, 2), value_ptr(v), aux_ptr(v),
                          grad_ptr(st.dy), d[0], d[1], d[2], layout_, n.attr[0], n.attr[1], n.attr[2]);
    for (int k = 0; k < 3; ++k)
      if (st.dx[k] >= 0 && st.acc[k]) {
        S* g = grad_ptr(st.dx[k]);
        for (std::size_t j = 0; j < tmp[k].size(); ++j) g[j] += tmp[k][j];
      }
  }

  void run_lm_head_ce_bwd(int i) {
    const auto& st = plan::backward.steps[i];
    if (st.dx[0] < 0) return;
    lm_head_ce_chunks(st.fwd, nullptr, grad_ptr(st.dy), grad_ptr(st.dx[0]), st.acc[0]);
  }

  std::int64_t T_ = 0;
  token_layout layout_{};
  runtime_config cfg_{};
  std::vector<S> workspace_, aux_tmp_;
  saved_state* saved_ = nullptr;
  std::array<frozen_param<S>, N> frozen_{};
  std::array<lora_param<S>, N> lora_{};
  std::array<S*, N> ext_{};
  std::array<const std::int32_t*, N> ids_{};
  std::array<S*, N> ext_grad_{};
  std::array<S*, N> grad_ext_{};
};

}  // namespace staticgrad::cpu
