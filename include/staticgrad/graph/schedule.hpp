#pragma once
// graph::schedule: the ONE plain-data schedule of a compiled graph, which
// every executor runs (backend/cpu/executor.hpp directly; backend/cuda through
// tools/plan_codegen.cpp, which only prints it as C++ initialisers for nvcc).
//
//   schedule_of<G>.fwd[i]   forward entries in order (one per fused kernel)
//   schedule_of<G>.bwd[j]   backward entries in order; a fused GEMM backward
//                           kernel is one entry per member step (the LoRA step
//                           first: it writes or adds to dX, the linear adds)
//   .steps[e.step0 + m]     the ops of row-group entry e (row_step)
//   .params[p]              dense parameter slots (frozen matrices, vectors,
//                           LoRA adapters), in node order
//   .externals[x]           dense external slots (inputs, outputs, token ids,
//                           the caller's gradient buffers)
//
// Every binding rule lives here, once: where a value, statistic or gradient
// lives (buffer_ref: arena + offset, or an external slot); which external
// buffer an in-place chain shares (its first graph input or output); which
// gradients overwrite and which accumulate (the acc flags); the order of a
// projection's backward; what each kernel needs as a temporary beyond the
// arenas (`tmp_*`: LoRA dZ, an unsaved Z or log-sum-exp, an accumulated
// attention gradient). Executors translate slots to pointers and nothing else.
//
// Row-group operands are one int (buf/scr/par below): buffer argument j of
// the entry, scratch row s (a value produced and consumed inside the group,
// never written to memory), parameter vector p of the entry, or none. Every
// operand of a step has the step's width; row t of a buffer of width W starts
// at element t * W.
//
// The types are plain (ints, enums, bools, fixed-size names), so nvcc can
// compile the generated initialisers; only build_schedule needs compiled<G>.
#include <array>
#include <cstdint>
#include <string_view>

#include "staticgrad/graph/buffer_plan.hpp"
#include "staticgrad/graph/node.hpp"

