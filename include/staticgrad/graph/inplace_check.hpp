#pragma once
// The in-place rule, checked whenever a graph's plan is used.
//
// An in-place op (add_, bias_add_, rope_, silu_) writes its output over its
// first operand's buffer. That is only correct if nothing needs the old value
// afterwards, so the first operand of an in-place op must not be
//   1. a parameter or token ids: frozen<> / frozen_rows<> weights, vec<>
//      (biases, norm weights), lora_params<> adapters, token_ids<>; they are
//      the caller's read-only tensors;
//   2. a graph input (in<>): the caller's tensor, bound read-only
//      (cpu::program::set_input takes `const S*`), and kept by the caller
//      (for the model, the residual stream of the layer);
//   3. a graph output (out<>): the caller reads it after the graph has run;
//   4. read by a later forward op;
//   5. needed by backward: read by a backward step that the graph's backward
//      actually runs, for a gradient it actually computes (autodiff.hpp;
//      each op's reads per input gradient are in its op_traits).
// Reads by the in-place op itself through a second operand (add_<x, x>) are
// fine: each row is read before it is written.
//
// compiled<G> (plan.hpp) checks the rule in its class body, so that every use
// of a plan (any member of compiled<G>, explain, cpu::program, the CUDA plan
// generator, the byte figures, the models) rejects a violation at compile
// time. It is reported by instantiating a type whose name reads as the
// diagnosis, e.g.
//   in_place_op<"silu_ (g2)">::overwrites<"gate">::saved_for_backward_of<"swiglu (m)">
// whose static_assert message says what to do about it. (C++20 cannot put
// computed text in a static_assert message; the compiler prints the type with
// the names right above it.)
#include <type_traits>

#include "staticgrad/core/fixed_string.hpp"
#include "staticgrad/graph/autodiff.hpp"

