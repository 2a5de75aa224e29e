// The CUDA decoder (include/staticgrad/infer/cuda_decoder.hpp) against the
// CPU kv_decoder: logits, prefill against token by token through the cache,
// and greedy generation, with and without an adapter
// (cuda_decoder_reference.cpp does the work in host C++; this TU compiles the
// decoder's device half).
//
// Exit codes: 0 pass, 1 fail, 77 no CUDA device (ctest: skipped).
#include <cuda_runtime.h>

#include <cstdio>

#include "cuda_decoder_reference.hpp"
#include "staticgrad/infer/cuda_decoder_core.cuh"

int main() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  return staticgrad::test::cuda_decoder_check();
}
