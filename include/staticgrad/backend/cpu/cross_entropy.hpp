#pragma once
// Fused LM head + cross-entropy on the CPU, in chunks of tokens, never
// materialising the [T, V] logits.
//
// Shapes (row-major, token-major):
//   hidden, dhidden : [T, H]   final-norm output and its gradient
//   w_lm            : [V, H]   LM head (= embed_tokens for tied checkpoints); frozen
//   targets         : [T]      label token each position must predict, or -100
//   logits (scratch): [chunk, V] per chunk, in S (plus [chunk, H] gather buffers)
// Invariants:
//  - targets are already shifted (see shift_labels): targets[t] = labels[t+1]
//    inside a sequence, -100 on the last token of each sequence (HF semantics).
//  - A chunk is chunk_tokens *counted* tokens (ignored ones are skipped, not
//    computed); peak scratch is chunk_tokens * (V + 2H) elements of S.
//  - Logits and log-softmax in S (fp32 or double), max-subtracted so exp never
//    overflows. The loss sum is accumulated in double in token order, so it
//    does not depend on the chunk size.
//  - Forward and backward are fused: with dhidden non-null, the same pass
//    writes dhidden[t] = grad_scale * (softmax(logits_t) - onehot(target_t)) W
//    for counted tokens and 0 for ignored ones. A training step passes
//    grad_scale = 1 / (total counted tokens over the step) and needs no second
//    pass over the vocabulary. dhidden is overwritten, never accumulated.
//  - Every target is range-checked before any output is written.
//  - A batch with no counted token returns {0, 0}: no division happens here,
//    the caller divides loss_sum by counted (and must skip that when 0).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "staticgrad/backend/cpu/gemm.hpp"
#include "staticgrad/backend/cpu/parallel.hpp"
#include "staticgrad/backend/cpu/segments.hpp"
#include "staticgrad/core/error.hpp"

