#pragma once
// The LoRA projection Y = X W^T + s (X A^T) B^T on cuBLASLt, forward and
// backward, unfused (what PEFT does, one product per term) and fused (the
// concatenation trick Y = [X | s Z] [W | B]^T, docs/architecture.md "The passes", fusion).
//
// Shapes (all row-major, token rows):
//   X  [T, in]   bf16 activations          W  [out, in]  bf16, frozen (PyTorch layout)
//   A  [r, in]   LoRA A                    B  [out, r]   LoRA B
//   Y  [T, out]  bf16                      s             scaling (alpha / r, or alpha / sqrt(r))
// A and B are f32 master weights; the products read bf16 copies (A16, B16 or
// the B columns of WB) refreshed once per optimizer step
// (lora_refresh_bf16 / lora_refresh_concat_B).
//
// Fused layout:
//   XZ  [T, in + r]   bf16: columns [0, in) hold X (written there by X's
//                     producer: the buffer plan gives X leading dimension
//                     in + r), columns [in, in + r) hold s * Z = s * X A^T.
//   WB  [out, in + r] bf16: W's rows with B16's r columns appended,
//                     WB = [W | B]. W is frozen, so the W part is copied once
//                     (lora_build_concat); B changes every optimizer step, so
//                     lora_refresh_concat_B rewrites the out * r B columns
//                     once per step (from the f32 master B).
//   dXZ [T, in + r]   bf16: columns [0, in) hold dX, columns [in, in + r)
//                     hold dY B (unscaled).
//
// Forward  (fused, 2 products instead of 3):
//   f1  XZ[:, in:]  = s * XZ[:, :in] A16^T          [T, r],  K = in
//   f2  Y           = XZ WB^T                       [T, out], K = in + r
//       = X W^T + (s Z) B^T: the LoRA up-projection rides in the base product
//       as r extra columns of K (+1% of K at in = 1536, r = 16).
// Backward (fused, 4 products instead of 5):
//   b1  dXZ         = dY WB                         [T, in + r], K = out
//       = [dY W | dY B]: dX_base and dY B in one product (r extra columns of N).
//   b2  dXZ[:, :in] += s * dXZ[:, in:] A16          [T, in], K = r   (dX += dZ A, dZ = s dY B)
//   b3  dB  (+)=  dY^T XZ[:, in:]                   [out, r] f32, K = T   (= s dY^T Z)
//   b4  dA  (+)=  s * dXZ[:, in:]^T XZ[:, :in]      [r, in] f32, K = T    (= dZ^T X)
// What does not merge, and why:
//   - f1 needs all of X before f2 can start (Z is an input of f2), so
//     Z = X A^T cannot ride in the base product of the same projection.
//   - b2 needs dY B, an output of b1 (the same dependency, backwards).
//   - b3 and b4 contract over T with different operands; stacking them into
//     one product ([X | dY]^T [dZ | sZ]) would need X and dY side by side in
//     one buffer and would compute the unused cross terms. They stay two
//     small products; they are bandwidth-bound (they read X and dY once).
//   - The input-sharing projections (q/k/v read one X, gate/up another) could
//     also share f1: Z_qkv = X [Aq; Ak; Av]^T is one product with N = 3r that
//     reads X once; left to the buffer plan.
// Unfused (reference path, what PEFT does; the add is folded into the GEMM
// epilogue with beta = 1 instead of a separate elementwise pass):
//   forward:  Y = X W^T;  Z = X A16^T;  Y += s Z B16^T
//   backward: dX = dY W;  dZ = s dY B16;  dX += dZ A16;  dB (+)= s dY^T Z;  dA (+)= dZ^T X
//
// Numerics: bf16 inputs, fp32 accumulation (CUBLAS_COMPUTE_32F), bf16 for
// every activation-sized output (Y, Z / s Z, dX, dZ / dY B), f32 for dA, dB.
// dA and dB overwrite, or accumulate when `accumulate` is true (gradient
// accumulation over micro-batches).
//
// Invariants:
// - prepare() once per (T, in, out, r), then run() per call: run() only
//   launches cuBLASLt kernels on `stream` (no allocation, no heuristics, no
//   synchronisation), so a step can be captured as a CUDA graph;
// - base pointers are 256-byte aligned (cudaMalloc); the column offsets into
//   XZ / dXZ (in elements) are accounted for in prepare();
// - every run() needs `workspace` of at least workspace_needed() bytes
//   (kLoraWorkspaceBytes = 32 MiB is always enough).
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "staticgrad/backend/cuda/check.cuh"
#include "staticgrad/backend/cuda/matmul.cuh"
#include "staticgrad/core/error.hpp"

