#pragma once
// Storage types: bf16 (activations, frozen weights) and f32 (LoRA parameters,
// optimizer state, norms and softmax statistics). All arithmetic is f32.
#include <bit>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "staticgrad/core/macros.hpp"

namespace staticgrad {

// bfloat16 with the same bit layout as __nv_bfloat16 and torch.bfloat16:
// the high 16 bits of an IEEE-754 binary32.
struct bf16 {
  std::uint16_t bits = 0;

  bf16() = default;
  SG_HD explicit bf16(float f) : bits(from_float(f)) {}
  SG_HD explicit operator float() const { return to_float(bits); }

  // Round to nearest, ties to even, NaN kept quiet (as torch does).
  SG_HD static std::uint16_t from_float(float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return static_cast<std::uint16_t>(u >> 16);
  }
  SG_HD static float to_float(std::uint16_t b) {
    std::uint32_t u = static_cast<std::uint32_t>(b) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};
static_assert(sizeof(bf16) == 2, "bf16 must be two bytes to match the safetensors and CUDA layouts");

enum class dtype : std::uint8_t { bf16, f16, f32, i32, i64 };

constexpr std::size_t dtype_size(dtype d) {
  switch (d) {
    case dtype::bf16: case dtype::f16: return 2;
    case dtype::f32: case dtype::i32: return 4;
    case dtype::i64: return 8;
  }
  return 0;
}

constexpr std::string_view dtype_name(dtype d) {
  switch (d) {
    case dtype::bf16: return "bf16";
    case dtype::f16: return "f16";
    case dtype::f32: return "f32";
    case dtype::i32: return "i32";
    case dtype::i64: return "i64";
  }
  return "?";
}

// IEEE half to float, for F16 checkpoints (converted on load).
inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = (h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
  if (exp == 0) {
    if (man == 0) u = sign;
    else {  // subnormal: normalise
      int e = -1;
      do { ++e; man <<= 1; } while (!(man & 0x400u));
      u = sign | ((112u - e) << 23) | ((man & 0x3ffu) << 13);
    }
  } else if (exp == 31) u = sign | 0x7f800000u | (man << 13);
  else u = sign | ((exp + 112u) << 23) | (man << 13);
  return std::bit_cast<float>(u);
}

}  // namespace staticgrad
