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
    for (char c : s) {
      if (len >= max_name - 1) throw "staticgrad: a graph name is longer than 63 characters";
      data[len++] = c;
    }
    return *this;
  }
  constexpr std::string_view view() const { return {data.data(), static_cast<std::size_t>(len)}; }
  constexpr bool operator==(std::string_view s) const { return view() == s; }
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

  constexpr int find(std::string_view name) const {
    for (int i = 0; i < count; ++i)
      if (nodes[i].name == name) return i;
    return -1;
  }
  constexpr int add(node_desc d) {
    if (count >= N) throw "staticgrad: graph has more nodes than the table's capacity";
    if (find(d.name.view()) >= 0) throw "staticgrad: two values of the graph have the same name";
    for (int k = 0; k < d.n_in; ++k)
      if (d.in[k] < 0 || d.in[k] >= count) throw "staticgrad: an op reads a value that is not defined before it";
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
    n.append(".").append(op).append("#");
    const char digit[1] = {static_cast<char>('0' + k % 10)};
    n.append(std::string_view(digit, 1));
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

}  // namespace staticgrad::graph
