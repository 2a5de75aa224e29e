#pragma once
// One full LoRA training step of a Qwen2.5 model on CUDA, entirely from plans:
// the embedding plan, L applications of the block plan, the head plan (final
// RMSNorm + chunked LM head + cross-entropy) and their backward passes, then
// AdamW on every LoRA parameter. The GPU counterpart of
// models::qwen2_model::step (which runs the same three schedules on the CPU)
// followed by train::adamw_lora::step.
//
//   model_step<plans::qwen2_7b::model> m(T, {.layers = 28, .vocab = 152064, .tied = false, .rank = 16, ...});
//   upload weights into m.embedding(), m.final_norm(), m.lm_head(), m.layer_weight(l, name)
//   upload LoRA f32 masters into m.lora_params() (m.lora_slots() gives the layout), then m.sync_lora_bf16();
//   m.set_batch(ids, labels, seq_lens);       // host arrays; validated, shifted, uploaded
//   double loss = m.step(adamw, lr);           // forward, backward, AdamW (one CUDA graph); mean loss
// or, with gradient accumulation over micro-batches:
//   m.zero_grads();
//   for each micro-batch: m.set_batch(...); m.forward_backward(1.0 / counted_over_all, /*accumulate=*/true);
//   m.optimizer_step(adamw, lr);
// The eval loss (forward only: no backward, no dropout, no gradient touched):
//   m.set_batch(...); model_loss l = m.forward_loss();
// LoRA dropout (options().lora_dropout > 0 allocates its buffer): m.set_dropout(p, seed)
// before each micro-batch (the CPU model's mask for that seed; the seed lives in
// device memory, written inside the step, so a replayed graph uses each step's).
//
// Data flow (one compute stream, nothing allocated after the constructor):
//   embedding plan:  ids [T] --gather--> x_0 [T, H]
//   block plan, l = 0 .. L-1: x_l --> x_{l+1}, saved arenas of layer l
//   head plan: x_L --rmsnorm (row group)--> hn --lm_head_ce, per chunk of C tokens-->
//              loss [T] f32, and (seed known before the pass) d(hn) in the head's workspace
//   head plan backward: d(hn) --rmsnorm backward--> g [T, H] (the residual gradient, overwritten)
//   block plan backward, l = L-1 .. 0: g updated in place; dA, dB written (or accumulated)
//   AdamW: p, m, v f32 and the bf16 copies the products read, one fused kernel
//   offloaded layer inputs (memory policy offload_layers = m): x_l, l < m,
//     lives in ring buffer l % R (R = min(m, 3)). The last R of them stay
//     there until their backward; each earlier one, after it is written, is
//     copied to pinned host memory on the copy stream, its ring buffer is
//     rewritten (by x_{l+3}) only after that copy, and in backward it is copied
//     back while layer l + 1's backward runs (after layer l + 2's backward
//     freed the buffer); layer l's backward waits for it. Events order the two
//     streams, so one CUDA graph still captures the whole step (every copy
//     out is followed by its copy in, which the compute stream waits for).
// Invariants:
//   * every kernel is an entry of a generated plan, except AdamW and the two
//     reductions (loss sum, gradient norm): nothing of the model is written here;
//   * static shapes: T tokens per step; the packing may change per batch
//     (positions and sequence starts are uploaded by set_batch);
//   * parameters are bound once per layer into dense slot tables (the
//     executor's `bindings`, built in the constructor); a pass copies a table;
//   * step() is captured once per (T, number of sequences) as ONE CUDA graph
//     (embedding, all layers, head, backward, clipping, AdamW, the loss copy)
//     and replayed; its per-step scalars (loss seed, lr, bias corrections)
//     live in device memory, written from pinned memory inside the graph;
//   * every device allocation is a device_array; allocated_bytes() is their
//     sum and equals predict_bytes() (computed from the plans' arena widths
//     before anything is allocated; a model that does not fit fails then);
//   * the LoRA parameters are one flat f32 array (gradients, m, v the same
//     layout; bf16 copies too): per layer, per adapter slot of the block plan,
//     A [r, in] then B [out, r], each padded to a multiple of 128 elements so
//     every tensor is 256-byte aligned and the padding stays 0 through AdamW;
//   * the loss is the mean token cross-entropy over counted tokens (targets =
//     labels shifted inside each sequence, -100 ignored), as the CPU model;
//     ignored tokens still go through the vocabulary products with a zero
//     gradient row (static shapes).
// Not done (docs/cuda.md): checkpoint loading into
// this object (the caller uploads), the fused [X | s XA] LoRA layout.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "staticgrad/backend/cuda/block_executor.cuh"
#include "staticgrad/backend/cuda/check.cuh"
#include "staticgrad/backend/cuda/model_kernels.cuh"
#include "staticgrad/backend/cuda/model_step_types.hpp"
#include "staticgrad/core/error.hpp"
#include "staticgrad/graph/memory_plan.hpp"

