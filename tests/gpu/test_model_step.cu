// A whole training step on CUDA (model_step.cuh: embedding, blocks, chunked
// LM head + cross-entropy, final-norm and block backward, AdamW) against the
// CPU model (models::qwen2_model<qwen2_5_0_5b> + train::adamw_lora, run in the
// host-only TU tests/gpu/model_reference.cpp).
//
// Exit codes: 0 pass, 1 fail, 77 no CUDA device (ctest: skipped).
//
// Setup: the 0.5B, 3B (GQA 16/2) and 7B (GQA 28/4) block shapes, 2 layers, vocabulary 512, untied LM head;
// random bf16-representable weights (matrices and biases std 0.02, norm
// weights 1); LoRA r = 16 on all seven projections, alpha 32 (scaling 2),
// A ~ N(0, 1/in), B ~ N(0, 0.02^2) (both non-zero, so every gradient path is
// exercised); T = 300 tokens packed as sequences {100, 200}; labels = ids with
// the first 5 tokens of each sequence and ~10% of the rest set to -100. The LM
// head chunk is 128 tokens, so the test covers 3 chunks including a partial one.
//
// Tolerances (relative Frobenius error against the f32 CPU model):
//   loss 1e-2: the loss is an average of 290 log-sum-exps over logits of
//     O(0.1); the GPU's bf16 activations (x_l, hn) carry ~2^-9 relative
//     rounding per kernel; the per-token errors average out, 1e-2 is a
//     generous bound (expected ~1e-4..1e-3);
//   dA, dB 3e-2: as test_block_executor (each gradient passes ~15 bf16
//     roundings per block, sqrt(15) * 1.1e-3 ~ 4e-3 per block, two blocks plus
//     the head: dlogits and dhn stored in bf16; worst case aligned 3e-2), or
//     1.1 x the same row's error with the mma.sync attention kernels on the
//     same inputs, whichever is larger (the same-precision baseline: every
//     shape runs twice). That estimate does not hold for every shape: the 7B
//     block's layer-1 q / k gradients measured 3.11e-2..3.19e-2 on the H200
//     with the mma.sync kernels and 3.14e-2..3.19e-2 with the Hopper ones
//     (2026-12-03): its wider hidden size (3584, weights of std 0.02) makes
//     the attention logits ~4x larger than the 0.5B's and the softmax
//     gradient's cancellation larger, whatever the kernel;
//   A, B after one AdamW step (lr 1e-4, weight decay 0.01, clipping at 1.0;
//     the CPU reference gives a gradient norm ~1.8, so clipping is active) vs
//     the CPU step on the CPU gradients: 1e-2. At step 1 AdamW moves each
//     element by ~lr * sign(g) whatever |g| is, so an element whose gradient is
//     within the bf16 noise of zero may move the other way on the GPU: 2 lr =
//     2e-4 apart, 1e-2 of |B| (std 0.02) even if EVERY element flipped; a
//     realistic ~1% of flips gives ~1e-3. (With lr 1e-3 the same bound would
//     be 1e-1: that is why the step is small.)
//   the update itself, p_new - p_old, GPU vs CPU: 0.5. Only those sign flips
//     differ: a fraction f of flips gives ~2 sqrt(f) (0.2 at f = 1%); a missing,
//     wrong-signed or mis-scaled update gives >= 1;
//   the AdamW kernel alone: the CPU optimizer (train::adamw) applied to the
//     GPU's own gradients must reproduce the GPU's update to 1e-5 relative
//     (the kernel uses explicitly rounded f32 operations in the CPU's order:
//     bit for bit the same but for the last bit of the clipping coefficient,
//     whose norm is summed in another order);
//   the bf16 copies the products read are exactly bf16(p) after the step, and
//     the loss of a second pass with the updated adapter matches the CPU (1e-2).
// LoRA dropout (0.5B and 3B: head dims 64 and 128): p = 0.1, two micro-batches
// (the batch twice, dropout seeds s0 and s1, each seeded 1 / (2 counted),
// accumulated) from the initial adapter against the CPU model with the same
// seeds: the summed loss 1e-2 and every dA, dB 3e-2, the tolerances above (the
// masks are the CPU's exactly: ops/lora_dropout.hpp; only bf16 rounding
// differs). That the comparison can see a wrong mask: the CPU's dropout
// gradient must differ from its p = 0 gradient by more than 10x the tolerance.
// Then step() with dropout: captured and replayed graphs bit for bit equal to
// the step launched kernel by kernel for each of three seeds (the seed is read
// from device memory, so a replay uses the new seed), and two seeds give
// different parameters.
// Forward only (model_step::forward_loss, the eval path): the loss equals
// forward_backward's bit for bit (the same forward kernels; the head only
// skips its input gradient) and no gradient changes, with dropout off and on
// (on: no mask, so the p = 0 loss).
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <exception>

// One generated translation unit per plan (model_step_plan.cu.in over
// model_step_check.cuh; tests/CMakeLists.txt): the checks of that shape, both passes.
bool check_model_step_qwen2_0_5b(const char* shape, bool dropout);
bool check_model_step_qwen2_3b(const char* shape, bool dropout);
bool check_model_step_qwen2_7b(const char* shape, bool dropout);

// gpu_test_model_step [0.5b] [3b] [7b]: the shapes to check (default all three).
int main(int argc, char** argv) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("no CUDA device: skipping\n");
    return 77;
  }
  auto wanted = [&](const char* shape) {
    if (argc < 2) return true;
    for (int i = 1; i < argc; ++i)
      if (std::strcmp(argv[i], shape) == 0) return true;
    return false;
  };
  try {
    bool ok = true;
    if (wanted("0.5b")) ok = check_model_step_qwen2_0_5b("0.5b", true) && ok;
    if (wanted("3b")) ok = check_model_step_qwen2_3b("3b", true) && ok;  // GQA 16/2, head dim 128
    if (wanted("7b")) ok = check_model_step_qwen2_7b("7b", false) && ok;  // GQA 28/4
    std::printf("%s\n", ok ? "ALL PASS" : "SOME FAILED");
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
}
