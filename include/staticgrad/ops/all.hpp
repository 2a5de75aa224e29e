#pragma once
// Every op of the DSL, and `traits_of(kind)`: the op_traits of a kind as a
// constexpr value, for the passes that loop over a node table.
#include "staticgrad/ops/add.hpp"
#include "staticgrad/ops/attention.hpp"
#include "staticgrad/ops/bias_add.hpp"
#include "staticgrad/ops/cross_entropy.hpp"
#include "staticgrad/ops/embedding.hpp"
#include "staticgrad/ops/linear.hpp"
#include "staticgrad/ops/lora.hpp"
#include "staticgrad/ops/mul.hpp"
#include "staticgrad/ops/rmsnorm.hpp"
#include "staticgrad/ops/rope.hpp"
#include "staticgrad/ops/silu.hpp"
#include "staticgrad/ops/swiglu.hpp"

namespace staticgrad::graph {

struct traits_value {
  std::string_view name;
  fusion_class fusion;
  fusion_class bwd_fusion;
  backward_reads reads;  // per input gradient, and always (op_traits.hpp)
  saves_desc saves;      // union of `reads`: everything a step of this op may read
  std::array<bool, max_inputs> grad_in;
  std::array<bool, max_inputs> identity_grad;
};

constexpr saves_desc union_of(const backward_reads& r) {
  saves_desc s{};
  auto take = [&](const reads_desc& d) {
    for (int k = 0; k < max_inputs; ++k) s.in[k] = s.in[k] || d.in[k];
    s.out = s.out || d.out;
    s.aux = s.aux || d.aux;
  };
  take(r.always);
  for (const auto& g : r.grad) take(g);
  return s;
}

template <op_kind K>
constexpr traits_value traits_of_kind() {
  using T = op_traits<K>;
  return {T::name, T::fusion, T::bwd_fusion, T::reads, union_of(T::reads), T::grad_in, T::identity_grad};
}

constexpr traits_value traits_of(op_kind k) {
  constexpr std::array<traits_value, static_cast<int>(op_kind::count_)> table = []<int... I>(std::integer_sequence<int, I...>) {
    return std::array<traits_value, sizeof...(I)>{traits_of_kind<static_cast<op_kind>(I)>()...};
  }(std::make_integer_sequence<int, static_cast<int>(op_kind::count_)>{});
  return table[static_cast<int>(k)];
}

constexpr bool is_leaf(op_kind k) { return traits_of(k).fusion == fusion_class::leaf; }
constexpr bool is_rowwise(fusion_class f) { return f == fusion_class::pointwise || f == fusion_class::row; }

}  // namespace staticgrad::graph

// Everything a graph is written with, in one namespace:
//   using namespace staticgrad::dsl;
//   using G = graph<let<"h", rmsnorm<in<"x", 896>, vec<"norm", 896>>>, ...>;
namespace staticgrad::dsl {
using ::staticgrad::graph::frozen;
using ::staticgrad::graph::frozen_rows;
using ::staticgrad::graph::graph;
using ::staticgrad::graph::in;
using ::staticgrad::graph::let;
using ::staticgrad::graph::lora_params;
using ::staticgrad::graph::out;
using ::staticgrad::graph::ref;
using ::staticgrad::graph::token_ids;
using ::staticgrad::graph::vec;
using staticgrad::add;
using staticgrad::add_;
using staticgrad::attention;
using staticgrad::bias_add;
using staticgrad::bias_add_;
using staticgrad::embedding;
using staticgrad::linear;
using staticgrad::lm_head_cross_entropy;
using staticgrad::lora;
using staticgrad::mul;
using staticgrad::rmsnorm;
using staticgrad::rope;
using staticgrad::rope_;
using staticgrad::silu;
using staticgrad::silu_;
using staticgrad::swiglu;
}  // namespace staticgrad::dsl
