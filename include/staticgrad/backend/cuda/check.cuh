#pragma once
// SG_CUDA_CHECK(call): every CUDA runtime call and kernel launch is checked;
// a failure throws staticgrad::error naming the call, the CUDA error and
// file:line. After a launch use SG_CUDA_CHECK(cudaGetLastError()).
#include <cuda_runtime.h>

#include <string>

#include "staticgrad/core/error.hpp"

namespace staticgrad::cuda {

inline void check(cudaError_t e, const char* call, const char* file, int line) {
  if (e == cudaSuccess) return;
  throw error(std::string(call) + " failed: " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ") at " + file +
              ":" + std::to_string(line));
}

}  // namespace staticgrad::cuda

#define SG_CUDA_CHECK(call) ::staticgrad::cuda::check((call), #call, __FILE__, __LINE__)
