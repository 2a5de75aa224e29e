#pragma once
// One full LoRA training step of a Qwen2.5 model on CUDA: embedding, L
// decoder blocks (block_executor.cuh, one generated plan), final RMSNorm, LM
// head + cross-entropy in chunks of tokens (forward and backward fused), the
// block backward passes, and AdamW on every LoRA parameter. The GPU
// counterpart of models::qwen2_model::step + train::adamw_lora::step.
//
//   model_step<plans::qwen2_1_5b::schedule> m(T, {.layers = 28, .vocab = 151936, .tied = true, .rank = 16, ...});
//   upload weights into m.embedding(), m.final_norm(), m.lm_head(), m.layer_weight(l, name)
//   upload LoRA f32 masters into m.lora_params() (m.lora_slots() gives the layout), then m.sync_lora_bf16();
//   m.set_batch(ids, labels, seq_lens);     // host arrays; validated, shifted, uploaded
//   double loss = m.step(adamw, lr);         // forward, backward, AdamW; mean loss
//
// Data flow (all on the executor's one stream, nothing allocated after the constructor):
//   ids [T] --gather--> x_0 [T, H] --block 0--> x_1 ... --block L-1--> x_L
//   x_L --final RMSNorm--> hn [T, H] bf16 (rstd [T] f32 saved)
//   per chunk of C tokens: logits [C, V] f32 = hn_c W^T          (cuBLASLt, bf16 in, f32 out)
//                          loss_c, dl [C, V] bf16 = softmax - onehot (row kernel)
//                          dhn_c [C, H] bf16 = (1/counted) dl W  (cuBLASLt, alpha = the seed)
//   dhn --RMSNorm backward--> g [T, H] (the residual gradient, overwritten)
//   block L-1 ... block 0 backward: g updated in place; dA, dB written (not accumulated)
//   AdamW: p, m, v f32 and the bf16 copies p16 the products read, one fused kernel
// Invariants:
//   * static shapes: T tokens per step, fixed at construction (the batch's
//     packing may change between steps: positions and sequence starts are uploaded
//     by set_batch); the per-layer x_l and saved arenas are kept from forward to
//     backward (no recomputation);
//   * the LoRA parameters are one flat f32 array (gradients, m, v the same
//     layout; bf16 copies too): per layer, per adapter of the plan (forward
//     order), A [r, in] then B [out, r], each padded to a multiple of 128
//     elements so every tensor is 256-byte aligned (cuBLASLt) and the padding
//     stays 0 through AdamW (zero gradient, zero state);
//   * one block_executor serves every layer: its bindings (weights, adapters,
//     x_l, x_{l+1}) are re-set before each layer's pass; its bf16 LoRA copies
//     are ours (set_lora_external), so rebinding allocates nothing;
//   * the loss is the mean token cross-entropy over counted tokens (targets =
//     labels shifted inside each sequence, -100 ignored), as the CPU model;
//     unlike the CPU kernel, ignored tokens still go through the vocabulary
//     products (their dlogits row is 0): static shapes, and at most a few per
//     sequence in training data without prompt masking;
//   * every ids / label value is range-checked on the host before upload.
// Not done (docs/cuda.md): checkpoint loading straight into this object
// (the caller uploads), LoRA dropout, the fused [X | s XA] LoRA layout,
// gradient accumulation over micro-batches, capture of the whole step as one CUDA graph.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "staticgrad/backend/cuda/block_executor.cuh"
#include "staticgrad/backend/cuda/check.cuh"
#include "staticgrad/backend/cuda/matmul.cuh"
#include "staticgrad/backend/cuda/model_kernels.cuh"
#include "staticgrad/core/error.hpp"

