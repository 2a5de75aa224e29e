#pragma once
// The CUDA executor of a whole compiled block plan, forward and backward: the
// GPU counterpart of cpu::program (backend/cpu/executor.hpp), driven by the
// generated `schedule` of a plan (tools/plan_codegen.cpp ->
// staticgrad/plans/<name>.cuh; nvcc never sees the graph types).
//
//   block_executor<plans::qwen2_1_5b::schedule> ex(T, r, cfg);
//   ex.set_frozen("self_attn.q_proj.weight", W);  ...   (bf16 device pointers)
//   ex.set_lora("self_attn.q_proj", A, B, dA, dB);  ...  (f32 device pointers)
//   ex.set_input(x); ex.set_output(y); ex.set_residual_grad(d);
//   ex.set_layout(positions, seq_start, nseq);
//   ex.refresh_lora();                      // once per optimizer step
//   ex.forward(saved); ex.backward(saved);  // per layer, on ex.stream()
//
// Invariants:
//   * every kernel of the schedule runs in order on ONE stream, nothing else
//     (no allocation, no synchronisation, no heuristics in forward/backward:
//     all cuBLASLt products are prepared in the constructor), so forward and
//     backward can be captured as one CUDA graph (capture()/replay());
//   * storage is bf16 for activations and gradients (workspace, saved_act,
//     saved_rank = the LoRA Z), f32 for per-token statistics (saved_stat:
//     rmsnorm 1/rms, attention lse) and for LoRA A, B (master), dA, dB; all
//     arithmetic accumulates in f32;
//   * arena layout: the plan's value of width W at offset o lives at
//     base + Tp * o as a contiguous [T, W] block, with Tp = T rounded up to
//     128 tokens (not T, as on the CPU): every arena pointer is then 256-byte
//     aligned, which cuBLASLt, attention (16 B) and row groups (4 B) want;
//     saved_rank offsets are in units of r: base + Tp * r * o;
//   * externals: "x" (input, read), "y" (output, written) and "d(x)", the
//     residual gradient: it holds dL/dy when backward starts and dL/dx when it
//     returns (the plan aliases the two and updates the buffer in place);
//   * acc flags are the plan's: a gradient's first contribution overwrites,
//     later ones add. For a projection the LoRA step writes (or adds to) dX
//     first, then the linear step adds (cpu::program::run_gemm_step_bwd);
//     attention backward always overwrites, so an accumulated dq/dk/dv goes
//     through a temporary and an add;
//   * dA, dB accumulate (+=) like the CPU executor (the caller zeroes them
//     between optimizer steps), unless set_accumulate(false): then overwrite.
// Not done here (documented in docs/cuda.md): LoRA dropout (p > 0 is refused),
// the fused LoRA layout (X with leading dimension in + r, which the buffer
// plan does not produce yet; lora_gemm.cuh's fused objects need it), the
// embedding, LM head + cross-entropy and the optimizer.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>

#include "staticgrad/backend/cuda/attention.cuh"
#include "staticgrad/backend/cuda/check.cuh"
#include "staticgrad/backend/cuda/lora_gemm.cuh"
#include "staticgrad/backend/cuda/matmul.cuh"
#include "staticgrad/backend/cuda/plan_desc.hpp"
#include "staticgrad/backend/cuda/row_group.cuh"
#include "staticgrad/core/error.hpp"
#include "staticgrad/ops/op_traits.hpp"

