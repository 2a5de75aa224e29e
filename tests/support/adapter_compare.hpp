#pragma once
// Distances between two PEFT adapters of the same shape (io::lora_adapter),
// over every targeted tensor (each layer, each target module, A and B).
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "staticgrad/io/peft_adapter.hpp"

namespace sgtest {

// f(x, y, base): the same tensor (A or B of one layer and module) of a, b and
// base (nullptr without a base), each a std::vector<float>.
template <class F>
void for_each_lora_tensor(const staticgrad::io::lora_adapter& a, const staticgrad::io::lora_adapter& b,
                          const staticgrad::io::lora_adapter* base, F&& f) {
  for (std::int64_t l = 0; l < a.num_layers; ++l)
    for (auto t : a.config.target_modules)
      for (int w = 0; w < 2; ++w) {
        const auto& x = w ? a.at(l, t).b : a.at(l, t).a;
        const auto& y = w ? b.at(l, t).b : b.at(l, t).a;
        const auto* o = base ? (w ? &base->at(l, t).b : &base->at(l, t).a) : nullptr;
        f(x, y, o);
      }
}

// Largest |a - b| over the largest |b|, over every tensor.
inline double adapter_max_rel(const staticgrad::io::lora_adapter& a, const staticgrad::io::lora_adapter& b) {
  double num = 0, den = 0;
  for_each_lora_tensor(a, b, nullptr, [&](const auto& x, const auto& y, const auto*) {
    for (std::size_t i = 0; i < x.size(); ++i)
      num = std::max(num, std::abs(double(x[i]) - y[i])), den = std::max(den, std::abs(double(y[i])));
  });
  return num / den;
}

// Relative Frobenius distance ||a - b|| / ||b - base|| over every tensor (base: 0 when nullptr).
inline double adapter_frobenius_rel(const staticgrad::io::lora_adapter& a, const staticgrad::io::lora_adapter& b,
                                    const staticgrad::io::lora_adapter* base = nullptr) {
  double num = 0, den = 0;
  for_each_lora_tensor(a, b, base, [&](const auto& x, const auto& y, const auto* o) {
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double z = o ? double((*o)[i]) : 0.0;
      num += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
      den += (double(y[i]) - z) * (double(y[i]) - z);
    }
  });
  return std::sqrt(num / std::max(den, 1e-300));
}

}  // namespace sgtest
