// `staticgrad finetune --device cuda` end to end against `--device cpu`: the
// same checkpoint, data, seed and options; per-step losses, the GPU loss
// decreasing, and the written PEFT adapters (finetune_reference.cpp does the
// work; it is host C++ because it reads the adapters with the io headers and
// writes the checkpoint with the demo's helpers).
//
// Exit codes: 0 pass, 1 fail, 77 no CUDA device (ctest: skipped).
// The tool's path: argv[1], else $STATICGRAD_TOOL, else the one this build
// made (STATICGRAD_TOOL_PATH).
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#include "finetune_reference.hpp"

int main(int argc, char** argv) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  const char* tool = argc > 1 ? argv[1] : std::getenv("STATICGRAD_TOOL");
  if (!tool) tool = STATICGRAD_TOOL_PATH;
  return staticgrad::test::finetune_cuda_check(tool);
}