namespace staticgrad::cuda {

inline constexpr std::size_t kLoraWorkspaceBytes = std::size_t{32} << 20;

struct lora_dims {
  std::int64_t T = 0, in = 0, out = 0, r = 0;
  std::int64_t in_r() const { return in + r; }
  void validate(const char* who) const {
    if (T <= 0 || in <= 0 || out <= 0 || r <= 0) throw error(std::string(who) + ": T, in, out, r must be positive");
  }
  // FLOPs of the whole LoRA projection (any variant computes the same products).
  double forward_flops() const {
    return 2.0 * static_cast<double>(T) * static_cast<double>(in * out + in * r + r * out);
  }
  double backward_flops() const {  // dX (base + LoRA), dZ, dA, dB; W is frozen (no dW)
    return 2.0 * static_cast<double>(T) * static_cast<double>(in * out + 2 * r * out + 2 * r * in);
  }
  double base_flops() const { return 2.0 * static_cast<double>(T) * static_cast<double>(in * out); }
};

// ---- bf16 copies of the f32 master weights ---------------------------------

// dst[i * ld_dst + j] = bf16(src[i * ld_src + j]) for i < rows, j < cols.
template <class Src>
__global__ void lora_convert_2d_kernel(const Src* __restrict__ src, std::int64_t ld_src, __nv_bfloat16* __restrict__ dst,
                                       std::int64_t ld_dst, std::int64_t rows, std::int64_t cols) {
  const std::int64_t n = rows * cols;
  for (std::int64_t k = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; k < n;
       k += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t i = k / cols, j = k % cols;
    dst[i * ld_dst + j] = __float2bfloat16(static_cast<float>(src[i * ld_src + j]));
  }
}

template <class Src>
void lora_convert_2d(const Src* src, std::int64_t ld_src, __nv_bfloat16* dst, std::int64_t ld_dst, std::int64_t rows,
                     std::int64_t cols, cudaStream_t stream) {
  const std::int64_t n = rows * cols;
  if (n == 0) return;
  const int threads = 256;
  const std::int64_t blocks = (n + threads - 1) / threads;
  lora_convert_2d_kernel<Src><<<static_cast<unsigned>(blocks < 4096 ? blocks : 4096), threads, 0, stream>>>(
      src, ld_src, dst, ld_dst, rows, cols);
  SG_CUDA_CHECK(cudaGetLastError());
}

// A16 [r, in] = bf16(A), B16 [out, r] = bf16(B): once per optimizer step (unfused path; the fused path needs A16 too).
inline void lora_refresh_bf16(const float* A, __nv_bfloat16* A16, const float* B, __nv_bfloat16* B16, const lora_dims& d,
                              cudaStream_t stream) {
  if (A16) lora_convert_2d(A, d.in, A16, d.in, d.r, d.in, stream);
  if (B16) lora_convert_2d(B, d.r, B16, d.r, d.out, d.r, stream);
}

// WB [out, in + r] = [W | bf16(B)]: the W part once (W is frozen), then B.
inline void lora_build_concat(const __nv_bfloat16* W, const float* B, __nv_bfloat16* WB, const lora_dims& d,
                              cudaStream_t stream) {
  SG_CUDA_CHECK(cudaMemcpy2DAsync(WB, static_cast<std::size_t>(d.in_r()) * 2, W, static_cast<std::size_t>(d.in) * 2,
                                  static_cast<std::size_t>(d.in) * 2, static_cast<std::size_t>(d.out),
                                  cudaMemcpyDeviceToDevice, stream));
  lora_convert_2d(B, d.r, WB + d.in, d.in_r(), d.out, d.r, stream);
}

// The per-optimizer-step refresh of WB: rewrites only the out * r B columns.
inline void lora_refresh_concat_B(const float* B, __nv_bfloat16* WB, const lora_dims& d, cudaStream_t stream) {
  lora_convert_2d(B, d.r, WB + d.in, d.in_r(), d.out, d.r, stream);
}

// ---- the four variants -------------------------------------------------------

namespace detail {
inline matmul_spec spec(std::int64_t M, std::int64_t N, std::int64_t K, bool ta, std::int64_t lda, bool tb,
                        std::int64_t ldb, std::int64_t ldc, cudaDataType_t c_type, std::uint32_t align_a = 256,
                        std::uint32_t align_b = 256, std::uint32_t align_c = 256) {
  matmul_spec s;
  s.M = M, s.N = N, s.K = K, s.trans_a = ta, s.lda = lda, s.trans_b = tb, s.ldb = ldb, s.ldc = ldc, s.c_type = c_type;
  s.align_a = align_a, s.align_b = align_b, s.align_c = align_c;
  return s;
}
inline std::size_t max_ws(std::initializer_list<const rm_matmul*> ms) {
  std::size_t w = 0;
  for (auto* m : ms) w = m->workspace_needed() > w ? m->workspace_needed() : w;
  return w;
}
}  // namespace detail

// Forward, unfused: Y = X W^T; Z = X A16^T; Y += s Z B16^T.
class lora_forward_unfused {
 public:
  void prepare(cublasLtHandle_t h, const lora_dims& d, std::size_t ws = kLoraWorkspaceBytes) {
    d.validate("lora_forward_unfused");
    d_ = d;
    base_.prepare(h, detail::spec(d.T, d.out, d.in, false, d.in, true, d.in, d.out, CUDA_R_16BF), ws, "fwd Y = X W^T");
    down_.prepare(h, detail::spec(d.T, d.r, d.in, false, d.in, true, d.in, d.r, CUDA_R_16BF), ws, "fwd Z = X A^T");
    up_.prepare(h, detail::spec(d.T, d.out, d.r, false, d.r, true, d.r, d.out, CUDA_R_16BF), ws, "fwd Y += s Z B^T");
  }
  // X [T, in], W [out, in], A16 [r, in], B16 [out, r] -> Y [T, out], Z [T, r] (Z is saved for the backward).
  void run(cublasLtHandle_t h, cudaStream_t st, const __nv_bfloat16* X, const __nv_bfloat16* W, const __nv_bfloat16* A16,
           const __nv_bfloat16* B16, float s, __nv_bfloat16* Y, __nv_bfloat16* Z, void* ws, std::size_t ws_bytes) const {
    base_.run(h, st, X, W, Y, 1.0f, 0.0f, ws, ws_bytes);
    down_.run(h, st, X, A16, Z, 1.0f, 0.0f, ws, ws_bytes);
    up_.run(h, st, Z, B16, Y, s, 1.0f, ws, ws_bytes);
  }
  std::size_t workspace_needed() const { return detail::max_ws({&base_, &down_, &up_}); }

