#pragma once
// Compile errors for malformed graphs: the error that lowering recorded
// (node.hpp, graph_error) as a diagnostic type whose name carries the user's
// let<>/out<> binding, the op, the values and their widths or shapes, e.g.
//
//   in_binding<"out<\"y\">">::at_op<"add (y)">::operands_differ_in_width<"a", 8, "y.linear", 16>
//   in_binding<"let<\"q\">">::ref_names_no_value<"hh">::values_in_scope_are<"x, h1">
//
// with a static_assert saying what is wrong. compiled<G> (plan.hpp) names the
// type in its class body, before any other pass result is used; a malformed
// table makes every pass return an empty result, so nothing else fails.
// (g++ 12 cannot put computed text in a static_assert message, so the names
// travel in the type, as for the in-place check.)
#include <type_traits>

#include "staticgrad/graph/inplace_check.hpp"

namespace staticgrad::graph {

// Binding is the user's binding as written: let<"q"> or out<"y">.
template <fixed_string Binding>
struct in_binding {
  template <fixed_string Op>
  struct at_op {
    template <fixed_string A, int WidthA, fixed_string B, int WidthB>
    struct operands_differ_in_width {
      static constexpr bool reported_above = never<A>;
      static_assert(reported_above,
                    "staticgrad graph error: the op named above needs operands of one per-token width; the two "
                    "operands and their widths, and the let<>/out<> binding, are named above");
    };
    template <fixed_string Operand, int Width>
    struct operand_has_width {
      template <int Needed>
      struct but_op_needs_width {
        static constexpr bool reported_above = never<Needed>;
        static_assert(reported_above,
                      "staticgrad graph error: an operand of the op named above has the width named above, and the "
                      "op needs the other width named above (attention: Q is Heads * HeadDim wide, K and V "
                      "KvHeads * HeadDim)");
      };
      template <int Divisor>
      struct but_op_needs_a_multiple_of {
        static constexpr bool reported_above = never<Divisor>;
        static_assert(reported_above,
                      "staticgrad graph error: the operand named above has a width that is not a multiple of the "
                      "op's head dimension (named above)");
      };
    };
    template <fixed_string Operand, fixed_string Found>
    struct operand_is {
      template <fixed_string Needed>
      struct but_op_needs {
        static constexpr bool reported_above = never<Needed>;
        static_assert(reported_above,
                      "staticgrad graph error: an operand of the op named above is of the wrong kind; what it is and "
                      "what the op needs are named above");
      };
    };
    template <fixed_string Parameter, fixed_string Found>
    struct parameter_has_shape {
      template <fixed_string Expected>
      struct but_op_expects {
        template <fixed_string Operand, int Width>
        struct to_fit_operand {
          static constexpr bool reported_above = never<Width>;
          static_assert(reported_above,
                        "staticgrad graph error: the parameter named above has the wrong shape for the op named "
                        "above: found and expected shapes, and the operand (with its width) that fixes the "
                        "expected shape, are named above");
        };
      };
    };
  };
  template <fixed_string Name>
  struct ref_names_no_value {
    template <fixed_string InScope>
    struct values_in_scope_are {
      static constexpr bool reported_above = never<InScope>;
      static_assert(reported_above,
                    "staticgrad graph error: ref<Name> names no value; the graph inputs and the values bound by "
                    "earlier let<>/out<> bindings are listed above");
    };
  };
  template <fixed_string Name>
  struct ref_names_a_value_bound_later {
    template <fixed_string By>
    struct by {
      static constexpr bool reported_above = never<By>;
      static_assert(reported_above,
                    "staticgrad graph error: ref<Name> names a value that is bound by this or a later binding; "
                    "a graph's bindings are evaluated in order, so move the binding named above before its use");
    };
  };
  template <fixed_string Name>
  struct defines_a_name_already_used {
    template <fixed_string By>
    struct by {
      static constexpr bool reported_above = never<By>;
      static_assert(reported_above,
                    "staticgrad graph error: the name named above is defined twice (the first definition is named "
                    "above); the values of a graph (bindings and leaves) need unique names");
    };
  };
  template <fixed_string Leaf>
  struct uses_leaf {
    template <fixed_string Now>
    struct as {
      template <fixed_string Before>
      struct but_it_was_first_used_as {
        static constexpr bool reported_above = never<Before>;
        static_assert(reported_above,
                      "staticgrad graph error: a leaf name is used twice with different kinds or shapes (both named "
                      "above); a name denotes one tensor");
      };
    };
  };
  template <fixed_string Name>
  struct binds_a_leaf_or_ref_not_an_op {
    static constexpr bool reported_above = never<Name>;
    static_assert(reported_above,
                  "staticgrad graph error: let<> and out<> must bind an op, not a bare leaf or ref<>; use the leaf "
                  "or the ref where the value is read");
  };
  template <fixed_string Name, int Capacity>
  struct has_more_nodes_than_capacity {
    static constexpr bool reported_above = never<Capacity>;
    static_assert(reported_above,
                  "staticgrad graph error: the graph has more nodes than its table's capacity (16 + 8 per binding); "
                  "split the deepest expression into several let<> bindings");
  };
};

struct no_graph_error {};

// The diagnostic type of table T's error (no_graph_error when it has none).
template <const auto& T>
consteval auto graph_error_type() {
  constexpr const graph_error& e = T.error;
  using K = graph_error_kind;
  if constexpr (e.kind == K::none) {
    return std::type_identity<no_graph_error>{};
  } else {
    using in = in_binding<to_fixed_string<e.binding>()>;
    using op = typename in::template at_op<to_fixed_string<e.op>()>;
    constexpr auto a = to_fixed_string<e.a>();
    if constexpr (e.kind == K::widths_differ)
      return std::type_identity<typename op::template operands_differ_in_width<a, e.wa, to_fixed_string<e.b>(), e.wb>>{};
    else if constexpr (e.kind == K::operand_width)
      return std::type_identity<typename op::template operand_has_width<a, e.wa>::template but_op_needs_width<e.wb>>{};
    else if constexpr (e.kind == K::operand_width_multiple)
      return std::type_identity<
          typename op::template operand_has_width<a, e.wa>::template but_op_needs_a_multiple_of<e.wb>>{};
    else if constexpr (e.kind == K::operand_kind)
      return std::type_identity<
          typename op::template operand_is<a, to_fixed_string<e.found>()>::template but_op_needs<to_fixed_string<e.expected>()>>{};
    else if constexpr (e.kind == K::parameter_shape)
      return std::type_identity<typename op::template parameter_has_shape<a, to_fixed_string<e.found>()>::template but_op_expects<
          to_fixed_string<e.expected>()>::template to_fit_operand<to_fixed_string<e.b>(), e.wb>>{};
    else if constexpr (e.kind == K::leaf_redefined)
      return std::type_identity<typename in::template uses_leaf<a>::template as<to_fixed_string<e.found>()>::
                                    template but_it_was_first_used_as<to_fixed_string<e.expected>()>>{};
    else if constexpr (e.kind == K::unknown_ref)
      return std::type_identity<typename in::template ref_names_no_value<a>::template values_in_scope_are<
          to_fixed_string<e.list>()>>{};
    else if constexpr (e.kind == K::ref_bound_later)
      return std::type_identity<typename in::template ref_names_a_value_bound_later<a>::template by<to_fixed_string<e.b>()>>{};
    else if constexpr (e.kind == K::duplicate_name)
      return std::type_identity<typename in::template defines_a_name_already_used<a>::template by<label_of<T, e.wb>::value>>{};
    else if constexpr (e.kind == K::bare_leaf_binding)
      return std::type_identity<typename in::template binds_a_leaf_or_ref_not_an_op<a>>{};
    else
      return std::type_identity<typename in::template has_more_nodes_than_capacity<a, e.wa>>{};
  }
}
template <const auto& T>
using graph_error_t = typename decltype(graph_error_type<T>())::type;

}  // namespace staticgrad::graph
