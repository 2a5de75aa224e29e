#pragma once
// Token layout of a batch: which tokens form one sequence, and their RoPE
// positions.
//
// Invariants (checked by validate_layout):
//  - All tensors are token-major: T tokens = (batch rows x sequence) flattened,
//    possibly packed (several documents of unequal length in one row).
//  - seq_start = [0, s_1, ..., T]: sequence i is the token range
//    [seq_start[i], seq_start[i+1]). Every sequence has at least one token, so
//    seq_start is strictly increasing; T = seq_start.back().
//  - positions has T entries, each >= 0 (RoPE angle index). Attention does not
//    read positions: causality and sequence boundaries come from seq_start only.
//  - token_layout is a non-owning view; owned_layout keeps the storage.
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

#include "staticgrad/core/error.hpp"

namespace staticgrad::cpu {

struct token_layout {
  std::span<const std::int32_t> positions;  // [T]   RoPE position of each token
  std::span<const std::int32_t> seq_start;  // [S+1] sequence start offsets, 0 ... T

  std::int64_t tokens() const { return seq_start.empty() ? 0 : seq_start.back(); }
  std::int64_t sequences() const {
    return seq_start.empty() ? 0 : static_cast<std::int64_t>(seq_start.size()) - 1;
  }
  std::int64_t begin(std::int64_t s) const { return seq_start[static_cast<std::size_t>(s)]; }
  std::int64_t end(std::int64_t s) const { return seq_start[static_cast<std::size_t>(s) + 1]; }
};

// Owns the arrays a token_layout points into. Copying or moving an
// owned_layout is safe; call view() again afterwards (spans are not stored).
struct owned_layout {
  std::vector<std::int32_t> positions;
  std::vector<std::int32_t> seq_start;
  token_layout view() const { return {positions, seq_start}; }
};

// Throws staticgrad::error unless the layout satisfies the invariants above.
// If expected_tokens >= 0, also requires T == expected_tokens.
inline void validate_layout(const token_layout& l, std::int64_t expected_tokens = -1) {
  const error_context ctx{"", "token_layout", std::nullopt};
  require(l.seq_start.size() >= 2,
          "seq_start needs at least two entries (0 and T), got " + std::to_string(l.seq_start.size()),
          ctx);
  require(l.seq_start.front() == 0,
          "seq_start must begin with 0, got " + std::to_string(l.seq_start.front()), ctx);
  for (std::size_t i = 1; i < l.seq_start.size(); ++i)
    require(l.seq_start[i] > l.seq_start[i - 1],
            "seq_start must be strictly increasing (no empty sequences): seq_start[" +
                std::to_string(i - 1) + "] = " + std::to_string(l.seq_start[i - 1]) +
                ", seq_start[" + std::to_string(i) + "] = " + std::to_string(l.seq_start[i]),
            ctx);
  const std::int64_t T = l.seq_start.back();
  require(static_cast<std::int64_t>(l.positions.size()) == T,
          "positions has " + std::to_string(l.positions.size()) + " entries but seq_start ends at " +
              std::to_string(T),
          ctx);
  for (std::size_t t = 0; t < l.positions.size(); ++t)
    require(l.positions[t] >= 0,
            "negative position " + std::to_string(l.positions[t]) + " at token " + std::to_string(t),
            ctx);
  if (expected_tokens >= 0)
    require(T == expected_tokens, "layout has " + std::to_string(T) + " tokens, tensors have " +
                                      std::to_string(expected_tokens),
            ctx);
}

// Packed sequences of the given lengths, positions 0..len-1 in each.
inline owned_layout make_packed_layout(std::span<const std::int64_t> lengths) {
  owned_layout o;
  o.seq_start.push_back(0);
  for (std::size_t i = 0; i < lengths.size(); ++i) {
    const std::int64_t len = lengths[i];
    require(len >= 1, "sequence " + std::to_string(i) + " has length " + std::to_string(len) +
                          " (must be >= 1)");
    require(o.seq_start.back() + len <= INT32_MAX, "total token count exceeds int32 range");
    for (std::int64_t p = 0; p < len; ++p) o.positions.push_back(static_cast<std::int32_t>(p));
    o.seq_start.push_back(static_cast<std::int32_t>(o.seq_start.back() + len));
  }
  require(lengths.size() >= 1, "a layout needs at least one sequence");
  return o;
}
inline owned_layout make_packed_layout(std::initializer_list<std::int64_t> lengths) {
  return make_packed_layout(std::span<const std::int64_t>(lengths.begin(), lengths.size()));
}

// `rows` rows of `seq_len` tokens each (the unpacked batch): T = rows * seq_len,
// positions restart at 0 in each row.
inline owned_layout make_uniform_layout(std::int64_t rows, std::int64_t seq_len) {
  require(rows >= 1 && seq_len >= 1, "make_uniform_layout: rows (" + std::to_string(rows) +
                                         ") and seq_len (" + std::to_string(seq_len) +
                                         ") must be >= 1");
  std::vector<std::int64_t> lengths(static_cast<std::size_t>(rows), seq_len);
  return make_packed_layout(std::span<const std::int64_t>(lengths));
}

}  // namespace staticgrad::cpu