 private:
  lora_dims d_;
  rm_matmul base_, down_, up_;
};

// Forward, fused: XZ[:, in:] = s X A16^T; Y = XZ WB^T.
class lora_forward_fused {
 public:
  void prepare(cublasLtHandle_t h, const lora_dims& d, std::size_t ws = kLoraWorkspaceBytes) {
    d.validate("lora_forward_fused");
    d_ = d;
    const std::uint32_t al_z = alignment_of_offset(static_cast<std::uint64_t>(d.in) * 2);  // XZ + in
    down_.prepare(h, detail::spec(d.T, d.r, d.in, false, d.in_r(), true, d.in, d.in_r(), CUDA_R_16BF, 256, 256, al_z), ws,
                  "fwd XZ[:, in:] = s X A^T");
    main_.prepare(h, detail::spec(d.T, d.out, d.in_r(), false, d.in_r(), true, d.in_r(), d.out, CUDA_R_16BF), ws,
                  "fwd Y = [X | sZ] [W | B]^T");
  }
  // XZ [T, in + r] with X in columns [0, in) -> s Z in columns [in, in + r); WB [out, in + r]; -> Y [T, out].
  void run(cublasLtHandle_t h, cudaStream_t st, __nv_bfloat16* XZ, const __nv_bfloat16* WB, const __nv_bfloat16* A16,
           float s, __nv_bfloat16* Y, void* ws, std::size_t ws_bytes) const {
    down_.run(h, st, XZ, A16, XZ + d_.in, s, 0.0f, ws, ws_bytes);
    main_.run(h, st, XZ, WB, Y, 1.0f, 0.0f, ws, ws_bytes);
  }
  std::size_t workspace_needed() const { return detail::max_ws({&down_, &main_}); }

