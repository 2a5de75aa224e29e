#pragma once
// Scalar math shared by host (float, double) and device (float) code.
#include <cmath>

#include "staticgrad/core/macros.hpp"

namespace staticgrad::math {

SG_HD float exp(float x) {
#if defined(__CUDA_ARCH__)
  return ::expf(x);
#else
  return std::exp(x);
#endif
}
SG_HD double exp(double x) {
#if defined(__CUDA_ARCH__)
  return ::exp(x);
#else
  return std::exp(x);
#endif
}

}  // namespace staticgrad::math
