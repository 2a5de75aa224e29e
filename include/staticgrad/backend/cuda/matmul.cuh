#pragma once
// Row-major matrix products on cuBLASLt, prepared once per static shape.
//
//   C[M, N] = alpha * op(A) op(B) + beta * C        (all row-major)
//   op(A) = A      (A stored [M, K], leading dimension lda >= K)   trans_a = false
//         = A^T    (A stored [K, M], lda >= M)                      trans_a = true
//   op(B) = B      (B stored [K, N], ldb >= N)                      trans_b = false
//         = B^T    (B stored [N, K], ldb >= K)                      trans_b = true
//
// Row-major is handled with the transposition trick, not CUBLASLT_ORDER_ROW
// (row order is not offered by every cuBLASLt kernel, and the heuristics are
// tuned for column order): a row-major [R, C] matrix with leading dimension ld
// is, byte for byte, the column-major [C, R] matrix with the same ld, so the
// row-major C = op(A) op(B) is computed as the column-major
// C^T = op(B)^T op(A)^T: cuBLASLt's "A" is our B, its "B" is our A, m = N,
// n = M, k = K, and each operand's transpose flag stays what it was.
//
// Invariants:
// - inputs are bf16 (CUDA_R_16BF); C/D are bf16 or f32; accumulation is fp32
//   (CUBLAS_COMPUTE_32F, scale type f32, alpha/beta passed by host pointer,
//   so a CUDA graph captures their values);
// - C and D are the same buffer with the same layout (in-place beta = 1 is
//   allowed); with beta = 0, C is not read (it may hold NaN);
// - prepare() runs the heuristic (cublasLtMatmulAlgoGetHeuristic) once and
//   keeps its top candidates (up to tune_candidates, deterministic reductions
//   only: no split-K "in place" scheme); the first run() outside a CUDA graph
//   capture times each candidate on the real operands (tune_reps launches
//   each, CUDA events) and keeps the fastest, cached process-wide per shape
//   (matmul_tune_cache), so the heuristic's first guess, which can be 10-20 %
//   off the best algorithm for a shape, is not what trains. Tuning writes
//   only C (beta = 0) or a scratch copy of C (beta != 0). Later run()s only
//   launch: cheap enough for the hot path and capturable in a CUDA graph.
//   STATICGRAD_MATMUL_TUNE=0 in the environment keeps the heuristic's first;
// - reductions over a long K into a skinny f32 C (C = A^T B, M or N only
//   16..64: the LoRA dA and dB) can have one more candidate, token_reduce.cuh's
//   split-K tensor-core kernel with a fixed-order second pass (deterministic
//   too); tuning keeps it where it beats cuBLASLt (token_reduce_enabled);
// - prepare() is told the alignment of each pointer (default 256 B, what
//   cudaMalloc returns); run() checks the real pointers against it and throws
//   staticgrad::error instead of launching a kernel that assumed more;
// - run() needs a workspace of at least workspace_needed() bytes (the largest
//   any candidate needs, at most the workspace_bytes given to prepare(),
//   e.g. 32 MiB) on the same stream;
// - STATICGRAD_MATMUL=reference in the environment (read at prepare()):
//   no cuBLASLt at all, every run() launches reference_matmul.cuh's plain
//   tiled kernel (for compute-sanitizer's racecheck, which cannot run
//   cuBLASLt's kernels; slow, f32 accumulation in k order).
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "staticgrad/backend/cuda/check.cuh"
#include "staticgrad/backend/cuda/reference_matmul.cuh"
#include "staticgrad/backend/cuda/token_reduce.cuh"
#include "staticgrad/core/error.hpp"

namespace staticgrad::cuda {

inline void check_cublas(cublasStatus_t s, const char* call, const char* file, int line) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  throw error(std::string(call) + " failed: " + cublasLtGetStatusName(s) + " (" + cublasLtGetStatusString(s) + ") at " +
              file + ":" + std::to_string(line));
}

}  // namespace staticgrad::cuda

#define SG_CUBLAS_CHECK(call) ::staticgrad::cuda::check_cublas((call), #call, __FILE__, __LINE__)

