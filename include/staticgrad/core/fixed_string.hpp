#pragma once
// Compile-time strings usable as template arguments (C++20 class-type
// non-type template parameters): the names of graph values and parameters.
#include <algorithm>
#include <cstddef>
#include <string_view>

namespace staticgrad {

template <std::size_t N>
struct fixed_string {
  char value[N]{};
  constexpr fixed_string() = default;
  constexpr fixed_string(const char (&s)[N]) { std::copy_n(s, N, value); }
  constexpr std::string_view view() const { return {value, N - 1}; }
  constexpr std::size_t size() const { return N - 1; }
};
template <std::size_t N>
fixed_string(const char (&)[N]) -> fixed_string<N>;

}  // namespace staticgrad
