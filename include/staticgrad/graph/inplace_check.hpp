#pragma once
// The in-place rule, checked when the graph is compiled.
//
// An in-place op (add_, bias_add_, rope_, silu_) writes its output over its
// first input. That is only correct if nothing needs the old value afterwards:
//   1. no later forward op reads it,
//   2. no backward step saves it,
//   3. it is not a parameter,
//   4. it is not a graph output.
// A violation is reported by instantiating a type whose name reads as the
// diagnosis, e.g.
//   in_place_op<"silu_ (act)">::overwrites<"gate">::saved_for_backward_of<"silu_ (act)">
// and whose static_assert message says what to do about it. (C++20 cannot put
// computed text in a static_assert message; the compiler prints the type with
// the names right above it.)
#include "staticgrad/core/fixed_string.hpp"
#include "staticgrad/graph/autodiff.hpp"

namespace staticgrad::graph {

enum class in_place_problem : int { none, read_later, saved_for_backward, parameter, graph_output };

struct in_place_violation {
  in_place_problem problem = in_place_problem::none;
  int op = -1;      // the in-place node
  int value = -1;   // the value it overwrites
  int needer = -1;  // the node that still needs the value (-1 for parameter / output)
};

template <int N>
constexpr in_place_violation find_in_place_violation(const node_table<N>& t, const backward_graph<N>& b) {
  for (int n = 0; n < t.count; ++n) {
    if (!t.nodes[n].inplace) continue;
    const int v = t.nodes[n].in[0];
    const op_kind vk = t.nodes[v].kind;
    if (vk == op_kind::frozen_matrix || vk == op_kind::frozen_vector || vk == op_kind::lora_adapter ||
        vk == op_kind::token_ids)
      return {in_place_problem::parameter, n, v, -1};
    if (t.nodes[v].output) return {in_place_problem::graph_output, n, v, -1};
    for (int r = 0; r < t.count; ++r) {
      if (r == n) continue;
      for (int k = 0; k < t.nodes[r].n_in; ++k)
        if (t.nodes[r].in[k] == v && r > n) return {in_place_problem::read_later, n, v, r};
    }
    // Reads by op n itself through a second operand (add_<x, x>) are fine:
    // a row is read before it is written.
    if (b.saved[v]) {
      // Name the op whose backward needs v, preferring one other than n itself
      // (silu_ saves its own input, but the reader elsewhere is the news).
      int needer = b.saved_by[v];
      for (int i = 0; i < b.n_steps; ++i) {
        const int r = b.steps[i].fwd;
        if (r == n) continue;
        const auto tr = traits_of(t.nodes[r].kind);
        bool reads = r == v && tr.saves.out;
        for (int k = 0; k < t.nodes[r].n_in; ++k) reads = reads || (t.nodes[r].in[k] == v && tr.saves.in[k]);
        if (reads) needer = r;
      }
      return {in_place_problem::saved_for_backward, n, v, needer};
    }
  }
  return {};
}

// "<op> (<value name>)", e.g. "rope_ (q)": how messages and explain name a node.
template <int N>
constexpr name_buf node_label(const node_table<N>& t, int i) {
  const auto& n = t.nodes[i];
  name_buf s(traits_of(n.kind).name);
  if (n.inplace) s.append("_");
  s.append(" (").append(n.name.view()).append(")");
  return s;
}

template <const name_buf& B>
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
      static_assert(always_false<still_read_by_later_forward_op>,
                    "staticgrad in-place error: the in-place op named above overwrites a value that a later "
                    "forward op still reads; use the out-of-place op (add, rope, silu, bias_add) or read the "
                    "value before it is overwritten");
    };
    template <fixed_string BackwardOf>
    struct saved_for_backward_of {
      static_assert(always_false<saved_for_backward_of>,
                    "staticgrad in-place error: the in-place op named above overwrites a value that the backward "
                    "pass needs (it is saved for the backward of the op named above); use the out-of-place op so "
                    "the saved value survives until backward");
    };
    struct which_is_a_parameter {
      static_assert(always_false<which_is_a_parameter>,
                    "staticgrad in-place error: the in-place op named above writes over a parameter (a frozen "
                    "weight, a bias, a norm weight or a LoRA adapter); parameters are read-only in the graph");
    };
    struct which_is_a_graph_output {
      static_assert(always_false<which_is_a_graph_output>,
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

// Instantiating report_in_place<...>::ok fires the matching diagnostic.
template <const auto& Table, in_place_violation V>
struct report_in_place {
  static constexpr bool check() {
    if constexpr (V.problem == in_place_problem::none) {
      return true;
    } else {
      using ov = typename in_place_op<label_of<Table, V.op>::value>::template overwrites<name_of<Table, V.value>::value>;
      if constexpr (V.problem == in_place_problem::read_later)
        return sizeof(typename ov::template still_read_by_later_forward_op<label_of<Table, V.needer>::value>) > 0;
      else if constexpr (V.problem == in_place_problem::saved_for_backward)
        return sizeof(typename ov::template saved_for_backward_of<label_of<Table, V.needer>::value>) > 0;
      else if constexpr (V.problem == in_place_problem::parameter)
        return sizeof(typename ov::which_is_a_parameter) > 0;
      else
        return sizeof(typename ov::which_is_a_graph_output) > 0;
    }
  }
  static constexpr bool ok = check();
};

}  // namespace staticgrad::graph