namespace staticgrad::cuda {

struct model_options {
  int layers = 0;
  std::int64_t vocab = 0;
  bool tied = true;          // LM head = embedding (no separate lm_head allocation)
  int rank = 16;             // LoRA r
  float lora_scaling = 2.0f; // alpha / r (or alpha / sqrt(r))
  float eps = 1e-6f;         // rms_norm_eps
  float rope_theta = 1e6f;
  std::int64_t ce_chunk = 2048;  // tokens per LM-head chunk (rounded up to 128): C * V * 6 bytes of scratch
};

// torch.optim.AdamW options (train::adamw_options, without its host-only header).
struct adamw_hparams {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.01;
  double max_grad_norm = 0;  // > 0: clip the global gradient norm first
};

struct model_loss {
  double loss_sum = 0;
  std::int64_t counted = 0;
  double mean() const { return counted ? loss_sum / static_cast<double>(counted) : 0.0; }
};

template <class Plan>
class model_step {
 public:
  static constexpr int H = Plan::input_width;

  // One adapter tensor pair of one layer in the flat LoRA arrays (offsets in elements).
  struct lora_slot {
    int layer;
    std::string adapter;  // "self_attn.q_proj", ... (the plan's names)
    std::int64_t in, out;
    std::size_t a_off, b_off;
  };
  // A frozen per-layer tensor: matrix [rows, cols] or vector (rows = 0, cols = width).
  struct weight_info {
    std::string name;  // "self_attn.q_proj.weight", "input_layernorm.weight", ... (HF names under model.layers.N.)
    std::int64_t rows, cols;
    std::size_t elems() const { return static_cast<std::size_t>(rows ? rows : 1) * static_cast<std::size_t>(cols); }
  };

