#pragma once
// Relative Frobenius error ||a - b|| / ||b|| in double, the comparison every
// parity test uses (logits, gradients, adapters).
#include <algorithm>
#include <cmath>
#include <vector>

namespace sgtest {

inline double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

}  // namespace sgtest
