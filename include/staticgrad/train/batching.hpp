#pragma once
// From the data loader's batch (rows x seq_len, padded) to what the model
// steps on: the segments that have at least one counted label, packed into
// one token stream with their own layout.
//
// Why dropping segments is exact: attention never crosses a segment
// (seq_start), labels shift inside a segment, so a segment whose shifted
// labels are all -100 (a padding run, a fully masked example) adds nothing to
// the loss or to any gradient. Dropping it only saves work, and removes the
// pad ids, which may lie outside a small model's vocabulary.
#include <cstdint>
#include <string>
#include <vector>

#include "staticgrad/backend/cpu/segments.hpp"
#include "staticgrad/io/dataset.hpp"
#include "staticgrad/train/backend.hpp"

namespace staticgrad::train {

// The CPU model's layout of a batch: positions [T], seq_start [S+1].
inline cpu::owned_layout cpu_layout(const token_batch& b) {
  cpu::owned_layout l;
  l.positions = b.positions;
  l.seq_start.assign(1, 0);
  for (auto n : b.seq_lens) l.seq_start.push_back(l.seq_start.back() + n);
  return l;
}

// Counted targets of one segment [s, e): labels[s+1 .. e) != -100.
inline std::int64_t counted_targets(const std::int32_t* labels, std::int64_t s, std::int64_t e) {
  std::int64_t n = 0;
  for (std::int64_t t = s + 1; t < e; ++t) n += labels[t] != io::ignore_index;
  return n;
}

// Appends one sequence (positions 0..n-1) unless it has nothing to count.
// Every id must be below `vocab` (the model's embedding rows); `where` names
// the data for the error.
inline void append_sequence(token_batch& b, const std::int32_t* ids, const std::int32_t* labels,
                            const std::int32_t* positions, std::int64_t n, std::int64_t vocab,
                            const std::string& where) {
  const std::int64_t k = counted_targets(labels, 0, n);
  if (k == 0) return;
  for (std::int64_t t = 0; t < n; ++t)
    require(ids[t] >= 0 && ids[t] < vocab,
            "token id " + std::to_string(ids[t]) + " is outside the model's vocabulary (vocab_size " +
                std::to_string(vocab) + ")",
            {where, "input_ids", std::nullopt});
  b.input_ids.insert(b.input_ids.end(), ids, ids + n);
  b.labels.insert(b.labels.end(), labels, labels + n);
  for (std::int64_t t = 0; t < n; ++t) b.positions.push_back(positions ? positions[t] : std::int32_t(t));
  b.seq_lens.push_back(std::int32_t(n));
  b.counted += k;
}

inline token_batch pack_loader_batch(const io::batch& in, std::int64_t vocab, const std::string& where) {
  token_batch b;
  for (std::size_t s = 0; s + 1 < in.cu_seqlens.size(); ++s) {
    const std::int64_t from = in.cu_seqlens[s], to = in.cu_seqlens[s + 1];
    append_sequence(b, in.input_ids.data() + from, in.labels.data() + from, in.positions.data() + from, to - from,
                    vocab, where);
  }
  return b;
}

}  // namespace staticgrad::train
