#pragma once
// Definitions of cuda_decoder_core (cuda_decoder_core.hpp): the forward of a
// feed of n tokens at positions [p0, p0 + n) (kernels and shapes in
// cuda_decoder_kernels.cuh):
//   x = embed[ids]                                        f32 [n, H]
//   per layer: h = rmsnorm(x)                             bf16 [n, H]
//     q = h Wq^T, k = h Wk^T, v = h Wv^T (k, v straight into the cache rows
//     p0..p0+n-1), + bias, RoPE on q and k at their positions
//     attn = causal GQA attention of the n queries over cache rows 0..p0+t
//     x += attn Wo^T; h = rmsnorm(x); x += (silu(h Wg^T) * (h Wu^T)) Wd^T
//   each product + s (h A^T) B^T where the module is adapted (unmerged LoRA)
//   logits = rmsnorm(x[n-1]) head^T                      f32 [vocab], to the host
// Include in exactly one .cu of a program (the definitions are not inline).
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "staticgrad/backend/cuda/check.cuh"
#include "staticgrad/core/error.hpp"
#include "staticgrad/infer/cuda_decoder_core.hpp"
#include "staticgrad/infer/cuda_decoder_kernels.cuh"

namespace staticgrad::infer {

struct cuda_decoder_core::state {
  using dbf16 = cuda_decode::bf16;
  struct device_free {
    void operator()(void* p) const { cudaFree(p); }
  };
  template <class T>
  using dev = std::unique_ptr<T, device_free>;
  struct cublas_destroy {
    void operator()(cublasHandle_t h) const { cublasDestroy(h); }
  };
  struct linear_d {
    dev<dbf16> w, a, b;  // [out, in]; LoRA A [r, in], B [out, r] (null: not adapted)
    dev<float> bias;     // [out] or null
    int out = 0, in = 0, r = 0;
  };
  struct layer_d {
    dev<float> norm_in, norm_post;
    std::array<linear_d, num_modules> linear;
  };

  cuda_decoder_shape shape;
  std::unique_ptr<std::remove_pointer_t<cublasHandle_t>, cublas_destroy> cublas;
  cudaStream_t stream = nullptr;  // the default stream: feed() ends with a synchronous copy
  dev<dbf16> embed, lm_head;
  dev<float> final_norm, inv_freq, logits_d;
  std::vector<layer_d> layers;
  dev<float> k_cache, v_cache;  // f32 [layer][capacity][KV], K after RoPE
  std::size_t capacity = 0, cached = 0;
  int max_rank = 0;
  dev<std::int32_t> ids;
  dev<float> x, q, gate, up;     // [n, H], [n, nh*d], [n, I], [n, I]
  dev<dbf16> h, attn, act, xa;   // [n, H], [n, nh*d], [n, I], [n, r]
  int scratch_rows = 0;
  std::vector<float> logits;

  // cudaMalloc of n Ts after checking them against the free device memory.
  template <class T>
  static dev<T> alloc(std::size_t n, const std::string& what) {
    const std::size_t bytes = n * sizeof(T), free = free_device_bytes();
    if (bytes > free)
      throw error("--device cuda: not enough device memory for " + what + ": " + std::to_string(bytes >> 20) +
                      " MiB needed, " + std::to_string(free >> 20) + " MiB free",
                  {"", "--device", {}});
    void* p = nullptr;
    SG_CUDA_CHECK(cudaMalloc(&p, std::max<std::size_t>(bytes, 1)));
    return dev<T>(static_cast<T*>(p));
  }
  template <class D, class H>
  static dev<D> upload(std::span<const H> host, std::size_t expected, const std::string& what) {
    static_assert(sizeof(D) == sizeof(H), "host and device element types must have the same size");
    if (host.size() != expected)
      throw error("CUDA decoder: " + what + " has " + std::to_string(host.size()) + " values, expected " +
                  std::to_string(expected));
    auto d = alloc<D>(host.size(), what);
    SG_CUDA_CHECK(cudaMemcpy(d.get(), host.data(), host.size_bytes(), cudaMemcpyHostToDevice));
    return d;
  }