namespace staticgrad::cuda {

template <class Model>
class model_step {
 public:
  using block_plan = typename Model::block;
  using embedding_plan = typename Model::embedding;
  using head_plan = typename Model::head;
  using block_exec = block_executor<block_plan>;
  static constexpr int H = block_plan::input_width;
  static constexpr const auto& BS = block_plan::data;

  using lora_slot = cuda::lora_slot;
  using weight_info = cuda::weight_info;

  static std::size_t pad128(std::size_t n) { return (n + 127) / 128 * 128; }

  // Bytes the constructor will allocate for T tokens and options o, from the plans.
  static model_bytes predict_bytes(std::int64_t T, const model_options& o) {
    static_assert(graph::cublaslt_workspace_bytes == kLoraWorkspaceBytes, "memory_plan.hpp's cuBLASLt workspace");
    const graph::step_bytes g = graph::cuda_step_bytes(
        BS, head_plan::data, embedding_plan::data,
        graph::step_layout{.tokens = T, .layers = o.layers, .vocab = o.vocab, .tied = o.tied, .rank = o.rank, .ce_chunk = o.ce_chunk,
                           .lora_dropout = o.lora_dropout > 0},
        o.memory);
    model_bytes b;
    auto z = [](double x) { return static_cast<std::size_t>(x); };
    b.weights = z(g.weights), b.lora = z(g.lora), b.residual = z(g.residual), b.saved = z(g.saved);
    b.workspace = z(g.workspace), b.lm_head_chunk = z(g.lm_head_chunk), b.kernel_workspaces = z(g.kernel_workspaces);
    b.host_pinned = z(g.host_pinned);
    b.batch = static_cast<std::size_t>(T) * 4 /* loss */ + 3 * static_cast<std::size_t>(T) * 4 /* ids, targets, positions */ +
              (static_cast<std::size_t>(T) + 1) * 4 /* sequence starts */ + (2 + model_detail::kNormBlocks) * 8 + 4 /* coef */ +
              4 /* seed */ + sizeof(model_detail::adamw_step_args) + 8 /* dropout seed */;
    return b;
  }

  // The fastest memory policy whose predict_bytes() fits `budget` bytes, for T
  // tokens in sequences of seq_len (graph/memory_plan.hpp: the plan's cost
  // model; rates of an H100/H200). With .fits false nothing fits: the policy
  // is then the smallest one.
  static graph::memory_choice choose_memory(std::int64_t T, std::int64_t seq_len, model_options o, double budget) {
    const auto c = step_costs(T, seq_len, o);
    return graph::plan_memory(
        BS.n_recompute, o.layers, budget,
        [&](const graph::memory_policy& p) {
          o.memory = p;
          return static_cast<double>(predict_bytes(T, o).total());
        },
        [&](const graph::memory_policy& p) { return graph::step_seconds(c, o.layers, p); }, o.layers,
        graph::lm_head_chunk_tokens(o.ce_chunk, T, {}));
  }
  // The prediction for o.memory itself: its bytes, step time and slowdown.
  static graph::memory_choice evaluate_memory(std::int64_t T, std::int64_t seq_len, const model_options& o) {
    const auto c = step_costs(T, seq_len, o);
    graph::memory_choice m{.policy = o.memory, .bytes = static_cast<double>(predict_bytes(T, o).total()),
                           .seconds = graph::step_seconds(c, o.layers, o.memory),
                           .base_seconds = graph::step_seconds(c, o.layers, {}), .fits = true};
    return m;
  }
  // The cost model's parts of one step: a layer's, and the LM head's.
  static graph::layer_seconds step_costs(std::int64_t T, std::int64_t seq_len, const model_options& o) {
    const graph::device_rates d{};
    return graph::with_lm_head(
        graph::layer_costs(BS, static_cast<double>(T), static_cast<double>(seq_len), o.rank, d), T, H, o.vocab, o.ce_chunk, d);
  }
  // The default budget: free device memory less `margin` bytes (CUDA context
  // growth, cuBLASLt handles and graphs, fragmentation).
  static double default_budget(double margin = double(std::size_t{1} << 30)) {
    std::size_t free_b = 0, total_b = 0;
    SG_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    return static_cast<double>(free_b) - margin;
  }
  // "recompute h1 (f0), ... ; re-run the whole block ..." for the policy.
  static std::string memory_text(const graph::memory_policy& p, int layers) { return graph::policy_text(BS, p, layers); }

