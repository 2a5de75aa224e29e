#pragma once
// Qwen2.5 sizes: the compile-time block shapes, and the dispatch from a
// config.json to the shape the block graph was compiled for.
//
// A block shape is static (hidden, intermediate, heads, KV heads, head dim);
// layers, vocabulary, rope theta and norm eps are read from the file at run
// time. The Coder and Instruct variants share their base model's shape.
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "staticgrad/core/error.hpp"
#include "staticgrad/io/hf_config.hpp"
#include "staticgrad/models/qwen2_block.hpp"

namespace staticgrad::models {

using qwen2_tiny = block_shape<128, 384, 4, 2, 32>;  // tests, demo
using qwen2_5_0_5b = block_shape<896, 4864, 14, 2, 64>;
using qwen2_5_1_5b = block_shape<1536, 8960, 12, 2, 128>;
using qwen2_5_3b = block_shape<2048, 11008, 16, 2, 128>;
using qwen2_5_7b = block_shape<3584, 18944, 28, 4, 128>;
using qwen2_5_14b = block_shape<5120, 13824, 40, 8, 128>;
using qwen2_5_32b = block_shape<5120, 27648, 40, 8, 128>;
using qwen2_5_72b = block_shape<8192, 29568, 64, 8, 128>;

template <class S>
struct shape_name;
#define SG_SHAPE_NAME(T, N) \
  template <> struct shape_name<T> { static constexpr const char* value = N; };
SG_SHAPE_NAME(qwen2_tiny, "tiny")
SG_SHAPE_NAME(qwen2_5_0_5b, "0.5b")
SG_SHAPE_NAME(qwen2_5_1_5b, "1.5b")
SG_SHAPE_NAME(qwen2_5_3b, "3b")
SG_SHAPE_NAME(qwen2_5_7b, "7b")
SG_SHAPE_NAME(qwen2_5_14b, "14b")
SG_SHAPE_NAME(qwen2_5_32b, "32b")
SG_SHAPE_NAME(qwen2_5_72b, "72b")
#undef SG_SHAPE_NAME

template <class... Shapes>
struct shape_list {};
using all_shapes = shape_list<qwen2_tiny, qwen2_5_0_5b, qwen2_5_1_5b, qwen2_5_3b, qwen2_5_7b, qwen2_5_14b, qwen2_5_32b,
                              qwen2_5_72b>;

// The shapes the CUDA backend runs: every Qwen2.5 size (its attention kernels
// take head dim 64 or 128, which leaves out only the test shape). One generated
// plan header each (tools/plan_codegen.cpp), dispatched like all_shapes.
using gpu_shapes = shape_list<qwen2_5_0_5b, qwen2_5_1_5b, qwen2_5_3b, qwen2_5_7b, qwen2_5_14b, qwen2_5_32b, qwen2_5_72b>;
template <class... S>
constexpr int shape_count(shape_list<S...>) { return sizeof...(S); }
static_assert(shape_count(gpu_shapes{}) + 1 == shape_count(all_shapes{}),
              "gpu_shapes: every shape of all_shapes except the test shape (tiny, head dim 32) runs on CUDA");

template <class S>
bool shape_matches(const io::hf_config& c) {
  return c.hidden_size == S::hidden && c.intermediate_size == S::intermediate && c.num_attention_heads == S::heads &&
         c.num_key_value_heads == S::kv_heads && c.head_dim == S::head_dim;
}

template <class S>
std::string shape_text() {
  return std::string(shape_name<S>::value) + " (hidden " + std::to_string(S::hidden) + ", intermediate " +
         std::to_string(S::intermediate) + ", heads " + std::to_string(S::heads) + ", kv heads " +
         std::to_string(S::kv_heads) + ", head dim " + std::to_string(S::head_dim) + ")";
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
                  "include/staticgrad/models/qwen2.hpp, give it a shape_name and add it to all_shapes.",
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
