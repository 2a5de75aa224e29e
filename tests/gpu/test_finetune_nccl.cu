// Data-parallel `staticgrad finetune --device cuda --gpus N` (docs/multi_gpu.md;
// finetune_reference.cpp does the work). Two ctest entries run it:
//   gpu_test_finetune_nccl       (argument 1): one NCCL rank = the plain one-GPU run;
//   gpu_test_finetune_nccl_2gpu  (argument 2): two GPUs = one GPU with grad-accum doubled,
//                                a killed rank ends the job.
// Exit codes: 0 pass, 1 fail, 77 (ctest: skipped) with fewer CUDA devices
// than the check needs, or a build without NCCL. The tool: $STATICGRAD_TOOL,
// else the one this build made (STATICGRAD_TOOL_PATH).
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#include "finetune_reference.hpp"

int main(int argc, char** argv) {
  const int need = argc > 1 ? std::atoi(argv[1]) : 1;
#ifndef STATICGRAD_HAVE_NCCL
  std::printf("this build has no NCCL: skipped (need %d)\n", need);
  return 77;
#else
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n < need) {
    std::printf("%d CUDA device(s), this check needs %d: skipped\n", n, need);
    return 77;
  }
  const char* tool = std::getenv("STATICGRAD_TOOL");
  if (!tool) tool = STATICGRAD_TOOL_PATH;
  return staticgrad::test::finetune_nccl_check(tool, need);
#endif
}