  model_step(std::int64_t T, const model_options& o) : T_(T), o_(o) {
    require(T > 0, "model_step: T must be positive");
    require(o.layers > 0 && o.vocab > 0 && o.rank > 0, "model_step: layers, vocab and rank must be positive");
    require(H % 8 == 0, "model_step: hidden size must be a multiple of 8 (16-byte embedding rows)");
    require(o.vocab <= (std::int64_t{1} << 31) - 1, "model_step: vocab too large for int32 ids");
    runtime_config cfg{};
    cfg.eps = o.eps, cfg.rope_theta = o.rope_theta, cfg.lora_scaling = o.lora_scaling, cfg.rank = o.rank;
    ex_ = std::make_unique<block_executor<Plan>>(T, o.rank, cfg);
    ex_->set_accumulate(false);  // dA, dB overwritten by each backward: no zeroing between steps
    const std::int64_t L = o.layers, V = o.vocab;
    const std::size_t TH = static_cast<std::size_t>(T) * H;

    // ---- frozen weights: every name the schedule reads -------------------------------
    auto add_weight = [&](const char* n, std::int64_t rows, std::int64_t cols) {
      if (!n[0]) return;
      for (const auto& w : winfo_)
        if (w.name == n) return;
      winfo_.push_back({n, rows, cols});
    };
    for (const auto* sched : {+Plan::forward, +Plan::backward}) {
      const int n = sched == +Plan::forward ? Plan::n_forward : Plan::n_backward;
      for (int i = 0; i < n; ++i) {
        const auto& e = sched[i];
        if (e.kind == entry_kind::lora_linear || e.kind == entry_kind::linear_bwd) add_weight(e.weight, e.dim_out, e.dim_in);
        for (int p = 0; p < e.n_params; ++p) add_weight(e.params[p].name, 0, e.params[p].width);
      }
    }
    layer_w_.resize(static_cast<std::size_t>(L));
    for (auto& lw : layer_w_)
      for (const auto& w : winfo_) lw.emplace_back(alloc<bf16>(w.elems()));
    embed_ = alloc<bf16>(static_cast<std::size_t>(V) * H);
    if (!o.tied) lm_head_ = alloc<bf16>(static_cast<std::size_t>(V) * H);
    norm_w_ = alloc<bf16>(H);

    // ---- LoRA: flat arrays ---------------------------------------------------------------
    auto pad = [](std::size_t n) { return (n + 127) / 128 * 128; };
    std::size_t off = 0;
    for (int l = 0; l < L; ++l)
      for (const auto& e : Plan::forward)
        if (e.kind == entry_kind::lora_linear && e.adapter[0]) {
          lora_slot s{l, e.adapter, e.dim_in, e.dim_out, 0, 0};
          s.a_off = off, off += pad(static_cast<std::size_t>(o.rank) * e.dim_in);
          s.b_off = off, off += pad(static_cast<std::size_t>(e.dim_out) * o.rank);
          slots_.push_back(std::move(s));
        }
    n_lora_ = off;
    p_ = alloc<float>(off), g_ = alloc<float>(off), m_ = alloc<float>(off), v_ = alloc<float>(off);
    p16_ = alloc<bf16>(off);
    for (auto* a : {&p_, &g_, &m_, &v_}) SG_CUDA_CHECK(cudaMemset(a->get(), 0, off * sizeof(float)));
    SG_CUDA_CHECK(cudaMemset(p16_.get(), 0, off * sizeof(bf16)));

    // ---- activations -------------------------------------------------------------------
    for (int l = 0; l <= L; ++l) x_.emplace_back(alloc<bf16>(TH));
    for (int l = 0; l < L; ++l) saved_.emplace_back(ex_->allocate_saved());
    saved_bytes_ = static_cast<std::size_t>(L) * ex_->saved_bytes();
    grad_ = alloc<bf16>(TH);
    hn_ = alloc<bf16>(TH);
    dhn_ = alloc<bf16>(TH);
    rstd_ = alloc<float>(static_cast<std::size_t>(T));
    loss_tok_ = alloc<float>(static_cast<std::size_t>(T));
    ids_ = alloc<std::int32_t>(static_cast<std::size_t>(T));
    targets_ = alloc<std::int32_t>(static_cast<std::size_t>(T));
    pos_ = alloc<std::int32_t>(static_cast<std::size_t>(T));
    seq_ = alloc<std::int32_t>(static_cast<std::size_t>(T) + 1);
    scalars_ = alloc<double>(2 + model_detail::kNormBlocks);  // loss sum, grad norm, partial sums
    coef_ = alloc<float>(1);

    // ---- LM head chunks ----------------------------------------------------------------
    chunk_ = std::min<std::int64_t>((std::max<std::int64_t>(o.ce_chunk, 1) + 127) / 128 * 128, (T + 127) / 128 * 128);
    logits_ = alloc<float>(static_cast<std::size_t>(chunk_) * V);
    dlogits_ = alloc<bf16>(static_cast<std::size_t>(chunk_) * V);
    lt_ws_ = alloc<char>(kLoraWorkspaceBytes);
    for (std::int64_t c : {std::min(chunk_, T), T % chunk_}) {
      if (c == 0 || head_mm_.count(c)) continue;
      auto& pr = head_mm_[c];
      pr.first = std::make_unique<rm_matmul>();
      pr.second = std::make_unique<rm_matmul>();
      // logits [c, V] f32 = hn_c [c, H] W[V, H]^T;  dhn_c [c, H] bf16 = dl [c, V] W [V, H].
      pr.first->prepare(lt_.get(), detail::spec(c, V, H, false, H, true, H, V, CUDA_R_32F), kLoraWorkspaceBytes,
                        "lm head logits");
      pr.second->prepare(lt_.get(), detail::spec(c, H, V, false, V, false, H, H, CUDA_R_16BF), kLoraWorkspaceBytes,
                         "lm head dhidden");
    }
    SG_CUDA_CHECK(cudaMallocHost(&host_, 2 * sizeof(double)));  // last: nothing after it can throw
    SG_CUDA_CHECK(cudaDeviceSynchronize());  // memsets (default stream) done before the executor's stream runs
  }
  ~model_step() {
    if (host_) cudaFreeHost(host_);
    for (auto e : ev_)
      if (e) cudaEventDestroy(e);
  }
  model_step(const model_step&) = delete;
  model_step& operator=(const model_step&) = delete;

