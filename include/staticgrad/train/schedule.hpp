#pragma once
// Learning-rate schedules. step is 1-based: the value used by the step-th
// optimizer update (1 ... total).
//   constant:           lr
//   warmup (any kind):  lr * step / warmup            for step <= warmup
//   cosine after it:    lr_min + (lr - lr_min) * (1 + cos(pi * p)) / 2
//   linear after it:    lr_min + (lr - lr_min) * (1 - p)
//   with p = (step - warmup) / (total - warmup) in (0, 1].
// Unlike transformers' get_*_schedule_with_warmup (0-based; its first update
// uses lr 0 when warmup > 0), no update is wasted at lr 0 during warmup; the
// last update of a decaying schedule uses lr_min.
#include <cmath>
#include <cstdint>
#include <numbers>
#include <string>

#include "staticgrad/core/error.hpp"

namespace staticgrad::train {

enum class schedule_kind { constant, cosine, linear };

inline schedule_kind parse_schedule(const std::string& s) {
  if (s == "constant") return schedule_kind::constant;
  if (s == "cosine") return schedule_kind::cosine;
  if (s == "linear") return schedule_kind::linear;
  throw error("unknown schedule \"" + s + "\" (expected constant, cosine or linear)", {"", "--schedule", {}});
}

struct lr_schedule {
  schedule_kind kind = schedule_kind::constant;
  double lr = 1e-3;
  std::int64_t warmup = 0;
  std::int64_t total = 1;
  double lr_min = 0;

  double at(std::int64_t step) const {
    require(step >= 1, "learning-rate schedule steps are 1-based");
    if (warmup > 0 && step <= warmup) return lr * double(step) / double(warmup);
    if (kind == schedule_kind::constant || total <= warmup) return lr;
    const double p = std::min(1.0, double(step - warmup) / double(total - warmup));
    const double f = kind == schedule_kind::cosine ? 0.5 * (1.0 + std::cos(std::numbers::pi * p)) : 1.0 - p;
    return lr_min + (lr - lr_min) * f;
  }
};

}  // namespace staticgrad::train
