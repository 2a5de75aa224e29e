#pragma once
// The leaves and the binding forms of the DSL:
//
//   in<"x", W>                 per-token activation input, [T, W]
//   token_ids<"input_ids">     per-token int32 ids, [T]
//   frozen<"q_proj", Out, In>  frozen weight [Out, In] (PyTorch layout)
//   frozen_rows<"lm_head", In> frozen weight [rows, In] with runtime rows (vocab)
//   vec<"norm", W>             frozen vector [W] (norm weight, bias)
//   lora_params<"q_proj", Out, In>  trainable LoRA pair A [r, In], B [Out, r]
//   ref<"h1">                  the value bound by let<"h1", ...>
//   let<"h1", Expr>            binds a name to an expression
//   out<"y", Expr>             binds a name and marks it a graph output
//   graph<Lets...>             the computation
//
// Ops (ops/*.hpp) nest: rope<linear<ref<"h1">, frozen<...>>, 128>. Lowering
// (`lower<G>()`) flattens the nesting into a node_table (node.hpp).
#include <string_view>

#include "staticgrad/core/fixed_string.hpp"
#include "staticgrad/graph/node.hpp"

namespace staticgrad::graph {

// Lowers a child expression: op nodes get a name scoped by the enclosing
// let ("q.linear" under let<"q", ...>), leaves and refs their own.
template <class C, int N>
constexpr int lower_child(node_table<N>& t, std::string_view parent) {
  if constexpr (requires { C::is_leaf; }) {
    return C::lower(t, name_buf{});
  } else {
    const auto dot = parent.find('.');
    return C::lower(t, scoped_name(t, dot == std::string_view::npos ? parent : parent.substr(0, dot), C::op_name));
  }
}

// How a leaf reads in a message: "in [8]", "frozen [16, 8]", "vec [8]".
constexpr name_buf leaf_text(const node_desc& d) {
  name_buf s;
  switch (d.kind) {
    case op_kind::input: return s.append("in [").append_int(d.width).append("]");
    case op_kind::token_ids: return s.append("token_ids");
    case op_kind::frozen_matrix:
      if (d.width == 0) return s.append("frozen_rows [rows, ").append_int(d.cols).append("]");
      return s.append("frozen [").append_int(d.width).append(", ").append_int(d.cols).append("]");
    case op_kind::frozen_vector: return s.append("vec [").append_int(d.width).append("]");
    case op_kind::lora_adapter:
      return s.append("lora_params [").append_int(d.width).append(", ").append_int(d.cols).append("]");
    default: return s.append("op");
  }
}

// Adds a leaf once: a leaf used twice is the same value.
template <int N>
constexpr int add_leaf(node_table<N>& t, const node_desc& d) {
  if (t.failed()) return 0;
  const int i = t.find(d.name.view());
  if (i >= 0) {
    if (t.nodes[i].kind != d.kind || t.nodes[i].width != d.width || t.nodes[i].cols != d.cols)
      return t.fail({.kind = graph_error_kind::leaf_redefined, .a = d.name, .found = leaf_text(d),
                     .expected = leaf_text(t.nodes[i])});
    return i;
  }
  return t.add(d);
}

// Names are stored in fixed buffers (node.hpp): a leaf's name must fit, and a
// binding's name must leave room for the scoped names of its nested ops
// ("<binding>.<op>#<k>").
inline constexpr std::size_t max_leaf_name = max_name - 1, max_binding_name = 32;

template <fixed_string Name, int Width>
struct in {
  static_assert(Name.size() <= max_leaf_name, "staticgrad: a leaf name is longer than 63 characters");
  static_assert(Width > 0, "in<Name, Width>: the per-token width must be positive");
  static constexpr bool is_leaf = true;
  static constexpr std::string_view op_name = "input";
  template <int N>
  static constexpr int lower(node_table<N>& t, name_buf) {
    return add_leaf(t, {.kind = op_kind::input, .name = Name.view(), .width = Width});
  }
};

template <fixed_string Name>
struct token_ids {
  static_assert(Name.size() <= max_leaf_name, "staticgrad: a leaf name is longer than 63 characters");
  static constexpr bool is_leaf = true;
  static constexpr std::string_view op_name = "token_ids";
  template <int N>
  static constexpr int lower(node_table<N>& t, name_buf) {
    return add_leaf(t, {.kind = op_kind::token_ids, .name = Name.view(), .width = 1, .store = storage::ids});
  }
};

template <fixed_string Name, int Out, int In>
struct frozen {
  static_assert(Name.size() <= max_leaf_name, "staticgrad: a leaf name is longer than 63 characters");
  static_assert(Out > 0 && In > 0, "frozen<Name, Out, In>: both dimensions must be positive");
  static constexpr bool is_leaf = true;
  static constexpr std::string_view op_name = "frozen";
  template <int N>
  static constexpr int lower(node_table<N>& t, name_buf) {
    return add_leaf(t, {.kind = op_kind::frozen_matrix, .name = Name.view(), .param = Name.view(),
                        .width = Out, .cols = In, .store = storage::param});
  }
};

// A frozen matrix whose row count is only known at run time (the vocabulary).
template <fixed_string Name, int In>
struct frozen_rows {
  static_assert(Name.size() <= max_leaf_name, "staticgrad: a leaf name is longer than 63 characters");
  static constexpr bool is_leaf = true;
  static constexpr std::string_view op_name = "frozen";
  template <int N>
  static constexpr int lower(node_table<N>& t, name_buf) {
    return add_leaf(t, {.kind = op_kind::frozen_matrix, .name = Name.view(), .param = Name.view(),
                        .width = 0, .cols = In, .store = storage::param});
  }
};

template <fixed_string Name, int Width>
struct vec {
  static_assert(Name.size() <= max_leaf_name, "staticgrad: a leaf name is longer than 63 characters");
  static_assert(Width > 0, "vec<Name, Width>: the width must be positive");
  static constexpr bool is_leaf = true;
  static constexpr std::string_view op_name = "vec";
  template <int N>
  static constexpr int lower(node_table<N>& t, name_buf) {
    return add_leaf(t, {.kind = op_kind::frozen_vector, .name = Name.view(), .param = Name.view(),
                        .width = Width, .store = storage::param});
  }
};

template <fixed_string Name, int Out, int In>
struct lora_params {
  static_assert(Name.size() <= max_leaf_name, "staticgrad: a leaf name is longer than 63 characters");
  static_assert(Out > 0 && In > 0, "lora_params<Name, Out, In>: both dimensions must be positive");
  static constexpr bool is_leaf = true;
  static constexpr std::string_view op_name = "lora_params";
  template <int N>
  static constexpr int lower(node_table<N>& t, name_buf) {
    return add_leaf(t, {.kind = op_kind::lora_adapter, .name = Name.view(), .param = Name.view(),
                        .width = Out, .cols = In, .store = storage::param});
  }
};

template <fixed_string Name>
struct ref {
  static constexpr bool is_leaf = true;
  static constexpr std::string_view op_name = "ref";
  template <int N>
  static constexpr int lower(node_table<N>& t, name_buf) {
    if (t.failed()) return 0;
    const int i = t.find(Name.view());
    if (i >= 0) return i;
    // Bound by this binding itself or a later one: order matters.
    for (int b = t.binding; b < t.n_bindings; ++b)
      if (b >= 0 && t.bindings[b] == Name.view()) {
        name_buf by(t.binding_out[b] ? "out<\"" : "let<\"");
        by.append(t.bindings[b].view()).append("\">");
        return t.fail({.kind = graph_error_kind::ref_bound_later, .a = Name.view(), .b = by});
      }
    graph_error e{.kind = graph_error_kind::unknown_ref, .a = Name.view()};
    for (int v = 0; v < t.count; ++v)
      if (t.nodes[v].kind == op_kind::input || t.nodes[v].kind == op_kind::token_ids) e.list.add(t.nodes[v].name.view());
    for (int b = 0; b < t.binding; ++b) e.list.add(t.bindings[b].view());
    return t.fail(e);
  }
};

template <fixed_string Name, class Expr>
struct let {
  static_assert(Name.size() > 0 && Name.size() <= max_binding_name,
                "let<Name, Expr>: the name must have 1 to 32 characters");
  static constexpr std::string_view name = Name.view();
  static constexpr bool is_output = false;
  using expr = Expr;
};

template <fixed_string Name, class Expr>
struct out {
  static_assert(Name.size() > 0 && Name.size() <= max_binding_name,
                "out<Name, Expr>: the name must have 1 to 32 characters");
  static constexpr std::string_view name = Name.view();
  static constexpr bool is_output = true;
  using expr = Expr;
};

template <class B>
concept binding = requires {
  B::name;
  B::is_output;
  typename B::expr;
};

template <binding... Bindings>
struct graph {
  static_assert(sizeof...(Bindings) > 0, "graph<...>: a graph needs at least one let<> or out<>");
  // Capacity of the node table: generous, bounded (each let adds a few nodes).
  static constexpr int capacity = 16 + 8 * static_cast<int>(sizeof...(Bindings));
};

namespace detail {
template <class B, int N>
constexpr void lower_binding(node_table<N>& t) {
  using E = typename B::expr;
  ++t.binding;
  t.binding_text = name_buf(B::is_output ? "out<\"" : "let<\"");
  t.binding_text.append(B::name).append("\">");
  if (t.failed()) return;
  if constexpr (requires { E::is_leaf; }) {
    t.fail({.kind = graph_error_kind::bare_leaf_binding, .a = name_buf(B::name)});
  } else {
    const int i = E::lower(t, name_buf(B::name));
    if (!t.failed() && B::is_output) t.nodes[i].output = true;
  }
}
template <class G>
struct lower_impl;
template <class... Bs>
struct lower_impl<graph<Bs...>> {
  static constexpr auto run() {
    node_table<graph<Bs...>::capacity> t{};
    ((t.bindings[t.n_bindings] = name_buf(Bs::name), t.binding_out[t.n_bindings++] = Bs::is_output), ...);
    (lower_binding<Bs>(t), ...);
    return t;
  }
};
}  // namespace detail

// The graph's node table, computed once per graph type. A malformed graph
// gives a table whose `error` says what is wrong (reported by compiled<G>).
template <class G>
inline constexpr auto lowered = detail::lower_impl<G>::run();

}  // namespace staticgrad::graph