 private:
  lora_dims d_;
  rm_matmul down_, main_;
};

// Backward, unfused: dX = dY W; dZ = s dY B16; dX += dZ A16; dB (+)= s dY^T Z; dA (+)= dZ^T X.
class lora_backward_unfused {
 public:
  void prepare(cublasLtHandle_t h, const lora_dims& d, std::size_t ws = kLoraWorkspaceBytes) {
    d.validate("lora_backward_unfused");
    d_ = d;
    base_.prepare(h, detail::spec(d.T, d.in, d.out, false, d.out, false, d.in, d.in, CUDA_R_16BF), ws, "bwd dX = dY W");
    dz_.prepare(h, detail::spec(d.T, d.r, d.out, false, d.out, false, d.r, d.r, CUDA_R_16BF), ws, "bwd dZ = s dY B");
    dx_.prepare(h, detail::spec(d.T, d.in, d.r, false, d.r, false, d.in, d.in, CUDA_R_16BF), ws, "bwd dX += dZ A");
    db_.prepare(h, detail::spec(d.out, d.r, d.T, true, d.out, false, d.r, d.r, CUDA_R_32F), ws, "bwd dB = s dY^T Z");
    da_.prepare(h, detail::spec(d.r, d.in, d.T, true, d.r, false, d.in, d.in, CUDA_R_32F), ws, "bwd dA = dZ^T X");
  }
  // dY [T, out], X [T, in], Z [T, r] (from the forward) -> dX [T, in], dZ [T, r] (scratch), dA [r, in] f32, dB [out, r] f32.
  void run(cublasLtHandle_t h, cudaStream_t st, const __nv_bfloat16* dY, const __nv_bfloat16* X, const __nv_bfloat16* W,
           const __nv_bfloat16* A16, const __nv_bfloat16* B16, const __nv_bfloat16* Z, float s, __nv_bfloat16* dX,
           __nv_bfloat16* dZ, float* dA, float* dB, bool accumulate, void* ws, std::size_t ws_bytes) const {
    const float gb = accumulate ? 1.0f : 0.0f;
    base_.run(h, st, dY, W, dX, 1.0f, 0.0f, ws, ws_bytes);
    dz_.run(h, st, dY, B16, dZ, s, 0.0f, ws, ws_bytes);
    dx_.run(h, st, dZ, A16, dX, 1.0f, 1.0f, ws, ws_bytes);
    db_.run(h, st, dY, Z, dB, s, gb, ws, ws_bytes);
    da_.run(h, st, dZ, X, dA, 1.0f, gb, ws, ws_bytes);
  }
  std::size_t workspace_needed() const { return detail::max_ws({&base_, &dz_, &dx_, &db_, &da_}); }