  // ---- sizes and parameters ------------------------------------------------------------
  std::int64_t tokens() const { return T_; }
  std::int64_t chunk_tokens() const { return chunk_; }
  const model_options& options() const { return o_; }
  cudaStream_t stream() const { return ex_->stream(); }
  block_executor<Plan>& executor() { return *ex_; }
  const std::vector<weight_info>& layer_weights() const { return winfo_; }
  bf16* layer_weight(int l, const std::string& name) {
    require(l >= 0 && l < o_.layers, "model_step: layer out of range");
    for (std::size_t i = 0; i < winfo_.size(); ++i)
      if (winfo_[i].name == name) return layer_w_[static_cast<std::size_t>(l)][i].get();
    throw error("model_step: the block has no frozen parameter '" + name + "'");
  }
  bf16* embedding() { return embed_.get(); }                         // [V, H]
  bf16* lm_head() { return o_.tied ? embed_.get() : lm_head_.get(); }  // [V, H]
  bf16* final_norm() { return norm_w_.get(); }                       // [H]
  const std::vector<lora_slot>& lora_slots() const { return slots_; }
  const lora_slot& slot(int l, const std::string& adapter) const {
    for (const auto& s : slots_)
      if (s.layer == l && s.adapter == adapter) return s;
    throw error("model_step: no LoRA adapter '" + adapter + "' in layer " + std::to_string(l));
  }
  std::size_t lora_elems() const { return n_lora_; }  // including padding
  float* lora_params() { return p_.get(); }
  float* lora_grads() { return g_.get(); }
  const bf16* lora_params_bf16() const { return p16_.get(); }  // what the products read
  // After writing lora_params() from outside: refresh the bf16 copies (and zero the AdamW state).
  void sync_lora_bf16(bool reset_optimizer = true) {
    launch_grid(model_detail::f32_to_bf16_kernel, p_.get(), p16_.get(), static_cast<std::int64_t>(n_lora_));
    if (reset_optimizer) {
      SG_CUDA_CHECK(cudaMemsetAsync(m_.get(), 0, n_lora_ * sizeof(float), stream()));
      SG_CUDA_CHECK(cudaMemsetAsync(v_.get(), 0, n_lora_ * sizeof(float), stream()));
      adam_t_ = 0;
    }
  }
  // Bytes of device memory this object allocated: its own arrays, the saved
  // arenas, the executor's workspace, dZ buffer and cuBLASLt workspace (the
  // executor's small temporaries — attention workspace, lse, Z scratch — and
  // cuBLASLt's and the CUDA context's own memory are not counted).
  std::size_t allocated_bytes() const {
    return bytes_ + saved_bytes_ + ex_->workspace_elems() * sizeof(bf16) + kLoraWorkspaceBytes +
           static_cast<std::size_t>(ex_->token_stride()) * o_.rank * sizeof(bf16);
  }

  // ---- the batch ----------------------------------------------------------------------
  // ids, labels [T] (labels HF-aligned, -100 ignored; empty: labels = ids);
  // seq_lens: the packed sequences, summing to T. Validates, shifts the labels
  // into targets, uploads (on stream(); host vectors are kept until the next call).
  void set_batch(std::span<const std::int32_t> ids, std::span<const std::int32_t> labels,
                 std::span<const std::int32_t> seq_lens) {
    require(static_cast<std::int64_t>(ids.size()) == T_, "model_step: batch has " + std::to_string(ids.size()) +
                                                             " tokens, the model was built for " + std::to_string(T_));
    require(labels.empty() || labels.size() == ids.size(), "model_step: labels and ids differ in length");
    h_pos_.assign(static_cast<std::size_t>(T_), 0);
    h_seq_.assign(1, 0);
    for (std::int32_t n : seq_lens) {
      require(n > 0, "model_step: sequence lengths must be positive");
      require(h_seq_.back() + static_cast<std::int64_t>(n) <= T_, "model_step: sequence lengths exceed the token count");
      for (std::int32_t i = 0; i < n; ++i) h_pos_[static_cast<std::size_t>(h_seq_.back() + i)] = i;
      h_seq_.push_back(h_seq_.back() + n);
    }
    require(h_seq_.back() == T_, "model_step: sequence lengths sum to " + std::to_string(h_seq_.back()) + ", not " +
                                     std::to_string(T_));
    const std::int64_t V = o_.vocab;
    for (std::size_t t = 0; t < ids.size(); ++t)
      require(ids[t] >= 0 && ids[t] < V, "model_step: token id " + std::to_string(ids[t]) + " at position " +
                                             std::to_string(t) + " is outside [0, " + std::to_string(V) + ")");
    const auto lab = labels.empty() ? ids : labels;
    h_targets_.assign(static_cast<std::size_t>(T_), -100);
    counted_ = 0;
    for (std::size_t s = 0; s + 1 < h_seq_.size(); ++s)
      for (std::int32_t t = h_seq_[s]; t + 1 < h_seq_[s + 1]; ++t) {
        const std::int32_t y = lab[static_cast<std::size_t>(t) + 1];
        require(y == -100 || (y >= 0 && y < V), "model_step: label " + std::to_string(y) + " at position " +
                                                    std::to_string(t + 1) + " is outside [0, " + std::to_string(V) +
                                                    ") and is not -100");
        h_targets_[static_cast<std::size_t>(t)] = y;
        counted_ += y != -100;
      }
    h_ids_.assign(ids.begin(), ids.end());
    auto up = [&](std::int32_t* d, const std::vector<std::int32_t>& h) {
      SG_CUDA_CHECK(cudaMemcpyAsync(d, h.data(), h.size() * sizeof(std::int32_t), cudaMemcpyHostToDevice, stream()));
    };
    up(ids_.get(), h_ids_), up(targets_.get(), h_targets_), up(pos_.get(), h_pos_), up(seq_.get(), h_seq_);
    nseq_ = static_cast<int>(h_seq_.size()) - 1;
    batch_set_ = true;
  }
  std::int64_t counted() const { return counted_; }