  model_step(std::int64_t T, const model_options& o) : T_(T), o_(o) {
    require(T > 0, "model_step: T must be positive");
    require(o.layers > 0 && o.vocab > 0 && o.rank > 0, "model_step: layers, vocab and rank must be positive");
    require(o.vocab <= (std::int64_t{1} << 31) - 1, "model_step: vocab too large for int32 ids");
    check_fits(T, o);
    const std::size_t live0 = device_bytes_live();
    runtime_config cfg{};
    require(o.lora_dropout >= 0 && o.lora_dropout < 1, "model_step: lora_dropout outside [0, 1)");
    cfg.eps = o.eps, cfg.rope_theta = o.rope_theta, cfg.lora_scaling = o.lora_scaling, cfg.rank = o.rank;
    cfg.lora_dropout = o.lora_dropout;  // the block executor allocates its dropout buffer
    blk_ = std::make_unique<block_exec>(T, o.rank, cfg);
    require(o.memory.block_layers >= 0 && o.memory.block_layers <= o.layers,
            "model_step: memory policy block_layers outside [0, layers]");
    require(o.memory.offload_layers >= 0 && o.memory.offload_layers <= o.layers,
            "model_step: memory policy offload_layers outside [0, layers]");
    require(o.memory.lm_head_chunk >= 0, "model_step: memory policy lm_head_chunk is negative");
    blk_->set_recompute_tier(o.memory.tier);
    // The LM head's chunk: the memory policy's, else the ce_chunk option (graph/memory_plan.hpp).
    const executor_options eo{.stream = blk_->stream(), .vocab = o.vocab,
                              .ce_chunk = graph::lm_head_chunk_tokens(o.ce_chunk, T, o.memory)};
    emb_ = std::make_unique<block_executor<embedding_plan>>(T, o.rank, cfg, eo);
    head_ = std::make_unique<block_executor<head_plan>>(T, o.rank, cfg, eo);
    const std::int64_t L = o.layers, V = o.vocab;
    const std::size_t TH = static_cast<std::size_t>(T) * H;

    // ---- frozen weights: every frozen slot of the block plan --------------------------
    for (int p = 0; p < BS.n_params; ++p) {
      const auto& ps = BS.params[p];
      if (ps.kind != graph::op_kind::lora_adapter)
        winfo_.push_back({std::string(ps.name.view()), ps.kind == graph::op_kind::frozen_vector ? 0 : ps.rows, ps.cols, p});
    }
    layer_w_.resize(static_cast<std::size_t>(L));
    for (auto& lw : layer_w_)
      for (const auto& w : winfo_) lw.emplace_back(w.elems());
    embed_ = device_array<bf16>(static_cast<std::size_t>(V) * H);
    if (!o.tied) lm_head_ = device_array<bf16>(static_cast<std::size_t>(V) * H);
    norm_w_ = device_array<bf16>(H);

    // ---- LoRA: flat arrays ---------------------------------------------------------------
    std::size_t off = 0;
    for (int l = 0; l < L; ++l)
      for (int p = 0; p < BS.n_params; ++p) {
        const auto& ps = BS.params[p];
        if (ps.kind != graph::op_kind::lora_adapter) continue;
        lora_slot s{l, std::string(ps.name.view()), ps.cols, ps.rows, 0, 0};
        s.a_off = off, off += pad128(static_cast<std::size_t>(o.rank) * ps.cols);
        s.b_off = off, off += pad128(static_cast<std::size_t>(ps.rows) * o.rank);
        slots_.push_back(std::move(s));
      }
    n_lora_ = off;
    p_ = device_array<float>(off), g_ = device_array<float>(off), m_ = device_array<float>(off), v_ = device_array<float>(off);
    p16_ = device_array<bf16>(off);
    for (auto* a : {&p_, &g_, &m_, &v_}) SG_CUDA_CHECK(cudaMemset(a->get(), 0, off * sizeof(float)));
    SG_CUDA_CHECK(cudaMemset(p16_.get(), 0, off * sizeof(bf16)));

    // ---- activations -------------------------------------------------------------------
    // x_l of an offloaded layer has no buffer of its own: it passes through the ring.
    const int n_off = o.memory.offload_layers;
    for (int l = 0; l <= L; ++l) x_.emplace_back(l < n_off ? 0 : TH);
    for (int i = 0; i < std::min(n_off, graph::offload_ring); ++i) ring_.emplace_back(TH);
    // Layers that re-run their block in backward share one arena; the others own one.
    for (int l = o.memory.block_layers; l < L; ++l) saved_.emplace_back(blk_->allocate_saved());
    if (o.memory.block_layers > 0) shared_saved_ = blk_->allocate_saved();
    head_saved_ = head_->allocate_saved();
    emb_saved_ = emb_->allocate_saved();
    grad_ = device_array<bf16>(TH);
    loss_tok_ = device_array<float>(static_cast<std::size_t>(T));
    ids_ = device_array<std::int32_t>(static_cast<std::size_t>(T));
    targets_ = device_array<std::int32_t>(static_cast<std::size_t>(T));
    pos_ = device_array<std::int32_t>(static_cast<std::size_t>(T));
    seq_ = device_array<std::int32_t>(static_cast<std::size_t>(T) + 1);
    scalars_ = device_array<double>(2 + model_detail::kNormBlocks);  // loss sum, grad norm, partial sums
    coef_ = device_array<float>(1);
    seed_ = device_array<float>(1);
    args_ = device_array<model_detail::adamw_step_args>(1);
    dropout_seed_ = device_array<std::uint64_t>(1);
    allocated_ = device_bytes_live() - live0;

    // ---- bindings: one dense table per layer, built once ---------------------------------
    layer_b_.resize(static_cast<std::size_t>(L));
    for (int l = 0; l < L; ++l) {
      auto& b = layer_b_[static_cast<std::size_t>(l)];
      for (std::size_t i = 0; i < winfo_.size(); ++i)
        b.frozen[static_cast<std::size_t>(winfo_[i].slot)] = layer_w_[static_cast<std::size_t>(l)][i].get();
      for (const auto& s : slots_)
        if (s.layer == l)
          b.lora[static_cast<std::size_t>(block_exec::param_slot(s.adapter))] = {
              p_.get() + s.a_off, p_.get() + s.b_off, g_.get() + s.a_off, g_.get() + s.b_off, p16_.get() + s.a_off,
              p16_.get() + s.b_off};
    }
    bind_fixed();
    if (n_off > graph::offload_ring) allocate_offload(TH);
    SG_CUDA_CHECK(cudaMallocHost(&host_, sizeof(pinned)));  // last: nothing after it can throw
    SG_CUDA_CHECK(cudaDeviceSynchronize());  // memsets (default stream) done before the executor's stream runs
  }
  ~model_step() {
    drop_graphs();
    if (host_) cudaFreeHost(host_);
    for (auto e : ev_)
      if (e) cudaEventDestroy(e);
    free_offload();
  }
  model_step(const model_step&) = delete;
  model_step& operator=(const model_step&) = delete;

