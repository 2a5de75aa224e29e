#pragma once
// Choosing the next token from the logits, as transformers' generate() does:
//   repetition penalty (every token already in the sequence: logit < 0 ?
//   logit * p : logit / p), then, when sampling, temperature (logits / t),
//   top-k (keep logits >= the k-th largest; ties kept), top-p (sort
//   ascending, drop the tokens whose cumulative probability is <= 1 - top_p,
//   always keep the most likely), and a draw from the softmax of what is left.
//   Without sampling: the argmax (the first index among equal maxima, as
//   torch.argmax) after the repetition penalty.
// The draw uses std::mt19937_64 seeded by the caller, so a seed reproduces a
// sample on every platform (the standard fixes the engine's sequence;
// the uniform double is train::uniform01's 53 high bits, not
// std::uniform_real_distribution, whose algorithm is unspecified).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <span>
#include <vector>

#include "staticgrad/core/error.hpp"
#include "staticgrad/train/lora_init.hpp"

namespace staticgrad::infer {

struct sampling_options {
  bool do_sample = false;         // false: greedy
  double temperature = 1.0;       // > 0
  double top_p = 1.0;             // (0, 1]
  std::int64_t top_k = 50;        // 0 = off
  double repetition_penalty = 1;  // 1 = off
};

inline void check_sampling(const sampling_options& o) {
  require(o.temperature > 0 && std::isfinite(o.temperature), "temperature must be a positive number",
          {"", "temperature", {}});
  require(o.top_p > 0 && o.top_p <= 1, "top_p must be in (0, 1]", {"", "top_p", {}});
  require(o.top_k >= 0, "top_k must be non-negative", {"", "top_k", {}});
  require(o.repetition_penalty > 0 && std::isfinite(o.repetition_penalty), "repetition_penalty must be positive",
          {"", "repetition_penalty", {}});
}

// In place on `scores`: the repetition penalty over the tokens of `context`.
inline void apply_repetition_penalty(std::span<float> scores, std::span<const std::int32_t> context, double penalty) {
  if (penalty == 1.0) return;
  std::vector<char> seen(scores.size(), 0);
  for (auto id : context) {
    if (id < 0 || std::size_t(id) >= scores.size() || seen[std::size_t(id)]) continue;
    seen[std::size_t(id)] = 1;
    float& s = scores[std::size_t(id)];
    s = s < 0 ? float(s * penalty) : float(s / penalty);
  }
}

inline std::int32_t argmax(std::span<const float> s) {
  return std::int32_t(std::max_element(s.begin(), s.end()) - s.begin());
}

// In place: temperature, top-k, top-p; filtered tokens become -inf.
inline void apply_warpers(std::span<float> s, const sampling_options& o) {
  constexpr float ninf = -std::numeric_limits<float>::infinity();
  if (o.temperature != 1.0)
    for (auto& x : s) x = float(x / o.temperature);
  if (o.top_k > 0 && std::size_t(o.top_k) < s.size()) {
    std::vector<float> tmp(s.begin(), s.end());
    std::nth_element(tmp.begin(), tmp.begin() + (o.top_k - 1), tmp.end(), std::greater<float>());
    const float kth = tmp[std::size_t(o.top_k - 1)];
    for (auto& x : s)
      if (x < kth) x = ninf;
  }
  if (o.top_p < 1.0) {
    std::vector<std::int32_t> idx(s.size());
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](auto a, auto b) { return s[std::size_t(a)] < s[std::size_t(b)]; });
    const float mx = s[std::size_t(idx.back())];
    double z = 0;
    for (auto x : s) z += std::exp(double(x) - mx);
    double cum = 0;
    for (std::size_t r = 0; r + 1 < idx.size(); ++r) {  // the most likely (last) always stays
      cum += std::exp(double(s[std::size_t(idx[r])]) - mx) / z;
      if (cum <= 1.0 - o.top_p) s[std::size_t(idx[r])] = ninf;
      else break;
    }
  }
}

// A draw from softmax(s) (s after the warpers).
inline std::int32_t draw(std::span<const float> s, std::mt19937_64& rng) {
  const float mx = *std::max_element(s.begin(), s.end());
  double z = 0;
  for (auto x : s) z += std::exp(double(x) - mx);
  double u = train::uniform01(rng) * z, acc = 0;
  std::int32_t last = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (!std::isfinite(s[i])) continue;
    acc += std::exp(double(s[i]) - mx);
    last = std::int32_t(i);
    if (u < acc) return last;
  }
  return last;  // rounding at the very end of the range
}

// The next token for `logits` (modified in place) after `context` (prompt and
// tokens generated so far).
inline std::int32_t next_token(std::span<float> logits, std::span<const std::int32_t> context,
                               const sampling_options& o, std::mt19937_64& rng) {
  apply_repetition_penalty(logits, context, o.repetition_penalty);
  if (!o.do_sample) return argmax(logits);
  apply_warpers(logits, o);
  return draw(logits, rng);
}

}  // namespace staticgrad::infer