  // ---- the step -------------------------------------------------------------------------
  // Forward and backward of the current batch: LoRA gradients in lora_grads()
  // (overwritten). Returns the loss (synchronises: one scalar copy at the end).
  model_loss forward_backward() {
    launch_forward_backward();
    return finish_loss();
  }
  // AdamW on every LoRA parameter with the gradients of the last
  // forward_backward(), then the bf16 copies; learning rate `lr` (the
  // schedule's value). Asynchronous.
  void optimizer_step(const adamw_hparams& h, double lr) {
    require(grads_valid_, "model_step: optimizer_step() without gradients (no counted token, or no backward)");
    ++adam_t_;
    launch_adamw(h, lr);
  }
  // forward_backward + optimizer_step; the mean loss of the batch.
  double step(const adamw_hparams& h, double lr) {
    launch_forward_backward();
    if (grads_valid_) {
      ++adam_t_;
      launch_adamw(h, lr);
    }
    return finish_loss().mean();
  }
  // The global gradient norm of the last optimizer step (before clipping); synchronises.
  double last_grad_norm() {
    SG_CUDA_CHECK(cudaMemcpyAsync(host_ + 1, scalars_.get() + 1, sizeof(double), cudaMemcpyDeviceToHost, stream()));
    SG_CUDA_CHECK(cudaStreamSynchronize(stream()));
    return host_[1];
  }
  void synchronize() { SG_CUDA_CHECK(cudaStreamSynchronize(stream())); }

  // Per-phase timing (CUDA events on the stream, off by default): after a
  // step, phase_ms() gives {embedding + blocks forward, final norm + LM head +
  // cross-entropy + norm backward, blocks backward, AdamW} of that step in ms
  // (synchronises). Phases a step skipped read 0.
  void set_profiling(bool on) {
    if (on && !ev_[0])
      for (auto& e : ev_) SG_CUDA_CHECK(cudaEventCreate(&e));
    profiling_ = on;
  }
  std::vector<float> phase_ms() {
    std::vector<float> ms(ev_.size() - 1, 0.0f);
    if (!profiling_) return ms;
    SG_CUDA_CHECK(cudaStreamSynchronize(stream()));
    for (std::size_t i = 0; i + 1 < ev_.size(); ++i)
      if (recorded_[i] && recorded_[i + 1]) SG_CUDA_CHECK(cudaEventElapsedTime(&ms[i], ev_[i], ev_[i + 1]));
    return ms;
  }

 private:
  template <class T>
  device_array<T> alloc(std::size_t n) {
    bytes_ += n * sizeof(T);
    return device_array<T>(n);
  }
  template <class K, class... A>
  void launch_grid(K kernel, A... args) {
    kernel<<<1024, 256, 0, stream()>>>(args...);
    SG_CUDA_CHECK(cudaGetLastError());
  }

