#pragma once
// Bounds on numbers that come from files and flags, checked before they size
// a multiplication or an allocation. Every failure is a staticgrad::error
// naming the file (or option), the key and the bound, never UB on a signed
// overflow or a bare std::bad_alloc.
#include <cstdint>
#include <string>
#include <unistd.h>

#include "staticgrad/core/error.hpp"

namespace staticgrad::io {

// a * b for non-negative sizes; throws naming `what` on overflow of int64.
inline std::int64_t checked_mul(std::int64_t a, std::int64_t b, const std::string& what, const error_context& ctx) {
  std::int64_t r = 0;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r))
    throw error(what + ": " + std::to_string(a) + " * " + std::to_string(b) + " overflows a 64-bit size", ctx);
  return r;
}

inline std::int64_t checked_add(std::int64_t a, std::int64_t b, const std::string& what, const error_context& ctx) {
  std::int64_t r = 0;
  if (a < 0 || b < 0 || __builtin_add_overflow(a, b, &r))
    throw error(what + ": " + std::to_string(a) + " + " + std::to_string(b) + " overflows a 64-bit size", ctx);
  return r;
}

// Physical memory of this machine in bytes (0 if unknown).
inline std::uint64_t physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? std::uint64_t(pages) * std::uint64_t(page) : 0;
}

// Throws unless an allocation of `bytes` (sized from `ctx`'s file or option)
// fits in the machine's physical memory: a wrong rank or length then fails at
// once with its name, instead of swapping or ending in std::bad_alloc.
inline void require_fits_memory(std::uint64_t bytes, const std::string& what, const error_context& ctx) {
  const std::uint64_t mem = physical_memory_bytes();
  if (mem && bytes > mem)
    throw error(what + " needs " + std::to_string(bytes >> 20) + " MiB, more than the " + std::to_string(mem >> 20) +
                    " MiB of memory of this machine",
                ctx);
}

// Throws unless lo <= v <= hi, naming the key and the bound.
inline void require_in_range(std::int64_t v, std::int64_t lo, std::int64_t hi, const error_context& ctx) {
  if (v < lo || v > hi)
    throw error("value " + std::to_string(v) + " is outside the accepted range [" + std::to_string(lo) + ", " +
                    std::to_string(hi) + "]",
                ctx);
}

}  // namespace staticgrad::io
