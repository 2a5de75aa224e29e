#pragma once
// The CPU backend: runs the schedule of a compiled plan (graph/schedule.hpp) with Eigen.
//
// Invariants:
//   * The executor does what the schedule says and nothing else: one call per
//     entry of the forward schedule, then of the backward schedule; buffers
//     are the entries' buffer_refs (arena + offset, or an external slot), so
//     the binding rules (externals of in-place chains, acc flags, the order of
//     a projection's backward) are the schedule's, shared with the CUDA
//     executor; a row group is ONE loop over the tokens that runs every step
//     of the group on the token's row (row_group.hpp: the op headers'
//     functors), with values internal to the group in a per-thread scratch row.
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
#include "staticgrad/backend/cpu/row_group.hpp"
#include "staticgrad/backend/cpu/segments.hpp"
#include "staticgrad/core/error.hpp"
#include "staticgrad/graph/plan.hpp"
#include "staticgrad/graph/schedule.hpp"

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
  static constexpr const graph::schedule<N>& sched = graph::schedule_of_compiled<plan>;

  // The saved arena of one application (one layer): what backward reads.
  // With recompute tier k, act holds only the kept part (keep_act_width[k]).
  struct saved_state {
    std::vector<S> act, stat, rank;
    void resize(std::int64_t T, int r, int tier = 0) {
      act.assign(static_cast<std::size_t>(T * sched.keep_act_width[tier]), S(0));
      stat.assign(static_cast<std::size_t>(T * sched.saved_stat_width), S(0));
      rank.assign(static_cast<std::size_t>(T * r * sched.saved_rank_width), S(0));
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
    workspace_.resize(static_cast<std::size_t>(T * sched.workspace_width));
  }
  // Resolves every parameter slot of the schedule in `p`; throws naming the
  // first missing or mis-shaped parameter.
  void set_parameters(const parameters<S>& p) {
    for (int k = 0; k < sched.n_params; ++k) {
      const auto& ps = sched.params[k];
      const std::string name(ps.name.view());
      if (ps.kind == graph::op_kind::lora_adapter) {
        auto it = p.lora.find(name);
        require(it != p.lora.end(), "LoRA adapter missing", {"", name, std::nullopt});
        require(it->second.A && it->second.B && it->second.rank > 0, "LoRA adapter without A, B or rank",
                {"", name, std::nullopt});
        require(it->second.rank == cfg_.rank, "LoRA adapter rank " + std::to_string(it->second.rank) +
                                                  " differs from the configured rank " + std::to_string(cfg_.rank),
                {"", name, std::nullopt});
        lora_[k] = it->second;
        continue;
      }
      auto it = p.frozen.find(name);
      require(it != p.frozen.end(), "parameter missing", {"", name, std::nullopt});
      const auto& f = it->second;
      require(f.data != nullptr && (ps.rows == 0 || f.rows == ps.rows) && f.cols == ps.cols,
              "parameter has shape [" + std::to_string(f.rows) + ", " + std::to_string(f.cols) +
                  "], the graph expects [" + (ps.rows ? std::to_string(ps.rows) : std::string("rows")) + ", " +
                  std::to_string(ps.cols) + "]",
              {"", name, std::nullopt});
      frozen_[k] = f;
    }
  }
  void set_input(std::string_view name, const S* x) { ext_[slot(name, graph::external_kind::input)] = const_cast<S*>(x); }
  void set_ids(std::string_view name, const std::int32_t* ids) { ids_[slot(name, graph::external_kind::ids)] = ids; }
  void set_output(std::string_view name, S* y) { ext_[slot(name, graph::external_kind::output)] = y; }
  // The gradient buffer of an output (its dy, read) or of an input (its dx,
  // written). Where the plan aliases an input's gradient to an output's (the
  // residual stream), pass the same buffer for both: backward updates it in place.
  void set_grad(std::string_view name, S* g) {
    const int v = node(name);
    require(grad_slot_of(v) >= 0, "the value has no gradient the caller provides", {"", std::string(name), std::nullopt});
    grad_[v] = g;
  }

  // Recompute tier k (graph/recompute.hpp, 0 .. sched.n_recompute; chosen by
  // graph::plan_memory): backward rebuilds the first k candidates, which live
  // in one region of this program shared by every saved_state it runs.
  void set_recompute_tier(int k) {
    require(k >= 0 && k <= sched.n_recompute, "recompute tier " + std::to_string(k) + " outside [0, " +
                                                  std::to_string(sched.n_recompute) + "]");
    tier_ = k;
  }
  int recompute_tier() const { return tier_; }
  static constexpr int recompute_tiers() { return sched.n_recompute; }

  // ---- running -------------------------------------------------------------------
  void forward(saved_state& s) {
    saved_ = &s;
    shared_.resize(static_cast<std::size_t>(T_ * (sched.saved_act_width - sched.keep_act_width[tier_])));
    if (static_cast<std::int64_t>(s.act.size()) != T_ * sched.keep_act_width[tier_] ||
        static_cast<std::int64_t>(s.stat.size()) != T_ * sched.saved_stat_width ||
        static_cast<std::int64_t>(s.rank.size()) != T_ * cfg_.rank * sched.saved_rank_width)
      s.resize(T_, cfg_.rank, tier_);
    check_externals();
    run_forward(std::make_integer_sequence<int, sched.n_fwd>{});
  }
  void backward(saved_state& s) {
    saved_ = &s;
    require(static_cast<std::int64_t>(s.act.size()) == T_ * sched.keep_act_width[tier_],
            "backward with a saved state of another recompute tier or batch than its forward");
    check_grad_externals();
    run_backward(std::make_integer_sequence<int, sched.n_bwd>{});
  }

  // Elements of S this program holds itself (workspace, the shared region of
  // recomputed values, temporaries); saved states are the caller's.
  std::size_t held_elems() const { return workspace_.size() + shared_.size() + aux_tmp_.size(); }

  // Pointer to the [T, width] rows of a forward value (after forward).
  const S* value(std::string_view name) const { return ptr(graph::detail::value_ref<plan>(sched, node(name))); }

 private:
  static int node(std::string_view name) {
    const int v = table.find(name);
    require(v >= 0, "the graph has no value of this name", {"", std::string(name), std::nullopt});
    return v;
  }
  static int slot(std::string_view name, graph::external_kind k) {
    const int x = sched.find_external(name);
    require(x >= 0 && sched.externals[x].kind == k,
            k == graph::external_kind::output ? "not a graph output" : "not a graph input of this kind",
            {"", std::string(name), std::nullopt});
    return x;
  }

  void check_externals() const {
    for (int x = 0; x < sched.n_externals; ++x) {
      const auto& e = sched.externals[x];
      const std::string n(e.name.view());
      if (e.kind == graph::external_kind::ids) require(ids_[x] != nullptr, "token ids not set", {"", n, std::nullopt});
      else if (e.kind != graph::external_kind::grad)
        require(ext_[x] != nullptr, e.kind == graph::external_kind::output ? "output buffer not set" : "input not set",
                {"", n, std::nullopt});
    }
  }
  void check_grad_externals() {
    // Every external gradient slot needs a buffer; the owners sharing one slot
    // (an output's dy and the inputs whose gradient the plan aliases to it)
    // must share one buffer: dy is copied into each input's buffer if the
    // caller gave several, and the last one is the slot's buffer.
    for (int x = 0; x < sched.n_externals; ++x) {
      if (sched.externals[x].kind != graph::external_kind::grad) continue;
      S* buf = nullptr;
      for (int v = 0; v < table.count; ++v)
        if (grad_slot_of(v) == x && table.nodes[v].output) buf = grad_[v];
      for (int v = 0; v < table.count; ++v) {
        if (grad_slot_of(v) != x || table.nodes[v].kind != graph::op_kind::input) continue;
        S* dx = grad_[v];
        require(dx != nullptr, "input gradient buffer not set", {"", std::string(table.nodes[v].name.view()), std::nullopt});
        if (buf && buf != dx) std::copy_n(buf, T_ * table.nodes[v].width, dx);
        buf = dx;
      }
      require(buf != nullptr, "output gradient buffer not set", {"", std::string(sched.externals[x].name.view()), std::nullopt});
      ext_[x] = buf;
    }
  }
  static constexpr int grad_slot_of(int v) {
    const int g = plan::backward.grad_of[v];
    return g >= 0 ? sched.grad_external_of[g] : -1;
  }

  // ---- where buffers live --------------------------------------------------------
  S* ptr(const graph::buffer_ref& b) const {
    switch (b.where) {
      case graph::arena::workspace: return const_cast<S*>(workspace_.data()) + T_ * b.offset;
      case graph::arena::saved_act: {  // the kept part, or the shared region of recomputed values
        const int keep = sched.keep_act_width[tier_];
        return b.offset < keep ? saved_->act.data() + T_ * b.offset : const_cast<S*>(shared_.data()) + T_ * (b.offset - keep);
      }
      case graph::arena::saved_stat: return saved_->stat.data() + T_ * b.offset;
      case graph::arena::saved_rank: return saved_->rank.data() + T_ * cfg_.rank * b.offset;
      case graph::arena::external: return ext_[b.ext];
      case graph::arena::scratch: return nullptr;
    }
    return nullptr;
  }

  // ---- forward ---------------------------------------------------------------
  template <int... K>
  void run_forward(std::integer_sequence<int, K...>) {
    (run_forward_entry<K>(), ...);
  }
  template <int K>
  void run_forward_entry() {
    static constexpr const graph::entry& e = sched.fwd[K];
    using kk = graph::kernel_kind;
    if constexpr (e.kind == kk::row_group) run_row_group<false, K>(std::make_integer_sequence<int, e.n_steps>{});
    else if constexpr (e.kind == kk::lora_linear || e.kind == kk::linear || e.kind == kk::lora) run_lora_linear(e);
    else if constexpr (e.kind == kk::attention) run_attention(e);
    else if constexpr (e.kind == kk::embedding) run_embedding(e);
    else if constexpr (e.kind == kk::lm_head_ce) lm_head_ce_chunks(e, ptr(e.out), nullptr, nullptr, false);
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

  // The rows of token t of a row group's operands.
  struct row_frame {
    std::array<S*, graph::max_buffers> base{};
    S* scratch = nullptr;
    int width_max = 0;
  };
  template <class E>
  row_frame frame_of(const E& e) const {
    row_frame f;
    for (int j = 0; j < e.n_buf; ++j) f.base[j] = ptr(e.buf[j]);
    f.width_max = e.width_max;
    return f;
  }
  const S* operand(const graph::entry& e, const row_frame& f, int o, std::int64_t t) const {
    switch (graph::kind_of(o)) {
      case graph::operand_kind::buffer: return f.base[graph::index_of(o)] + t * e.buf[graph::index_of(o)].width;
      case graph::operand_kind::scratch: return f.scratch + graph::index_of(o) * f.width_max;
      case graph::operand_kind::param: return frozen_[e.par[graph::index_of(o)]].data;
      case graph::operand_kind::none: return nullptr;
    }
    return nullptr;
  }
  S* mut(const graph::entry& e, const row_frame& f, int o, std::int64_t t) const { return const_cast<S*>(operand(e, f, o, t)); }

  // A forward row group: entry K of the forward list, or of the backward list (a recompute).
  template <bool InBackward, int K, int... M>
  void run_row_group(std::integer_sequence<int, M...>) {
    static constexpr const graph::entry& e = InBackward ? sched.bwd[K] : sched.fwd[K];
    const row_frame base = frame_of(e);
    for_token_chunks(static_cast<double>(e.width_max) * e.n_steps * 8, [&](std::int64_t t0, std::int64_t t1) {
      std::vector<S> rows(static_cast<std::size_t>((e.n_scratch + 1) * e.width_max));
      row_frame f = base;
      f.scratch = rows.data();
      for (std::int64_t t = t0; t < t1; ++t) {
        const std::int32_t pos = layout_.positions[static_cast<std::size_t>(t)];
        (row_step_fwd<e.step0 + M>(e, f, t, pos), ...);
      }
    });
  }
  template <int I>
  void row_step_fwd(const graph::entry& e, const row_frame& f, std::int64_t t, std::int32_t pos) const {
    static constexpr const graph::row_step& st = sched.steps[I];
    row_forward<st.op, S>(st, operand(e, f, st.in0, t), operand(e, f, st.in1, t), mut(e, f, st.out, t),
                          mut(e, f, st.aux, t), pos, cfg_);
  }

  // dropout(X) for the adapter of entry e ([T, in]); X itself when p == 0.
  const S* dropped_input(const graph::entry& e, const S* X, std::vector<S>& buf) const {
    if (cfg_.lora_dropout <= 0.0f) return X;
    const int in = e.dim_in;
    buf.resize(static_cast<std::size_t>(T_ * in));
    const auto stream = adapter_stream(sched.params[e.adapter].name.view(), cfg_.layer);
    for (std::int64_t t = 0; t < T_; ++t)
      for (int i = 0; i < in; ++i)
        buf[t * in + i] = X[t * in + i] * S(dropout_fn::scale(cfg_.lora_dropout, cfg_.seed, stream, t, i));
    return buf.data();
  }

  // Y = X W^T (weight)  [+ s * Z B^T with Z = dropout(X) A^T (adapter)]  into out.
  void run_lora_linear(const graph::entry& e) {
    const S* X = ptr(e.in[0]);
    const int in = e.dim_in, outw = e.dim_out;
    S* Y = ptr(e.out);
    if (e.weight >= 0) matmul_nt<S>(T_, outw, in, X, in, frozen_[e.weight].data, in, Y, outw);
    if (e.adapter < 0) return;
    const auto& P = lora_[e.adapter];
    const int r = P.rank;
    std::vector<S> dropped, ztmp;
    const S* Xd = dropped_input(e, X, dropped);
    S* Z = ptr(e.aux);
    if (!Z) {
      ztmp.resize(static_cast<std::size_t>(T_ * r));
      Z = ztmp.data();
    }
    matmul_nt<S>(T_, r, in, Xd, in, P.A, in, Z, r);
    matmul_nt<S>(T_, outw, r, Z, r, P.B, r, Y, outw, S(cfg_.lora_scaling), e.weight >= 0 ? S(1) : S(0));
  }

  void run_attention(const graph::entry& e) {
    S* lse = ptr(e.aux);
    if (!lse) {
      aux_tmp_.resize(static_cast<std::size_t>(T_ * e.tmp_stat));
      lse = aux_tmp_.data();
    }
    attention_forward<S>(ptr(e.in[0]), ptr(e.in[1]), ptr(e.in[2]), ptr(e.out), lse, layout_, e.heads, e.kv_heads,
                         e.head_dim);
  }

  void run_embedding(const graph::entry& e) {
    const auto& W = frozen_[e.weight];
    const std::int32_t* ids = ids_[e.ids];
    S* Y = ptr(e.out);
    for (std::int64_t t = 0; t < T_; ++t) {
      require(ids[t] >= 0 && ids[t] < W.rows,
              "token id " + std::to_string(ids[t]) + " at token " + std::to_string(t) + " is outside the vocabulary [0, " +
                  std::to_string(W.rows) + ")",
              {"", std::string(sched.externals[e.ids].name.view()), std::nullopt});
      std::copy_n(W.data + static_cast<std::int64_t>(ids[t]) * e.dim_out, e.dim_out, Y + t * e.dim_out);
    }
  }

  // Per-token cross-entropy of X W^T against targets (backend/cpu/cross_entropy.hpp:
  // chunks of counted tokens, never all logits). With dloss, writes (or adds
  // to) dX = dloss_t * (softmax - onehot) W instead of the losses.
  void lm_head_ce_chunks(const graph::entry& e, S* loss, const S* dloss, S* dX, bool acc) const {
    const auto& W = frozen_[e.weight];
    const std::int64_t chunk = std::max<std::int64_t>(1, (std::int64_t{1} << 22) / std::max<std::int64_t>(W.rows, 1));
    lm_head_ce<S>(ptr(e.in[0]), W.data, ids_[e.ids], T_, e.dim_in, W.rows, chunk, loss, dX, dloss, S(0), acc);
  }

  // ---- backward --------------------------------------------------------------
  template <int... K>
  void run_backward(std::integer_sequence<int, K...>) {
    (run_backward_entry<K>(), ...);
  }
  template <int K>
  void run_backward_entry() {
    static constexpr const graph::entry& e = sched.bwd[K];
    using kk = graph::kernel_kind;
    if constexpr (e.kind == kk::row_group_bwd) run_row_group_bwd<K>(std::make_integer_sequence<int, e.n_steps>{});
    else if constexpr (e.kind == kk::row_group) {  // a recompute (its tier is chosen at run time)
      if (e.recompute <= tier_) run_row_group<true, K>(std::make_integer_sequence<int, e.n_steps>{});
    }
    else if constexpr (e.kind == kk::attention_bwd) run_attention_bwd(e);
    else if constexpr (e.kind == kk::lm_head_ce_bwd) {
      if (e.dx[0].in_memory()) lm_head_ce_chunks(e, nullptr, ptr(e.dy), ptr(e.dx[0]), e.acc[0]);
    } else if constexpr (e.kind == kk::linear_bwd) run_linear_bwd(e);
    else if constexpr (e.kind == kk::lora_bwd) run_lora_bwd(e);
  }

  template <int K, int... M>
  void run_row_group_bwd(std::integer_sequence<int, M...>) {
    static constexpr const graph::entry& e = sched.bwd[K];
    const row_frame f = frame_of(e);
    for_token_chunks(static_cast<double>(e.width_max) * e.n_steps * 8, [&](std::int64_t t0, std::int64_t t1) {
      for (std::int64_t t = t0; t < t1; ++t) {
        const std::int32_t pos = layout_.positions[static_cast<std::size_t>(t)];
        (row_step_bwd<e.step0 + M>(e, f, t, pos), ...);
      }
    });
  }
  template <int I>
  void row_step_bwd(const graph::entry& e, const row_frame& f, std::int64_t t, std::int32_t pos) const {
    static constexpr const graph::row_step& st = sched.steps[I];
    row_backward<st.op, S>(st, operand(e, f, st.in0, t), operand(e, f, st.in1, t), operand(e, f, st.aux, t),
                           operand(e, f, st.dy, t), mut(e, f, st.dx0, t), mut(e, f, st.dx1, t), pos, cfg_);
  }

  // dX (+)= dY W.
  void run_linear_bwd(const graph::entry& e) {
    if (!e.dx[0].in_memory()) return;
    matmul_nn<S>(T_, e.dim_in, e.dim_out, ptr(e.dy), e.dim_out, frozen_[e.weight].data, e.dim_in, ptr(e.dx[0]), e.dim_in,
                 S(1), e.acc[0] ? S(1) : S(0));
  }

  // LoRA: dB += s dY^T Z; dZ = s dY B; dA += dZ^T dropout(X); dX (+)= mask * (dZ A).
  void run_lora_bwd(const graph::entry& e) {
    const auto& P = lora_[e.adapter];
    const int r = P.rank, in = e.dim_in, outw = e.dim_out;
    const S s = S(cfg_.lora_scaling);
    const S* dY = ptr(e.dy);
    const S* Z = ptr(e.aux);
    S* dX = ptr(e.dx[0]);
    const S beta = e.acc[0] ? S(1) : S(0);
    std::vector<S> dZ(static_cast<std::size_t>(T_ * r)), dropped;
    if (P.dB) matmul_tn<S>(outw, r, T_, dY, outw, Z, r, P.dB, r, s, S(1));
    matmul_nn<S>(T_, r, outw, dY, outw, P.B, r, dZ.data(), r, s, S(0));
    const S* X = ptr(e.in[0]);
    if (P.dA) matmul_tn<S>(r, in, T_, dZ.data(), r, dropped_input(e, X, dropped), in, P.dA, in, S(1), S(1));
    if (!dX) return;
    if (cfg_.lora_dropout <= 0.0f) {
      matmul_nn<S>(T_, in, r, dZ.data(), r, P.A, in, dX, in, S(1), beta);
      return;
    }
    std::vector<S> tmp(static_cast<std::size_t>(T_ * in));
    matmul_nn<S>(T_, in, r, dZ.data(), r, P.A, in, tmp.data(), in);
    const auto stream = adapter_stream(sched.params[e.adapter].name.view(), cfg_.layer);
    for (std::int64_t t = 0; t < T_; ++t)
      for (int j = 0; j < in; ++j) {
        const S g = tmp[t * in + j] * S(dropout_fn::scale(cfg_.lora_dropout, cfg_.seed, stream, t, j));
        dX[t * in + j] = (e.acc[0] ? dX[t * in + j] : S(0)) + g;
      }
  }

  void run_attention_bwd(const graph::entry& e) {
    std::array<S*, 3> d{};
    std::array<std::vector<S>, 3> tmp;
    for (int k = 0; k < 3; ++k) {
      if (e.dx[k].in_memory() && !e.acc[k]) d[k] = ptr(e.dx[k]);
      else {
        tmp[k].assign(static_cast<std::size_t>(T_ * e.in[k].width), S(0));
        d[k] = tmp[k].data();
      }
    }
    attention_backward<S>(ptr(e.in[0]), ptr(e.in[1]), ptr(e.in[2]), ptr(e.out), ptr(e.aux), ptr(e.dy), d[0], d[1], d[2],
                          layout_, e.heads, e.kv_heads, e.head_dim);
    for (int k = 0; k < 3; ++k)
      if (e.dx[k].in_memory() && e.acc[k]) {
        S* g = ptr(e.dx[k]);
        for (std::size_t j = 0; j < tmp[k].size(); ++j) g[j] += tmp[k][j];
      }
  }

  std::int64_t T_ = 0;
  token_layout layout_{};
  runtime_config cfg_{};
  std::vector<S> workspace_, aux_tmp_;
  std::vector<S> shared_;  // saved act values of the recompute tier, shared by all saved_states
  int tier_ = 0;
  saved_state* saved_ = nullptr;
  std::array<frozen_param<S>, N> frozen_{};        // by parameter slot
  std::array<lora_param<S>, N> lora_{};            // by parameter slot
  std::array<S*, N> ext_{};                        // by external slot (gradients: resolved by backward)
  std::array<const std::int32_t*, N> ids_{};       // by external slot
  std::array<S*, N> grad_{};                       // the caller's gradient buffers, by node (set_grad)
};

}  // namespace staticgrad::cpu
