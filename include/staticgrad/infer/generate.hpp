#pragma once
// The generation loop: prefill the prompt through the KV cache, then one
// token at a time until a stop id or max_new_tokens, calling `on_token` as
// each token is chosen (for streaming). The returned ids include the stop id
// when one ended the generation, as transformers' generate() returns them.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <random>
#include <span>
#include <vector>

#include "staticgrad/infer/decoder.hpp"
#include "staticgrad/infer/sampling.hpp"

namespace staticgrad::infer {

struct generation_options {
  sampling_options sampling;
  std::int64_t max_new_tokens = 256;
  std::vector<std::int32_t> stop_ids;
  std::uint64_t seed = 0;
};

struct generation_result {
  std::vector<std::int32_t> ids;  // new tokens (the stop id last, if one was reached)
  bool stopped = false;           // a stop id ended it (not max_new_tokens)
  std::size_t prompt_tokens = 0;  // tokens prefilled (not already in the cache)
  double prefill_s = 0, decode_s = 0;
  double decode_tokens_per_s() const { return ids.size() > 1 ? double(ids.size() - 1) / decode_s : 0.0; }
};

// `context`: the whole sequence so far (for the repetition penalty); its
// tokens past dec.cached() are fed first (a chat reuses the cache of the
// turns before). Requires dec.cached() < context.size(). The same loop
// drives the CPU (kv_decoder.hpp) and the CUDA (cuda_decoder.cuh) decoder.
inline generation_result generate(decoder& dec, std::vector<std::int32_t> context, const generation_options& o,
                                  const std::function<void(std::int32_t)>& on_token = {}) {
  check_sampling(o.sampling);
  require(o.max_new_tokens >= 1, "max_new_tokens must be at least 1", {"", "max_new_tokens", {}});
  require(dec.cached() < context.size(), "the prompt is empty");
  std::mt19937_64 rng(o.seed);
  dec.reserve(context.size() + std::size_t(o.max_new_tokens));
  generation_result r;
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  const std::span<const std::int32_t> fresh(context.data() + dec.cached(), context.size() - dec.cached());
  r.prompt_tokens = fresh.size();
  std::vector<float> logits;
  auto lg = dec.feed(fresh);
  auto t1 = clock::now();
  r.prefill_s = std::chrono::duration<double>(t1 - t0).count();
  for (std::int64_t n = 0; n < o.max_new_tokens; ++n) {
    logits.assign(lg.begin(), lg.end());
    const std::int32_t id = next_token(logits, context, o.sampling, rng);
    r.ids.push_back(id);
    context.push_back(id);
    if (std::find(o.stop_ids.begin(), o.stop_ids.end(), id) != o.stop_ids.end()) {
      r.stopped = true;
      break;
    }
    if (on_token) on_token(id);
    if (n + 1 == o.max_new_tokens) break;
    lg = dec.feed(std::span<const std::int32_t>(&context.back(), 1));
  }
  // The stop token (or the last one) is not fed: a following chat turn feeds
  // what the template puts after it.
  r.decode_s = std::chrono::duration<double>(clock::now() - t1).count();
  return r;
}

}  // namespace staticgrad::infer