namespace staticgrad::graph {

// ---- row-group operands --------------------------------------------------------
inline constexpr int no_operand = -1;
inline constexpr int max_buffers = 8;  // buffer arguments per row-group entry (the Qwen block needs <= 5)
inline constexpr int max_params = 4;   // parameter vectors per row-group entry
inline constexpr int max_scratch = 4;  // group-internal values per row-group entry

enum class operand_kind : std::uint8_t { none, buffer, scratch, param };
constexpr int buf(int j) { return j; }
constexpr int scr(int s) { return 64 + s; }
constexpr int par(int p) { return 128 + p; }
constexpr operand_kind kind_of(int o) {
  return o < 0 ? operand_kind::none : o < 64 ? operand_kind::buffer : o < 128 ? operand_kind::scratch : operand_kind::param;
}
constexpr int index_of(int o) { return o < 0 ? -1 : o % 64; }

// One op of a forward row group, or one backward rule of a backward group.
struct row_step {
  op_kind op = op_kind::add;
  int width = 0;            // elements per token of the op's output (= of every operand)
  int in0 = no_operand;     // forward input 0 (backward: the saved forward input 0)
  int in1 = no_operand;     // forward input 1 (or the parameter vector)
  int out = no_operand;     // forward output (backward: unused)
  int aux = no_operand;     // rmsnorm 1/rms: written forward, read backward (f32)
  int attr = 0;             // rope: head dimension
  int dy = no_operand;      // backward: the output gradient read
  int dx0 = no_operand;     // backward: gradient of input 0 (written, or added to when acc0)
  int dx1 = no_operand;     // backward: gradient of input 1
  bool acc0 = false, acc1 = false;
};

// Where a buffer lives. Arena buffers: offset and width in elements per token
// (saved_rank: in units of r); the executor picks the token stride (>= T).
// external: the caller's buffer, slot `ext`. scratch: not in memory.
struct buffer_ref {
  arena where = arena::scratch;
  int offset = 0;
  int width = 0;
  int ext = -1;
  storage store = storage::act;  // act: bf16 on CUDA; stat: f32
  constexpr bool in_memory() const { return where != arena::scratch; }
  constexpr bool same(const buffer_ref& o) const {
    return where == o.where && (where == arena::external ? ext == o.ext : offset == o.offset);
  }
};

enum class external_kind : std::uint8_t { input, output, ids, grad };

struct external_slot {
  name_buf name;             // "x", "y", "input_ids"; gradients "d(x)" (the input's name, else the output's)
  name_buf alias;            // gradients shared by an input and an output: "d(y)" (else empty)
  external_kind kind = external_kind::input;
  int width = 0;             // elements per token
  storage store = storage::act;
};

struct param_slot {
  name_buf name;             // "self_attn.q_proj.weight", "input_layernorm.weight", "self_attn.q_proj" (LoRA)
  op_kind kind = op_kind::frozen_vector;  // frozen_matrix, frozen_vector or lora_adapter
  int rows = 0;              // matrix rows (0: known at run time, the vocabulary); LoRA: out features
  int cols = 0;              // matrix columns / vector width; LoRA: in features
};

// One kernel of a schedule.
struct entry {
  kernel_kind kind = kernel_kind::row_group;
  int kernel = 0;            // the fusion plan's kernel index: "f<kernel>" / "b<kernel>" of explain()
  int node = -1;             // forward node (GEMM, attention, anchor entries): for messages
  // Row groups: steps [step0, step0 + n_steps), their buffer and parameter arguments.
  int group = -1;            // row groups, numbered forward then backward (the CUDA dispatch index)
  int step0 = 0, n_steps = 0, n_scratch = 0, width_max = 0;
  std::array<buffer_ref, max_buffers> buf{};
  std::array<bool, max_buffers> buf_read{}, buf_written{};  // written only: tests poison it
  int n_buf = 0;
  std::array<int, max_params> par{-1, -1, -1, -1};          // parameter slots
  int n_par = 0;
  // GEMM / attention / embedding / LM head entries.
  std::array<buffer_ref, 3> in{};  // X (lora_linear, *_bwd, lm_head_ce); q, k, v (attention)
  buffer_ref out{};                // Y, attention output (backward: the saved forward output), loss
  buffer_ref aux{};                // Z [T, r] / lse [T, heads]; scratch: not saved (use tmp)
  buffer_ref dy{};                 // backward: the output gradient read
  std::array<buffer_ref, 3> dx{};  // backward: input gradients (scratch: not wanted)
  std::array<bool, 3> acc{};       // add to dx[k] instead of overwriting
  int weight = -1;                 // parameter slot of the frozen matrix, or -1
  int adapter = -1;                // parameter slot of the LoRA adapter, or -1
  int ids = -1;                    // external slot of the token ids (embedding: ids; LM head: targets)
  int dim_in = 0, dim_out = 0;
  int heads = 0, kv_heads = 0, head_dim = 0;
  // Temporaries beyond the arenas, elements per token.
  int tmp_rank = 0;                // bf16, units of r: LoRA dZ, an unsaved Z
  int tmp_act = 0;                 // bf16: an accumulated or unwanted attention gradient
  int tmp_stat = 0;                // f32: an unsaved attention log-sum-exp
  // A forward row group in the backward list rebuilds a recompute candidate
  // (recompute.hpp): it runs iff the executor's recompute tier is >= this.
  // 0: an ordinary entry (always runs).
  int recompute = 0;
};

template <int N>
struct schedule {
  std::array<entry, N> fwd{};
  int n_fwd = 0;
  std::array<entry, 2 * N> bwd{};
  int n_bwd = 0;
  std::array<row_step, 2 * N> steps{};
  int n_steps = 0;
  std::array<param_slot, N> params{};
  int n_params = 0;
  std::array<external_slot, N> externals{};
  int n_externals = 0;
  int n_groups = 0;
  // Arena widths (elements per token; saved_rank in units of r) and the
  // widest temporaries of any entry (the executor allocates one of each).
  int workspace_width = 0, saved_act_width = 0, saved_stat_width = 0, saved_rank_width = 0;
  int tmp_rank_width = 0, tmp_act_width = 0, tmp_stat_width = 0;
  // Recompute tiers: with tier k (0 .. n_recompute), a layer keeps saved act
  // elements [0, keep_act_width[k]) per token; [keep_act_width[k],
  // saved_act_width) is one region shared by all layers (see recompute.hpp).
  int n_recompute = 0;
  std::array<int, max_recompute + 1> keep_act_width{};
  std::array<name_buf, max_recompute> recompute_names{};  // the value of tier k + 1 ("m")
  // Lookups, by node or gradient value (-1: none).
  std::array<int, N> param_of{};        // leaf node -> parameter slot
  std::array<int, N> external_of{};     // value node -> external slot (inputs, outputs, ids, and their chains)
  std::array<int, N> grad_external_of{};  // gradient value -> external slot

