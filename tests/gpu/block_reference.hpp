#pragma once
// The CPU reference of one Qwen2.5 block, forward and backward, behind plain
// functions: test_block_executor.cu cannot instantiate the graph types (nvcc
// and C++20 class-type template arguments), so block_reference.cpp (g++)
// runs cpu::program<qwen2_block<Shape>, float> and this header is all the .cu
// sees. shape: "qwen2_0_5b" or "qwen2_1_5b" (the generated plan names).
#include <cstdint>

namespace staticgrad::test {

// One parameter of the block: frozen matrix [rows, cols], frozen vector
// [1, cols], or LoRA adapter (lora = true: A [r, cols], B [rows, r]).
struct block_param {
  const char* name;
  int rows, cols;
  bool lora;
};

// Fills up to `max` parameters; returns how many the block has (-1: unknown shape).
int block_reference_params(const char* shape, block_param* out, int max);

// Runs forward then backward on the CPU in f32. frozen[i] / lora A, B follow
// the order of block_reference_params (data of LoRA entries: A at a[i], B at
// b[i]; frozen entries use a[i]). x, dy [T, hidden]; writes y, dx [T, hidden]
// and dA[i], dB[i] for LoRA entries (overwritten). Returns 0, or -1 with a
// message on stderr.
int block_reference_run(const char* shape, int T, int r, const std::int32_t* positions, const std::int32_t* seq_start,
                        int nseq, float eps, float rope_theta, float lora_scaling, const float* const* a,
                        const float* const* b, float* const* dA, float* const* dB, const float* x, const float* dy,
                        float* y, float* dx);

}  // namespace staticgrad::test