namespace staticgrad::cuda {

inline constexpr bool kTokenReduceCandidate = false;  // see rm_matmul::token_reduce_enabled

// The largest power of two (capped at 256) dividing `bytes`: the alignment of
// base + bytes when base is 256-byte aligned (cudaMalloc).
constexpr std::uint32_t alignment_of_offset(std::uint64_t bytes) {
  if (bytes == 0) return 256;
  std::uint32_t a = 1;
  while (a < 256 && bytes % (2ull * a) == 0) a *= 2;
  return a;
}

inline std::size_t dtype_size(cudaDataType_t t) {
  switch (t) {
    case CUDA_R_16BF: return 2;
    case CUDA_R_32F: return 4;
    default: throw error("matmul: only bf16 and f32 matrices are supported");
  }
}

struct matmul_spec {
  std::int64_t M = 0, N = 0, K = 0;
  bool trans_a = false, trans_b = false;
  std::int64_t lda = 0, ldb = 0, ldc = 0;
  cudaDataType_t c_type = CUDA_R_16BF;  // A and B are always bf16
  std::uint32_t align_a = 256, align_b = 256, align_c = 256;  // bytes, of the pointers given to run()
};

class rm_matmul {
 public:
  rm_matmul() = default;

  void prepare(cublasLtHandle_t handle, const matmul_spec& s, std::size_t workspace_bytes, const char* name = "matmul") {
    spec_ = s;
    name_ = name;
    const std::string who = std::string("matmul '") + name + "'";
    if (s.M <= 0 || s.N <= 0 || s.K <= 0) throw error(who + ": sizes must be positive");
    if (s.lda < (s.trans_a ? s.M : s.K)) throw error(who + ": lda too small");
    if (s.ldb < (s.trans_b ? s.K : s.N)) throw error(who + ": ldb too small");
    if (s.ldc < s.N) throw error(who + ": ldc too small");
    (void)dtype_size(s.c_type);
    reference_ = reference_products();
    if (reference_) {  // no cuBLASLt: nothing to choose, no workspace
      candidates_.clear();
      workspace_needed_ = 0;
      use_reduce_ = false;
      tuned_ = prepared_ = true;
      return;
    }

    cublasLtMatmulDesc_t d = nullptr;
    SG_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    desc_.reset(d);
    // cuBLASLt "A" is our B: op stays trans_b; its "B" is our A: op stays trans_a.
    const cublasOperation_t op_a = s.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_b = s.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    SG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
    SG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));