namespace staticgrad::graph {

enum class in_place_problem : int { none, read_later, saved_for_backward, parameter, graph_input, graph_output };

struct in_place_violation {
  in_place_problem problem = in_place_problem::none;
  int op = -1;      // the in-place node
  int value = -1;   // the value it overwrites
  int needer = -1;  // the node that still needs the value (-1 for parameter / input / output)
};

// Whether backward step i reads forward value v.
template <int N>
constexpr bool step_reads(const node_table<N>& t, const bwd_step& s, int v) {
  if (s.fwd == v && s.reads.out) return true;
  for (int k = 0; k < t.nodes[s.fwd].n_in; ++k)
    if (t.nodes[s.fwd].in[k] == v && s.reads.in[k]) return true;
  return false;
}

template <int N>
constexpr in_place_violation find_in_place_violation(const node_table<N>& t, const backward_graph<N>& b) {
  if (t.failed()) return {};  // a malformed graph is reported first (graph_errors.hpp)
  for (int n = 0; n < t.count; ++n) {
    if (!t.nodes[n].inplace) continue;
    const int v = t.nodes[n].in[0];
    const op_kind vk = t.nodes[v].kind;
    if (detail::is_param(vk)) return {in_place_problem::parameter, n, v, -1};
    if (vk == op_kind::input) return {in_place_problem::graph_input, n, v, -1};
    if (t.nodes[v].output) return {in_place_problem::graph_output, n, v, -1};
    for (int r = n + 1; r < t.count; ++r)
      for (int k = 0; k < t.nodes[r].n_in; ++k)
        if (t.nodes[r].in[k] == v) return {in_place_problem::read_later, n, v, r};
    if (b.saved[v]) {
      // Name the op whose backward reads v, preferring one other than n itself
      // (silu_ saves its own input, but the reader elsewhere is the news).
      int needer = b.saved_by[v];
      for (int i = 0; i < b.n_steps; ++i)
        if (b.steps[i].fwd != n && step_reads(t, b.steps[i], v)) needer = b.steps[i].fwd;
      return {in_place_problem::saved_for_backward, n, v, needer};
    }
  }
  return {};
}

// "<op> (<value name>)", e.g. "rope_ (q)": how messages and explain name a node.
template <int N>
constexpr name_buf node_label(const node_table<N>& t, int i) {
  const auto& n = t.nodes[i];
  name_buf op(traits_of(n.kind).name);
  if (n.inplace) op.append("_");
  return op_label(op.view(), n.name.view());
}

// A stored text (name_buf, name_list) as a fixed_string template argument.
template <auto B>
constexpr auto to_fixed_string() {
  fixed_string<static_cast<std::size_t>(B.len) + 1> f{};
  for (int i = 0; i < B.len; ++i) f.value[i] = B.data[i];
  return f;
}

// ---- the diagnostic types ----------------------------------------------------
template <fixed_string InPlaceOp>
struct in_place_op {
  template <fixed_string Value>
  struct overwrites {
    template <fixed_string LaterReader>
    struct still_read_by_later_forward_op {
      static constexpr bool reported_above = never<LaterReader>;
      static_assert(reported_above,
                    "staticgrad in-place error: the in-place op named above overwrites a value that a later "
                    "forward op still reads; use the out-of-place op (add, rope, silu, bias_add) or read the "
                    "value before it is overwritten");
    };
    template <fixed_string BackwardOf>
    struct saved_for_backward_of {
      static constexpr bool reported_above = never<BackwardOf>;
      static_assert(reported_above,
                    "staticgrad in-place error: the in-place op named above overwrites a value that the backward "
                    "pass needs (the backward of the op named above reads it for a gradient the graph computes); "
                    "use the out-of-place op so the saved value survives until backward");
    };
    struct which_is_a_parameter {
      static constexpr bool reported_above = never<Value>;
      static_assert(reported_above,
                    "staticgrad in-place error: the in-place op named above writes over a parameter or token ids "
                    "(frozen<>, frozen_rows<>, vec<>, lora_params<> or token_ids<>); they are read-only in the graph");
    };
    struct which_is_a_graph_input {
      static constexpr bool reported_above = never<Value>;
      static_assert(reported_above,
                    "staticgrad in-place error: the in-place op named above writes over a graph input (in<>), "
                    "which is the caller's read-only tensor; use the out-of-place op (add, rope, silu, bias_add), "
                    "whose result gets its own buffer");
    };
    struct which_is_a_graph_output {
      static constexpr bool reported_above = never<Value>;
      static_assert(reported_above,
                    "staticgrad in-place error: the in-place op named above writes over a graph output (out<>), "
                    "which the caller reads after the graph has run");
    };
  };
};

template <const auto& Table, int Node>
struct label_of {
  static constexpr name_buf buf = node_label(Table, Node);
  static constexpr auto value = to_fixed_string<buf>();
};
template <const auto& Table, int Node>
struct name_of {
  static constexpr name_buf buf = Table.nodes[Node].name;
  static constexpr auto value = to_fixed_string<buf>();
};

struct no_in_place_error {};

// The diagnostic type of violation V (no_in_place_error when there is none).
// Only naming the type's size instantiates it, which fires its static_assert.
template <const auto& Table, in_place_violation V>
consteval auto in_place_error_type() {
  using P = in_place_problem;
  if constexpr (V.problem == P::none) {
    return std::type_identity<no_in_place_error>{};
  } else {
    using ov = typename in_place_op<label_of<Table, V.op>::value>::template overwrites<name_of<Table, V.value>::value>;
    if constexpr (V.problem == P::read_later)
      return std::type_identity<typename ov::template still_read_by_later_forward_op<label_of<Table, V.needer>::value>>{};
    else if constexpr (V.problem == P::saved_for_backward)
      return std::type_identity<typename ov::template saved_for_backward_of<label_of<Table, V.needer>::value>>{};
    else if constexpr (V.problem == P::parameter)
      return std::type_identity<typename ov::which_is_a_parameter>{};
    else if constexpr (V.problem == P::graph_input)
      return std::type_identity<typename ov::which_is_a_graph_input>{};
    else
      return std::type_identity<typename ov::which_is_a_graph_output>{};
  }
}
template <const auto& Table, in_place_violation V>
using in_place_error_t = typename decltype(in_place_error_type<Table, V>())::type;

}  // namespace staticgrad::graph