  void mark(int i) {
    if (!profiling_) return;
    SG_CUDA_CHECK(cudaEventRecord(ev_[static_cast<std::size_t>(i)], stream()));
    recorded_[static_cast<std::size_t>(i)] = true;
  }

  void bind_layer(int l) {
    auto& ex = *ex_;
    const auto& lw = layer_w_[static_cast<std::size_t>(l)];
    for (std::size_t i = 0; i < winfo_.size(); ++i) ex.set_frozen(winfo_[i].name, lw[i].get());
    for (const auto& s : slots_)
      if (s.layer == l)
        ex.set_lora_external(s.adapter, p_.get() + s.a_off, p_.get() + s.b_off, g_.get() + s.a_off, g_.get() + s.b_off,
                             p16_.get() + s.a_off, p16_.get() + s.b_off);
    ex.set_input(x_[static_cast<std::size_t>(l)].get());
    ex.set_output(x_[static_cast<std::size_t>(l) + 1].get());
    ex.set_residual_grad(grad_.get());
    ex.set_layout(pos_.get(), seq_.get(), nseq_);
  }

  void launch_forward_backward() {
    require(batch_set_, "model_step: set_batch() before the step");
    const int L = o_.layers;
    const std::int64_t V = o_.vocab;
    cudaStream_t st = stream();
    recorded_.fill(false);
    mark(0);
    // Embedding.
    launch_grid(model_detail::embedding_gather_kernel, static_cast<const std::int32_t*>(ids_.get()),
                reinterpret_cast<const uint4*>(embed_.get()), reinterpret_cast<uint4*>(x_[0].get()), T_,
                static_cast<std::int64_t>(H / 8));
    // Blocks, forward.
    for (int l = 0; l < L; ++l) {
      bind_layer(l);
      ex_->forward(saved_[static_cast<std::size_t>(l)].view());
    }
    mark(1);
    // Final norm.
    const bf16* xL = x_[static_cast<std::size_t>(L)].get();
    model_detail::final_rmsnorm_fwd_kernel<<<static_cast<unsigned>(T_), model_detail::kNormThreads, 0, st>>>(
        xL, norm_w_.get(), hn_.get(), rstd_.get(), H, o_.eps);
    SG_CUDA_CHECK(cudaGetLastError());
    // LM head + cross-entropy, chunk by chunk; backward fused (seed 1/counted).
    const bool backward = counted_ > 0;
    const float seed = backward ? static_cast<float>(1.0 / static_cast<double>(counted_)) : 0.0f;
    const bf16* W = lm_head();
    for (std::int64_t c0 = 0; c0 < T_; c0 += chunk_) {
      const std::int64_t c = std::min(chunk_, T_ - c0);
      auto& pr = head_mm_.at(c);
      pr.first->run(lt_.get(), st, hn_.get() + c0 * H, W, logits_.get(), 1.0f, 0.0f, lt_ws_.get(), kLoraWorkspaceBytes);
      model_detail::cross_entropy_rows_kernel<<<static_cast<unsigned>(c), model_detail::kCeThreads, 0, st>>>(
          logits_.get(), targets_.get() + c0, V, loss_tok_.get() + c0, dlogits_.get());
      SG_CUDA_CHECK(cudaGetLastError());
      if (backward)
        pr.second->run(lt_.get(), st, dlogits_.get(), W, dhn_.get() + c0 * H, seed, 0.0f, lt_ws_.get(),
                       kLoraWorkspaceBytes);
    }
    model_detail::sum_f32_kernel<<<1, model_detail::kReduceThreads, 0, st>>>(loss_tok_.get(), T_, scalars_.get());
    SG_CUDA_CHECK(cudaGetLastError());
    grads_valid_ = false;
    if (!backward) return;
    // Final norm backward: the residual gradient of x_L (overwritten).
    model_detail::final_rmsnorm_bwd_kernel<<<static_cast<unsigned>(T_), model_detail::kNormThreads, 0, st>>>(
        xL, norm_w_.get(), rstd_.get(), dhn_.get(), grad_.get(), H);
    SG_CUDA_CHECK(cudaGetLastError());
    // Blocks, backward (the residual gradient updated in place; dA, dB written).
    mark(2);
    for (int l = L - 1; l >= 0; --l) {
      bind_layer(l);
      ex_->backward(saved_[static_cast<std::size_t>(l)].view());
    }
    mark(3);
    grads_valid_ = true;
  }

