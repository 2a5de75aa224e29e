// GPU test: the LoRA projection on cuBLASLt (backend/cuda/lora_gemm.cuh),
// unfused and fused, forward and backward, against a CPU reference in double.
//
// Exit codes: 0 pass, 1 fail, 77 no CUDA device (ctest: skipped).
//
// Method: random X, W, dY rounded to bf16 on the host (so both sides read the
// same inputs); A, B are f32 master weights and the reference uses bf16(A),
// bf16(B), the copies the products read (this also checks the conversion
// kernels and the concatenated weight WB). B is scaled so that the LoRA term
// is about as large as the base term: a missing or mis-scaled LoRA term, or a
// wrong column offset, gives a relative error of order 1. s = 1.5 (not a power
// of two, so s*Z and Z round differently and both are exercised). Every
// output buffer is filled with NaN (0xFF bytes: NaN in bf16 and f32) first,
// and every element must be finite afterwards (all were written).
//
// Tolerance: relative Frobenius error ||gpu - ref|| / ||ref|| < 1e-2 for every
// output. The GPU accumulates in fp32 (relative error <= K * 2^-24 worst case,
// 3e-5 at K = 512, far less in practice); each bf16 store rounds to 8
// significant bits, relative error <= 2^-9 = 1.95e-3 per element (~1.1e-3 in
// the Frobenius norm for uniform rounding errors). Along any path at most
// three such roundings compound (Y or dX: base rounded, LoRA intermediate
// Z / dZ rounded, the sum rounded again), < 3 * 2^-9 = 5.9e-3 worst case;
// dA and dB (f32 outputs) carry only the rounding of Z / dZ (<= 2^-9). 1e-2
// leaves margin over that bound and is still ~100x below the error of any
// structural mistake. Fused and unfused are also compared to each other with
// the same bound, and gradient accumulation (accumulate = true) must give 2x.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "bf16_round.cuh"
#include "staticgrad/backend/cuda/lora_gemm.cuh"

namespace sc = staticgrad::cuda;
using bf16 = __nv_bfloat16;

namespace {

using sg_gpu_test::bf16_round;

struct device_buffer {
  void* p = nullptr;
  explicit device_buffer(std::size_t bytes) { SG_CUDA_CHECK(cudaMalloc(&p, bytes)); }
  ~device_buffer() { cudaFree(p); }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  template <class T>
  T* as() const { return static_cast<T*>(p); }
};

std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> r(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) r[i] = __float2bfloat16(v[i]);
  return r;
}

template <class T>
void upload(const device_buffer& d, const std::vector<T>& h) {
  SG_CUDA_CHECK(cudaMemcpy(d.p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
}

// Download a [rows, cols] matrix with leading dimension ld (bf16 or f32) as floats. Copies exactly the span
// (rows - 1) * ld + cols: p may point at a column offset inside a buffer (XZ + in), whose last row ends there.
template <class T>
std::vector<float> download(const T* p, std::int64_t rows, std::int64_t cols, std::int64_t ld) {
  std::vector<T> h(static_cast<std::size_t>((rows - 1) * ld + cols));
  SG_CUDA_CHECK(cudaMemcpy(h.data(), p, h.size() * sizeof(T), cudaMemcpyDeviceToHost));
  std::vector<float> r(static_cast<std::size_t>(rows * cols));
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t j = 0; j < cols; ++j) {
      if constexpr (std::is_same_v<T, float>) r[i * cols + j] = h[i * ld + j];
      else r[i * cols + j] = __bfloat162float(h[i * ld + j]);
    }
  return r;
}

// C[M, N] = sum_k a(i, k) b(k, j) in double, with accessor lambdas.
template <class FA, class FB>
std::vector<double> matmul(std::int64_t M, std::int64_t N, std::int64_t K, FA a, FB b) {
  std::vector<double> c(static_cast<std::size_t>(M * N), 0.0);
  for (std::int64_t i = 0; i < M; ++i)
    for (std::int64_t k = 0; k < K; ++k) {
      const double aik = a(i, k);
      for (std::int64_t j = 0; j < N; ++j) c[i * N + j] += aik * b(k, j);
    }
  return c;
}

struct result_table {
  int failures = 0;
  void header() {
    std::printf("%-28s %-9s %12s %12s %12s %9s  %s\n", "shape", "output", "variant", "rel_frob", "max_abs", "nonfinite",
                "status");
  }
  // got vs ref scaled by `ref_scale`.
  void check(const std::string& shape, const char* what, const char* variant, const std::vector<float>& got,
             const std::vector<double>& ref, double ref_scale = 1.0, double tol = 1e-2) {
    double num = 0, den = 0, max_abs = 0;
    std::size_t nonfinite = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
      if (!std::isfinite(got[i])) {
        ++nonfinite;
        continue;
      }
      const double e = got[i] - ref_scale * ref[i];
      num += e * e;
      den += ref_scale * ref[i] * ref_scale * ref[i];
      max_abs = std::max(max_abs, std::fabs(e));
    }
    const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
    const bool ok = nonfinite == 0 && got.size() == ref.size() && rel < tol && den > 0;
    if (!ok) ++failures;
    std::printf("%-28s %-9s %12s %12.3e %12.3e %9zu  %s\n", shape.c_str(), what, variant, rel, max_abs, nonfinite,
                ok ? "ok" : "FAIL");
  }
};

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