  int q_width() const { return shape.heads * shape.head_dim; }
  int kv_width() const { return shape.kv_heads * shape.head_dim; }
  // (out, in) of a module.
  std::pair<int, int> dims(module m) const {
    const int H = shape.hidden, I = shape.intermediate;
    switch (m) {
      case q_proj: return {q_width(), H};
      case k_proj: case v_proj: return {kv_width(), H};
      case o_proj: return {H, q_width()};
      case gate_proj: case up_proj: return {I, H};
      default: return {H, I};  // down_proj
    }
  }
  linear_d& lin(int layer, module m) {
    if (layer < 0 || layer >= shape.layers || m < 0 || m >= num_modules) throw error("CUDA decoder: no such module");
    return layers[std::size_t(layer)].linear[std::size_t(m)];
  }

  // y[n, out] (row stride ldy, f32) = beta * y + x W^T (+ s (x A^T) B^T); no bias.
  void linear(const linear_d& l, const dbf16* in, int n, float* y, int ldy, float beta) {
    cuda_decode::gemm_xwt(cublas.get(), n, l.out, l.in, in, l.w.get(), y, CUDA_R_32F, ldy, 1.0f, beta);
    if (!l.a) return;
    cuda_decode::gemm_xwt(cublas.get(), n, l.r, l.in, in, l.a.get(), xa.get(), CUDA_R_16BF, l.r, 1.0f, 0.0f);
    cuda_decode::gemm_xwt(cublas.get(), n, l.out, l.r, xa.get(), l.b.get(), y, CUDA_R_32F, ldy, shape.lora_scaling,
                          1.0f);
  }

