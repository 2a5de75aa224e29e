#pragma once
// Qwen2.5 sizes: the compile-time block shapes (qwen2_shapes.hpp), and the
// dispatch from a config.json to the shape the block graph was compiled for.
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "staticgrad/core/error.hpp"
#include "staticgrad/io/hf_config.hpp"
#include "staticgrad/models/qwen2_block.hpp"
#include "staticgrad/models/qwen2_shapes.hpp"

namespace staticgrad::models {

inline bool shape_matches(const shape_sizes& s, const io::hf_config& c) {
  return c.hidden_size == s.hidden && c.intermediate_size == s.intermediate && c.num_attention_heads == s.heads &&
         c.num_key_value_heads == s.kv_heads && c.head_dim == s.head_dim;
}
template <class S>
bool shape_matches(const io::hf_config& c) {
  return shape_matches(sizes_of<S>(), c);
}

// Calls f.template operator()<Shape>() for the compiled shape that `c`
// describes; throws naming the file, listing the supported shapes and how to
// add one otherwise.
template <class F, class... Shapes>
decltype(auto) dispatch_shape(const io::hf_config& c, const std::string& file, F&& f, shape_list<Shapes...>) {
  using R = decltype(f.template operator()<qwen2_tiny>());
  if constexpr (std::is_void_v<R>) {
    const bool found = ((shape_matches<Shapes>(c) ? (f.template operator()<Shapes>(), true) : false) || ...);
    if (found) return;
  } else {
    std::optional<R> r;
    (void)((shape_matches<Shapes>(c) ? (r.emplace(f.template operator()<Shapes>()), true) : false) || ...);
    if (r) return R(std::move(*r));  // a prvalue: decltype(auto) must not deduce R&& to this local
  }
  std::string list;
  ((list += "\n  " + shape_text<Shapes>()), ...);
  throw error("no compiled block shape matches hidden " + std::to_string(c.hidden_size) + ", intermediate " +
                  std::to_string(c.intermediate_size) + ", heads " + std::to_string(c.num_attention_heads) +
                  ", kv heads " + std::to_string(c.num_key_value_heads) + ", head dim " + std::to_string(c.head_dim) +
                  ". Supported shapes:" + list +
                  "\nTo add one: declare `using my_shape = block_shape<H, I, heads, kv, head_dim>;` in "
                  "include/staticgrad/models/qwen2_shapes.hpp, give it a shape_name and add it to all_shapes.",
              {file, "", std::nullopt});
}

// The shape named on the command line ("0.5b", "1.5b", ...).
template <class F>
decltype(auto) dispatch_shape(const io::hf_config& c, const std::string& file, F&& f) {
  return dispatch_shape(c, file, std::forward<F>(f), all_shapes{});
}

template <class F, class... Shapes>
decltype(auto) dispatch_shape_name(const std::string& name, F&& f, shape_list<Shapes...>) {
  io::hf_config c;
  bool known = false;
  ((name == shape_name<Shapes>::value ? (c.hidden_size = Shapes::hidden, c.intermediate_size = Shapes::intermediate,
                                          c.num_attention_heads = Shapes::heads, c.num_key_value_heads = Shapes::kv_heads,
                                          c.head_dim = Shapes::head_dim, known = true)
                                       : false),
   ...);
  if (!known) {
    std::string list;
    ((list += std::string(list.empty() ? "" : ", ") + shape_name<Shapes>::value), ...);
    throw error("unknown model size '" + name + "'; known sizes: " + list);
  }
  return dispatch_shape(c, "", std::forward<F>(f), shape_list<Shapes...>{});
}
template <class F>
decltype(auto) dispatch_shape_name(const std::string& name, F&& f) {
  return dispatch_shape_name(name, std::forward<F>(f), all_shapes{});
}

}  // namespace staticgrad::models
