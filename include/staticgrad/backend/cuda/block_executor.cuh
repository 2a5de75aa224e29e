#pragma once
// The CUDA executor of a compiled plan, forward and backward: the GPU
// counterpart of cpu::program (backend/cpu/executor.hpp), running THE SAME
// schedule (graph/schedule.hpp), printed for nvcc by tools/plan_codegen.cpp
// into staticgrad/plans/<name>.cuh (nvcc never sees the graph types).
//
//   block_executor<plans::qwen2_1_5b::block> ex(T, r, cfg);
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
//   * every buffer is the schedule's buffer_ref (arena + offset, or a dense
//     external slot); parameters are dense slots (Plan::data.params): names
//     are resolved to slots when bound, never per launch, so a layer's
//     bindings are one table (`bindings`) and rebinding is an array copy;
//   * acc flags and the order of a projection's backward are the schedule's
//     (shared with the CPU executor); attention backward always overwrites,
//     so an accumulated dq/dk/dv goes through the schedule's temporary;
//   * dA, dB accumulate (+=) like the CPU executor (the caller zeroes them
//     between optimizer steps), unless set_accumulate(false): then overwrite.
//   * temporaries are the schedule's (tmp_rank_width: LoRA dZ / an unsaved Z;
//     tmp_act_width: an accumulated attention gradient; tmp_stat_width: an
//     unsaved lse), allocated once; allocated_bytes() is exactly what
//     plan_bytes() (below) predicts for the same T and r.
//   * LoRA dropout (runtime_config::lora_dropout > 0 at construction allocates
//     the masked-input buffer, [Tp, widest adapter input] bf16; set_dropout(p,
//     seed) turns it on): the CPU executor's counter-based mask (lora_dropout.cuh),
//     recomputed in backward, the seed read from device memory.
// Not done here (documented in docs/cuda.md): the fused LoRA layout (X with leading dimension in + r, which the buffer
// plan does not produce yet; lora_gemm.cuh's fused objects need it), the
// embedding and LM head entries (model_step runs those) and the optimizer.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <array>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>

#include "staticgrad/backend/cuda/attention.cuh"
#include "staticgrad/backend/cuda/check.cuh"
#include "staticgrad/backend/cuda/lora_dropout.cuh"
#include "staticgrad/backend/cuda/lora_gemm.cuh"
#include "staticgrad/backend/cuda/matmul.cuh"
#include "staticgrad/backend/cuda/model_kernels.cuh"
#include "staticgrad/backend/cuda/plan_desc.hpp"
#include "staticgrad/backend/cuda/row_group.cuh"
#include "staticgrad/core/error.hpp"
#include "staticgrad/graph/memory_plan.hpp"
#include "staticgrad/ops/op_traits.hpp"