  // ---- sizes and parameters ------------------------------------------------------------
  std::int64_t tokens() const { return T_; }
  std::int64_t chunk_tokens() const { return head_->chunk_tokens(); }
  const model_options& options() const { return o_; }
  cudaStream_t stream() const { return blk_->stream(); }
  block_exec& executor() { return *blk_; }
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
  float* adam_m() { return m_.get(); }  // AdamW first moments (same layout), for checkpoints
  float* adam_v() { return v_.get(); }  // second moments
  std::int64_t adam_steps() const { return adam_t_; }
  void set_adam_steps(std::int64_t t) { adam_t_ = t; }  // after restoring m, v from a checkpoint
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
  // Bytes of device memory this object and its executors hold (every
  // device_array they allocated): equals predict_bytes(T, options).total().
  std::size_t allocated_bytes() const { return allocated_; }

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
    blk_->set_layout(pos_.get(), seq_.get(), nseq_);
    emb_->set_layout(pos_.get(), seq_.get(), nseq_);
    head_->set_layout(pos_.get(), seq_.get(), nseq_);
    batch_set_ = true;
  }
  std::int64_t counted() const { return counted_; }

  // ---- data-parallel hook (train/cuda_backend.cuh; empty: single GPU) -------------------
  // f(l) is called on the host right after layer l's backward is queued on
  // stream(), when its dA, dB of this batch are final (layers L-1 .. 0), so a
  // communicator can start reducing them while the earlier layers' backward
  // runs. forward_backward only: step() (the captured graph) refuses it.
  void set_after_layer_backward(std::function<void(int)> f) { after_layer_backward_ = std::move(f); }

