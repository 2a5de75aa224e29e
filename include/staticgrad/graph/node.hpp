#pragma once
// The graph's node table: what every DSL node type lowers to.
//
// A graph is written as types (graph.hpp, ops/*.hpp). `lower<Graph>()` walks
// those types once, at compile time, and produces a flat `node_table`: one
// `node_desc` per value, in a topological order (children before parents).
// Every later pass (autodiff, saved set, in-place check, fusion, buffer plan)
// is a constexpr function over this table, which keeps compile times low:
// the type-level recursion happens once, the passes are ordinary loops.
//
// Invariants of a node_table:
//   * nodes[i].in[k] < i for every input (topological order);
//   * names are unique; every value node has a static per-token width
//     (elements per token), or a width that is a multiple of the runtime LoRA
//     rank (`rank_width`), or is a parameter (no per-token width);
//   * an in-place node (`inplace == true`) writes its output over in[0].
#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "staticgrad/core/fixed_string.hpp"

namespace staticgrad::graph {

// Every op of the DSL. Leaves first, then forward ops. Backward rules are
// described by the op headers (ops/*.hpp) and used by autodiff.hpp.
enum class op_kind : std::uint8_t {
  input,          // per-token activation given by the caller ([T, width])
  token_ids,      // per-token int32 ids given by the caller ([T])
  frozen_matrix,  // frozen weight [rows, cols]; rows may be runtime (vocab)
  frozen_vector,  // frozen vector [width] (norm weight, bias)
  lora_adapter,   // trainable LoRA pair A [r, in], B [out, r] (f32)
  linear,         // y = x W^T                      (GEMM)
  lora,           // y = s * (dropout(x) A^T) B^T   (two small GEMMs)
  bias_add,       // y = x + b                      (pointwise)
  add,            // y = a + b                      (pointwise)
  rmsnorm,        // y = x * rsqrt(mean(x^2)+eps) * w   (row reduction)
  rope,           // rotate halves of each head by position (pair-local)
  attention,      // causal grouped-query attention (anchor)
  swiglu,         // y = silu(gate) * up             (pointwise)
  silu,           // y = x * sigmoid(x)              (pointwise)
  mul,            // y = a * b                       (pointwise)
  embedding,      // y = table[ids]                  (gather)
  lm_head_ce,     // per-token cross-entropy of x W^T against shifted labels
  count_
};

// Leaves come first in op_kind: no compute of their own.
constexpr bool is_leaf_kind(op_kind k) { return k <= op_kind::lora_adapter; }

// How an op may be fused (fusion.hpp): pointwise and row-local ops fuse with
// each other into one per-token kernel; anchors are kernels of their own, with
// the pointwise/row groups around them as prologue/epilogue.
enum class fusion_class : std::uint8_t { leaf, pointwise, row, gemm, anchor };

// Element storage class of a value. On CUDA: act = bf16, stat = f32;
// on the CPU backend all of them are the executor's scalar type.
enum class storage : std::uint8_t { act, stat, ids, param };

inline constexpr int max_inputs = 3;
inline constexpr int max_name = 64;

// A name stored by value, so that constexpr tables can be copied freely
// (a string_view into a temporary would not be a constant expression).
struct name_buf {
  std::array<char, max_name> data{};
  int len = 0;
  constexpr name_buf() = default;
  constexpr name_buf(std::string_view s) { append(s); }
  constexpr name_buf& append(std::string_view s) {
    // DSL names are limited by static_asserts (dsl.hpp), so that every
    // generated name fits; reaching this is an internal error.
    for (char c : s) {
      if (len >= max_name - 1) throw "staticgrad: a graph name is longer than 63 characters (internal error)";
      data[len++] = c;
    }
    return *this;
  }
  constexpr name_buf& append_int(long v) {
    char digits[20]{};
    int n = 0;
    const bool neg = v < 0;
    unsigned long u = neg ? static_cast<unsigned long>(-v) : static_cast<unsigned long>(v);
    do {
      digits[n++] = static_cast<char>('0' + u % 10);
      u /= 10;
    } while (u != 0);
    if (neg) append("-");
    while (n > 0) {
      const char c[1] = {digits[--n]};
      append(std::string_view(c, 1));
    }
    return *this;
  }
  // Appends as much of s as fits, marking a cut with "...": for labels and
  // messages, never for names (which must stay unique).
  constexpr name_buf& append_clipped(std::string_view s) {
    for (char c : s) {
      if (len >= max_name - 4) {
        for (int d = 0; d < 3 && len < max_name - 1; ++d) data[len++] = '.';
        return *this;
      }
      data[len++] = c;
    }
    return *this;
  }
  constexpr std::string_view view() const { return {data.data(), static_cast<std::size_t>(len)}; }
  constexpr bool operator==(std::string_view s) const { return view() == s; }
};

// "<op> (<value name>)", e.g. "rope_ (q)": how messages and explain name a node.
constexpr name_buf op_label(std::string_view op, std::string_view name) {
  name_buf s;
  s.append_clipped(op).append_clipped(" (").append_clipped(name).append_clipped(")");
  return s;
}

// A longer text that truncates instead of failing ("a, b, c, ..."): the list
// of names a compile error offers.
struct name_list {
  static constexpr int capacity = 400;
  std::array<char, capacity> data{};
  int len = 0;
  bool full = false;
  constexpr void add(std::string_view s) {
    if (full) return;
    if (len + static_cast<int>(s.size()) + 2 > capacity - 6) {
      put(len > 0 ? ", ..." : "...");
      full = true;
      return;
    }
    if (len > 0) put(", ");
    put(s);
  }
  constexpr void put(std::string_view s) {
    for (char c : s)
      if (len < capacity - 1) data[len++] = c;
  }
  constexpr std::string_view view() const { return {data.data(), static_cast<std::size_t>(len)}; }
};

// ---- graph errors ------------------------------------------------------------
// Lowering never throws on a user's mistake: it records the first error in the
// table (every later pass then sees an empty graph, so nothing cascades), and
// compiled<G> reports it as a diagnostic type whose name carries the binding,
// the op, the values and their widths (graph/graph_errors.hpp).
enum class graph_error_kind : std::uint8_t {
  none,
  widths_differ,           // op's operands a [wa] and b [wb] must have one width
  operand_width,           // operand a has width wa, the op needs wb
  operand_width_multiple,  // operand a has width wa, the op needs a multiple of wb
  operand_kind,            // operand a is `found`, the op needs `expected`
  parameter_shape,         // parameter a has shape `found`, the op expects `expected` (from b, width wb)
  leaf_redefined,          // leaf a was `expected` at its first use, is `found` here
  unknown_ref,             // ref<a> names no value; `list` holds the names in scope
  ref_bound_later,         // ref<a> names the value bound by `b`, which comes later
  duplicate_name,          // the name a is defined twice (first by node wb)
  bare_leaf_binding,       // let<>/out<> binds a leaf or a ref, not an op
  too_many_nodes,          // more nodes than the table's capacity (wa)
};

struct graph_error {
  graph_error_kind kind = graph_error_kind::none;
  name_buf binding;   // the user's binding: let<"q"> or out<"y">
  name_buf op;        // the op being lowered: "add (y)", "linear (q.linear)"
  name_buf a, b;      // the values or parameters the error is about
  int wa = 0, wb = 0; // their widths (elements per token)
  name_buf found, expected;  // shapes or kinds as text: "[16, 4]", "vec<name, W>"
  name_list list;     // the names in scope (unknown_ref)
};

inline constexpr int max_attrs = 4;

struct node_desc {
  op_kind kind = op_kind::input;
  name_buf name;                 // value name (unique), e.g. "q" or "h1"
  name_buf param;                // parameter name for leaves, e.g. "self_attn.q_proj"
  std::array<int, max_inputs> in{-1, -1, -1};
  int n_in = 0;
  int width = 0;                 // elements per token (or per row for matrices)
  int cols = 0;                  // matrices: columns (in features)
  bool rank_width = false;       // width is (width * r) with r the runtime LoRA rank
  bool inplace = false;          // output overwrites in[0]
  bool output = false;           // a graph output (out<...>)
  storage store = storage::act;
  std::array<int, max_attrs> attr{};  // op attributes (heads, kv_heads, head_dim, ...)
  // Auxiliary per-token output that backward reads (rmsnorm: 1/rms, f32;
  // attention: log-sum-exp per head, f32; lora: Z = dropout(x) A^T, width r).
  int aux_width = 0;
  bool aux_rank = false;         // aux width is aux_width * r
  storage aux_store = storage::stat;
};

template <int N>
struct node_table {
  std::array<node_desc, N> nodes{};
  int count = 0;
  // Lowering context and result: the binding being lowered (its text for
  // messages, its index into `bindings`), every binding's name in order, and
  // the first error (graph_error_kind::none when the graph is well formed).
  name_buf binding_text;
  int binding = -1;
  std::array<name_buf, N> bindings{};
  std::array<bool, N> binding_out{};
  int n_bindings = 0;
  graph_error error{};