  // Activations for feeds of up to n tokens (grown, never shrunk).
  void ensure_scratch(int n) {
    if (n <= scratch_rows) return;
    const std::size_t N = std::size_t(n), H = std::size_t(shape.hidden), Q = std::size_t(q_width()),
                      I = std::size_t(shape.intermediate);
    const std::string what = "the activations of a " + std::to_string(n) + "-token feed";
    ids.reset(), x.reset(), h.reset(), q.reset(), attn.reset(), gate.reset(), up.reset(), act.reset(), xa.reset();
    ids = alloc<std::int32_t>(N, what);
    x = alloc<float>(N * H, what);
    h = alloc<dbf16>(N * H, what);
    q = alloc<float>(N * Q, what);
    attn = alloc<dbf16>(N * Q, what);
    gate = alloc<float>(N * I, what);
    up = alloc<float>(N * I, what);
    act = alloc<dbf16>(N * I, what);
    xa = alloc<dbf16>(N * std::size_t(std::max(max_rank, 1)), what);
    scratch_rows = n;
  }
};

std::size_t cuda_decoder_core::free_device_bytes() {
  std::size_t free = 0, total = 0;
  SG_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  return free;
}

cuda_decoder_core::cuda_decoder_core(const cuda_decoder_shape& s) : s_(std::make_unique<state>()) {
  int devices = 0;
  const cudaError_t e = cudaGetDeviceCount(&devices);
  if (e != cudaSuccess || devices == 0)
    throw error(std::string("--device cuda: no usable CUDA device (") +
                    (e != cudaSuccess ? cudaGetErrorString(e) : "0 devices") + "); use --device cpu",
                {"", "--device", {}});
  if (s.head_dim > cuda_decode::attention_threads * cuda_decode::attention_dims_per_thread || s.head_dim % 2 != 0)
    throw error("CUDA decoder: head_dim " + std::to_string(s.head_dim) + " must be even and at most " +
                std::to_string(cuda_decode::attention_threads * cuda_decode::attention_dims_per_thread));
  s_->shape = s;
  cublasHandle_t h = nullptr;
  cuda_decode::check_cublas(cublasCreate(&h), "cublasCreate", __FILE__, __LINE__);
  s_->cublas.reset(h);
  cuda_decode::check_cublas(cublasSetStream(h, s_->stream), "cublasSetStream", __FILE__, __LINE__);
  s_->layers.resize(std::size_t(s.layers));
  for (auto& L : s_->layers)
    for (int m = 0; m < num_modules; ++m) {
      const auto [out, in] = s_->dims(module(m));
      L.linear[std::size_t(m)].out = out, L.linear[std::size_t(m)].in = in;
    }
  s_->logits_d = state::alloc<float>(std::size_t(s.vocab), "the logits");
}

cuda_decoder_core::~cuda_decoder_core() = default;

void cuda_decoder_core::set_embedding(std::span<const bf16> e, const char* what) {
  s_->embed = state::upload<state::dbf16>(e, std::size_t(s_->shape.vocab) * std::size_t(s_->shape.hidden), what);
}
void cuda_decoder_core::set_lm_head(std::span<const bf16> w, const char* what) {
  s_->lm_head = state::upload<state::dbf16>(w, std::size_t(s_->shape.vocab) * std::size_t(s_->shape.hidden), what);
}
void cuda_decoder_core::set_final_norm(std::span<const float> w, const char* what) {
  s_->final_norm = state::upload<float>(w, std::size_t(s_->shape.hidden), what);
}
void cuda_decoder_core::set_norms(int layer, std::span<const float> input, std::span<const float> post,
                                  const char* what) {
  auto& L = s_->layers.at(std::size_t(layer));
  L.norm_in = state::upload<float>(input, std::size_t(s_->shape.hidden), what);
  L.norm_post = state::upload<float>(post, std::size_t(s_->shape.hidden), what);
}
void cuda_decoder_core::set_linear(int layer, module m, std::span<const bf16> w, std::span<const float> bias,
                                   const char* what) {
  auto& l = s_->lin(layer, m);
  l.w = state::upload<state::dbf16>(w, std::size_t(l.out) * std::size_t(l.in), what);
  if (!bias.empty()) l.bias = state::upload<float>(bias, std::size_t(l.out), what);
}
void cuda_decoder_core::set_lora(int layer, module m, int r, std::span<const bf16> a, std::span<const bf16> b,
                                 const char* what) {
  auto& l = s_->lin(layer, m);
  l.r = r;
  l.a = state::upload<state::dbf16>(a, std::size_t(r) * std::size_t(l.in), what);
  l.b = state::upload<state::dbf16>(b, std::size_t(l.out) * std::size_t(r), what);
  s_->max_rank = std::max(s_->max_rank, r);
  s_->scratch_rows = 0;  // xa is sized by the largest rank
}
void cuda_decoder_core::set_inv_freq(std::span<const float> inv_freq) {
  s_->inv_freq = state::upload<float>(inv_freq, std::size_t(s_->shape.head_dim / 2), "RoPE inverse frequencies");
}

std::size_t cuda_decoder_core::cached() const noexcept { return s_->cached; }
std::size_t cuda_decoder_core::capacity() const noexcept { return s_->capacity; }
void cuda_decoder_core::truncate(std::size_t len) { s_->cached = std::min(s_->cached, len); }

void cuda_decoder_core::reserve(std::size_t positions) {
  auto& s = *s_;
  positions = std::min(positions, std::size_t(s.shape.max_positions));
  if (positions <= s.capacity) return;
  const std::size_t L = s.layers.size(), KV = std::size_t(s.kv_width());
  const std::string what = "a KV cache of " + std::to_string(positions) + " positions";
  auto k = state::alloc<float>(L * positions * KV, what + " (keys)");
  auto v = state::alloc<float>(L * positions * KV, what + " (values)");
  if (s.cached > 0) {  // keep the cached rows of every layer
    const std::size_t row = KV * sizeof(float);
    SG_CUDA_CHECK(cudaMemcpy2D(k.get(), positions * row, s.k_cache.get(), s.capacity * row, s.cached * row, L,
                               cudaMemcpyDeviceToDevice));
    SG_CUDA_CHECK(cudaMemcpy2D(v.get(), positions * row, s.v_cache.get(), s.capacity * row, s.cached * row, L,
                               cudaMemcpyDeviceToDevice));
  }
  s.k_cache = std::move(k), s.v_cache = std::move(v);
  s.capacity = positions;
}

std::span<const float> cuda_decoder_core::feed(std::span<const std::int32_t> ids) {
  namespace k = cuda_decode;
  auto& s = *s_;
  const auto& c = s.shape;
  const int n = int(ids.size()), H = c.hidden, d = c.head_dim, nh = c.heads, nkv = c.kv_heads, KV = s.kv_width(),
            I = c.intermediate;
  require(n > 0, "nothing to feed");
  require(std::int64_t(s.cached) + n <= c.max_positions,
          "the sequence would exceed max_position_embeddings (" + std::to_string(c.max_positions) + ")");
  if (s.cached + std::size_t(n) > s.capacity) reserve(std::max(s.cached + std::size_t(n), 2 * s.capacity));
  s.ensure_scratch(n);
  const int p0 = int(s.cached);
  const cudaStream_t st = s.stream;
  SG_CUDA_CHECK(cudaMemcpy(s.ids.get(), ids.data(), ids.size_bytes(), cudaMemcpyHostToDevice));
  k::embed(s.ids.get(), s.embed.get(), s.x.get(), n, H, st);
  for (std::size_t l = 0; l < s.layers.size(); ++l) {
    const auto& L = s.layers[l];
    const auto& lin = L.linear;
    float* kc = s.k_cache.get() + l * s.capacity * std::size_t(KV);  // [capacity, KV]
    float* vc = s.v_cache.get() + l * s.capacity * std::size_t(KV);
    float* k_new = kc + std::size_t(p0) * KV;  // the n rows of this feed
    float* v_new = vc + std::size_t(p0) * KV;
    k::rmsnorm(s.x.get(), L.norm_in.get(), s.h.get(), n, H, c.rms_norm_eps, st);
    s.linear(lin[q_proj], s.h.get(), n, s.q.get(), nh * d, 0.0f);
    s.linear(lin[k_proj], s.h.get(), n, k_new, KV, 0.0f);
    s.linear(lin[v_proj], s.h.get(), n, v_new, KV, 0.0f);
    k::bias_rope(s.q.get(), nh * d, lin[q_proj].bias.get(), n, nh, d, p0, s.inv_freq.get(), true, st);
    k::bias_rope(k_new, KV, lin[k_proj].bias.get(), n, nkv, d, p0, s.inv_freq.get(), true, st);
    k::bias_rope(v_new, KV, lin[v_proj].bias.get(), n, nkv, d, p0, s.inv_freq.get(), false, st);
    k::attention(s.q.get(), kc, vc, s.attn.get(), n, p0, nh, nkv, d, st);
    s.linear(lin[o_proj], s.attn.get(), n, s.x.get(), H, 1.0f);  // x += o_proj(attn)
    k::rmsnorm(s.x.get(), L.norm_post.get(), s.h.get(), n, H, c.rms_norm_eps, st);
    s.linear(lin[gate_proj], s.h.get(), n, s.gate.get(), I, 0.0f);
    s.linear(lin[up_proj], s.h.get(), n, s.up.get(), I, 0.0f);
    k::swiglu(s.gate.get(), s.up.get(), s.act.get(), std::int64_t(n) * I, st);
    s.linear(lin[down_proj], s.act.get(), n, s.x.get(), H, 1.0f);  // x += down_proj(act)
  }
  // Only the last position's logits pick the next token.
  k::rmsnorm(s.x.get() + std::size_t(n - 1) * H, s.final_norm.get(), s.h.get(), 1, H, c.rms_norm_eps, st);
  const auto* head = c.tied ? s.embed.get() : s.lm_head.get();
  k::gemm_xwt(s.cublas.get(), 1, c.vocab, H, s.h.get(), head, s.logits_d.get(), CUDA_R_32F, c.vocab, 1.0f, 0.0f);
  s.logits.resize(std::size_t(c.vocab));
  SG_CUDA_CHECK(cudaMemcpy(s.logits.data(), s.logits_d.get(), s.logits.size() * sizeof(float), cudaMemcpyDeviceToHost));
  s.cached += std::size_t(n);
  return s.logits;
}

}  // namespace staticgrad::infer