  // ---- the step -------------------------------------------------------------------------
  // dA, dB = 0 (before accumulating over micro-batches).
  void zero_grads() { SG_CUDA_CHECK(cudaMemsetAsync(g_.get(), 0, n_lora_ * sizeof(float), stream())); }
  // Forward and backward of the current batch, the loss seeded with
  // seed_scale per counted token (0: 1/counted, the batch mean). LoRA
  // gradients in lora_grads(): overwritten, or added to with accumulate.
  // Returns the loss (synchronises: one scalar copy at the end).
  model_loss forward_backward(double seed_scale = 0.0, bool accumulate = false) {
    require(batch_set_, "model_step: set_batch() before the step");
    blk_->set_accumulate(accumulate);
    host_->seed = seed_of(seed_scale);
    upload_scalars(false);
    launch_forward_backward();
    grads_valid_ = counted_ > 0 || accumulate;
    return finish_loss(false);
  }
  // Forward only (the eval loss): embedding, blocks, the chunked LM head's
  // loss; no backward, no dropout, nothing of the gradients or the optimizer
  // touched (the head runs without a seed, so it writes no input gradient).
  // The same kernels as forward_backward's forward: the same loss. Synchronises.
  model_loss forward_loss() {
    require(batch_set_, "model_step: set_batch() before the forward pass");
    const float p = blk_->dropout();
    blk_->set_dropout(0.0f, nullptr);
    head_->set_loss_seed(nullptr);
    try {
      launch_forward();
    } catch (...) {
      blk_->set_dropout(p, dropout_seed_.get()), head_->set_loss_seed(seed_.get());
      throw;
    }
    blk_->set_dropout(p, dropout_seed_.get()), head_->set_loss_seed(seed_.get());
    return finish_loss(false);
  }
  // LoRA dropout p (0: off; > 0 needs options().lora_dropout > 0) with the
  // mask seed of the next forward_backward / step (the CPU model's
  // dropout_seed): write it before each micro-batch. The seed goes to device
  // memory inside the pass; p is baked into captured graphs (a new p drops them).
  void set_dropout(float p, std::uint64_t seed) {
    require(p == 0 || o_.lora_dropout > 0, "model_step: LoRA dropout p > 0 needs model_options::lora_dropout > 0");
    if (p != blk_->dropout()) drop_graphs();
    blk_->set_dropout(p, dropout_seed_.get());
    host_->dropout_seed = seed;
  }
  // AdamW on every LoRA parameter with the current gradients, then the bf16
  // copies; learning rate `lr` (the schedule's value). Asynchronous.
  void optimizer_step(const adamw_hparams& h, double lr) {
    require(grads_valid_, "model_step: optimizer_step() without gradients (no counted token, or no backward)");
    ++adam_t_;
    host_->args = adamw_args(h, lr);
    host_->max_norm = static_cast<float>(h.max_grad_norm);
    upload_scalars(true);
    launch_adamw();
  }
  // forward_backward + optimizer_step: the mean loss of the batch. With
  // options().graphs, the whole step is one CUDA graph per (T, sequences).
  double step(const adamw_hparams& h, double lr) {
    const auto t0 = std::chrono::steady_clock::now();
    require(batch_set_, "model_step: set_batch() before the step");
    require(!after_layer_backward_, "model_step: step() with an after-layer-backward hook (use forward_backward)");
    if (counted_ == 0) return forward_backward().mean();  // nothing to learn from: no update
    if (!graphs_.empty() && static_cast<float>(h.max_grad_norm) != captured_max_norm_) drop_graphs();
    blk_->set_accumulate(false);
    ++adam_t_;
    host_->seed = seed_of(0.0);
    host_->args = adamw_args(h, lr);
    host_->max_norm = static_cast<float>(h.max_grad_norm);
    if (!o_.graphs || profiling_) {
      upload_scalars(true);
      launch_forward_backward();
      launch_adamw();
    } else {
      auto& g = graphs_[nseq_];
      if (!g) {
        if (!warmed_) {  // run once outside a capture (lazy kernel attributes, cuBLASLt plans)
          upload_scalars(true);
          launch_forward_backward();
          launch_adamw();
          SG_CUDA_CHECK(cudaStreamSynchronize(stream()));
          warmed_ = true;
          grads_valid_ = true;
          graphs_.erase(nseq_);
          return finish_loss(false).mean();
        }
        g = capture();
        captured_max_norm_ = host_->max_norm;
      }
      SG_CUDA_CHECK(cudaGraphLaunch(g, stream()));
      host_us_ = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
      grads_valid_ = true;
      return finish_loss(true).mean();
    }
    host_us_ = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    grads_valid_ = true;
    return finish_loss(false).mean();
  }
  // Host time of the last step() until its work was queued (the launch, not
  // the wait for the loss), in microseconds: what the CPU adds to a step.
  double last_host_us() const { return host_us_; }
  // The global gradient norm of the last optimizer step (before clipping); synchronises.
  double last_grad_norm() {
    SG_CUDA_CHECK(cudaMemcpyAsync(&host_->norm, scalars_.get() + 1, sizeof(double), cudaMemcpyDeviceToHost, stream()));
    SG_CUDA_CHECK(cudaStreamSynchronize(stream()));
    return host_->norm;
  }
  void synchronize() { SG_CUDA_CHECK(cudaStreamSynchronize(stream())); }
  std::size_t captured_graphs() const { return graphs_.size(); }
  // Capture step() as CUDA graphs (default: options().graphs) or launch each kernel.
  void set_graphs(bool on) { o_.graphs = on; }

  // Per-phase timing (CUDA events on the stream, off by default; steps then
  // run without a graph): after a step, phase_ms() gives {embedding + blocks
  // forward, head forward and backward, blocks backward, AdamW} in ms.
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
  // Pinned host scalars: written by the host before a step, copied to the
  // device inside the step (so a replayed graph sees the new values).
  struct pinned {
    float seed = 0;
    float max_norm = 0;
    std::uint64_t dropout_seed = 0;
    model_detail::adamw_step_args args{};
    double loss = 0, norm = 0;
  };