  constexpr bool failed() const { return error.kind != graph_error_kind::none; }
  // Records e (the first error wins) under the current binding; returns a
  // valid node index so that lowering can go on without reading out of bounds.
  constexpr int fail(graph_error e) {
    if (!failed()) {
      e.binding = binding_text;
      error = e;
    }
    return 0;
  }

  constexpr int find(std::string_view name) const {
    for (int i = 0; i < count; ++i)
      if (nodes[i].name == name) return i;
    return -1;
  }
  constexpr int add(node_desc d) {
    if (failed()) return 0;
    if (count >= N) return fail({.kind = graph_error_kind::too_many_nodes, .a = d.name, .wa = N});
    if (const int prev = find(d.name.view()); prev >= 0)
      return fail({.kind = graph_error_kind::duplicate_name, .a = d.name, .wb = prev});
    for (int k = 0; k < d.n_in; ++k)
      if (d.in[k] < 0 || d.in[k] >= count) throw "staticgrad: an op reads a value that is not defined before it (internal error)";
    nodes[count] = d;
    return count++;
  }
};

// The name of an anonymous nested node: "<scope>.<op>", e.g. the linear in
// `let<"q", rope<linear<...>>>` is "q.linear"; repeats get "#2", "#3", ...
template <int N>
constexpr name_buf scoped_name(const node_table<N>& t, std::string_view scope, std::string_view op) {
  name_buf n(scope);
  n.append(".").append(op);
  for (int k = 2; t.find(n.view()) >= 0; ++k) {
    n = name_buf(scope);
    n.append(".").append(op).append("#").append_int(k);
  }
  return n;
}

// ---- concepts shared by the DSL --------------------------------------------

// A DSL node type provides `template <int N> static constexpr int lower(node_table<N>&,
// name_buf name)` which adds itself (after its inputs) and returns
// its index, and `static constexpr std::string_view op_name`.
template <class T>
concept dsl_node = requires { T::op_name; };

template <class...>
inline constexpr bool always_false = false;
// The value-parameter form, for diagnostic types whose parameters are names.
template <auto...>
inline constexpr bool never = false;

}  // namespace staticgrad::graph
