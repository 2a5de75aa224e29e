#pragma once
// Token embedding lookup on the CPU.
//
// Shapes (row-major): table, dtable [vocab, H]; ids [T]; out, dout [T, H].
// Invariants:
//  - Every id is range-checked before anything is written; an id outside
//    [0, vocab) throws staticgrad::error naming the token index and the id.
//  - The table may be S or bf16 (frozen weights are stored bf16); a bf16 row is
//    widened exactly to S.
//  - The embedding is frozen in LoRA training, so the trainer never calls the
//    backward; embedding_backward exists for tests and full fine-tuning. It
//    accumulates (dtable[id] += dout[t]): repeated ids sum, and the caller
//    zeroes dtable first.
#include <cstdint>
#include <string>
#include <type_traits>

#include "staticgrad/core/dtype.hpp"
#include "staticgrad/core/error.hpp"

namespace staticgrad::cpu {

inline void check_token_ids(const std::int32_t* ids, std::int64_t T, std::int64_t vocab) {
  require(T >= 0 && vocab > 0, "embedding: token count " + std::to_string(T) + " / vocab " +
                                   std::to_string(vocab) + " invalid");
  for (std::int64_t t = 0; t < T; ++t)
    require(ids[t] >= 0 && ids[t] < vocab,
            "token id " + std::to_string(ids[t]) + " at token " + std::to_string(t) +
                " is outside the vocabulary [0, " + std::to_string(vocab) + ")",
            {"", "input_ids", std::nullopt});
}

// out[t, :] = table[ids[t], :]
template <class S, class W>
void embedding_forward(const W* table, const std::int32_t* ids, S* out, std::int64_t T,
                       std::int64_t H, std::int64_t vocab) {
  static_assert(std::is_same_v<W, S> || std::is_same_v<W, bf16>,
                "embedding table must be stored as S or bf16");
  check_token_ids(ids, T, vocab);
  for (std::int64_t t = 0; t < T; ++t) {
    const W* row = table + static_cast<std::int64_t>(ids[t]) * H;
    S* dst = out + t * H;
    for (std::int64_t h = 0; h < H; ++h) {
      if constexpr (std::is_same_v<W, bf16>) dst[h] = static_cast<S>(static_cast<float>(row[h]));
      else dst[h] = row[h];
    }
  }
}

// dtable[ids[t], :] += dout[t, :]
template <class S>
void embedding_backward(const S* dout, const std::int32_t* ids, S* dtable, std::int64_t T,
                        std::int64_t H, std::int64_t vocab) {
  check_token_ids(ids, T, vocab);
  for (std::int64_t t = 0; t < T; ++t) {
    S* row = dtable + static_cast<std::int64_t>(ids[t]) * H;
    const S* src = dout + t * H;
    for (std::int64_t h = 0; h < H; ++h) row[h] += src[h];
  }
}

}  // namespace staticgrad::cpu