  // Fits? Checked before anything is allocated.
  static void check_fits(std::int64_t T, const model_options& o) {
    std::size_t free_b = 0, total_b = 0;
    SG_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    const model_bytes b = predict_bytes(T, o);
    const std::size_t reserve = std::size_t{512} << 20;  // cuBLASLt handles, graphs, fragmentation
    if (b.total() + reserve <= free_b) return;
    auto gib = [](std::size_t x) { return std::to_string(static_cast<double>(x) / double(1ull << 30)).substr(0, 5) + " GiB"; };
    throw error(std::string("model_step: ") + Model::name + " with " + std::to_string(o.layers) + " layers at " +
                std::to_string(T) + " tokens per step needs " + gib(b.total() + reserve) + " of device memory (weights " +
                gib(b.weights) + ", saved activations " + gib(b.saved) + ", residual stream " + gib(b.residual) +
                ", workspace " + gib(b.workspace) + ", LM-head chunk " + gib(b.lm_head_chunk) + ", LoRA state " +
                gib(b.lora) + ", kernel workspaces and reserve " + gib(b.kernel_workspaces + reserve) + "), but " +
                gib(free_b) + " are free of " + gib(total_b) +
                ". Lower --batch-tokens (saved activations scale with the tokens per step), --max-len or the LoRA rank, "
                "give a memory budget (model_options::memory from choose_memory(): recompute instead of keeping), "
                "or use a device with more memory.");
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
  float seed_of(double seed_scale) const {
    return static_cast<float>(seed_scale > 0 ? seed_scale : counted_ ? 1.0 / static_cast<double>(counted_) : 0.0);
  }
  static model_detail::adamw_step_args adamw_args(const adamw_hparams& h, double lr, std::int64_t t) {
    // Bias corrections in double on the host (as torch and train::adamw), the update in f32.
    model_detail::adamw_step_args a{};
    a.decay = static_cast<float>(1.0 - lr * h.weight_decay);
    a.b1 = static_cast<float>(h.beta1), a.b2 = static_cast<float>(h.beta2);
    a.step_size = static_cast<float>(lr / (1.0 - std::pow(h.beta1, static_cast<double>(t))));
    a.bc2s = static_cast<float>(std::sqrt(1.0 - std::pow(h.beta2, static_cast<double>(t))));
    a.eps = static_cast<float>(h.eps);
    return a;
  }
  model_detail::adamw_step_args adamw_args(const adamw_hparams& h, double lr) const { return adamw_args(h, lr, adam_t_); }

  // The per-step scalars, pinned -> device (captured with the step).
  void upload_scalars(bool adamw) {
    SG_CUDA_CHECK(cudaMemcpyAsync(seed_.get(), &host_->seed, sizeof(float), cudaMemcpyHostToDevice, stream()));
    SG_CUDA_CHECK(cudaMemcpyAsync(dropout_seed_.get(), &host_->dropout_seed, sizeof(std::uint64_t),
                                  cudaMemcpyHostToDevice, stream()));
    if (adamw)
      SG_CUDA_CHECK(cudaMemcpyAsync(args_.get(), &host_->args, sizeof(host_->args), cudaMemcpyHostToDevice, stream()));
  }

  // Externals that never change: the embedding's ids and output, the head's input, targets, loss, gradient.
  void bind_fixed() {
    emb_->set_external("input_ids", ids_.get());
    emb_->set_external("x", xptr(0));
    bind_embedding_weights();
    head_->set_external("h", xptr(o_.layers));
    head_->set_external("targets", targets_.get());
    head_->set_external("loss", loss_tok_.get());
    head_->set_external("d(h)", grad_.get());
    head_->set_frozen("model.norm.weight", norm_w_.get());
    head_->set_frozen("lm_head.weight", lm_head());
    head_->set_loss_seed(seed_.get());
    blk_x_ = block_exec::external_slot("x");
    blk_y_ = block_exec::external_slot("y");
    blk_->set_external("d(x)", grad_.get());
  }
  void bind_embedding_weights() { emb_->set_frozen("model.embed_tokens.weight", embed_.get()); }

  void bind_layer(int l) {
    blk_->bind(layer_b_[static_cast<std::size_t>(l)]);
    blk_->set_layer(l);  // the dropout streams of layer l
    blk_->set_external(blk_x_, xptr(l));
    blk_->set_external(blk_y_, xptr(l + 1));
  }
  // x_l on the device: its own buffer, or (an offloaded layer input) ring buffer l % R.
  bf16* xptr(int l) const {
    return l < o_.memory.offload_layers ? ring_[static_cast<std::size_t>(l) % ring_.size()].get()
                                        : x_[static_cast<std::size_t>(l)].get();
  }

  // ---- offloaded layer inputs (see the header's data flow) ------------------------------
  void allocate_offload(std::size_t TH) {
    const int n = o_.memory.offload_layers - graph::offload_ring;  // the round trips
    const std::size_t bytes = static_cast<std::size_t>(n) * TH * sizeof(bf16);
    if (cudaMallocHost(&host_x_, bytes) != cudaSuccess) {
      (void)cudaGetLastError();
      host_x_ = nullptr;
      throw error("model_step: the memory plan keeps the inputs of " + std::to_string(n) + " layers in pinned host memory (" +
                  graph::bytes_text(double(bytes)) + "), which could not be allocated; give a larger memory budget "
                  "(fewer offloaded layers) or free host memory");
    }
    SG_CUDA_CHECK(cudaStreamCreateWithFlags(&copy_, cudaStreamNonBlocking));
    for (auto* v : {&ev_written_, &ev_out_, &ev_free_, &ev_in_}) {
      v->assign(static_cast<std::size_t>(n), nullptr);
      for (auto& e : *v) SG_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    }
    TH_ = TH;
  }
  void free_offload() {
    for (auto* v : {&ev_written_, &ev_out_, &ev_free_, &ev_in_})
      for (auto e : *v)
        if (e) cudaEventDestroy(e);
    if (copy_) cudaStreamDestroy(copy_);
    if (host_x_) cudaFreeHost(host_x_);
  }
  bf16* host_x(int l) const { return host_x_ + static_cast<std::size_t>(l) * TH_; }
  // x_l goes to host memory and back (the last R offloaded inputs stay in the ring).
  bool offloaded(int l) const { return l >= 0 && l < o_.memory.offload_layers - graph::offload_ring; }
  // On the copy stream, once the compute stream has reached this point
  // (recorded as `reached`): one [T, H] copy dst <- src, then `done`.
  void copy_from_here(cudaEvent_t reached, bf16* dst, const bf16* src, cudaMemcpyKind kind, cudaEvent_t done) {
    SG_CUDA_CHECK(cudaEventRecord(reached, stream()));
    SG_CUDA_CHECK(cudaStreamWaitEvent(copy_, reached, 0));
    SG_CUDA_CHECK(cudaMemcpyAsync(dst, src, TH_ * sizeof(bf16), kind, copy_));
    SG_CUDA_CHECK(cudaEventRecord(done, copy_));
  }
  // Forward: x_l was just written on the compute stream; copy it out.
  void offload_out(int l) {
    const auto i = static_cast<std::size_t>(l);
    if (offloaded(l)) copy_from_here(ev_written_[i], host_x(l), xptr(l), cudaMemcpyDeviceToHost, ev_out_[i]);
  }
  // Forward: before x_l is written into its ring buffer, the buffer's previous
  // value x_{l-3} must be out.
  void offload_wait_free(int l) {
    if (offloaded(l - graph::offload_ring) && l < o_.memory.offload_layers)
      SG_CUDA_CHECK(cudaStreamWaitEvent(stream(), ev_out_[static_cast<std::size_t>(l - graph::offload_ring)], 0));
  }
  // Backward: copy x_l back in, once the compute stream has passed point
  // ev_free_[l] (recorded when x_l's ring buffer is no longer read or written).
  void offload_in(int l) {
    const auto i = static_cast<std::size_t>(l);
    if (offloaded(l)) copy_from_here(ev_free_[i], xptr(l), host_x(l), cudaMemcpyHostToDevice, ev_in_[i]);
  }
  void offload_wait_in(int l) {
    if (offloaded(l)) SG_CUDA_CHECK(cudaStreamWaitEvent(stream(), ev_in_[static_cast<std::size_t>(l)], 0));
  }

  // Embedding, blocks and the head forward, the loss summed into scalars_[0]
  // (with the head's seed bound, d(hn) too). for_backward: offloaded layer
  // inputs are copied out (forward_loss needs no copy).
  void launch_forward(bool for_backward = false) {
    const int L = o_.layers;
    recorded_.fill(false);
    mark(0);
    emb_->forward(emb_saved_.view());
    if (for_backward) offload_out(0);
    for (int l = 0; l < L; ++l) {
      bind_layer(l);
      if (for_backward) offload_wait_free(l + 1);
      blk_->forward(saved_of(l));
      if (for_backward) offload_out(l + 1);
    }
    mark(1);
    head_->forward(head_saved_.view());
    model_detail::sum_f32_kernel<<<1, model_detail::kReduceThreads, 0, stream()>>>(loss_tok_.get(), T_, scalars_.get());
    SG_CUDA_CHECK(cudaGetLastError());
  }

  void launch_forward_backward() {
    const int L = o_.layers;
    launch_forward(true);
    head_->backward(head_saved_.view());
    mark(2);
    // Offloaded inputs come back two layers ahead: x_{l-2}'s ring buffer
    // (x_{l+1}'s) is free once layer l's backward is queued. (The last R
    // offloaded inputs never left the ring.)
    for (int l = L - 1; l >= 0; --l) {
      bind_layer(l);
      offload_wait_in(l);
      // A whole-block recompute layer: its forward again (into the shared
      // arena, from x_l; x_{l+1} is rewritten with the same values).
      if (l < o_.memory.block_layers) blk_->forward(saved_of(l));
      blk_->backward(saved_of(l));
      offload_in(l - 2);
      if (after_layer_backward_) after_layer_backward_(l);  // data-parallel hook
    }
    mark(3);
  }

  layer_saved saved_of(int l) const {
    return l < o_.memory.block_layers ? shared_saved_.view()
                                      : saved_[static_cast<std::size_t>(l - o_.memory.block_layers)].view();
  }

  void launch_adamw() {
    cudaStream_t st = stream();
    const std::int64_t n = static_cast<std::int64_t>(n_lora_);
    // The norm is always computed (cheap, worth logging); coef = 1 without clipping.
    model_detail::sumsq_partial_kernel<<<model_detail::kNormBlocks, model_detail::kNormBlockThreads, 0, st>>>(
        g_.get(), n, scalars_.get() + 2);
    SG_CUDA_CHECK(cudaGetLastError());
    model_detail::grad_norm_finish_kernel<<<1, 32, 0, st>>>(scalars_.get() + 2, host_->max_norm, scalars_.get() + 1,
                                                            coef_.get());
    SG_CUDA_CHECK(cudaGetLastError());
    launch_grid(model_detail::adamw_kernel, p_.get(), static_cast<const float*>(g_.get()), m_.get(), v_.get(),
                p16_.get(), n, static_cast<const float*>(coef_.get()),
                static_cast<const model_detail::adamw_step_args*>(args_.get()));
    mark(4);
  }

  // The whole step as one graph: scalars in, forward, backward, AdamW, loss out.
  cudaGraphExec_t capture() {
    cudaGraph_t g = nullptr;
    SG_CUDA_CHECK(cudaStreamBeginCapture(stream(), cudaStreamCaptureModeThreadLocal));
    try {
      upload_scalars(true);
      launch_forward_backward();
      launch_adamw();
      SG_CUDA_CHECK(cudaMemcpyAsync(&host_->loss, scalars_.get(), sizeof(double), cudaMemcpyDeviceToHost, stream()));
    } catch (...) {
      cudaStreamEndCapture(stream(), &g);
      if (g) cudaGraphDestroy(g);
      throw;
    }
    SG_CUDA_CHECK(cudaStreamEndCapture(stream(), &g));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, g, 0);
    cudaGraphDestroy(g);
    SG_CUDA_CHECK(e);
    return exec;
  }
  void drop_graphs() {
    for (auto& [n, g] : graphs_)
      if (g) cudaGraphExecDestroy(g);
    graphs_.clear();
  }

