#pragma once
// Host-only half of test_finetune_cuda.cu (the .cu only checks for a device):
// finetune_reference.cpp writes a small checkpoint and data, runs the
// `staticgrad` tool with --device cuda and --device cpu, and compares.
namespace staticgrad::test {

// tool: path of the staticgrad executable. Returns 0 (pass) or 1 (fail);
// prints a report on stdout.
int finetune_cuda_check(const char* tool);

}  // namespace staticgrad::test
