#pragma once
// Relative Frobenius error ||a - b|| / ||b|| in double, the comparison every
// parity test uses (logits, gradients, adapters).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
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

namespace sgtest {

// ||a - b|| / ||b|| over n elements, with both taken relative to `base` when
// given (the error of an update or of a block's own contribution); 1 as the
// denominator when b (- base) is zero. NaN propagates.
inline double rel_err_offset(const float* a, const float* b, std::size_t n, const float* base = nullptr) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double o = base ? base[i] : 0.0;
    const double x = a[i] - o, y = b[i] - o;
    num += (x - y) * (x - y);
    den += y * y;
  }
  return std::sqrt(num) / (den > 0 ? std::sqrt(den) : 1.0);
}

// One printed row per comparison of a GPU test; ok stays true while every
// error is within its tolerance (NaN fails).
struct checker {
  int label_width = 34;
  bool ok = true;
  void row(const std::string& what, double err, double tol) {
    const bool pass = err <= tol;
    ok = ok && pass;
    std::printf("  %-*s %10.3e  (tol %.0e)  %s\n", label_width, what.c_str(), err, tol, pass ? "ok" : "FAIL");
  }
};

}  // namespace sgtest