  // A captured step copies the loss inside the graph (its last node); others here.
  model_loss finish_loss(bool copied_in_graph) {
    if (!copied_in_graph)
      SG_CUDA_CHECK(cudaMemcpyAsync(&host_->loss, scalars_.get(), sizeof(double), cudaMemcpyDeviceToHost, stream()));
    SG_CUDA_CHECK(cudaStreamSynchronize(stream()));
    return {host_->loss, counted_};
  }

  std::int64_t T_ = 0;
  model_options o_;
  std::unique_ptr<block_exec> blk_;
  std::unique_ptr<block_executor<embedding_plan>> emb_;
  std::unique_ptr<block_executor<head_plan>> head_;
  std::size_t n_lora_ = 0, allocated_ = 0;
  std::vector<weight_info> winfo_;
  std::vector<std::vector<device_array<bf16>>> layer_w_;  // [layer][winfo_ index]
  std::vector<typename block_exec::bindings> layer_b_;    // [layer]: the block plan's slots
  device_array<bf16> embed_, lm_head_, norm_w_;
  std::vector<lora_slot> slots_;
  device_array<float> p_, g_, m_, v_;
  device_array<bf16> p16_;
  std::vector<device_array<bf16>> x_;  // x_0 .. x_L, [T, H] (empty for an offloaded layer input)
  std::vector<device_array<bf16>> ring_;  // offloaded layer inputs: graph::offload_ring buffers [T, H]
  bf16* host_x_ = nullptr;                // ... and their pinned host copies [offload_layers][T, H]
  std::size_t TH_ = 0;
  cudaStream_t copy_ = nullptr;           // the offload copies' stream
  // Per offloaded layer l: x_l written (compute), copied out (copy), its ring buffer free in backward (compute), copied in (copy).
  std::vector<cudaEvent_t> ev_written_, ev_out_, ev_free_, ev_in_;
  std::vector<layer_saved_storage> saved_;
  layer_saved_storage head_saved_, emb_saved_;
  layer_saved_storage shared_saved_;  // the whole-block recompute layers' (memory policy)
  device_array<bf16> grad_;
  device_array<float> loss_tok_, coef_, seed_;
  device_array<model_detail::adamw_step_args> args_;
  device_array<std::uint64_t> dropout_seed_;  // LoRA dropout: the pass's mask seed
  device_array<std::int32_t> ids_, targets_, pos_, seq_;
  device_array<double> scalars_;
  int blk_x_ = -1, blk_y_ = -1;
  pinned* host_ = nullptr;
  std::map<int, cudaGraphExec_t> graphs_;  // by number of sequences (the attention grid)
  std::vector<std::int32_t> h_ids_, h_targets_, h_pos_, h_seq_;
  std::int64_t counted_ = 0;
  int nseq_ = 0;
  std::int64_t adam_t_ = 0;
  double host_us_ = 0;
  bool batch_set_ = false, grads_valid_ = false, profiling_ = false, warmed_ = false;
  float captured_max_norm_ = 0;  // grad_norm_finish_kernel takes it by value: graphs are redone if it changes
  std::array<cudaEvent_t, 5> ev_{};   // phase boundaries (set_profiling)
  std::array<bool, 5> recorded_{};
  std::function<void(int)> after_layer_backward_;  // data-parallel hook (set_after_layer_backward)
};

}  // namespace staticgrad::cuda