namespace staticgrad::cuda {

// Bytes held by all device_arrays of the process (what the executors and
// model_step allocate, byte for byte; tests compare it with the plan's prediction).
inline std::size_t& device_bytes_live() {
  static std::size_t bytes = 0;
  return bytes;
}
inline std::size_t& device_allocations_live() {
  static std::size_t n = 0;
  return n;
}

// Owning device allocation (cudaMalloc: 256-byte aligned).
template <class T>
class device_array {
 public:
  device_array() = default;
  explicit device_array(std::size_t n) : n_(n) {
    if (n) SG_CUDA_CHECK(cudaMalloc(&p_, n * sizeof(T)));
    if (p_) device_bytes_live() += n * sizeof(T), ++device_allocations_live();
  }
  ~device_array() { reset(); }
  device_array(device_array&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
  device_array& operator=(device_array&& o) noexcept {
    if (this != &o) {
      reset();
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
  void reset() {
    if (p_) {
      cudaFree(p_);
      device_bytes_live() -= n_ * sizeof(T), --device_allocations_live();
    }
    p_ = nullptr, n_ = 0;
  }

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

// Token stride of the GPU arenas: T rounded up to 128 (256-byte aligned slices).
constexpr std::int64_t token_stride(std::int64_t T) { return (T + 127) / 128 * 128; }

// Bytes a block_executor<Plan> allocates for T tokens and rank r, and the
// saved arenas of one layer: the plan's widths times the token stride.
template <class Plan>
struct plan_bytes {
  static constexpr const auto& S = Plan::data;
  static std::size_t workspace(std::int64_t T) { return 2ull * token_stride(T) * S.workspace_width; }
  static std::size_t temporaries(std::int64_t T, int r, bool lora_dropout = false) {
    return static_cast<std::size_t>(token_stride(T)) * (2ull * r * S.tmp_rank_width + 2ull * S.tmp_act_width + 4ull * S.tmp_stat_width +
                                                        (lora_dropout ? 2ull * graph::lora_dropout_width(S) : 0ull));
  }
  static std::size_t saved(std::int64_t T, int r) {
    return static_cast<std::size_t>(token_stride(T)) *
           (2ull * S.saved_act_width + 4ull * S.saved_stat_width + 2ull * r * S.saved_rank_width);
  }
};

// Compile-time facts about a plan's LM head + cross-entropy entries.
template <class Plan>
struct head_traits {
  static constexpr const auto& S = Plan::data;
  static constexpr int find_entry(graph::kernel_kind k, bool bwd) {
    for (int i = 0; i < (bwd ? S.n_bwd : S.n_fwd); ++i)
      if ((bwd ? S.bwd[i] : S.fwd[i]).kind == k) return i;
    return -1;
  }
  static constexpr int fwd = find_entry(graph::kernel_kind::lm_head_ce, false);
  static constexpr int bwd = find_entry(graph::kernel_kind::lm_head_ce_bwd, true);
  // The head's backward is computed with its forward, chunk by chunk (the
  // [C, V] logits are never recomputed): the seed dL/dloss_t is known before
  // the forward runs. That writes the input gradient early, which is safe
  // when no workspace slot of any forward entry overlaps it (checked here).
  static constexpr bool overlaps(const graph::buffer_ref& a, const graph::buffer_ref& b) {
    return a.where == graph::arena::workspace && b.where == graph::arena::workspace &&
           !(a.offset + a.width <= b.offset || b.offset + b.width <= a.offset);
  }
  static constexpr bool fusable() {
    if (bwd < 0) return true;
    const auto& dx = S.bwd[bwd < 0 ? 0 : bwd].dx[0];
    for (int i = 0; i < S.n_fwd; ++i) {
      const auto& e = S.fwd[i];
      for (int j = 0; j < e.n_buf; ++j)
        if (overlaps(e.buf[j], dx)) return false;
      for (const auto& b : {e.in[0], e.in[1], e.in[2], e.out, e.aux})
        if (overlaps(b, dx)) return false;
    }
    return true;
  }
  static_assert(fwd < 0 || fusable(),
                "block_executor: the LM head's input gradient shares workspace with a forward value, so it cannot be "
                "computed during the forward pass (give the executor a recomputing backward)");
};

// How an executor is set up beyond T, r and the scalars.
struct executor_options {
  cudaStream_t stream = nullptr;  // run on this stream (not owned); null: the executor creates its own
  std::int64_t vocab = 0;         // plans with an lm_head_ce entry: the vocabulary V (the LM head's rows)
  std::int64_t ce_chunk = 2048;   // tokens per LM-head chunk (rounded up to 128): C * V * 6 bytes of scratch
};

template <class Plan>
class block_executor {
 public:
  static constexpr const auto& S = Plan::data;
  static constexpr int n_params = S.n_params, n_externals = S.n_externals;
  static constexpr std::int64_t token_align = 128;  // Tp = round_up(T, 128): 256-byte aligned arena slices
  static constexpr int head_fwd = head_traits<Plan>::fwd, head_bwd = head_traits<Plan>::bwd;
  // Valid indices for code that only runs when the plan has the entries.
  static constexpr int head_fwd_i = head_fwd < 0 ? 0 : head_fwd, head_bwd_i = head_bwd < 0 ? 0 : head_bwd;

  // The LoRA pointers of one adapter slot.
  struct lora_binding {
    const float* A = nullptr;
    const float* B = nullptr;
    float* dA = nullptr;
    float* dB = nullptr;
    const bf16* a16 = nullptr;  // the bf16 copies the products read
    const bf16* b16 = nullptr;
  };
  // One application's (one layer's) parameters, by slot: bind() copies it.
  struct bindings {
    std::array<const bf16*, n_params> frozen{};
    std::array<lora_binding, n_params> lora{};
  };

  static int param_slot(const std::string& name) { return S.find_param(name); }
  static int external_slot(const std::string& name) { return S.find_external(name); }

  // T tokens, LoRA rank r, runtime scalars. Prepares every product and
  // allocates the workspace and temporaries; the stream is the executor's
  // own (blocking: ordered with the legacy default stream).
  block_executor(std::int64_t T, int r, const runtime_config& cfg, const executor_options& o = {})
      : T_(T), r_(r), cfg_(cfg), opt_(o) {
    require(T > 0 && T < (std::int64_t{1} << 31), "block_executor: T must be in [1, 2^31)");
    require(r > 0, "block_executor: the LoRA rank must be positive");
    require(cfg.lora_dropout >= 0.0f && cfg.lora_dropout < 1.0f, "block_executor: LoRA dropout outside [0, 1)");
    Tp_ = cuda::token_stride(T);
    // A blocking stream: it orders with the legacy default stream, so a caller's
    // cudaMemcpy/cudaMemset (which may return before the copy is done) is
    // finished before the executor's next kernel reads the buffer.
    if (o.stream) stream_ = o.stream;
    else {
      SG_CUDA_CHECK(cudaStreamCreate(&stream_));
      own_stream_ = true;
    }
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
    if (stream_ && own_stream_) cudaStreamDestroy(stream_);
    exec_ = nullptr, lt_ = nullptr, stream_ = nullptr;
  }
  void allocate_and_prepare() {
    workspace_ = device_array<bf16>(static_cast<std::size_t>(Tp_) * S.workspace_width);
    lt_ws_ = device_array<char>(kLoraWorkspaceBytes);
    tmp_rank_ = device_array<bf16>(static_cast<std::size_t>(Tp_) * r_ * S.tmp_rank_width);
    tmp_act_ = device_array<bf16>(static_cast<std::size_t>(Tp_) * S.tmp_act_width);
    tmp_stat_ = device_array<float>(static_cast<std::size_t>(Tp_) * S.tmp_stat_width);
    if (cfg_.lora_dropout > 0.0f) drop_ = device_array<bf16>(static_cast<std::size_t>(Tp_) * graph::lora_dropout_width(S));
    cfg_.lora_dropout = 0.0f;  // off until set_dropout() gives the seed
    int heads = 0;
    for (int i = 0; i < S.n_fwd; ++i) {
      const auto& e = S.fwd[i];
      if (is_projection(e.kind)) prepare_forward(e);
      if (e.kind == graph::kernel_kind::attention) heads = std::max(heads, e.heads);
    }
    for (int i = 0; i < S.n_bwd; ++i) {
      const auto& e = S.bwd[i];
      if (e.kind == graph::kernel_kind::linear_bwd || e.kind == graph::kernel_kind::lora_bwd) prepare_backward(e);
      if (e.kind == graph::kernel_kind::attention_bwd) heads = std::max(heads, e.heads);
    }
    if (heads) attn_ws_ = device_array<float>(attention_backward_workspace_bytes(Tp_, heads) / sizeof(float));
    if constexpr (head_fwd >= 0) prepare_head();
  }

  void prepare_head() {
    const std::int64_t V = opt_.vocab;
    const int H = S.fwd[head_fwd_i].dim_in;
    require(V > 0, "block_executor: a plan with an LM head needs executor_options::vocab");
    chunk_ = graph::lm_head_chunk_tokens(opt_.ce_chunk, T_, {});  // rounded up to 128, at most Tp_
    logits_ = device_array<float>(static_cast<std::size_t>(chunk_) * V);
    dlogits_ = device_array<bf16>(static_cast<std::size_t>(chunk_) * V);
    for (std::int64_t c : {std::min(chunk_, T_), T_ % chunk_}) {
      if (c == 0) continue;
      mm(c, V, H, false, true, CUDA_R_32F);    // logits [c, V] f32 = X_c [c, H] W[V, H]^T
      mm(c, H, V, false, false, CUDA_R_16BF);  // dX_c [c, H] bf16 = dl [c, V] W [V, H]
    }
  }
  static constexpr bool is_projection(graph::kernel_kind k) {
    return k == graph::kernel_kind::lora_linear || k == graph::kernel_kind::linear || k == graph::kernel_kind::lora;
  }

 public:
  // ---- sizes -------------------------------------------------------------------
  std::int64_t tokens() const { return T_; }
  std::int64_t token_stride() const { return Tp_; }
  cudaStream_t stream() const { return stream_; }
  // The executor's bf16 workspace (tests poison it: the plan writes every slot before reading it).
  bf16* workspace() const { return workspace_.get(); }
  std::size_t workspace_elems() const { return workspace_.size(); }
  // The kept part of the act arena under the recompute tier (set_recompute_tier).
  std::size_t saved_act_elems() const { return static_cast<std::size_t>(Tp_) * S.keep_act_width[tier_]; }
  std::size_t saved_stat_elems() const { return static_cast<std::size_t>(Tp_) * S.saved_stat_width; }
  std::size_t saved_rank_elems() const { return static_cast<std::size_t>(Tp_) * r_ * S.saved_rank_width; }
  std::size_t saved_bytes() const { return 2 * saved_act_elems() + 4 * saved_stat_elems() + 2 * saved_rank_elems(); }
  // Everything this object allocated from the plan: workspace and temporaries
  // (= plan_bytes<Plan>::workspace + temporaries); kernel workspaces (cuBLASLt
  // kLoraWorkspaceBytes, attention backward) are reported apart.
  std::size_t plan_allocated_bytes() const {
    return workspace_.size() * sizeof(bf16) + tmp_rank_.size() * sizeof(bf16) + tmp_act_.size() * sizeof(bf16) +
           tmp_stat_.size() * sizeof(float) + drop_.size() * sizeof(bf16);
  }
  // cuBLASLt's workspace, attention backward's, and the LM head's chunk of logits (f32) and their gradient (bf16).
  std::size_t kernel_workspace_bytes() const {
    return lt_ws_.size() + attn_ws_.size() * sizeof(float) + logits_.size() * sizeof(float) + dlogits_.size() * sizeof(bf16);
  }
  std::int64_t chunk_tokens() const { return chunk_; }
  // The LM head's seed dL/dloss_t for every counted token: one f32 in device
  // memory (1/counted for a mean), read when the head runs; null: no backward.
  void set_loss_seed(const float* seed) { seed_ = seed; }
  layer_saved_storage allocate_saved() const {
    return {device_array<bf16>(saved_act_elems()), device_array<float>(saved_stat_elems()),
            device_array<bf16>(saved_rank_elems())};
  }

  // Recompute tier k (graph/recompute.hpp; 0 .. S.n_recompute, chosen by
  // graph::plan_memory): the schedule's recompute entries of tiers <= k run in
  // backward, and their values live in one region this executor allocates
  // here, shared by every layer_saved it runs (allocate_saved() afterwards
  // sizes the kept part only).
  void set_recompute_tier(int k) {
    require(k >= 0 && k <= S.n_recompute, "block_executor: recompute tier " + std::to_string(k) + " outside [0, " +
                                              std::to_string(S.n_recompute) + "]");
    tier_ = k;
    recomputed_ = device_array<bf16>(static_cast<std::size_t>(Tp_) * (S.saved_act_width - S.keep_act_width[k]));
  }
  int recompute_tier() const { return tier_; }

  // ---- binding (device pointers; names as the CPU executor's parameters) -------
  // Frozen matrix [out, in] row-major or vector [width], bf16.
  void set_frozen(const std::string& name, const bf16* p) { b_.frozen[static_cast<std::size_t>(slot_of(name, false))] = p; }
  // LoRA adapter: A [r, in], B [out, r] f32 masters; dA, dB f32 (may be null: no gradient).
  // Allocates the bf16 copies (refresh_lora() fills them).
  void set_lora(const std::string& adapter, const float* A, const float* B, float* dA, float* dB) {
    const int p = slot_of(adapter, true);
    auto& own = owned_[static_cast<std::size_t>(p)];
    const auto& ps = S.params[p];
    own.A16 = device_array<bf16>(static_cast<std::size_t>(r_) * ps.cols);
    own.B16 = device_array<bf16>(static_cast<std::size_t>(ps.rows) * r_);
    b_.lora[static_cast<std::size_t>(p)] = {A, B, dA, dB, own.A16.get(), own.B16.get()};
  }
  // The same with caller-owned bf16 copies A16 [r, in], B16 [out, r] (256-byte
  // aligned): nothing is allocated; the caller keeps the copies current
  // (refresh_lora() skips them). model_step's AdamW kernel writes them.
  void set_lora_external(const std::string& adapter, const float* A, const float* B, float* dA, float* dB,
                         const bf16* A16, const bf16* B16) {
    require(A16 != nullptr && B16 != nullptr, "block_executor: set_lora_external needs the bf16 copies");
    const int p = slot_of(adapter, true);
    owned_[static_cast<std::size_t>(p)] = {};
    b_.lora[static_cast<std::size_t>(p)] = {A, B, dA, dB, A16, B16};
  }
  // A whole layer's parameters at once (prepared once per layer by the caller).
  void bind(const bindings& b) {
    b_ = b;
    for (auto& o : owned_) o = {};
  }
  void set_input(const bf16* x) { set_external("x", const_cast<bf16*>(x)); }
  void set_output(bf16* y) { set_external("y", y); }
  // dL/dy on entry to backward, dL/dx on return (bf16 [T, hidden]).
  void set_residual_grad(bf16* d) { set_external("d(x)", d); }
  // Any external by its plan name ("x", "y", "d(x)" = "d(y)"), or by slot.
  void set_external(const std::string& name, void* p) {
    const int x = external_slot(name);
    require(x >= 0, "block_executor: the plan has no external buffer '" + name + "'");
    ext_[static_cast<std::size_t>(x)] = p;
  }
  void set_external(int slot, void* p) { ext_[static_cast<std::size_t>(slot)] = p; }
  // positions [T], seq_start [nseq + 1]: device int32.
  void set_layout(const std::int32_t* positions, const std::int32_t* seq_start, int nseq) {
    positions_ = positions, seq_start_ = seq_start, nseq_ = nseq;
  }
  void set_accumulate(bool acc) { accumulate_ = acc; }
  // ---- LoRA dropout (lora_dropout.cuh) --------------------------------------------
  // p in [0, 1) on the LoRA input of every adapter; seed: one uint64 in device
  // memory, read by the kernels (the caller writes it per micro-batch). p > 0
  // needs an executor constructed with runtime_config::lora_dropout > 0.
  void set_dropout(float p, const std::uint64_t* seed) {
    require(p >= 0.0f && p < 1.0f, "block_executor: LoRA dropout outside [0, 1)");
    require(p == 0.0f || (drop_.get() != nullptr && seed != nullptr),
            "block_executor: LoRA dropout p > 0 needs runtime_config::lora_dropout > 0 at construction and a seed");
    cfg_.lora_dropout = p, dropout_seed_ = seed;
  }
  float dropout() const { return cfg_.lora_dropout; }
  // The layer index mixed into every adapter's dropout stream (adapter_stream).
  void set_layer(int l) { cfg_.layer = l; }

  // bf16 copies of every adapter's A and B (once per optimizer step), on stream().
  void refresh_lora() {
    for (int p = 0; p < n_params; ++p) {
      const auto& o = owned_[static_cast<std::size_t>(p)];
      if (!o.A16.get()) continue;
      const auto& l = b_.lora[static_cast<std::size_t>(p)];
      const auto& ps = S.params[p];
      lora_refresh_bf16(l.A, o.A16.get(), l.B, o.B16.get(), lora_dims{T_, ps.cols, ps.rows, r_}, stream_);
    }
  }

  // ---- running -------------------------------------------------------------------
  void forward(const layer_saved& s = {}) {
    check_bindings(s, false);
    for (int i = 0; i < S.n_fwd; ++i) run_entry(S.fwd[i], s);
  }
  void backward(const layer_saved& s = {}) {
    check_bindings(s, true);
    for (int i = 0; i < S.n_bwd; ++i) run_entry(S.bwd[i], s);
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
  struct owned_copies {
    device_array<bf16> A16, B16;  // set_lora's own bf16 copies (empty with set_lora_external / bind)
  };

  static int slot_of(const std::string& name, bool lora) {
    const int p = param_slot(name);
    require(p >= 0 && (S.params[p].kind == graph::op_kind::lora_adapter) == lora,
            std::string("block_executor: the plan has no ") + (lora ? "LoRA adapter '" : "frozen parameter '") + name + "'");
    return p;
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
  void prepare_forward(const graph::entry& e) {
    if (e.weight >= 0) mm(T_, e.dim_out, e.dim_in, false, true, CUDA_R_16BF);
    if (e.adapter >= 0) {
      mm(T_, r_, e.dim_in, false, true, CUDA_R_16BF);
      mm(T_, e.dim_out, r_, false, true, CUDA_R_16BF);
    }
  }
  void prepare_backward(const graph::entry& e) {
    if (e.kind == graph::kernel_kind::linear_bwd) {
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
  void* ptr(const graph::buffer_ref& b, const layer_saved& s) const {
    switch (b.where) {
      case graph::arena::workspace: return workspace_.get() + Tp_ * b.offset;
      case graph::arena::saved_act: {  // the kept part, or the shared region of recomputed values
        const int keep = S.keep_act_width[tier_];
        return b.offset < keep ? s.act + Tp_ * b.offset : recomputed_.get() + Tp_ * (b.offset - keep);
      }
      case graph::arena::saved_stat: return s.stat + Tp_ * b.offset;
      case graph::arena::saved_rank: return s.rank + Tp_ * r_ * b.offset;
      case graph::arena::external: return ext_[static_cast<std::size_t>(b.ext)];
      case graph::arena::scratch: return nullptr;
    }
    return nullptr;
  }
  bf16* bptr(const graph::buffer_ref& b, const layer_saved& s) const { return static_cast<bf16*>(ptr(b, s)); }
  const bf16* frozen(int slot) const { return b_.frozen[static_cast<std::size_t>(slot)]; }

  // Every slot the schedule uses is bound (clear errors instead of a fault).
  void check_bindings(const layer_saved& s, bool backward) const {
    require((S.saved_act_width == 0 || s.act) && (S.saved_stat_width == 0 || s.stat) && (S.saved_rank_width == 0 || s.rank),
            "block_executor: saved arenas not allocated");
    require(positions_ && seq_start_ && nseq_ > 0, "block_executor: set_layout() not called");
    if (backward && head_bwd >= 0) require(seed_ != nullptr, "block_executor: the LM head's backward needs set_loss_seed()");
    for (int p = 0; p < n_params; ++p) {
      const bool lora = S.params[p].kind == graph::op_kind::lora_adapter;
      const bool bound = lora ? b_.lora[static_cast<std::size_t>(p)].a16 != nullptr : b_.frozen[static_cast<std::size_t>(p)] != nullptr;
      require(bound, std::string("block_executor: ") + (lora ? "LoRA adapter '" : "frozen parameter '") +
                         std::string(S.params[p].name.view()) + "' not set");
    }
    for (int x = 0; x < n_externals; ++x)
      if (x != loss_grad_slot() && (backward || S.externals[x].kind != graph::external_kind::grad))
        require(ext_[static_cast<std::size_t>(x)] != nullptr,
                "block_executor: external '" + std::string(S.externals[x].name.view()) + "' not set");
  }

  // The loss gradient dL/dloss_t is the seed (set_loss_seed), not a buffer.
  static constexpr int loss_grad_slot() { return head_bwd >= 0 ? S.bwd[head_bwd_i].dy.ext : -1; }

  // ---- kernels ---------------------------------------------------------------------
  void run_entry(const graph::entry& e, const layer_saved& s) {
    running_ = true;
    using kk = graph::kernel_kind;
    switch (e.kind) {
      case kk::row_group:  // in the backward list: a recompute, run iff its tier is chosen
        if (e.recompute <= tier_) run_row_group(e, s);
        break;
      case kk::row_group_bwd: run_row_group(e, s); break;
      case kk::lora_linear:
      case kk::linear:
      case kk::lora: run_lora_linear(e, s); break;
      case kk::attention: run_attention(e, s); break;
      case kk::linear_bwd: run_linear_bwd(e, s); break;
      case kk::lora_bwd: run_lora_bwd(e, s); break;
      case kk::attention_bwd: run_attention_bwd(e, s); break;
      case kk::embedding: run_embedding(e, s); break;
      case kk::lm_head_ce: run_lm_head_ce(e, s); break;
      case kk::lm_head_ce_bwd: break;  // computed with the forward (head_fusable)
      default: throw error("block_executor: the schedule has an entry this executor does not run");
    }
  }

  void run_row_group(const graph::entry& e, const layer_saved& s) {
    row_group_args a;
    for (int j = 0; j < e.n_buf; ++j) a.buf[j] = ptr(e.buf[static_cast<std::size_t>(j)], s);
    for (int p = 0; p < e.n_par; ++p) a.par[p] = frozen(e.par[static_cast<std::size_t>(p)]);
    a.positions = positions_;
    a.tokens = T_;
    a.eps = cfg_.eps;
    a.rope_theta = cfg_.rope_theta;
    Plan::row_group(e.group, [&](auto* group) { launch_row_group<std::remove_pointer_t<decltype(group)>>(a, stream_); });
  }

  // Y = X W^T  [+ s Z B16^T with Z = X A16^T, Z saved for backward].
  void run_lora_linear(const graph::entry& e, const layer_saved& s) {
    const bf16* X = bptr(e.in[0], s);
    bf16* Y = bptr(e.out, s);
    if (e.weight >= 0) gemm(T_, e.dim_out, e.dim_in, false, true, CUDA_R_16BF, X, frozen(e.weight), Y, 1.0f, 0.0f);
    if (e.adapter < 0) return;
    const auto& l = b_.lora[static_cast<std::size_t>(e.adapter)];
    bf16* Z = e.aux.in_memory() ? bptr(e.aux, s) : tmp_rank_.get();
    // With dropout: Z = c mask(X) A^T (c = 1 / (1 - p)); the base product read X itself.
    const bf16* Xl = dropping() ? masked_input(e, X) : X;
    gemm(T_, r_, e.dim_in, false, true, CUDA_R_16BF, Xl, l.a16, Z, dropout_scale(), 0.0f);
    gemm(T_, e.dim_out, r_, false, true, CUDA_R_16BF, Z, l.b16, Y, cfg_.lora_scaling, e.weight >= 0 ? 1.0f : 0.0f);
  }

  void run_attention(const graph::entry& e, const layer_saved& s) {
    float* lse = e.aux.in_memory() ? static_cast<float*>(ptr(e.aux, s)) : tmp_stat_.get();
    attention_forward(bptr(e.in[0], s), bptr(e.in[1], s), bptr(e.in[2], s), bptr(e.out, s), lse, seq_start_, T_, nseq_,
                      e.heads, e.kv_heads, e.head_dim, stream_);
  }

  // x[t, :] = E[ids[t], :] (16-byte row copies; ids range-checked by the caller).
  void run_embedding(const graph::entry& e, const layer_saved& s) {
    require(e.dim_out % 8 == 0, "block_executor: the embedding width must be a multiple of 8 (16-byte rows)");
    model_detail::embedding_gather_kernel<<<1024, 256, 0, stream_>>>(
        static_cast<const std::int32_t*>(ext_[static_cast<std::size_t>(e.ids)]), reinterpret_cast<const uint4*>(frozen(e.weight)),
        reinterpret_cast<uint4*>(bptr(e.out, s)), T_, static_cast<std::int64_t>(e.dim_out / 8));
    SG_CUDA_CHECK(cudaGetLastError());
  }

  // Per chunk of C tokens: logits = X_c W^T (f32), loss_c and dl = seed (softmax
  // - onehot) (one CTA per token), and with a seed the head's backward at once:
  // dX_c (+)= dl W into the backward entry's dx. Ignored targets (-100) give
  // loss 0 and a zero dl row. The [T, V] logits never exist.
  void run_lm_head_ce(const graph::entry& e, const layer_saved& s) {
    const std::int64_t V = opt_.vocab;
    const int H = e.dim_in;
    const bf16* X = bptr(e.in[0], s);
    const bf16* W = frozen(e.weight);
    const auto* targets = static_cast<const std::int32_t*>(ext_[static_cast<std::size_t>(e.ids)]);
    float* loss = static_cast<float*>(ptr(e.out, s));
    bf16* dX = nullptr;
    bool acc = false;
    if constexpr (head_bwd >= 0) {
      dX = seed_ ? bptr(S.bwd[head_bwd_i].dx[0], s) : nullptr;
      acc = S.bwd[head_bwd_i].acc[0];
    }
    for (std::int64_t c0 = 0; c0 < T_; c0 += chunk_) {
      const std::int64_t c = std::min(chunk_, T_ - c0);
      gemm(c, V, H, false, true, CUDA_R_32F, X + c0 * H, W, logits_.get(), 1.0f, 0.0f);
      model_detail::cross_entropy_rows_kernel<<<static_cast<unsigned>(c), model_detail::kCeThreads, 0, stream_>>>(
          logits_.get(), targets + c0, V, loss + c0, dlogits_.get(), seed_);
      SG_CUDA_CHECK(cudaGetLastError());
      if (dX) gemm(c, H, V, false, false, CUDA_R_16BF, dlogits_.get(), W, dX + c0 * H, 1.0f, acc ? 1.0f : 0.0f);
    }
  }

  // dX (+)= dY W.
  void run_linear_bwd(const graph::entry& e, const layer_saved& s) {
    if (!e.dx[0].in_memory()) return;
    gemm(T_, e.dim_in, e.dim_out, false, false, CUDA_R_16BF, bptr(e.dy, s), frozen(e.weight), bptr(e.dx[0], s), 1.0f,
         e.acc[0] ? 1.0f : 0.0f);
  }

  // dB (+)= s dY^T Z;  dZ = s dY B16;  dA (+)= dZ^T X;  dX (+)= dZ A16   (the CPU's order).
  // With dropout (c = 1 / (1 - p)): dA (+)= c dZ^T mask(X);  dX (+)= mask(c dZ A16).
  void run_lora_bwd(const graph::entry& e, const layer_saved& s) {
    const auto& l = b_.lora[static_cast<std::size_t>(e.adapter)];
    const float sc = cfg_.lora_scaling, g = accumulate_ ? 1.0f : 0.0f;
    const bf16* dY = bptr(e.dy, s);
    const bf16* Z = bptr(e.aux, s);
    bf16* dz = tmp_rank_.get();
    if (l.dB) gemm(e.dim_out, r_, T_, true, false, CUDA_R_32F, dY, Z, l.dB, sc, g);
    gemm(T_, r_, e.dim_out, false, false, CUDA_R_16BF, dY, l.b16, dz, sc, 0.0f);
    const bf16* X = bptr(e.in[0], s);
    if (l.dA) gemm(r_, e.dim_in, T_, true, false, CUDA_R_32F, dz, dropping() ? masked_input(e, X) : X, l.dA, dropout_scale(), g);
    if (!e.dx[0].in_memory()) return;
    bf16* dX = bptr(e.dx[0], s);
    if (!dropping()) {
      gemm(T_, e.dim_in, r_, false, false, CUDA_R_16BF, dz, l.a16, dX, 1.0f, e.acc[0] ? 1.0f : 0.0f);
      return;
    }
    gemm(T_, e.dim_in, r_, false, false, CUDA_R_16BF, dz, l.a16, drop_.get(), dropout_scale(), 0.0f);
    lora_dropout_grad(drop_.get(), dX, T_, e.dim_in, cfg_.lora_dropout, dropout_seed_, dropout_stream(e), e.acc[0], stream_);
  }

  // ---- LoRA dropout -------------------------------------------------------------------
  bool dropping() const { return cfg_.lora_dropout > 0.0f; }
  float dropout_scale() const { return dropping() ? 1.0f / (1.0f - cfg_.lora_dropout) : 1.0f; }  // dropout_fn::scale's
  std::uint64_t dropout_stream(const graph::entry& e) const { return adapter_stream(S.params[e.adapter].name.view(), cfg_.layer); }
  // mask(X) of entry e's adapter into the dropout buffer ([T, in] bf16).
  const bf16* masked_input(const graph::entry& e, const bf16* X) {
    lora_dropout_mask(X, drop_.get(), T_, e.dim_in, cfg_.lora_dropout, dropout_seed_, dropout_stream(e), stream_);
    return drop_.get();
  }

  // attention_backward overwrites dq, dk, dv: an accumulated (or unwanted)
  // gradient goes to the schedule's temporary first, then is added where acc.
  void run_attention_bwd(const graph::entry& e, const layer_saved& s) {
    bf16* d[3];
    int n_tmp = 0;
    bool via_tmp[3] = {false, false, false};
    for (int k = 0; k < 3; ++k) {
      if (e.dx[k].in_memory() && !e.acc[k]) d[k] = bptr(e.dx[k], s);
      else {
        require(n_tmp == 0, "block_executor: more than one accumulated attention gradient (one temporary)");
        d[k] = tmp_act_.get();
        via_tmp[k] = true;
        ++n_tmp;
      }
    }
    attention_backward(bptr(e.in[0], s), bptr(e.in[1], s), bptr(e.in[2], s), bptr(e.out, s),
                       static_cast<const float*>(ptr(e.aux, s)), bptr(e.dy, s), d[0], d[1], d[2], seq_start_, T_, nseq_,
                       e.heads, e.kv_heads, e.head_dim, attn_ws_.get(), stream_);
    for (int k = 0; k < 3; ++k)
      if (via_tmp[k] && e.dx[k].in_memory()) block_detail::add_bf16(bptr(e.dx[k], s), d[k], T_ * e.in[k].width, stream_);
  }

  std::int64_t T_ = 0, Tp_ = 0;
  int r_ = 0;
  runtime_config cfg_{};
  executor_options opt_{};
  bool accumulate_ = true, running_ = false, own_stream_ = false;
  int tier_ = 0;
  device_array<bf16> recomputed_;  // saved act values of the recompute tier, shared by all layers
  std::int64_t chunk_ = 0;
  const float* seed_ = nullptr;
  device_array<float> logits_;
  device_array<bf16> dlogits_;
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
  device_array<bf16> workspace_, tmp_rank_, tmp_act_;
  device_array<float> tmp_stat_, attn_ws_;
  device_array<bf16> drop_;                     // LoRA dropout: mask(X), then mask's gradient input ([Tp, widest in])
  const std::uint64_t* dropout_seed_ = nullptr;  // device: the micro-batch's dropout seed
  device_array<char> lt_ws_;
  std::map<mm_key, std::unique_ptr<rm_matmul>> mm_;  // products, prepared in the constructor (not looked up by name)
  bindings b_{};
  std::array<owned_copies, n_params> owned_{};
  std::array<void*, n_externals> ext_{};
  const std::int32_t* positions_ = nullptr;
  const std::int32_t* seq_start_ = nullptr;
  int nseq_ = 0;
};

// The executor of any generated plan (block, embedding, head): the same class.
template <class Plan>
using plan_executor = block_executor<Plan>;

}  // namespace staticgrad::cuda