void run_shape(const sc::lora_dims& d, float s, std::mt19937& rng, cublasLtHandle_t h, result_table& tab) {
  const std::int64_t T = d.T, in = d.in, out = d.out, r = d.r, L = d.in_r();
  const std::string shape = "T" + std::to_string(T) + " in" + std::to_string(in) + " out" + std::to_string(out) + " r" +
                            std::to_string(r);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  auto rand_vec = [&](std::int64_t n, float scale, bool round) {
    std::vector<float> v(static_cast<std::size_t>(n));
    for (auto& x : v) x = round ? bf16_round(scale * u(rng)) : scale * u(rng);
    return v;
  };
  // Magnitudes: X W^T ~ sqrt(in)/3 per element; s (X A^T) B^T with B ~ 0.25 U is of the same order.
  const auto X = rand_vec(T * in, 1.0f, true), W = rand_vec(out * in, 1.0f, true), dY = rand_vec(T * out, 1.0f, true);
  const auto A = rand_vec(r * in, 1.0f, false), B = rand_vec(out * r, 0.25f, false),
             B_old = rand_vec(out * r, 0.25f, false);
  std::vector<double> A16(A.size()), B16(B.size());
  for (std::size_t i = 0; i < A.size(); ++i) A16[i] = bf16_round(A[i]);
  for (std::size_t i = 0; i < B.size(); ++i) B16[i] = bf16_round(B[i]);

  // ---- reference (double) ----
  const auto Zr = matmul(T, r, in, [&](auto i, auto k) { return double(X[i * in + k]); },
                         [&](auto k, auto j) { return A16[j * in + k]; });
  auto Yr = matmul(T, out, in, [&](auto i, auto k) { return double(X[i * in + k]); },
                   [&](auto k, auto j) { return double(W[j * in + k]); });
  const auto ZBr = matmul(T, out, r, [&](auto i, auto k) { return Zr[i * r + k]; }, [&](auto k, auto j) { return B16[j * r + k]; });
  for (std::size_t i = 0; i < Yr.size(); ++i) Yr[i] += s * ZBr[i];
  const auto dYBr = matmul(T, r, out, [&](auto i, auto k) { return double(dY[i * out + k]); },
                           [&](auto k, auto j) { return B16[k * r + j]; });
  std::vector<double> dZr(dYBr.size());
  for (std::size_t i = 0; i < dZr.size(); ++i) dZr[i] = s * dYBr[i];
  auto dXr = matmul(T, in, out, [&](auto i, auto k) { return double(dY[i * out + k]); },
                    [&](auto k, auto j) { return double(W[k * in + j]); });
  const auto dZAr = matmul(T, in, r, [&](auto i, auto k) { return dZr[i * r + k]; }, [&](auto k, auto j) { return A16[k * in + j]; });
  for (std::size_t i = 0; i < dXr.size(); ++i) dXr[i] += dZAr[i];
  const auto dBr = matmul(out, r, T, [&](auto i, auto k) { return s * double(dY[k * out + i]); },
                          [&](auto k, auto j) { return Zr[k * r + j]; });
  const auto dAr = matmul(r, in, T, [&](auto i, auto k) { return dZr[k * r + i]; },
                          [&](auto k, auto j) { return double(X[k * in + j]); });

  // ---- device buffers ----
  cudaStream_t st = nullptr;  // the default stream
  device_buffer dXb(T * in * 2), dWb(out * in * 2), dYb(T * out * 2), dA32(r * in * 4), dB32(out * r * 4),
      dBold32(out * r * 4), dA16(r * in * 2), dB16(out * r * 2), dWB(out * L * 2), dXZ(T * L * 2);
  device_buffer gY(T * out * 2), gZ(T * r * 2), gdX(T * in * 2), gdZ(T * r * 2), gdA(r * in * 4), gdB(out * r * 4);
  device_buffer fY(T * out * 2), fdXZ(T * L * 2), fdA(r * in * 4), fdB(out * r * 4);
  device_buffer ws(sc::kLoraWorkspaceBytes);
  upload(dXb, to_bf16(X));
  upload(dWb, to_bf16(W));
  upload(dYb, to_bf16(dY));
  upload(dA32, A);
  upload(dB32, B);
  upload(dBold32, B_old);
  auto poison = [&](const device_buffer& b, std::size_t bytes) { SG_CUDA_CHECK(cudaMemset(b.p, 0xFF, bytes)); };
  poison(gY, T * out * 2), poison(gZ, T * r * 2), poison(gdX, T * in * 2), poison(gdZ, T * r * 2);
  poison(gdA, r * in * 4), poison(gdB, out * r * 4), poison(fY, T * out * 2), poison(fdXZ, T * L * 2);
  poison(fdA, r * in * 4), poison(fdB, out * r * 4), poison(dXZ, T * L * 2), poison(dWB, out * L * 2);
  poison(dA16, r * in * 2), poison(dB16, out * r * 2);

  // bf16 copies; WB built with an old B, then refreshed (the per-step path).
  sc::lora_refresh_bf16(dA32.as<float>(), dA16.as<bf16>(), dB32.as<float>(), dB16.as<bf16>(), d, st);
  sc::lora_build_concat(dWb.as<bf16>(), dBold32.as<float>(), dWB.as<bf16>(), d, st);
  sc::lora_refresh_concat_B(dB32.as<float>(), dWB.as<bf16>(), d, st);
  // X's producer writes into the first `in` columns of XZ.
  SG_CUDA_CHECK(cudaMemcpy2D(dXZ.p, L * 2, dXb.p, in * 2, in * 2, T, cudaMemcpyDeviceToDevice));

  sc::lora_forward_unfused fu;
  sc::lora_forward_fused ff;
  sc::lora_backward_unfused bu;
  sc::lora_backward_fused bf;
  fu.prepare(h, d), ff.prepare(h, d), bu.prepare(h, d), bf.prepare(h, d);
  const std::size_t W_ = sc::kLoraWorkspaceBytes;
  fu.run(h, st, dXb.as<bf16>(), dWb.as<bf16>(), dA16.as<bf16>(), dB16.as<bf16>(), s, gY.as<bf16>(), gZ.as<bf16>(), ws.p, W_);
  ff.run(h, st, dXZ.as<bf16>(), dWB.as<bf16>(), dA16.as<bf16>(), s, fY.as<bf16>(), ws.p, W_);
  bu.run(h, st, dYb.as<bf16>(), dXb.as<bf16>(), dWb.as<bf16>(), dA16.as<bf16>(), dB16.as<bf16>(), gZ.as<bf16>(), s,
         gdX.as<bf16>(), gdZ.as<bf16>(), gdA.as<float>(), gdB.as<float>(), false, ws.p, W_);
  bf.run(h, st, dYb.as<bf16>(), dXZ.as<bf16>(), dWB.as<bf16>(), dA16.as<bf16>(), s, fdXZ.as<bf16>(), fdA.as<float>(),
         fdB.as<float>(), false, ws.p, W_);
  SG_CUDA_CHECK(cudaDeviceSynchronize());

  // The weights as the products see them.
  {
    std::vector<double> WBr(static_cast<std::size_t>(out * L));
    for (std::int64_t o = 0; o < out; ++o) {
      for (std::int64_t i = 0; i < in; ++i) WBr[o * L + i] = W[o * in + i];
      for (std::int64_t j = 0; j < r; ++j) WBr[o * L + in + j] = B16[o * r + j];
    }
    tab.check(shape, "WB", "concat", download(dWB.as<bf16>(), out, L, L), WBr, 1.0, 1e-7);
    tab.check(shape, "A16", "copy", download(dA16.as<bf16>(), r, in, in), A16, 1.0, 1e-7);
    tab.check(shape, "B16", "copy", download(dB16.as<bf16>(), out, r, r), B16, 1.0, 1e-7);
    tab.check(shape, "XZ[:in]", "X kept", download(dXZ.as<bf16>(), T, in, L), to_double(X), 1.0, 1e-7);
  }
  const auto uY = download(gY.as<bf16>(), T, out, out), fYh = download(fY.as<bf16>(), T, out, out);
  const auto udX = download(gdX.as<bf16>(), T, in, in), fdX = download(fdXZ.as<bf16>(), T, in, L);
  const auto udA = download(gdA.as<float>(), r, in, in), fdAh = download(fdA.as<float>(), r, in, in);
  const auto udB = download(gdB.as<float>(), out, r, r), fdBh = download(fdB.as<float>(), out, r, r);
  tab.check(shape, "Y", "unfused", uY, Yr);
  tab.check(shape, "Y", "fused", fYh, Yr);
  tab.check(shape, "Y", "fus-unf", fYh, to_double(uY));
  tab.check(shape, "Z", "unfused", download(gZ.as<bf16>(), T, r, r), Zr);
  tab.check(shape, "sZ", "fused", download(dXZ.as<bf16>() + in, T, r, L), Zr, s);
  tab.check(shape, "dX", "unfused", udX, dXr);
  tab.check(shape, "dX", "fused", fdX, dXr);
  tab.check(shape, "dX", "fus-unf", fdX, to_double(udX));
  tab.check(shape, "dZ", "unfused", download(gdZ.as<bf16>(), T, r, r), dZr);
  tab.check(shape, "dYB", "fused", download(fdXZ.as<bf16>() + in, T, r, L), dYBr);
  tab.check(shape, "dA", "unfused", udA, dAr);
  tab.check(shape, "dA", "fused", fdAh, dAr);
  tab.check(shape, "dA", "fus-unf", fdAh, to_double(udA));
  tab.check(shape, "dB", "unfused", udB, dBr);
  tab.check(shape, "dB", "fused", fdBh, dBr);
  tab.check(shape, "dB", "fus-unf", fdBh, to_double(udB));

  // Gradient accumulation: a second backward with accumulate = true doubles dA, dB.
  // (The fused backward is run again on a fresh dXZ: b2 accumulates into dX, so dXZ is rewritten by b1 first.)
  bu.run(h, st, dYb.as<bf16>(), dXb.as<bf16>(), dWb.as<bf16>(), dA16.as<bf16>(), dB16.as<bf16>(), gZ.as<bf16>(), s,
         gdX.as<bf16>(), gdZ.as<bf16>(), gdA.as<float>(), gdB.as<float>(), true, ws.p, W_);
  bf.run(h, st, dYb.as<bf16>(), dXZ.as<bf16>(), dWB.as<bf16>(), dA16.as<bf16>(), s, fdXZ.as<bf16>(), fdA.as<float>(),
         fdB.as<float>(), true, ws.p, W_);
  SG_CUDA_CHECK(cudaDeviceSynchronize());
  tab.check(shape, "dA", "unf acc2", download(gdA.as<float>(), r, in, in), dAr, 2.0);
  tab.check(shape, "dB", "unf acc2", download(gdB.as<float>(), out, r, r), dBr, 2.0);
  tab.check(shape, "dA", "fus acc2", download(fdA.as<float>(), r, in, in), dAr, 2.0);
  tab.check(shape, "dB", "fus acc2", download(fdB.as<float>(), out, r, r), dBr, 2.0);
  tab.check(shape, "dX", "fus rerun", download(fdXZ.as<bf16>(), T, in, L), dXr);

  // A pointer less aligned than prepare() assumed is refused, not launched.
  bool threw = false;
  try {
    ff.run(h, st, dXZ.as<bf16>() + 1, dWB.as<bf16>(), dA16.as<bf16>(), s, fY.as<bf16>(), ws.p, W_);
  } catch (const staticgrad::error&) {
    threw = true;
  }
  std::printf("%-28s %-9s %12s %12s %12s %9s  %s\n", shape.c_str(), "misalign", "fused", "-", "-", "-",
              threw ? "ok (refused)" : "FAIL (not refused)");
  if (!threw) ++tab.failures;
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipping\n");
    return 77;
  }
  try {
    cudaDeviceProp prop{};
    SG_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device: %s\n", prop.name);
    sc::lt_handle h;
    std::mt19937 rng(20261130);
    result_table tab;
    tab.header();
    // The brief's size, and one whose column offset `in` is only 16-byte aligned (264 * 2 = 528 B) with T not a
    // multiple of any tile size.
    run_shape({256, 512, 384, 16}, 1.5f, rng, h.get(), tab);
    run_shape({200, 264, 136, 8}, 1.5f, rng, h.get(), tab);
    if (tab.failures) {
      std::printf("FAILED (%d checks)\n", tab.failures);
      return 1;
    }
    std::printf("passed\n");
    return 0;
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
}
