#pragma once
// Host-only half of test_finetune_cuda.cu (the .cu only checks for a device):
// finetune_reference.cpp writes a small checkpoint and data, runs the
// `staticgrad` tool with --device cuda and --device cpu, and compares.
namespace staticgrad::test {

// tool: path of the staticgrad executable. Returns 0 (pass) or 1 (fail);
// prints a report on stdout.
int finetune_cuda_check(const char* tool);

// Data-parallel `finetune --gpus` (test_finetune_nccl.cu). gpus 1: one NCCL
// rank against the plain one-GPU run; gpus 2: two GPUs with --grad-accum 1
// against one GPU with --grad-accum 2, and a killed rank ending the job.
int finetune_nccl_check(const char* tool, int gpus);

}  // namespace staticgrad::test