    // Column-major views (rows, cols, ld) of the row-major buffers.
    cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
    if (!s.trans_b) SG_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, s.N, s.K, s.ldb));  // [N, K], op N
    else SG_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, s.K, s.N, s.ldb));             // [K, N], op T
    layout_a_.reset(la);
    if (!s.trans_a) SG_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, s.K, s.M, s.lda));  // [K, M], op N
    else SG_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, s.M, s.K, s.lda));             // [M, K], op T
    layout_b_.reset(lb);
    SG_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lc, s.c_type, s.N, s.M, s.ldc));  // [N, M]
    layout_c_.reset(lc);

    cublasLtMatmulPreference_t p = nullptr;
    SG_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&p));
    std::unique_ptr<std::remove_pointer_t<cublasLtMatmulPreference_t>, pref_deleter> pref(p);
    const std::uint64_t ws = workspace_bytes;
    // Our A/B are cuBLASLt's B/A.
    const std::uint32_t al_a = s.align_b, al_b = s.align_a, al_c = s.align_c;
    SG_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    SG_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof(al_a)));
    SG_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof(al_b)));
    SG_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof(al_c)));
    SG_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof(al_c)));

    cublasLtMatmulHeuristicResult_t r[tune_candidates]{};
    int found = 0;
    SG_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(handle, d, la, lb, lc, lc, p, tune_candidates, r, &found));
    candidates_.clear();
    workspace_needed_ = 0;
    for (int i = 0; i < found; ++i) {
      if (r[i].state != CUBLAS_STATUS_SUCCESS) continue;
      // Split-K reduced "in place" (atomically, into the output) is not
      // deterministic: never a candidate, so that any winner is.
      std::uint32_t scheme = CUBLASLT_REDUCTION_SCHEME_NONE, splits = 1;
      std::size_t got = 0;
      cublasLtMatmulAlgoConfigGetAttribute(&r[i].algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme, sizeof(scheme), &got);
      cublasLtMatmulAlgoConfigGetAttribute(&r[i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splits, sizeof(splits), &got);
      if (splits > 1 && scheme == CUBLASLT_REDUCTION_SCHEME_INPLACE) continue;
      candidates_.push_back({r[i].algo, r[i].workspaceSize});
      workspace_needed_ = std::max(workspace_needed_, r[i].workspaceSize);
    }
    if (candidates_.empty())
      throw error(who + ": cuBLASLt found no algorithm (M=" + std::to_string(s.M) + " N=" + std::to_string(s.N) +
                  " K=" + std::to_string(s.K) + ")");
    algo_ = candidates_.front().algo;
    algo_workspace_ = candidates_.front().workspace;
    use_reduce_ = false;
    reduce_ = token_reduce_plan{};
    if (tuning_enabled() && token_reduce_enabled() && s.c_type == CUDA_R_32F && s.trans_a && !s.trans_b && s.align_a >= 16 && s.align_b >= 16)
      reduce_ = token_reduce_plan::make(s.M, s.N, s.K, s.lda, s.ldb, workspace_bytes);
    if (reduce_.valid) workspace_needed_ = std::max(workspace_needed_, reduce_.workspace);
    tuned_ = (candidates_.size() == 1 && !reduce_.valid) || !tuning_enabled();
    if (!tuned_) {
      if (const auto* hit = tune_cache().find(key())) adopt(*hit);
    }
    prepared_ = true;
  }

  // C = alpha * op(A) op(B) + beta * C. A, B bf16; C of spec.c_type.
  void run(cublasLtHandle_t handle, cudaStream_t stream, const void* A, const void* B, void* C, float alpha, float beta,
           void* workspace, std::size_t workspace_bytes) const {
    // Checks are a few compares; the message is only built on failure (run() is on the hot path).
    auto fail = [&](const char* what) { throw error(std::string("matmul '") + name_ + "': " + what); };
    if (!prepared_) fail("run() before prepare()");
    if (workspace_bytes < workspace_needed_) fail("workspace too small");
    auto aligned = [](const void* ptr, std::uint32_t a) { return reinterpret_cast<std::uintptr_t>(ptr) % a == 0; };
    if (!aligned(A, spec_.align_a) || !aligned(B, spec_.align_b) || !aligned(C, spec_.align_c))
      fail("a pointer is less aligned than prepare() was told");
    if (reference_) {
      launch_reference_matmul(A, B, C, spec_.c_type == CUDA_R_32F, spec_.M, spec_.N, spec_.K, spec_.trans_a,
                              spec_.trans_b, spec_.lda, spec_.ldb, spec_.ldc, alpha, beta, stream);
      return;
    }
    if (!tuned_) tune(handle, stream, A, B, C, beta, workspace);
    if (use_reduce_) reduce_.run(stream, A, spec_.lda, B, spec_.ldb, static_cast<float*>(C), spec_.ldc, alpha, beta, workspace);
    else launch(handle, stream, algo_, algo_workspace_, A, B, C, alpha, beta, workspace);
  }
  // True when run() uses token_reduce.cuh's kernel instead of cuBLASLt.
  bool uses_token_reduce() const { return use_reduce_; }
  // True when run() launches reference_matmul.cuh's kernel (STATICGRAD_MATMUL=reference).
  bool uses_reference() const { return reference_; }

  // Candidates the heuristic offered (after the determinism filter) and the
  // one run() uses: the tuned winner once the first run() has happened.
  std::size_t candidates() const { return candidates_.size(); }
  bool tuned() const { return tuned_; }

  static constexpr int tune_candidates = 8;
  static constexpr int tune_reps = 3;

  const matmul_spec& spec() const { return spec_; }
  std::size_t workspace_needed() const { return workspace_needed_; }
  double flops() const { return 2.0 * static_cast<double>(spec_.M) * static_cast<double>(spec_.N) * static_cast<double>(spec_.K); }

 private:
  struct desc_deleter {
    void operator()(cublasLtMatmulDesc_t d) const { cublasLtMatmulDescDestroy(d); }
  };
  struct layout_deleter {
    void operator()(cublasLtMatrixLayout_t l) const { cublasLtMatrixLayoutDestroy(l); }
  };
  struct pref_deleter {
    void operator()(cublasLtMatmulPreference_t p) const { cublasLtMatmulPreferenceDestroy(p); }
  };
  using layout_ptr = std::unique_ptr<std::remove_pointer_t<cublasLtMatrixLayout_t>, layout_deleter>;

  struct candidate {
    cublasLtMatmulAlgo_t algo;
    std::size_t workspace;
    bool token_reduce = false;  // the winner is token_reduce.cuh's kernel, not algo
  };
  void adopt(const candidate& c) const {
    algo_ = c.algo;
    algo_workspace_ = c.workspace;
    use_reduce_ = c.token_reduce && reduce_.valid;
    tuned_ = true;
  }
  // Winners per shape, shared by every rm_matmul of the process.
  using tune_key = std::tuple<std::int64_t, std::int64_t, std::int64_t, bool, bool, std::int64_t, std::int64_t,
                              std::int64_t, int, std::uint32_t, std::uint32_t, std::uint32_t, std::size_t, int>;
  class matmul_tune_cache {
   public:
    const candidate* find(const tune_key& k) {
      std::lock_guard<std::mutex> lock(mu_);
      const auto it = map_.find(k);
      return it == map_.end() ? nullptr : &it->second;
    }
    void put(const tune_key& k, const candidate& c) {
      std::lock_guard<std::mutex> lock(mu_);
      map_.insert_or_assign(k, c);
    }

   private:
    std::mutex mu_;
    std::map<tune_key, candidate> map_;  // node-based: found pointers stay valid
  };
  static matmul_tune_cache& tune_cache() {
    static matmul_tune_cache c;
    return c;
  }
  // The token_reduce candidate: off until a device run of test_token_reduce
  // has passed it (kTokenReduceCandidate); STATICGRAD_TOKEN_REDUCE=1 / 0
  // in the environment switches it on / off regardless.
  static bool token_reduce_enabled() {
    const char* e = std::getenv("STATICGRAD_TOKEN_REDUCE");
    return e == nullptr ? kTokenReduceCandidate : std::string(e) != "0";
  }
  static bool reference_products() {
    const char* e = std::getenv("STATICGRAD_MATMUL");
    return e != nullptr && std::string(e) == "reference";
  }
  static bool tuning_enabled() {
    const char* e = std::getenv("STATICGRAD_MATMUL_TUNE");
    return e == nullptr || std::string(e) != "0";
  }
  tune_key key() const {
    int dev = 0;
    cudaGetDevice(&dev);
    return {spec_.M,       spec_.N,       spec_.K,       spec_.trans_a,    spec_.trans_b,
            spec_.lda,     spec_.ldb,     spec_.ldc,     int(spec_.c_type), spec_.align_a,
            spec_.align_b, spec_.align_c, workspace_needed_, dev};
  }

  void launch(cublasLtHandle_t handle, cudaStream_t stream, const cublasLtMatmulAlgo_t& algo, std::size_t ws,
              const void* A, const void* B, void* C, float alpha, float beta, void* workspace) const {
    SG_CUBLAS_CHECK(cublasLtMatmul(handle, desc_.get(), &alpha, B, layout_a_.get(), A, layout_b_.get(), &beta, C,
                                   layout_c_.get(), C, layout_c_.get(), &algo, ws ? workspace : nullptr, ws, stream));
  }

  // Times every candidate on the real operands (into C when beta == 0, else
  // into a scratch C) and keeps the fastest. Skipped (tried again next run)
  // while `stream` is being captured into a graph.
  void tune(cublasLtHandle_t handle, cudaStream_t stream, const void* A, const void* B, void* C, float beta,
            void* workspace) const {
    cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &cap) != cudaSuccess || cap != cudaStreamCaptureStatusNone) return;
    const tune_key k = key();
    if (const auto* hit = tune_cache().find(k)) {
      adopt(*hit);
      return;
    }
    void* out = C;
    void* scratch = nullptr;
    if (beta != 0.f) {
      const std::size_t bytes = static_cast<std::size_t>(spec_.M) * spec_.ldc * dtype_size(spec_.c_type);
      if (cudaMalloc(&scratch, bytes) != cudaSuccess) {
        cudaGetLastError();  // out of memory: keep the heuristic's first, do not retry
        tuned_ = true;
        return;
      }
      out = scratch;
    }
    cudaEvent_t e0 = nullptr, e1 = nullptr;
    SG_CUDA_CHECK(cudaEventCreate(&e0));
    SG_CUDA_CHECK(cudaEventCreate(&e1));
    float best = 0.f;
    std::size_t best_i = 0;
    bool any = false;
    for (std::size_t i = 0; i < candidates_.size(); ++i) {
      const candidate& c = candidates_[i];
      // Warm-up; a candidate that fails to launch is skipped.
      if (cublasLtMatmul(handle, desc_.get(), &one_, B, layout_a_.get(), A, layout_b_.get(), &zero_, out,
                         layout_c_.get(), out, layout_c_.get(), &c.algo, c.workspace ? workspace : nullptr,
                         c.workspace, stream) != CUBLAS_STATUS_SUCCESS)
        continue;
      SG_CUDA_CHECK(cudaEventRecord(e0, stream));
      for (int rep = 0; rep < tune_reps; ++rep) launch(handle, stream, c.algo, c.workspace, A, B, out, 1.f, 0.f, workspace);
      SG_CUDA_CHECK(cudaEventRecord(e1, stream));
      SG_CUDA_CHECK(cudaEventSynchronize(e1));
      float ms = 0.f;
      SG_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
      if (!any || ms < best) {
        best = ms;
        best_i = i;
        any = true;
      }
    }
    candidate winner = candidates_[best_i];
    if (reduce_.valid) {
      auto* c = static_cast<float*>(out);
      reduce_.run(stream, A, spec_.lda, B, spec_.ldb, c, spec_.ldc, 1.f, 0.f, workspace);  // warm-up
      SG_CUDA_CHECK(cudaEventRecord(e0, stream));
      for (int rep = 0; rep < tune_reps; ++rep)
        reduce_.run(stream, A, spec_.lda, B, spec_.ldb, c, spec_.ldc, 1.f, 0.f, workspace);
      SG_CUDA_CHECK(cudaEventRecord(e1, stream));
      SG_CUDA_CHECK(cudaEventSynchronize(e1));
      float ms = 0.f;
      SG_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
      if (!any || ms < best) winner.token_reduce = true;
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    if (scratch) cudaFree(scratch);
    tune_cache().put(k, winner);
    adopt(winner);
  }

  static constexpr float one_ = 1.f, zero_ = 0.f;
  matmul_spec spec_{};
  std::string name_ = "matmul";
  std::unique_ptr<std::remove_pointer_t<cublasLtMatmulDesc_t>, desc_deleter> desc_;
  layout_ptr layout_a_, layout_b_, layout_c_;  // cuBLASLt's A (our B), B (our A), C = D
  std::vector<candidate> candidates_;
  mutable cublasLtMatmulAlgo_t algo_{};  // run() settles it on its first, tuning call
  mutable std::size_t algo_workspace_ = 0;
  mutable bool tuned_ = false;
  token_reduce_plan reduce_;       // valid: the shape has the token_reduce candidate
  mutable bool use_reduce_ = false;
  std::size_t workspace_needed_ = 0;  // the largest of the candidates'
  bool prepared_ = false;
  bool reference_ = false;  // STATICGRAD_MATMUL=reference: reference_matmul.cuh instead of cuBLASLt
};

// RAII cuBLASLt handle.
class lt_handle {
 public:
  lt_handle() { SG_CUBLAS_CHECK(cublasLtCreate(&h_)); }
  ~lt_handle() { cublasLtDestroy(h_); }
  lt_handle(const lt_handle&) = delete;
  lt_handle& operator=(const lt_handle&) = delete;
  cublasLtHandle_t get() const { return h_; }

 private:
  cublasLtHandle_t h_ = nullptr;
};

}  // namespace staticgrad::cuda