namespace staticgrad::cpu {

// Hugging Face / PyTorch ignore index of CrossEntropyLoss.
inline constexpr std::int32_t ignore_index = -100;

template <class S>
struct ce_result {
  S loss_sum;            // sum over counted tokens of -log softmax(logits)[target]
  std::int64_t counted;  // tokens whose target != ignore_index
};

// targets[t] = labels[t + 1] if t + 1 is in the same sequence, else -100.
// labels are HF-aligned (labels[t] is the token at t, or -100 to mask it).
// labels, targets: [T], T = layout.tokens(); may not alias.
inline void shift_labels(const std::int32_t* labels, std::int32_t* targets, const token_layout& layout) {
  validate_layout(layout);
  for (std::int64_t s = 0; s < layout.sequences(); ++s) {
    const std::int64_t b = layout.begin(s), e = layout.end(s);
    for (std::int64_t t = b; t + 1 < e; ++t) targets[t] = labels[t + 1];
    targets[e - 1] = ignore_index;
  }
}
inline std::vector<std::int32_t> shift_labels(std::span<const std::int32_t> labels,
                                              const token_layout& layout) {
  validate_layout(layout, static_cast<std::int64_t>(labels.size()));
  std::vector<std::int32_t> targets(labels.size());
  shift_labels(labels.data(), targets.data(), layout);
  return targets;
}

namespace detail {
inline void check_ce(std::int64_t T, int hidden_size, std::int64_t vocab) {
  const error_context ctx{"", "lm_head", std::nullopt};
  require(T >= 0, "negative token count " + std::to_string(T), ctx);
  require(hidden_size > 0 && vocab > 0, "hidden_size (" + std::to_string(hidden_size) +
                                            ") and vocab (" + std::to_string(vocab) +
                                            ") must be positive",
          ctx);
}
}  // namespace detail

// logits[T, V] = hidden[T, H] w_lm[V, H]^T, in S. For small T only (tests,
// the `loss`/parity tool): it materialises all logits.
template <class S>
void lm_head_logits(const S* hidden, const S* w_lm, S* logits, std::int64_t T, int hidden_size,
                    std::int64_t vocab) {
  detail::check_ce(T, hidden_size, vocab);
  matmul_nt<S>(T, vocab, hidden_size, hidden, hidden_size, w_lm, hidden_size, logits, vocab);
}

// The general form, used by the executor of lm_head_cross_entropy nodes:
//   loss_per_token [T] (nullable): the token's cross-entropy, 0 where ignored;
//   dhidden [T, H] (nullable): dloss_t * (softmax - onehot) W for counted
//     tokens, where dloss_t = dloss[t] if dloss is given, else grad_scale;
//     written (ignored rows zeroed) or, with accumulate, added.
template <class S>
ce_result<S> lm_head_ce(const S* hidden, const S* w_lm, const std::int32_t* targets, std::int64_t T, int hidden_size,
                        std::int64_t vocab, std::int64_t chunk_tokens, S* loss_per_token, S* dhidden_or_null,
                        const S* dloss, S grad_scale, bool accumulate) {
  detail::check_ce(T, hidden_size, vocab);
  require(chunk_tokens > 0, "chunk_tokens must be positive, got " + std::to_string(chunk_tokens),
          {"", "lm_head", std::nullopt});
  for (std::int64_t t = 0; t < T; ++t)
    require(targets[t] == ignore_index || (targets[t] >= 0 && targets[t] < vocab),
            "target " + std::to_string(targets[t]) + " at token " + std::to_string(t) +
                " is outside [0, " + std::to_string(vocab) + ") and is not -100",
            {"", "targets", std::nullopt});
  const std::int64_t H = hidden_size, V = vocab;
  // Only counted tokens go through the vocabulary products: ignored positions
  // (prompt tokens, sequence ends) are common and cost nothing here. A chunk
  // is chunk_tokens counted tokens, gathered into a contiguous [c, H] block.
  std::vector<std::int64_t> rows_idx;  // token index of each counted token, in order
  rows_idx.reserve(static_cast<std::size_t>(T));
  for (std::int64_t t = 0; t < T; ++t)
    if (targets[t] != ignore_index) rows_idx.push_back(t);
  const std::int64_t counted = static_cast<std::int64_t>(rows_idx.size());
  if (dhidden_or_null && !accumulate) std::fill(dhidden_or_null, dhidden_or_null + T * H, S(0));  // ignored rows
  if (loss_per_token) std::fill(loss_per_token, loss_per_token + T, S(0));
  if (counted == 0) return {S(0), 0};

  const std::int64_t chunk = std::min(chunk_tokens, counted);
  std::vector<S> hbuf(static_cast<std::size_t>(chunk * H));    // [chunk, H] gathered hidden
  std::vector<S> logits(static_cast<std::size_t>(chunk * V));  // [chunk, V] scratch
  std::vector<S> gbuf(dhidden_or_null ? static_cast<std::size_t>(chunk * H) : 0);  // [chunk, H]
  std::vector<double> row_loss(static_cast<std::size_t>(chunk));
  double loss_sum = 0;

  for (std::int64_t c0 = 0; c0 < counted; c0 += chunk) {
    const std::int64_t c = std::min(chunk, counted - c0);
    const std::int64_t* idx = rows_idx.data() + c0;
    for (std::int64_t r = 0; r < c; ++r)
      std::copy_n(hidden + idx[r] * H, H, hbuf.data() + r * H);
    // [c, V] = hbuf W^T. Column panels of V on separate threads: each writes
    // its own columns, so the result does not depend on the thread count.
    constexpr std::int64_t vpanel = 4096;  // vocab columns per task (~H*4096 weights)
    const std::int64_t npanel = (V + vpanel - 1) / vpanel;
    parallel_for(npanel, 2.0 * double(c) * double(H) * double(vpanel), [&](std::int64_t p) {
      const std::int64_t v0 = p * vpanel, vb = std::min(vpanel, V - v0);
      matmul_nt<S>(c, vb, H, hbuf.data(), H, w_lm + v0 * H, H, logits.data() + v0, V);
    });
    // Per row: stable log-softmax and loss; if wanted, the logit gradient
    // grad_scale * (softmax - onehot) written over the logits in place.
    parallel_for(c, 3.0 * double(V), [&](std::int64_t r) {
      S* row = logits.data() + r * V;
      const std::int32_t tgt = targets[idx[r]];
      const S m = *std::max_element(row, row + V);
      S z = 0;
      for (std::int64_t j = 0; j < V; ++j) z += std::exp(row[j] - m);
      const S lse = m + std::log(z);
      row_loss[static_cast<std::size_t>(r)] = static_cast<double>(lse - row[tgt]);
      if (loss_per_token) loss_per_token[idx[r]] = lse - row[tgt];
      if (dhidden_or_null) {
        const S g = dloss ? dloss[idx[r]] : grad_scale;
        for (std::int64_t j = 0; j < V; ++j) row[j] = g * std::exp(row[j] - lse);
        row[tgt] -= g;
      }
    });
    for (std::int64_t r = 0; r < c; ++r) loss_sum += row_loss[static_cast<std::size_t>(r)];
    // dhidden rows = G[c, V] W[V, H], split over hidden columns, then scattered.
    if (dhidden_or_null) {
      constexpr std::int64_t hpanel = 128;  // hidden columns per task
      const std::int64_t nh = (H + hpanel - 1) / hpanel;
      parallel_for(nh, 2.0 * double(c) * double(V) * double(hpanel), [&](std::int64_t p) {
        const std::int64_t h0 = p * hpanel, hb = std::min(hpanel, H - h0);
        matmul_nn<S>(c, hb, V, logits.data(), V, w_lm + h0, H, gbuf.data() + h0, H);
      });
      for (std::int64_t r = 0; r < c; ++r) {
        S* dst = dhidden_or_null + idx[r] * H;
        const S* src = gbuf.data() + r * H;
        if (accumulate)
          for (std::int64_t j = 0; j < H; ++j) dst[j] += src[j];
        else
          std::copy_n(src, H, dst);
      }
    }
  }
  return {static_cast<S>(loss_sum), counted};
}

template <class S>
ce_result<S> lm_head_ce_forward(const S* hidden, const S* w_lm, const std::int32_t* targets,
                                S* dhidden_or_null, std::int64_t T, int hidden_size,
                                std::int64_t vocab, S grad_scale, std::int64_t chunk_tokens) {
  return lm_head_ce<S>(hidden, w_lm, targets, T, hidden_size, vocab, chunk_tokens, nullptr, dhidden_or_null, nullptr,
                       grad_scale, false);
}

}  // namespace staticgrad::cpu