  constexpr int find_param(std::string_view name) const {
    for (int p = 0; p < n_params; ++p)
      if (params[p].name == name) return p;
    return -1;
  }
  constexpr int find_external(std::string_view name) const {
    for (int x = 0; x < n_externals; ++x)
      if (externals[x].name == name || (externals[x].alias.len && externals[x].alias == name)) return x;
    return -1;
  }
};

namespace detail {

template <class C>
constexpr int external_slot_of_chain(const schedule<C::capacity>& s, int v) {
  return s.external_of[C::buffers.value[v].owner >= 0 ? C::buffers.value[v].owner : v];
}

template <class C>
constexpr buffer_ref value_ref(const schedule<C::capacity>& s, int v) {
  const auto& sl = C::buffers.value[v];
  const auto& n = C::table.nodes[v];
  buffer_ref b{.where = sl.where, .offset = sl.offset, .width = n.width, .store = n.store};
  if (sl.where == arena::external) {
    b.offset = 0;
    b.ext = external_slot_of_chain<C>(s, v);
    if (b.ext < 0) throw "staticgrad: an external value has no graph input or output in its chain (internal error)";
  }
  return b;
}

template <class C>
constexpr buffer_ref aux_ref(int v) {
  const auto& sl = C::buffers.aux[v];
  const auto& n = C::table.nodes[v];
  if (sl.where == arena::external) throw "staticgrad: an auxiliary output lives in an external buffer (internal error)";
  return {.where = sl.where, .offset = sl.offset, .width = n.aux_width, .store = n.aux_store};
}

template <class C>
constexpr buffer_ref grad_ref(const schedule<C::capacity>& s, int g) {
  if (g < 0) return {};
  const auto& sl = C::buffers.grad[g];
  const auto& owner = C::table.nodes[C::backward.grad_owner[g]];
  buffer_ref b{.where = sl.where, .offset = sl.offset, .width = sl.width, .store = owner.store};
  if (sl.where == arena::external) {
    b.offset = 0;
    b.ext = s.grad_external_of[g];
  }
  return b;
}

// A row-group entry's buffer argument for b (deduplicated: in-place chains
// and a gradient read then written are one argument).
constexpr int use_buffer(entry& e, const buffer_ref& b, bool read, bool write) {
  if (!b.in_memory()) throw "staticgrad: a row group reads a value that has no slot (internal error)";
  for (int j = 0; j < e.n_buf; ++j)
    if (e.buf[j].same(b)) {
      if (e.buf[j].width != b.width) throw "staticgrad: one buffer argument is used with two widths";
      e.buf_read[j] = e.buf_read[j] || (read && !e.buf_written[j]);  // a later read of what this kernel wrote needs no input
      e.buf_written[j] = e.buf_written[j] || write;
      return buf(j);
    }
  if (e.n_buf >= max_buffers) throw "staticgrad: a row group needs more than max_buffers buffer arguments";
  e.buf[e.n_buf] = b;
  e.buf_read[e.n_buf] = read;
  e.buf_written[e.n_buf] = write;
  return buf(e.n_buf++);
}
constexpr int use_param(entry& e, int slot) {
  for (int p = 0; p < e.n_par; ++p)
    if (e.par[p] == slot) return par(p);
  if (e.n_par >= max_params) throw "staticgrad: a row group needs more than max_params parameter vectors";
  e.par[e.n_par] = slot;
  return par(e.n_par++);
}

template <int N>
constexpr name_buf grad_slot_name(std::string_view v) {
  name_buf n("d(");
  n.append(v).append(")");
  return n;
}

template <class C>
constexpr void add_slots(schedule<C::capacity>& s) {
  const auto& t = C::table;
  const auto& b = C::backward;
  for (int v = 0; v < C::capacity; ++v) s.param_of[v] = s.external_of[v] = s.grad_external_of[v] = -1;
  for (int v = 0; v < t.count; ++v) {
    const auto& n = t.nodes[v];
    if (n.kind == op_kind::frozen_matrix || n.kind == op_kind::frozen_vector || n.kind == op_kind::lora_adapter) {
      s.param_of[v] = s.n_params;
      s.params[s.n_params++] = {.name = n.param.len ? n.param : n.name, .kind = n.kind,
                                .rows = n.kind == op_kind::frozen_vector ? 1 : n.width, .cols = n.kind == op_kind::frozen_vector ? n.width : n.cols};
    }
  }
  // Values: one slot per external class (an in-place chain), named after its first input or output.
  for (int v = 0; v < t.count; ++v) {
    const auto& n = t.nodes[v];
    if (n.kind == op_kind::token_ids) {
      s.external_of[v] = s.n_externals;
      s.externals[s.n_externals++] = {.name = n.name, .kind = external_kind::ids, .width = 1, .store = storage::ids};
      continue;
    }
    if (n.kind != op_kind::input && !n.output) continue;
    const int owner = C::buffers.value[v].owner >= 0 ? C::buffers.value[v].owner : v;
    if (s.external_of[owner] >= 0) {
      s.external_of[v] = s.external_of[owner];
      continue;
    }
    s.external_of[owner] = s.external_of[v] = s.n_externals;
    s.externals[s.n_externals++] = {.name = n.name, .kind = n.kind == op_kind::input ? external_kind::input : external_kind::output,
                                    .width = n.width, .store = n.store};
  }
  // Gradients: one slot per external gradient value (an input's d(x) aliased to an output's d(y) is one).
  for (int g = 0; g < b.n_grads; ++g) {
    if (!b.grad_external[g]) continue;
    int in = -1, outv = -1;
    for (int v = 0; v < t.count; ++v)
      if (b.grad_of[v] == g) {
        if (t.nodes[v].kind == op_kind::input && in < 0) in = v;
        if (t.nodes[v].output && outv < 0) outv = v;
      }
    const int named = in >= 0 ? in : outv;
    if (named < 0) throw "staticgrad: an external gradient belongs to no graph input or output (internal error)";
    external_slot x{.name = grad_slot_name<C::capacity>(t.nodes[named].name.view()), .kind = external_kind::grad,
                    .width = t.nodes[named].width, .store = t.nodes[b.grad_owner[g]].store};
    if (in >= 0 && outv >= 0) x.alias = grad_slot_name<C::capacity>(t.nodes[outv].name.view());
    s.grad_external_of[g] = s.n_externals;
    s.externals[s.n_externals++] = x;
  }
}

template <class C>
constexpr entry row_group_fwd(schedule<C::capacity>& s, const kernel_desc& kd) {
  const auto& t = C::table;
  entry e{.kind = kernel_kind::row_group};
  std::array<int, C::capacity> scratch_of{};
  for (auto& x : scratch_of) x = -1;
  e.step0 = s.n_steps;
  for (int m = 0; m < kd.n; ++m) {
    const int v = kd.members[m];
    const auto& n = t.nodes[v];
    if (n.n_in > 2) throw "staticgrad: a row op with more than two inputs";
    row_step st{.op = n.kind, .width = n.width, .attr = n.kind == op_kind::rope ? n.attr[0] : 0};
    int in[2] = {no_operand, no_operand};
    for (int q = 0; q < n.n_in; ++q) {
      const int x = n.in[q];
      if (t.nodes[x].width != n.width) throw "staticgrad: a row op's operand width differs from its output width";
      if (t.nodes[x].kind == op_kind::frozen_vector) in[q] = use_param(e, s.param_of[x]);
      else if (scratch_of[x] >= 0) in[q] = scr(scratch_of[x]);
      else in[q] = use_buffer(e, value_ref<C>(s, x), true, false);
    }
    st.in0 = in[0], st.in1 = in[1];
    if (C::fusion.materialized[v]) st.out = use_buffer(e, value_ref<C>(s, v), false, true);
    else {
      if (e.n_scratch >= max_scratch) throw "staticgrad: a row group has more than max_scratch internal values";
      scratch_of[v] = e.n_scratch++;
      st.out = scr(scratch_of[v]);
    }
    if (n.aux_width && C::backward.saved_aux[v]) st.aux = use_buffer(e, aux_ref<C>(v), false, true);
    e.width_max = e.width_max > n.width ? e.width_max : n.width;
    s.steps[s.n_steps++] = st;
  }
  e.n_steps = s.n_steps - e.step0;
  return e;
}

template <class C>
constexpr entry row_group_bwd(schedule<C::capacity>& s, const kernel_desc& kd) {
  const auto& t = C::table;
  const auto& b = C::backward;
  entry e{.kind = kernel_kind::row_group_bwd};
  e.step0 = s.n_steps;
  for (int m = 0; m < kd.n; ++m) {
    const auto& bs = b.steps[kd.members[m]];
    const int v = bs.fwd;
    const auto& n = t.nodes[v];
    if (traits_of(n.kind).saves.out) throw "staticgrad: a backward row op reads its saved output (no operand for it yet)";
    row_step st{.op = n.kind, .width = n.width, .attr = n.kind == op_kind::rope ? n.attr[0] : 0};
    st.dy = use_buffer(e, grad_ref<C>(s, bs.dy), true, false);
    int in[2] = {no_operand, no_operand}, dx[2] = {no_operand, no_operand};
    bool acc[2] = {false, false};
    for (int q = 0; q < n.n_in && q < 2; ++q) {
      const int x = n.in[q];
      const auto& xn = t.nodes[x];
      if (xn.kind == op_kind::frozen_vector) in[q] = use_param(e, s.param_of[x]);
      else if (xn.kind == op_kind::input || b.saved[x]) in[q] = use_buffer(e, value_ref<C>(s, x), true, false);
      if (bs.dx[q] >= 0) {
        acc[q] = bs.acc[q];
        dx[q] = use_buffer(e, grad_ref<C>(s, bs.dx[q]), acc[q], true);
      }
    }
    st.in0 = in[0], st.in1 = in[1], st.dx0 = dx[0], st.dx1 = dx[1], st.acc0 = acc[0], st.acc1 = acc[1];
    if (b.saved_aux[v]) st.aux = use_buffer(e, aux_ref<C>(v), true, false);
    e.width_max = e.width_max > n.width ? e.width_max : n.width;
    s.steps[s.n_steps++] = st;
  }
  e.n_steps = s.n_steps - e.step0;
  return e;
}

constexpr int imax(int a, int b) { return a > b ? a : b; }

constexpr bool references(const entry& e, const buffer_ref& b) {
  for (int j = 0; j < e.n_buf; ++j)
    if (e.buf[j].same(b) && e.buf[j].in_memory()) return true;
  for (const auto& x : {e.in[0], e.in[1], e.in[2], e.out, e.aux, e.dy})
    if (x.in_memory() && x.same(b)) return true;
  return false;
}

// For each recompute candidate (tier i + 1), a one-op forward row group in the
// backward list, just before the first backward entry that reads the value.
template <class C>
constexpr void add_recompute_entries(schedule<C::capacity>& s) {
  const auto& rc = C::recompute;
  s.n_recompute = rc.n;
  for (int k = 0; k <= rc.n; ++k) s.keep_act_width[k] = C::buffers.keep_act_width[k];
  for (int i = 0; i < rc.n; ++i) {
    const int v = rc.c[i].value;
    kernel_desc kd{.kind = kernel_kind::row_group};
    kd.push(v);
    entry e = row_group_fwd<C>(s, kd);
    e.kernel = C::fusion.fwd_kernel_of[v];
    e.group = s.n_groups++;
    e.recompute = i + 1;
    e.node = v;
    s.recompute_names[i] = C::table.nodes[v].name;
    const buffer_ref vr = value_ref<C>(s, v);
    int at = 0;
    while (at < s.n_bwd && !references(s.bwd[at], vr)) ++at;
    if (at == s.n_bwd) throw "staticgrad: a recompute candidate that no backward entry reads (internal error)";
    if (s.n_bwd >= 2 * C::capacity) throw "staticgrad: the backward schedule is full (internal error)";
    for (int j = s.n_bwd; j > at; --j) s.bwd[j] = s.bwd[j - 1];
    s.bwd[at] = e;
    ++s.n_bwd;
  }
}

template <class C>
constexpr schedule<C::capacity> build_schedule() {
  const auto& t = C::table;
  const auto& f = C::fusion;
  const auto& b = C::backward;
  schedule<C::capacity> s{};
  add_slots<C>(s);
  auto param = [&](int v, int k) { return s.param_of[t.nodes[v].in[k]]; };
  for (int k = 0; k < f.n_fwd; ++k) {
    const auto& kd = f.fwd[k];
    entry e{};
    switch (kd.kind) {
      case kernel_kind::row_group: e = row_group_fwd<C>(s, kd); break;
      case kernel_kind::lora_linear:
      case kernel_kind::linear:
      case kernel_kind::lora: {
        const bool both = kd.kind == kernel_kind::lora_linear;
        const int lin = kd.kind == kernel_kind::lora ? -1 : kd.members[0];
        const int lo = both ? kd.members[1] : kd.kind == kernel_kind::lora ? kd.members[0] : -1;
        const int out = both ? kd.members[2] : kd.members[0];
        const int x = t.nodes[lin >= 0 ? lin : lo].in[0];
        e.kind = kd.kind;
        e.node = out;
        e.in[0] = value_ref<C>(s, x);
        e.out = value_ref<C>(s, out);
        if (lin >= 0) e.weight = param(lin, 1);
        if (lo >= 0) {
          e.adapter = param(lo, 1);
          e.aux = aux_ref<C>(lo);
          if (!e.aux.in_memory()) e.tmp_rank = 1;
        }
        e.dim_in = t.nodes[x].width;
        e.dim_out = t.nodes[out].width;
        break;
      }
      case kernel_kind::attention: {
        const int v = kd.members[0];
        const auto& n = t.nodes[v];
        e.kind = kd.kind;
        e.node = v;
        for (int q = 0; q < 3; ++q) e.in[q] = value_ref<C>(s, n.in[q]);
        e.out = value_ref<C>(s, v);
        e.aux = aux_ref<C>(v);
        if (!e.aux.in_memory()) e.tmp_stat = n.attr[0];
        e.heads = n.attr[0], e.kv_heads = n.attr[1], e.head_dim = n.attr[2];
        break;
      }
      case kernel_kind::embedding: {
        const int v = kd.members[0];
        e.kind = kd.kind;
        e.node = v;
        e.ids = s.external_of[t.nodes[v].in[0]];
        e.weight = param(v, 1);
        e.out = value_ref<C>(s, v);
        e.dim_out = t.nodes[v].width;
        break;
      }
      case kernel_kind::lm_head_ce: {
        const int v = kd.members[0];
        const auto& n = t.nodes[v];
        e.kind = kd.kind;
        e.node = v;
        e.in[0] = value_ref<C>(s, n.in[0]);
        e.weight = param(v, 1);
        e.ids = s.external_of[n.in[2]];
        e.out = value_ref<C>(s, v);
        e.dim_in = t.nodes[n.in[0]].width;
        break;
      }
      default: throw "staticgrad: a forward kernel kind the schedule does not know (internal error)";
    }
    e.kernel = k;
    if (e.kind == kernel_kind::row_group) e.group = s.n_groups++;
    s.fwd[s.n_fwd++] = e;
  }
  for (int k = 0; k < f.n_bwd; ++k) {
    const auto& kd = f.bwd[k];
    switch (kd.kind) {
      case kernel_kind::row_group_bwd: {
        entry e = row_group_bwd<C>(s, kd);
        e.kernel = k;
        e.group = s.n_groups++;
        s.bwd[s.n_bwd++] = e;
        break;
      }
      case kernel_kind::lora_linear_bwd:
      case kernel_kind::linear_bwd:
      case kernel_kind::lora_bwd:
        for (int m = 0; m < kd.n; ++m) {
          const auto& bs = b.steps[kd.members[m]];
          const int v = bs.fwd;
          const auto& n = t.nodes[v];
          const bool lin = n.kind == op_kind::linear;
          if (!lin && n.kind != op_kind::lora) throw "staticgrad: a GEMM backward kernel holds a step that is neither linear nor lora";
          entry e{.kind = lin ? kernel_kind::linear_bwd : kernel_kind::lora_bwd, .kernel = k, .node = v};
          e.in[0] = value_ref<C>(s, n.in[0]);
          e.dy = grad_ref<C>(s, bs.dy);
          e.dx[0] = grad_ref<C>(s, bs.dx[0]);
          e.acc[0] = bs.acc[0];
          if (lin) e.weight = param(v, 1);
          else {
            e.adapter = param(v, 1);
            e.aux = aux_ref<C>(v);
            if (!e.aux.in_memory()) throw "staticgrad: LoRA backward needs its saved Z (internal error)";
            e.tmp_rank = 1;  // dZ
          }
          e.dim_in = t.nodes[n.in[0]].width;
          e.dim_out = n.width;
          s.bwd[s.n_bwd++] = e;
        }
        break;
      case kernel_kind::attention_bwd: {
        const auto& bs = b.steps[kd.members[0]];
        const int v = bs.fwd;
        const auto& n = t.nodes[v];
        entry e{.kind = kd.kind, .kernel = k, .node = v};
        for (int q = 0; q < 3; ++q) {
          e.in[q] = value_ref<C>(s, n.in[q]);
          e.dx[q] = grad_ref<C>(s, bs.dx[q]);
          e.acc[q] = bs.acc[q];
          // Attention backward overwrites: an accumulated or unwanted gradient goes through a temporary.
          if (!e.dx[q].in_memory() || e.acc[q]) e.tmp_act = imax(e.tmp_act, t.nodes[n.in[q]].width);
        }
        e.out = value_ref<C>(s, v);
        e.aux = aux_ref<C>(v);
        e.dy = grad_ref<C>(s, bs.dy);
        e.heads = n.attr[0], e.kv_heads = n.attr[1], e.head_dim = n.attr[2];
        s.bwd[s.n_bwd++] = e;
        break;
      }
      case kernel_kind::lm_head_ce_bwd: {
        const auto& bs = b.steps[kd.members[0]];
        const int v = bs.fwd;
        const auto& n = t.nodes[v];
        entry e{.kind = kd.kind, .kernel = k, .node = v};
        e.in[0] = value_ref<C>(s, n.in[0]);
        e.weight = param(v, 1);
        e.ids = s.external_of[n.in[2]];
        e.dy = grad_ref<C>(s, bs.dy);
        e.dx[0] = grad_ref<C>(s, bs.dx[0]);
        e.acc[0] = bs.acc[0];
        e.dim_in = t.nodes[n.in[0]].width;
        s.bwd[s.n_bwd++] = e;
        break;
      }
      default: throw "staticgrad: a backward kernel kind the schedule does not know (internal error)";
    }
  }
  add_recompute_entries<C>(s);
  s.workspace_width = C::buffers.workspace_width;
  s.saved_act_width = C::buffers.saved_act_width;
  s.saved_stat_width = C::buffers.saved_stat_width;
  s.saved_rank_width = C::buffers.saved_rank_width;
  for (int i = 0; i < s.n_fwd; ++i) {
    s.tmp_rank_width = imax(s.tmp_rank_width, s.fwd[i].tmp_rank);
    s.tmp_act_width = imax(s.tmp_act_width, s.fwd[i].tmp_act);
    s.tmp_stat_width = imax(s.tmp_stat_width, s.fwd[i].tmp_stat);
  }
  for (int i = 0; i < s.n_bwd; ++i) {
    s.tmp_rank_width = imax(s.tmp_rank_width, s.bwd[i].tmp_rank);
    s.tmp_act_width = imax(s.tmp_act_width, s.bwd[i].tmp_act);
    s.tmp_stat_width = imax(s.tmp_stat_width, s.bwd[i].tmp_stat);
  }
  return s;
}

}  // namespace detail

template <class G> struct compiled;  // graph/plan.hpp

// The schedule of compiled plan C / of graph G, evaluated once at compile time
// by the host compiler (nvcc never instantiates these: it sees the printed copy).
template <class C>
inline constexpr schedule<C::capacity> schedule_of_compiled = detail::build_schedule<C>();
template <class G>
inline constexpr const auto& schedule_of = schedule_of_compiled<compiled<G>>;

}  // namespace staticgrad::graph