  void launch_adamw(const adamw_hparams& h, double lr) {
    cudaStream_t st = stream();
    const std::int64_t n = static_cast<std::int64_t>(n_lora_);
    // The norm is always computed (cheap, worth logging); coef = 1 without clipping.
    model_detail::sumsq_partial_kernel<<<model_detail::kNormBlocks, model_detail::kNormBlockThreads, 0, st>>>(
        g_.get(), n, scalars_.get() + 2);
    SG_CUDA_CHECK(cudaGetLastError());
    model_detail::grad_norm_finish_kernel<<<1, 32, 0, st>>>(scalars_.get() + 2, static_cast<float>(h.max_grad_norm),
                                                            scalars_.get() + 1, coef_.get());
    SG_CUDA_CHECK(cudaGetLastError());
    // Bias corrections in double on the host (as torch and train::adamw), the update in f32.
    const double t = static_cast<double>(adam_t_);
    model_detail::adamw_step_args a{};
    a.decay = static_cast<float>(1.0 - lr * h.weight_decay);
    a.b1 = static_cast<float>(h.beta1), a.b2 = static_cast<float>(h.beta2);
    a.step_size = static_cast<float>(lr / (1.0 - std::pow(h.beta1, t)));
    a.bc2s = static_cast<float>(std::sqrt(1.0 - std::pow(h.beta2, t)));
    a.eps = static_cast<float>(h.eps);
    launch_grid(model_detail::adamw_kernel, p_.get(), static_cast<const float*>(g_.get()), m_.get(), v_.get(),
                p16_.get(), n, static_cast<const float*>(coef_.get()), a);
    mark(4);
  }

  model_loss finish_loss() {
    SG_CUDA_CHECK(cudaMemcpyAsync(host_, scalars_.get(), sizeof(double), cudaMemcpyDeviceToHost, stream()));
    SG_CUDA_CHECK(cudaStreamSynchronize(stream()));
    return {host_[0], counted_};
  }

  std::int64_t T_ = 0, chunk_ = 0;
  model_options o_;
  std::unique_ptr<block_executor<Plan>> ex_;
  std::size_t bytes_ = 0, saved_bytes_ = 0, n_lora_ = 0;
  std::vector<weight_info> winfo_;
  std::vector<std::vector<device_array<bf16>>> layer_w_;  // [layer][winfo_ index]
  device_array<bf16> embed_, lm_head_, norm_w_;
  std::vector<lora_slot> slots_;
  device_array<float> p_, g_, m_, v_;
  device_array<bf16> p16_;
  std::vector<device_array<bf16>> x_;  // x_0 .. x_L, [T, H]
  std::vector<layer_saved_storage> saved_;
  device_array<bf16> grad_, hn_, dhn_;
  device_array<float> rstd_, loss_tok_, logits_, coef_;
  device_array<bf16> dlogits_;
  device_array<std::int32_t> ids_, targets_, pos_, seq_;
  device_array<double> scalars_;
  device_array<char> lt_ws_;
  lt_handle lt_;
  std::map<std::int64_t, std::pair<std::unique_ptr<rm_matmul>, std::unique_ptr<rm_matmul>>> head_mm_;
  double* host_ = nullptr;  // pinned: loss sum, grad norm
  std::vector<std::int32_t> h_ids_, h_targets_, h_pos_, h_seq_;
  std::int64_t counted_ = 0;
  int nseq_ = 0;
  std::int64_t adam_t_ = 0;
  bool batch_set_ = false, grads_valid_ = false, profiling_ = false;
  std::array<cudaEvent_t, 5> ev_{};   // phase boundaries (set_profiling)
  std::array<bool, 5> recorded_{};
};

}  // namespace staticgrad::cuda
