// GPU test: the skinny token reduction (backend/cuda/token_reduce.cuh),
// C = alpha A^T B + beta C with K = tokens and one of M, N small, against a
// CPU reference in double on the same bf16 inputs.
//
// Exit codes: 0 pass, 1 fail, 77 no CUDA device (ctest: skipped).
//
// Cases: the LoRA dA shape (M = r small, C [r, in]) and dB shape (N = r small,
// C [out, r] written transposed), r = 16 and 32, K not a multiple of the
// split chunk, large dimensions not a multiple of the 128-column tile, row
// strides wider than the matrix (the fused layout's XZ [T, in + r]), beta 0
// (C poisoned with NaN first: every element must be written) and beta 1
// (accumulation onto a random C), and a second run that must be bitwise
// identical (fixed-order split sum).
// Tolerance: both sides multiply exact bf16 values; the GPU accumulates in
// f32 (per-thread mma chains, then the split partials), so its relative
// Frobenius error is ~sqrt(K) 2^-24 ~ 1e-5 at K = 5000; the bound is 1e-4.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "staticgrad/backend/cuda/token_reduce.cuh"
#include "support/compare.hpp"

namespace sc = staticgrad::cuda;

namespace {

struct device_buffer {
  void* p = nullptr;
  explicit device_buffer(std::size_t bytes) { SG_CUDA_CHECK(cudaMalloc(&p, bytes < 16 ? 16 : bytes)); }
  ~device_buffer() { cudaFree(p); }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
};

int failures = 0;

// A [K, lda >= M], B [K, ldb >= N] bf16; C [M, N] f32 (ldc = N).
void run_case(const char* name, std::int64_t M, std::int64_t N, std::int64_t K, std::int64_t lda, std::int64_t ldb,
              float alpha, float beta, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<__nv_bfloat16> a(static_cast<std::size_t>(K * lda)), b(static_cast<std::size_t>(K * ldb));
  for (auto& x : a) x = __float2bfloat16(nd(rng));
  for (auto& x : b) x = __float2bfloat16(nd(rng));
  std::vector<float> c0(static_cast<std::size_t>(M * N));
  for (auto& x : c0) x = nd(rng);

  // Reference in double: C = alpha sum_k A[k][m] B[k][n] + beta C0.
  std::vector<double> acc(static_cast<std::size_t>(M * N), 0.0);
  std::vector<double> arow(static_cast<std::size_t>(M));
  for (std::int64_t k = 0; k < K; ++k) {
    for (std::int64_t m = 0; m < M; ++m) arow[m] = __bfloat162float(a[k * lda + m]);
    for (std::int64_t m = 0; m < M; ++m) {
      const double am = arow[m];
      double* row = acc.data() + m * N;
      const __nv_bfloat16* brow = b.data() + k * ldb;
      for (std::int64_t n = 0; n < N; ++n) row[n] += am * __bfloat162float(brow[n]);
    }
  }
  std::vector<float> ref(acc.size());
  for (std::size_t i = 0; i < acc.size(); ++i) ref[i] = static_cast<float>(alpha * acc[i] + (beta != 0.f ? beta * c0[i] : 0.0));

  const auto plan = sc::token_reduce_plan::make(M, N, K, lda, ldb, std::size_t{64} << 20);
  if (!plan.valid) {
    std::printf("%-28s no plan for this shape  FAIL\n", name);
    ++failures;
    return;
  }
  device_buffer da(a.size() * 2), db(b.size() * 2), dc(c0.size() * 4), ws(plan.workspace);
  SG_CUDA_CHECK(cudaMemcpy(da.p, a.data(), a.size() * 2, cudaMemcpyHostToDevice));
  SG_CUDA_CHECK(cudaMemcpy(db.p, b.data(), b.size() * 2, cudaMemcpyHostToDevice));
  std::vector<float> got[2];
  for (int rep = 0; rep < 2; ++rep) {
    if (beta != 0.f) SG_CUDA_CHECK(cudaMemcpy(dc.p, c0.data(), c0.size() * 4, cudaMemcpyHostToDevice));
    else SG_CUDA_CHECK(cudaMemset(dc.p, 0xFF, c0.size() * 4));  // NaN poison
    SG_CUDA_CHECK(cudaMemset(ws.p, 0xFF, plan.workspace));       // the partials must be written too
    plan.run(nullptr, da.p, lda, db.p, ldb, static_cast<float*>(dc.p), N, alpha, beta, ws.p);
    SG_CUDA_CHECK(cudaDeviceSynchronize());
    got[rep].resize(c0.size());
    SG_CUDA_CHECK(cudaMemcpy(got[rep].data(), dc.p, c0.size() * 4, cudaMemcpyDeviceToHost));
  }
  const double e = sgtest::rel_err(got[0], ref);
  const bool same = std::memcmp(got[0].data(), got[1].data(), got[0].size() * 4) == 0;
  const bool ok = e < 1e-4 && same;  // NaN fails the first
  if (!ok) ++failures;
  std::printf("%-28s M %5lld N %5lld K %5lld  splits %3d  rel %.3e  %s  %s\n", name, static_cast<long long>(M),
              static_cast<long long>(N), static_cast<long long>(K), plan.splits, e,
              same ? "bitwise identical" : "DIFFERS", ok ? "ok" : "FAIL");
}

}  // namespace

int main() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  std::mt19937 rng(99);
  try {
    // dA = s dZ^T X: M = r, B = X (ld in + r in the fused layout).
    run_case("dA r16 in1000 (XZ stride)", 16, 1000, 5000, 16, 1016, 0.5f, 0.f, rng);
    run_case("dA r16 in1536 accumulate", 16, 1536, 4096, 16, 1536, 1.f, 1.f, rng);
    run_case("dA r32 in264", 32, 264, 3001, 32, 264, 1.f, 0.f, rng);
    // dB = dY^T (s Z): N = r, C [out, r].
    run_case("dB out256 r16", 256, 16, 5000, 256, 16, 2.f, 0.f, rng);
    run_case("dB out136 r16 (XZ stride)", 136, 16, 2048, 136, 152, 1.f, 1.f, rng);
    run_case("dB out520 r32", 520, 32, 1500, 520, 32, 1.f, 0.f, rng);
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
  std::printf("%s (%d failing)\n", failures == 0 ? "passed" : "FAILED", failures);
  return failures == 0 ? 0 : 1;
}
