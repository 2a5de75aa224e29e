#pragma once
// The LoRA dropout mask, one definition for both executors: the CPU's
// (backend/cpu/executor.hpp) and the CUDA kernels' (backend/cuda/lora_dropout.cuh).
// Plain C++ with SG_HD functions and no graph types, so nvcc includes it.
//
//   keep element (t, i) of adapter `stream` iff uniform(seed, stream, t, i) >= p;
//   kept elements are scaled by 1 / (1 - p).
// seed: the micro-batch's dropout seed (train::mix_seed of run seed, step and
// micro-batch); stream: adapter_stream(adapter name, layer); t: the token's
// index in the batch; i: the input feature.
#include <cstdint>
#include <string_view>

#include "staticgrad/core/macros.hpp"

namespace staticgrad {

// Counter-based dropout: keep element (t, i) of adapter `stream` iff its hash
// is at or above p. Deterministic in (seed, layer, stream, t, i), so backward
// recomputes the mask instead of saving it. splitmix64 finaliser as the mixer.
struct dropout_fn {
  SG_HD static std::uint64_t mix(std::uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1) with 24 bits.
  SG_HD static float uniform(std::uint64_t seed, std::uint64_t stream, std::int64_t t, int i) {
    const std::uint64_t h = mix(seed ^ mix(stream ^ mix(static_cast<std::uint64_t>(t) * 0x100000001b3ull + static_cast<std::uint64_t>(i))));
    return static_cast<float>(h >> 40) * (1.0f / 16777216.0f);
  }
  // The multiplier of element (t, i): 0 (dropped) or 1 / (1 - p) (kept).
  SG_HD static float scale(float p, std::uint64_t seed, std::uint64_t stream, std::int64_t t, int i) {
    if (p <= 0.0f) return 1.0f;
    return uniform(seed, stream, t, i) >= p ? 1.0f / (1.0f - p) : 0.0f;
  }
};

// A stable 64-bit id of an adapter name (FNV-1a), the dropout stream.
constexpr std::uint64_t adapter_stream(std::string_view name, int layer) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (char c : name) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  return h ^ (static_cast<std::uint64_t>(layer) << 48);
}

}  // namespace staticgrad
