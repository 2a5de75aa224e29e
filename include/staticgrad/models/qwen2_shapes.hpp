#pragma once
// Qwen2.5 sizes: the compile-time block shapes, their names and lists. The
// dispatch from a config.json to a shape is qwen2.hpp; this header has no
// config (no JSON), so that the generated CUDA plan headers, which nvcc
// parses three times per TU, do not bring the JSON library with them (it was
// ~0.3 GB of every plan TU's cicc peak; docs/architecture.md "Translation units").
//
// A block shape is static (hidden, intermediate, heads, KV heads, head dim);
// layers, vocabulary, rope theta and norm eps are read from the file at run
// time. The Coder and Instruct variants share their base model's shape.
#include <cstdint>
#include <string>

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

// A shape's sizes as run-time values (train::cuda_model_plan::sizes()).
struct shape_sizes {
  std::int64_t hidden = 0, intermediate = 0, heads = 0, kv_heads = 0, head_dim = 0;
};
template <class S>
constexpr shape_sizes sizes_of() {
  return {S::hidden, S::intermediate, S::heads, S::kv_heads, S::head_dim};
}

template <class S>
std::string shape_text() {
  return std::string(shape_name<S>::value) + " (hidden " + std::to_string(S::hidden) + ", intermediate " +
         std::to_string(S::intermediate) + ", heads " + std::to_string(S::heads) + ", kv heads " +
         std::to_string(S::kv_heads) + ", head dim " + std::to_string(S::head_dim) + ")";
}

}  // namespace staticgrad::models