 private:
  lora_dims d_;
  rm_matmul base_, dz_, dx_, db_, da_;
};

// Backward, fused: dXZ = dY WB; dXZ[:, :in] += s dXZ[:, in:] A16; dB (+)= dY^T sZ; dA (+)= s (dY B)^T X.
class lora_backward_fused {
 public:
  void prepare(cublasLtHandle_t h, const lora_dims& d, std::size_t ws = kLoraWorkspaceBytes) {
    d.validate("lora_backward_fused");
    d_ = d;
    const std::int64_t L = d.in_r();
    const std::uint32_t al = alignment_of_offset(static_cast<std::uint64_t>(d.in) * 2);  // XZ + in, dXZ + in
    main_.prepare(h, detail::spec(d.T, L, d.out, false, d.out, false, L, L, CUDA_R_16BF), ws, "bwd [dX | dYB] = dY [W | B]");
    dx_.prepare(h, detail::spec(d.T, d.in, d.r, false, L, false, d.in, L, CUDA_R_16BF, al, 256, 256), ws,
                "bwd dX += s dYB A");
    db_.prepare(h, detail::spec(d.out, d.r, d.T, true, d.out, false, L, d.r, CUDA_R_32F, 256, al, 256), ws,
                "bwd dB = dY^T sZ");
    da_.prepare(h, detail::spec(d.r, d.in, d.T, true, L, false, L, d.in, CUDA_R_32F, al, 256, 256), ws,
                "bwd dA = s dYB^T X");
  }
  // dY [T, out], XZ [T, in + r] (X | s Z, from the forward), WB [out, in + r]
  // -> dXZ [T, in + r] (dX | dY B), dA [r, in] f32, dB [out, r] f32.
  void run(cublasLtHandle_t h, cudaStream_t st, const __nv_bfloat16* dY, const __nv_bfloat16* XZ,
           const __nv_bfloat16* WB, const __nv_bfloat16* A16, float s, __nv_bfloat16* dXZ, float* dA, float* dB,
           bool accumulate, void* ws, std::size_t ws_bytes) const {
    const float gb = accumulate ? 1.0f : 0.0f;
    main_.run(h, st, dY, WB, dXZ, 1.0f, 0.0f, ws, ws_bytes);
    dx_.run(h, st, dXZ + d_.in, A16, dXZ, s, 1.0f, ws, ws_bytes);
    db_.run(h, st, dY, XZ + d_.in, dB, 1.0f, gb, ws, ws_bytes);
    da_.run(h, st, dXZ + d_.in, XZ, dA, s, gb, ws, ws_bytes);
  }
  std::size_t workspace_needed() const { return detail::max_ws({&main_, &dx_, &db_, &da_}); }

 private:
  lora_dims d_;
  rm_matmul main_, dx_, db_, da_;
};

// ---- one-shot host functions (prepare + run; the heuristic runs on every
// call, so hot paths keep the prepared objects above) ----------------------

inline void lora_forward_unfused_once(cublasLtHandle_t h, cudaStream_t st, const lora_dims& d, const __nv_bfloat16* X,
                                      const __nv_bfloat16* W, const __nv_bfloat16* A16, const __nv_bfloat16* B16,
                                      float s, __nv_bfloat16* Y, __nv_bfloat16* Z, void* ws, std::size_t ws_bytes) {
  lora_forward_unfused p;
  p.prepare(h, d, ws_bytes);
  p.run(h, st, X, W, A16, B16, s, Y, Z, ws, ws_bytes);
}
inline void lora_forward_fused_once(cublasLtHandle_t h, cudaStream_t st, const lora_dims& d, __nv_bfloat16* XZ,
                                    const __nv_bfloat16* WB, const __nv_bfloat16* A16, float s, __nv_bfloat16* Y,
                                    void* ws, std::size_t ws_bytes) {
  lora_forward_fused p;
  p.prepare(h, d, ws_bytes);
  p.run(h, st, XZ, WB, A16, s, Y, ws, ws_bytes);
}
inline void lora_backward_unfused_once(cublasLtHandle_t h, cudaStream_t st, const lora_dims& d, const __nv_bfloat16* dY,
                                       const __nv_bfloat16* X, const __nv_bfloat16* W, const __nv_bfloat16* A16,
                                       const __nv_bfloat16* B16, const __nv_bfloat16* Z, float s, __nv_bfloat16* dX,
                                       __nv_bfloat16* dZ, float* dA, float* dB, bool accumulate, void* ws,
                                       std::size_t ws_bytes) {
  lora_backward_unfused p;
  p.prepare(h, d, ws_bytes);
  p.run(h, st, dY, X, W, A16, B16, Z, s, dX, dZ, dA, dB, accumulate, ws, ws_bytes);
}
inline void lora_backward_fused_once(cublasLtHandle_t h, cudaStream_t st, const lora_dims& d, const __nv_bfloat16* dY,
                                     const __nv_bfloat16* XZ, const __nv_bfloat16* WB, const __nv_bfloat16* A16,
                                     float s, __nv_bfloat16* dXZ, float* dA, float* dB, bool accumulate, void* ws,
                                     std::size_t ws_bytes) {
  lora_backward_fused p;
  p.prepare(h, d, ws_bytes);
  p.run(h, st, dY, XZ, WB, A16, s, dXZ, dA, dB, accumulate, ws, ws_bytes);
}

}  // namespace staticgrad::cuda