namespace staticgrad::cuda {

// Owning device allocation (cudaMalloc: 256-byte aligned).
template <class T>
class device_array {
 public:
  device_array() = default;
  explicit device_array(std::size_t n) : n_(n) {
    if (n) SG_CUDA_CHECK(cudaMalloc(&p_, n * sizeof(T)));
  }
  ~device_array() {
    if (p_) cudaFree(p_);
  }
  device_array(device_array&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
  device_array& operator=(device_array&& o) noexcept {
    if (this != &o) {
      if (p_) cudaFree(p_);
      p_ = o.p_, n_ = o.n_;
      o.p_ = nullptr, o.n_ = 0;
    }
    return *this;
  }
  device_array(const device_array&) = delete;
  device_array& operator=(const device_array&) = delete;
  T* get() const { return p_; }
  std::size_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

// The saved arenas of one layer (what backward reads): device pointers.
//   act  bf16 [Tp * saved_act_width]     stat f32 [Tp * saved_stat_width]
//   rank bf16 [Tp * r * saved_rank_width]
struct layer_saved {
  bf16* act = nullptr;
  float* stat = nullptr;
  bf16* rank = nullptr;
};

// Owning version (block_executor::allocate_saved).
struct layer_saved_storage {
  device_array<bf16> act;
  device_array<float> stat;
  device_array<bf16> rank;
  layer_saved view() const { return {act.get(), stat.get(), rank.get()}; }
};

namespace block_detail {

// dst[i] = bf16(dst[i] + src[i]): the accumulation of an attention gradient.
__global__ inline void add_bf16_kernel(bf16* __restrict__ dst, const bf16* __restrict__ src, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    dst[i] = __float2bfloat16(__bfloat162float(dst[i]) + __bfloat162float(src[i]));
}

inline void add_bf16(bf16* dst, const bf16* src, std::int64_t n, cudaStream_t st) {
  if (n <= 0) return;
  const std::int64_t blocks = (n + 255) / 256;
  add_bf16_kernel<<<static_cast<unsigned>(blocks < 8192 ? blocks : 8192), 256, 0, st>>>(dst, src, n);
  SG_CUDA_CHECK(cudaGetLastError());
}

}  // namespace block_detail

template <class Plan>
class block_executor {
 public:
  static constexpr std::int64_t token_align = 128;  // Tp = round_up(T, 128): 256-byte aligned arena slices

  // T tokens, LoRA rank r, runtime scalars. Prepares every product and
  // allocates the workspace; the stream is the executor's own (blocking:
  // ordered with the legacy default stream).
  block_executor(std::int64_t T, int r, const runtime_config& cfg) : T_(T), r_(r), cfg_(cfg) {
    require(T > 0 && T < (std::int64_t{1} << 31), "block_executor: T must be in [1, 2^31)");
    require(r > 0, "block_executor: the LoRA rank must be positive");
    require(cfg.lora_dropout <= 0.0f,
            "block_executor: LoRA dropout p > 0 is not implemented on CUDA yet (set lora_dropout = 0; the CPU executor "
            "supports it)");
    Tp_ = (T + token_align - 1) / token_align * token_align;
    // A blocking stream: it orders with the legacy default stream, so a caller's
    // cudaMemcpy/cudaMemset (which may return before the copy is done) is
    // finished before the executor's next kernel reads the buffer.
    SG_CUDA_CHECK(cudaStreamCreate(&stream_));
    try {
      SG_CUBLAS_CHECK(cublasLtCreate(&lt_));
      allocate_and_prepare();
    } catch (...) {
      release();  // the destructor does not run for a constructor that throws
      throw;
    }
  }
  ~block_executor() { release(); }
  block_executor(const block_executor&) = delete;
  block_executor& operator=(const block_executor&) = delete;

 private:
  void release() {
    if (exec_) cudaGraphExecDestroy(exec_);
    if (lt_) cublasLtDestroy(lt_);
    if (stream_) cudaStreamDestroy(stream_);
    exec_ = nullptr, lt_ = nullptr, stream_ = nullptr;
  }
  void allocate_and_prepare() {
    const int r = r_;
    workspace_ = device_array<bf16>(static_cast<std::size_t>(Tp_) * Plan::workspace_width);
    lt_ws_ = device_array<char>(kLoraWorkspaceBytes);
    dz_ = device_array<bf16>(static_cast<std::size_t>(Tp_) * r);
    int attn_tmp_width = 0, lse_width = 0, heads = 0;
    bool z_tmp = false;
    for (const auto& e : Plan::forward) {
      if (e.kind == entry_kind::lora_linear) {
        prepare_forward(e);
        if (e.adapter[0] && e.aux.arena == arena_code::none) z_tmp = true;
      }
      if (e.kind == entry_kind::attention) {
        if (e.aux.arena == arena_code::none) lse_width = std::max(lse_width, e.heads);
        heads = std::max(heads, e.heads);
      }
    }
    for (const auto& e : Plan::backward) {
      if (e.kind == entry_kind::linear_bwd || e.kind == entry_kind::lora_bwd) prepare_backward(e);
      if (e.kind == entry_kind::attention_bwd) {
        heads = std::max(heads, e.heads);
        for (int k = 0; k < 3; ++k)
          if (e.dx[k].arena == arena_code::none || e.acc[k]) attn_tmp_width = std::max(attn_tmp_width, e.in[k].width);
      }
    }
    if (z_tmp) z_tmp_ = device_array<bf16>(static_cast<std::size_t>(Tp_) * r);
    if (lse_width) lse_tmp_ = device_array<float>(static_cast<std::size_t>(Tp_) * lse_width);
    if (attn_tmp_width) attn_tmp_ = device_array<bf16>(static_cast<std::size_t>(Tp_) * attn_tmp_width);
    if (heads) attn_ws_ = device_array<float>(attention_backward_workspace_bytes(Tp_, heads) / sizeof(float));
  }

 public:
  // ---- sizes -------------------------------------------------------------------
  std::int64_t tokens() const { return T_; }
  std::int64_t token_stride() const { return Tp_; }
  cudaStream_t stream() const { return stream_; }
  // The executor's bf16 workspace (tests poison it: the plan writes every slot before reading it).
  bf16* workspace() const { return workspace_.get(); }
  std::size_t workspace_elems() const { return workspace_.size(); }
  std::size_t saved_act_elems() const { return static_cast<std::size_t>(Tp_) * Plan::saved_act_width; }
  std::size_t saved_stat_elems() const { return static_cast<std::size_t>(Tp_) * Plan::saved_stat_width; }
  std::size_t saved_rank_elems() const { return static_cast<std::size_t>(Tp_) * r_ * Plan::saved_rank_width; }
  std::size_t saved_bytes() const { return 2 * saved_act_elems() + 4 * saved_stat_elems() + 2 * saved_rank_elems(); }
  layer_saved_storage allocate_saved() const {
    return {device_array<bf16>(saved_act_elems()), device_array<float>(saved_stat_elems()),
            device_array<bf16>(saved_rank_elems())};
  }

  // ---- binding (device pointers; names as the CPU executor's parameters) -------
  // Frozen matrix [out, in] row-major or vector [width], bf16.
  void set_frozen(const std::string& name, const bf16* p) { frozen_[name] = p; }
  // LoRA adapter: A [r, in], B [out, r] f32 masters; dA, dB f32 (may be null: no gradient).
  // Allocates the bf16 copies (refresh_lora() fills them).
  void set_lora(const std::string& adapter, const float* A, const float* B, float* dA, float* dB) {
    const kernel_entry* e = find_adapter(adapter);
    require(e != nullptr, "block_executor: the plan has no LoRA adapter '" + adapter + "'");
    auto& l = lora_[adapter];
    l.A = A, l.B = B, l.dA = dA, l.dB = dB;
    l.d = lora_dims{T_, e->dim_in, e->dim_out, r_};
    l.A16 = device_array<bf16>(static_cast<std::size_t>(r_) * e->dim_in);
    l.B16 = device_array<bf16>(static_cast<std::size_t>(e->dim_out) * r_);
    l.a16 = l.A16.get(), l.b16 = l.B16.get();
  }
  // The same with caller-owned bf16 copies A16 [r, in], B16 [out, r] (256-byte
  // aligned): nothing is allocated, so a model can rebind one executor to each
  // layer's adapters every pass; the caller keeps the copies current
  // (refresh_lora() skips them). Used by model_step.cuh, whose AdamW kernel
  // writes the bf16 copies as it updates the f32 masters.
  void set_lora_external(const std::string& adapter, const float* A, const float* B, float* dA, float* dB,
                         const bf16* A16, const bf16* B16) {
    const kernel_entry* e = find_adapter(adapter);
    require(e != nullptr, "block_executor: the plan has no LoRA adapter '" + adapter + "'");
    require(A16 != nullptr && B16 != nullptr, "block_executor: set_lora_external needs the bf16 copies");
    auto& l = lora_[adapter];
    l.A = A, l.B = B, l.dA = dA, l.dB = dB;
    l.d = lora_dims{T_, e->dim_in, e->dim_out, r_};
    l.A16 = device_array<bf16>(), l.B16 = device_array<bf16>();
    l.a16 = A16, l.b16 = B16;
  }
  void set_input(const bf16* x) { ext_["x"] = const_cast<bf16*>(x); }
  void set_output(bf16* y) { ext_["y"] = y; }
  // dL/dy on entry to backward, dL/dx on return (bf16 [T, hidden]).
  void set_residual_grad(bf16* d) { ext_["d(x)"] = d; }
  // Any external by its plan name ("x", "y", "d(x)").
  void set_external(const std::string& name, bf16* p) { ext_[name] = p; }
  // positions [T], seq_start [nseq + 1]: device int32.
  void set_layout(const std::int32_t* positions, const std::int32_t* seq_start, int nseq) {
    positions_ = positions, seq_start_ = seq_start, nseq_ = nseq;
  }
  void set_accumulate(bool acc) { accumulate_ = acc; }

  // bf16 copies of every adapter's A and B (once per optimizer step), on stream().
  void refresh_lora() {
    for (auto& [name, l] : lora_)
      if (l.A16.get()) lora_refresh_bf16(l.A, l.A16.get(), l.B, l.B16.get(), l.d, stream_);
  }

  // ---- running -------------------------------------------------------------------
  void forward(const layer_saved& s) {
    check_bindings(s);
    for (const auto& e : Plan::forward) run_entry(e, s);
  }
  void backward(const layer_saved& s) {
    check_bindings(s);
    require(ext_.count("d(x)") && ext_["d(x)"], "block_executor: residual gradient d(x) not set");
    for (const auto& e : Plan::backward) run_entry(e, s);
  }
  // Captures forward(s) + backward(s) as one CUDA graph (run both once before,
  // so lazily set kernel attributes are set outside the capture). The graph
  // bakes in every pointer bound now; replay() launches it on stream().
  void capture(const layer_saved& s) {
    if (exec_) {
      SG_CUDA_CHECK(cudaGraphExecDestroy(exec_));
      exec_ = nullptr;
    }
    cudaGraph_t g = nullptr;
    SG_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    try {
      forward(s);
      backward(s);
    } catch (...) {
      cudaStreamEndCapture(stream_, &g);
      if (g) cudaGraphDestroy(g);
      throw;
    }
    SG_CUDA_CHECK(cudaStreamEndCapture(stream_, &g));
    const cudaError_t e = cudaGraphInstantiate(&exec_, g, 0);
    cudaGraphDestroy(g);
    SG_CUDA_CHECK(e);
  }
  void replay() {
    require(exec_ != nullptr, "block_executor: replay() before capture()");
    SG_CUDA_CHECK(cudaGraphLaunch(exec_, stream_));
  }
  void synchronize() { SG_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

 private:
  struct lora_binding {
    const float* A = nullptr;
    const float* B = nullptr;
    float* dA = nullptr;
    float* dB = nullptr;
    lora_dims d;
    device_array<bf16> A16, B16;          // owned copies (set_lora), empty with set_lora_external
    const bf16* a16 = nullptr;            // the copies the products read (owned or external)
    const bf16* b16 = nullptr;
  };

  static const kernel_entry* find_adapter(const std::string& name) {
    for (const auto& e : Plan::forward)
      if (e.kind == entry_kind::lora_linear && name == e.adapter) return &e;
    return nullptr;
  }

  // ---- products: prepared once per distinct shape ------------------------------
  using mm_key = std::tuple<std::int64_t, std::int64_t, std::int64_t, bool, bool, int>;
  const rm_matmul& mm(std::int64_t M, std::int64_t N, std::int64_t K, bool ta, bool tb, cudaDataType_t c) {
    // Row-major, natural leading dimensions: A [M, K] (ta: [K, M]), B [K, N] (tb: [N, K]), C [M, N].
    const mm_key key{M, N, K, ta, tb, static_cast<int>(c)};
    auto it = mm_.find(key);
    if (it != mm_.end()) return *it->second;
    require(!running_, "block_executor: a product was not prepared in the constructor");
    auto m = std::make_unique<rm_matmul>();
    m->prepare(lt_, detail::spec(M, N, K, ta, ta ? M : K, tb, tb ? K : N, N, c), kLoraWorkspaceBytes, "block product");
    return *mm_.emplace(key, std::move(m)).first->second;
  }
  void prepare_forward(const kernel_entry& e) {
    if (e.weight[0]) mm(T_, e.dim_out, e.dim_in, false, true, CUDA_R_16BF);
    if (e.adapter[0]) {
      mm(T_, r_, e.dim_in, false, true, CUDA_R_16BF);
      mm(T_, e.dim_out, r_, false, true, CUDA_R_16BF);
    }
  }
  void prepare_backward(const kernel_entry& e) {
    if (e.kind == entry_kind::linear_bwd) {
      mm(T_, e.dim_in, e.dim_out, false, false, CUDA_R_16BF);
      return;
    }
    mm(e.dim_out, r_, T_, true, false, CUDA_R_32F);
    mm(T_, r_, e.dim_out, false, false, CUDA_R_16BF);
    mm(r_, e.dim_in, T_, true, false, CUDA_R_32F);
    mm(T_, e.dim_in, r_, false, false, CUDA_R_16BF);
  }
  void gemm(std::int64_t M, std::int64_t N, std::int64_t K, bool ta, bool tb, cudaDataType_t c, const void* A,
            const void* B, void* C, float alpha, float beta) {
    mm(M, N, K, ta, tb, c).run(lt_, stream_, A, B, C, alpha, beta, lt_ws_.get(), kLoraWorkspaceBytes);
  }

  // ---- where buffers live -----------------------------------------------------------
  void* ptr(const buffer_ref& b, const layer_saved& s) const {
    switch (b.arena) {
      case arena_code::workspace: return workspace_.get() + Tp_ * b.offset;
      case arena_code::saved_act: return s.act + Tp_ * b.offset;
      case arena_code::saved_stat: return s.stat + Tp_ * b.offset;
      case arena_code::saved_rank: return s.rank + Tp_ * r_ * b.offset;
      case arena_code::external: {
        auto it = ext_.find(b.ext);
        return it == ext_.end() ? nullptr : it->second;
      }
      case arena_code::none: return nullptr;
    }
    return nullptr;
  }
  bf16* bptr(const buffer_ref& b, const layer_saved& s) const { return static_cast<bf16*>(ptr(b, s)); }
  const bf16* frozen(const char* name) const {
    auto it = frozen_.find(name);
    return it == frozen_.end() ? nullptr : it->second;
  }

  // Every name the schedule uses is bound (clear errors instead of a fault).
  void check_bindings(const layer_saved& s) const {
    require(s.act && (Plan::saved_stat_width == 0 || s.stat) && (Plan::saved_rank_width == 0 || s.rank),
            "block_executor: saved arenas not allocated");
    require(positions_ && seq_start_ && nseq_ > 0, "block_executor: set_layout() not called");
    auto need_frozen = [&](const char* n) {
      if (n[0]) require(frozen(n) != nullptr, std::string("block_executor: frozen parameter '") + n + "' not set");
    };
    auto need_ext = [&](const buffer_ref& b) {
      if (b.arena == arena_code::external)
        require(ext_.count(b.ext) && ext_.at(b.ext), std::string("block_executor: external '") + b.ext + "' not set");
    };
    for (const auto* sched : {+Plan::forward, +Plan::backward}) {
      const int n = sched == +Plan::forward ? Plan::n_forward : Plan::n_backward;
      for (int i = 0; i < n; ++i) {
        const auto& e = sched[i];
        need_frozen(e.weight);
        if (e.adapter[0]) require(lora_.count(e.adapter), std::string("block_executor: LoRA adapter '") + e.adapter + "' not set");
        for (int p = 0; p < e.n_params; ++p) need_frozen(e.params[p].name);
        for (int j = 0; j < e.n_refs; ++j)
          if (sched == +Plan::forward || !is_grad_ext(e.refs[j])) need_ext(e.refs[j]);  // d(x): checked by backward()
        if (sched == +Plan::forward) {
          for (const auto& b : e.in) need_ext(b);
          need_ext(e.out);
        }
      }
    }
  }

  static bool is_grad_ext(const buffer_ref& b) { return b.ext[0] == 'd' && b.ext[1] == '('; }

  // ---- kernels ---------------------------------------------------------------------
  void run_entry(const kernel_entry& e, const layer_saved& s) {
    running_ = true;
    switch (e.kind) {
      case entry_kind::row_group:
      case entry_kind::row_group_bwd: run_row_group(e, s); break;
      case entry_kind::lora_linear: run_lora_linear(e, s); break;
      case entry_kind::attention: run_attention(e, s); break;
      case entry_kind::linear_bwd: run_linear_bwd(e, s); break;
      case entry_kind::lora_bwd: run_lora_bwd(e, s); break;
      case entry_kind::attention_bwd: run_attention_bwd(e, s); break;
    }
  }

  void run_row_group(const kernel_entry& e, const layer_saved& s) {
    row_group_args a;
    for (int j = 0; j < e.n_refs; ++j) a.buf[j] = ptr(e.refs[j], s);
    for (int p = 0; p < e.n_params; ++p) a.par[p] = frozen(e.params[p].name);
    a.positions = positions_;
    a.tokens = T_;
    a.eps = cfg_.eps;
    a.rope_theta = cfg_.rope_theta;
    Plan::row_group(e.group, [&](auto* group) { launch_row_group<std::remove_pointer_t<decltype(group)>>(a, stream_); });
  }

  // Y = X W^T  [+ s Z B16^T with Z = X A16^T, Z saved for backward].
  void run_lora_linear(const kernel_entry& e, const layer_saved& s) {
    const bf16* X = bptr(e.in[0], s);
    bf16* Y = bptr(e.out, s);
    if (e.weight[0]) gemm(T_, e.dim_out, e.dim_in, false, true, CUDA_R_16BF, X, frozen(e.weight), Y, 1.0f, 0.0f);
    if (!e.adapter[0]) return;
    const auto& l = lora_.at(e.adapter);
    bf16* Z = e.aux.arena == arena_code::none ? z_tmp_.get() : bptr(e.aux, s);
    gemm(T_, r_, e.dim_in, false, true, CUDA_R_16BF, X, l.a16, Z, 1.0f, 0.0f);
    gemm(T_, e.dim_out, r_, false, true, CUDA_R_16BF, Z, l.b16, Y, cfg_.lora_scaling, e.weight[0] ? 1.0f : 0.0f);
  }

  void run_attention(const kernel_entry& e, const layer_saved& s) {
    float* lse = e.aux.arena == arena_code::none ? lse_tmp_.get() : static_cast<float*>(ptr(e.aux, s));
    attention_forward(bptr(e.in[0], s), bptr(e.in[1], s), bptr(e.in[2], s), bptr(e.out, s), lse, seq_start_, T_, nseq_,
                      e.heads, e.kv_heads, e.head_dim, stream_);
  }

  // dX (+)= dY W.
  void run_linear_bwd(const kernel_entry& e, const layer_saved& s) {
    if (e.dx[0].arena == arena_code::none) return;
    gemm(T_, e.dim_in, e.dim_out, false, false, CUDA_R_16BF, bptr(e.dy, s), frozen(e.weight), bptr(e.dx[0], s), 1.0f,
         e.acc[0] ? 1.0f : 0.0f);
  }

  // dB (+)= s dY^T Z;  dZ = s dY B16;  dA (+)= dZ^T X;  dX (+)= dZ A16   (the CPU's order).
  void run_lora_bwd(const kernel_entry& e, const layer_saved& s) {
    const auto& l = lora_.at(e.adapter);
    const float sc = cfg_.lora_scaling, g = accumulate_ ? 1.0f : 0.0f;
    const bf16* dY = bptr(e.dy, s);
    require(e.aux.arena != arena_code::none, "block_executor: LoRA backward needs its saved Z");
    const bf16* Z = bptr(e.aux, s);
    if (l.dB) gemm(e.dim_out, r_, T_, true, false, CUDA_R_32F, dY, Z, l.dB, sc, g);
    gemm(T_, r_, e.dim_out, false, false, CUDA_R_16BF, dY, l.b16, dz_.get(), sc, 0.0f);
    if (l.dA) gemm(r_, e.dim_in, T_, true, false, CUDA_R_32F, dz_.get(), bptr(e.in[0], s), l.dA, 1.0f, g);
    if (e.dx[0].arena != arena_code::none)
      gemm(T_, e.dim_in, r_, false, false, CUDA_R_16BF, dz_.get(), l.a16, bptr(e.dx[0], s), 1.0f,
           e.acc[0] ? 1.0f : 0.0f);
  }

  // attention_backward overwrites dq, dk, dv: an accumulated (or unwanted)
  // gradient goes to a temporary first, then is added where acc.
  void run_attention_bwd(const kernel_entry& e, const layer_saved& s) {
    bf16* d[3];
    int n_tmp = 0;
    std::int64_t tmp_off[3] = {0, 0, 0};
    for (int k = 0; k < 3; ++k) {
      if (e.dx[k].arena != arena_code::none && !e.acc[k]) d[k] = bptr(e.dx[k], s);
      else {
        // One temporary of the widest width, reused; two accumulated gradients need two.
        require(n_tmp == 0, "block_executor: more than one accumulated attention gradient (one temporary)");
        d[k] = attn_tmp_.get();
        tmp_off[k] = 1;
        ++n_tmp;
      }
    }
    attention_backward(bptr(e.in[0], s), bptr(e.in[1], s), bptr(e.in[2], s), bptr(e.out, s),
                       static_cast<const float*>(ptr(e.aux, s)), bptr(e.dy, s), d[0], d[1], d[2], seq_start_, T_, nseq_,
                       e.heads, e.kv_heads, e.head_dim, attn_ws_.get(), stream_);
    for (int k = 0; k < 3; ++k)
      if (tmp_off[k] && e.dx[k].arena != arena_code::none)
        block_detail::add_bf16(bptr(e.dx[k], s), d[k], T_ * e.in[k].width, stream_);
  }

  std::int64_t T_ = 0, Tp_ = 0;
  int r_ = 0;
  runtime_config cfg_{};
  bool accumulate_ = true, running_ = false;
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
  device_array<bf16> workspace_, dz_, z_tmp_, attn_tmp_;
  device_array<float> lse_tmp_, attn_ws_;
  device_array<char> lt_ws_;
  std::map<mm_key, std::unique_ptr<rm_matmul>> mm_;
  std::map<std::string, const bf16*> frozen_;
  std::map<std::string, lora_binding> lora_;
  std::map<std::string, bf16*> ext_;
  const std::int32_t* positions_ = nullptr;
  const std::int32_t* seq_start_ = nullptr;
  int nseq_ = 0;
};

}  // namespace staticgrad::cuda
