#pragma once
// PEFT's default LoRA initialisation, seeded and portable:
//   A ~ U(-1/sqrt(in), 1/sqrt(in))   (nn.init.kaiming_uniform_(a=sqrt(5)):
//        gain sqrt(2/(1+5)), bound = gain * sqrt(3/in) = 1/sqrt(in))
//   B = 0                            (so the adapted model starts as the base)
// The random numbers come from std::mt19937_64 (its sequence is fixed by the
// C++ standard) turned into doubles with 53 bits, not from
// std::uniform_real_distribution (implementation-defined), so the same seed
// gives the same adapter on every platform. Torch's generator is different:
// the distribution matches PEFT, not the exact numbers.
#include <cmath>
#include <cstdint>
#include <random>

#include "staticgrad/io/peft_adapter.hpp"

namespace staticgrad::train {

// Uniform double in [0, 1) from the top 53 bits.
inline double uniform01(std::mt19937_64& g) { return double(g() >> 11) * 0x1.0p-53; }

// Fills every targeted A (layer by layer, targets in canonical order) and
// zeroes every B.
inline void init_lora(io::lora_adapter& ad, const io::hf_config& model, std::uint64_t seed) {
  std::mt19937_64 g(seed);
  for (std::int64_t l = 0; l < ad.num_layers; ++l)
    for (auto t : ad.config.target_modules) {
      auto& p = ad.at(l, t);
      const double bound = 1.0 / std::sqrt(double(io::target_in_features(t, model)));
      for (float& x : p.a) x = float((2.0 * uniform01(g) - 1.0) * bound);
      for (float& x : p.b) x = 0.f;
    }
}

}  // namespace staticgrad::train
