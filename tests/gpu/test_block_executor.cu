// The whole Qwen2.5 block on CUDA (block_executor.cuh, driven by the
// generated schedule) against the CPU executor of the same plan, forward and
// backward, for the 0.5B and 1.5B shapes (attention supports head dim 64 and
// 128 only, so not the tiny shape).
//
// Exit codes: 0 pass, 1 fail, 77 no CUDA device (ctest: skipped).
//
// Setup: T = 600 tokens packed as sequences {1, 100, 211, 288}; random bf16
// weights (matrices std 0.02, norm weights 1 + 0.1 N(0,1), biases 0.02 N(0,1)),
// LoRA r = 16 with non-zero A (std 1/sqrt(in)) and B (std 0.02), scaling 2;
// x, dL/dy ~ N(0, 1). Every input is rounded to bf16 first and the CPU
// reference (tests/gpu/block_reference.cpp, f32) gets exactly those values.
// Every buffer the GPU writes (y, dA, dB, workspace, saved arenas) is poisoned
// with NaN first, so an unwritten element fails the comparison.
//
// Tolerance: relative Frobenius error ||gpu - cpu|| / ||cpu||. The GPU stores
// every activation and gradient in bf16 (unit roundoff 2^-9 = 2e-3 relative,
// RMS ~1.1e-3 for round-to-nearest); a value reaches y through ~8 kernels and
// a gradient reaches dx / dA / dB through ~15 (forward recomputation is not
// involved: the saved bf16 values are read back). Independent roundings add
// in quadrature: sqrt(15) * 1.1e-3 ~ 4e-3, times the amplification of
// rmsnorm/softmax backward (O(1) for these inputs); the worst case (all errors
// aligned) is 15 * 2e-3 = 3e-2. We take 2e-2 for y and dx and for the block's
// own contributions y - x and dx - dy (x and dy are exact, so the full y and
// dx errors alone would hide the block), and 3e-2 for dA and dB, which also
// contract over T = 600 bf16 products of two rounded factors. Expected
// observed values are ~3e-3 .. 1e-2.
// After the comparison, forward + backward are captured as one CUDA graph,
// replayed, and must reproduce the first results (1e-4 relative: same
// kernels, same algorithms, deterministic attention; the margin only admits a
// cuBLASLt algorithm whose split-K reduction order varies; a wrong pointer or
// a missing kernel in the graph gives O(1) or NaN).
#include <cuda_runtime.h>

#include <cstdio>
#include <exception>

// One generated translation unit per plan (block_executor_plan.cu.in over
// block_executor_check.cuh; tests/CMakeLists.txt): that plan's checks.
bool check_block_executor_qwen2_0_5b();
bool check_block_executor_qwen2_1_5b();

int main() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("no CUDA device: skipping\n");
    return 77;
  }
  try {
    bool ok = check_block_executor_qwen2_0_5b();
    ok = check_block_executor_qwen2_1_5b() && ok;
    std::printf("%s\n", ok ? "ALL PASS" : "SOME FAILED");
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
}
