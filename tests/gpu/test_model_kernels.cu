// GPU test: the small kernels of the training step (backend/cuda/model_kernels.cuh),
// of the CUDA decoder (infer/cuda_decoder_kernels.cuh) and the reference matrix
// product that stands in for cuBLASLt under racecheck
// (backend/cuda/reference_matmul.cuh, STATICGRAD_MATMUL=reference), each launched
// alone, without cuBLAS or cuBLASLt, with its caller's launch configuration
// (block_executor.cuh, model_step.cuh; the decoder header's own launchers),
// against a CPU reference in double. The whole-model tests exercise these
// kernels only next to cuBLASLt's, inside which compute-sanitizer's racecheck
// crashes; this test lets memcheck, racecheck and synccheck see them alone.
//
// Exit codes: 0 pass, 1 fail, 77 no CUDA device (ctest: skipped).
//
// Cases: row lengths and element counts that are not multiples of the block
// size or of 32 (partial warps, idle threads), a single element, rows of
// several blocks' worth (the vocabulary, 151936; hidden sizes 896 and 3584),
// counts past one pass of a grid-stride loop, and reductions over millions of
// elements. Outputs are poisoned (NaN) first, so an unwritten element fails.
// Tolerances (u = 2^-24, one f32 rounding):
//   * copies and conversions (embedding gathers, f32 -> bf16, an unrotated
//     bias add, ignored cross-entropy rows): exact, 0 differing elements;
//   * bf16 outputs (8 significant bits): the final rounding's half ulp is up to
//     2^-8 |v| (at the bottom of a binade), so for an f32 value v with
//     |v - ref| <= e, |bf16(v) - ref| <= 2^-8 |ref| + 2 e (bf16_bound); e, the
//     f32 error bound, is derived at each test (relative to the result, or
//     for cross-entropy and attention from the lse and the scores);
//   * double reductions (sum, sum of squares, norm): 1e-12 relative to the sum
//     of |terms| (their order gives <= ~2000 u_double ~ 2e-13);
//   * the clipping coefficient: 2^-23 relative (its f32 rounding, 2^-24, of a
//     ratio of double norms that agree to 1e-12);
//   * the reference product: the exact sum of K products of bf16 values (each
//     exact in f32), accumulated in f32 in k order, is within
//     gamma_K = K u / (1 - K u) of sum |a b| (Higham, Thm 3.1); times |alpha|,
//     plus |beta c| u for the epilogue, plus bf16's half ulp for a bf16 C;
//   * AdamW: bit for bit train::adamw (the kernel rounds every operation
//     explicitly in its order; both sides IEEE f32, the host pass has no FMA
//     contraction on baseline x86-64), and the formula in double within
//     2^-20 (16 u) of |p| + the update's terms (~12 roundings, derived there).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "bf16_round.cuh"
#include "staticgrad/backend/cuda/model_kernels.cuh"
#include "staticgrad/backend/cuda/reference_matmul.cuh"
#include "staticgrad/infer/cuda_decoder_kernels.cuh"
#include "staticgrad/train/adamw.hpp"
#include "support/compare.hpp"

namespace md = staticgrad::cuda::model_detail;
namespace dk = staticgrad::infer::cuda_decode;
using bf16 = __nv_bfloat16;

namespace {

using sg_gpu_test::bf16_round;

// n elements of T on the device (at least one allocated).
template <class T>
struct dev_array {
  T* p = nullptr;
  std::size_t n = 0;
  explicit dev_array(std::size_t count) : n(count) { SG_CUDA_CHECK(cudaMalloc(&p, std::max<std::size_t>(n, 1) * sizeof(T))); }
  explicit dev_array(const std::vector<T>& h) : dev_array(h.size()) {
    SG_CUDA_CHECK(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~dev_array() { cudaFree(p); }
  dev_array(const dev_array&) = delete;
  dev_array& operator=(const dev_array&) = delete;
  void poison() { SG_CUDA_CHECK(cudaMemset(p, 0xFF, n * sizeof(T))); }  // NaN as f32, bf16 and double
  std::vector<T> get() const {  // after the launches before it (default stream)
    SG_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<T> h(n);
    SG_CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};

float f32(bf16 x) { return __bfloat162float(x); }
std::size_t sz(std::int64_t x) { return static_cast<std::size_t>(x); }

template <class D>
std::vector<float> random_f32(std::size_t n, D d, std::mt19937& rng) {
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}
std::vector<bf16> random_bf16(std::size_t n, float sd, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, sd);
  std::vector<bf16> v(n);
  for (auto& x : v) x = __float2bfloat16(nd(rng));
  return v;
}
std::vector<std::int32_t> random_ids(std::size_t n, std::int32_t V, std::mt19937& rng) {
  std::uniform_int_distribution<std::int32_t> pick(0, V - 1);
  std::vector<std::int32_t> v(n);
  for (auto& x : v) x = pick(rng);
  if (n > 1) v.front() = 0, v.back() = V - 1;  // the table's first and last rows
  return v;
}

// Elements whose bytes differ.
template <class T>
std::size_t count_diff(const std::vector<T>& a, const std::vector<T>& b) {
  std::size_t k = 0;
  for (std::size_t i = 0; i < a.size(); ++i) k += std::memcmp(&a[i], &b[i], sizeof(T)) != 0;
  return k;
}

// The largest value added; NaN (a poisoned element left unwritten) sticks.
struct worst {
  double w = 0;
  void add(double v) {
    if (!(v <= w) && !std::isnan(w)) w = v;
  }
  void ratio(double err, double bound) { add(err == 0 ? 0.0 : err / bound); }
};

// Neumaier summation in double: the reductions' reference (error ~2 u_double).
struct exact_sum {
  double s = 0, c = 0;
  void add(double x) {
    const double t = s + x;
    c += std::fabs(s) >= std::fabs(x) ? (s - t) + x : (x - t) + s;
    s = t;
  }
  double value() const { return s + c; }
};

std::string n_str(std::int64_t n) { return std::to_string(n); }

// The bound on a bf16 output: the rounding (<= 2^-8 |v|) of an f32 value v
// with |v - ref| <= e: 2^-8 |ref| + (1 + 2^-8) e < 2^-8 |ref| + 2 e.
double bf16_bound(double ref, double e) { return std::ldexp(std::fabs(ref), -8) + 2 * e; }

// ---- model_kernels.cuh ---------------------------------------------------------------

// embedding_gather_kernel, as block_executor::run_embedding: <<<1024, 256>>>,
// x [T, H] = E [V, H] rows, 16-byte copies (H % 8 == 0). Exact.
void test_embedding_gather(sgtest::checker& c, std::int64_t T, std::int32_t V, std::int64_t H, std::mt19937& rng) {
  const auto E = random_bf16(sz(V * H), 1.f, rng);
  const auto ids = random_ids(sz(T), V, rng);
  dev_array<bf16> dE(E), dx(sz(T * H));
  dev_array<std::int32_t> dids(ids);
  dx.poison();
  md::embedding_gather_kernel<<<1024, 256>>>(dids.p, reinterpret_cast<const uint4*>(dE.p), reinterpret_cast<uint4*>(dx.p),
                                            T, H / 8);
  SG_CUDA_CHECK(cudaGetLastError());
  std::vector<bf16> ref(sz(T * H));
  for (std::int64_t t = 0; t < T; ++t)
    std::copy_n(E.begin() + std::int64_t(ids[t]) * H, H, ref.begin() + t * H);
  c.row("embedding_gather T" + n_str(T) + " H" + n_str(H) + ": differing", double(count_diff(dx.get(), ref)), 0);
}

// cross_entropy_rows_kernel, as block_executor::run_lm_head_ce: <<<C, kCeThreads>>>,
// logits [C, V] f32 -> loss [C] = lse - x[target], dlogits [C, V] bf16 =
// seed (softmax - onehot) (seed: device scalar, or null for 1); target -100:
// loss 0 and a zero row. Logits N(0, 2) plus a row offset of +100 (exp(x)
// overflows f32 without the max) or -100.
// Bounds: the f32 lse is off by <= ~3e-5 (the per-thread sums of ~300 terms,
// 300 u relative; the combine tree; ulp(lse ~ 113) / 2), so the loss within
// 1e-4; each softmax p_j inherits that relative error (plus u |x - lse| from
// the subtraction and expf's 2 ulp): e = 1e-4 seed p_j for dlogits.
void test_cross_entropy(sgtest::checker& c, std::int64_t V, int C, bool with_seed, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 2.f);
  std::vector<float> logits(sz(C * V));
  std::vector<std::int32_t> tgt(sz(C));
  std::uniform_int_distribution<std::int32_t> pick(0, std::int32_t(V - 1));
  int counted = 0;
  for (int r = 0; r < C; ++r) {
    const float off = r == 0 ? 100.f : r == 1 ? -100.f : 0.f;
    for (std::int64_t j = 0; j < V; ++j) logits[sz(r * V + j)] = off + nd(rng);
    // Rows 0, 1: the first and the last class; every third row from 2 ignored.
    tgt[sz(r)] = r == 0 ? 0 : r == 1 ? std::int32_t(V - 1) : r % 3 == 2 ? -100 : pick(rng);
    counted += tgt[sz(r)] >= 0;
  }
  const float seed = with_seed ? float(1.0 / counted) : 1.0f;  // model_step::seed_of: 1 / counted
  dev_array<float> dlog(logits), dloss(sz(C)), dseed(std::vector<float>{seed});
  dev_array<std::int32_t> dtgt(tgt);
  dev_array<bf16> dd(sz(C * V));
  dloss.poison(), dd.poison();
  md::cross_entropy_rows_kernel<<<unsigned(C), md::kCeThreads>>>(dlog.p, dtgt.p, V, dloss.p, dd.p,
                                                                 with_seed ? dseed.p : nullptr);
  SG_CUDA_CHECK(cudaGetLastError());
  const auto loss = dloss.get();
  const auto d = dd.get();
  worst wl, wd;
  std::size_t ignored_bad = 0;
  for (int r = 0; r < C; ++r) {
    const float* x = logits.data() + r * V;
    const bf16* g = d.data() + r * V;
    const std::int32_t t = tgt[sz(r)];
    if (t < 0) {
      ignored_bad += !(loss[sz(r)] == 0.f);
      for (std::int64_t j = 0; j < V; ++j) ignored_bad += !(f32(g[j]) == 0.f);
      continue;
    }
    double m = x[0];
    for (std::int64_t j = 1; j < V; ++j) m = std::max(m, double(x[j]));
    double s = 0;
    for (std::int64_t j = 0; j < V; ++j) s += std::exp(double(x[j]) - m);
    const double lse = m + std::log(s);
    wl.add(std::fabs(loss[sz(r)] - (lse - x[t])));
    for (std::int64_t j = 0; j < V; ++j) {
      const double p = std::exp(double(x[j]) - lse), ref = seed * (p - (j == t ? 1.0 : 0.0));
      wd.ratio(std::fabs(f32(g[j]) - ref), bf16_bound(ref, 1e-4 * seed * p));
    }
  }
  const std::string name = "cross_entropy V" + n_str(V) + " C" + n_str(C) + (with_seed ? " seed" : "");
  c.row(name + ": loss |err|", wl.w, 1e-4);
  c.row(name + ": dlogits |err| / bound", wd.w, 1.0);
  c.row(name + ": ignored rows nonzero", double(ignored_bad), 0);
}

// sum_f32_kernel, as model_step::launch_forward: <<<1, kReduceThreads>>>,
// out = sum x in double. Per thread <= ~2000 terms, then the block tree:
// |err| <= ~2000 u_double sum|x| ~ 2e-13 sum|x|; bound 1e-12. Fixed order:
// a second run must give the same bits.
void test_sum(sgtest::checker& c, std::int64_t n, std::mt19937& rng) {
  const auto x = random_f32(sz(n), std::normal_distribution<float>(0.5f, 1.f), rng);  // mean 0.5: no cancellation
  dev_array<float> dx(x);
  dev_array<double> out(2);
  out.poison();
  for (int rep = 0; rep < 2; ++rep) {
    md::sum_f32_kernel<<<1, md::kReduceThreads>>>(dx.p, n, out.p + rep);
    SG_CUDA_CHECK(cudaGetLastError());
  }
  const auto got = out.get();
  exact_sum s, sa;
  for (float v : x) s.add(v), sa.add(std::fabs(v));
  const std::string name = "sum_f32 n" + n_str(n);
  c.row(name + ": |err| / sum|x|", std::fabs(got[0] - s.value()) / sa.value(), 1e-12);
  c.row(name + ": second run differs", double(std::memcmp(&got[0], &got[1], sizeof(double)) != 0), 0);
}

// sumsq_partial_kernel <<<kNormBlocks, kNormBlockThreads>>> then
// grad_norm_finish_kernel <<<1, 32>>>, as model_step::launch_adamw:
// partial[b] = sum of g_i^2 over CTA b's grid-stride share (i / 256 % 264 == b),
// norm = sqrt(sum partial), coef = min(1, max_norm / (norm + 1e-6)) if
// max_norm > 0, else 1 (clip_grad_norm_). Terms are positive: partials and
// norm within 1e-12 relative (~60 u_double per partial); coef within 2^-23.
void test_grad_norm(sgtest::checker& c, std::int64_t n, std::mt19937& rng) {
  const auto g = random_f32(sz(n), std::normal_distribution<float>(0.f, 1e-3f), rng);
  dev_array<float> dg(g);
  dev_array<double> partial(md::kNormBlocks), partial2(md::kNormBlocks), norm(1);
  dev_array<float> coef(1);
  partial.poison(), partial2.poison();
  for (auto* p : {&partial, &partial2}) {  // twice: the partials must repeat bit for bit
    md::sumsq_partial_kernel<<<md::kNormBlocks, md::kNormBlockThreads>>>(dg.p, n, p->p);
    SG_CUDA_CHECK(cudaGetLastError());
  }
  std::vector<exact_sum> ref(md::kNormBlocks);
  exact_sum total;
  for (std::int64_t i = 0; i < n; ++i) {
    const double sq = double(g[sz(i)]) * g[sz(i)];
    ref[sz(i / md::kNormBlockThreads % md::kNormBlocks)].add(sq);
    total.add(sq);
  }
  const auto got = partial.get();
  worst wp;
  for (int b = 0; b < md::kNormBlocks; ++b) {
    const double r = ref[sz(b)].value();
    wp.add(r > 0 ? std::fabs(got[sz(b)] - r) / r : got[sz(b)] == 0 ? 0.0 : INFINITY);
  }
  const std::string name = "grad_norm n" + n_str(n);
  c.row(name + ": partials rel err", wp.w, 1e-12);
  c.row(name + ": second run differs", double(count_diff(got, partial2.get())), 0);
  const double nrm = std::sqrt(total.value());
  // No clipping; a bound above the norm (coef 1); one below it (coef ~0.5).
  for (const float max_norm : {0.f, float(2 * nrm), float(0.5 * nrm)}) {
    norm.poison(), coef.poison();
    md::grad_norm_finish_kernel<<<1, 32>>>(partial.p, max_norm, norm.p, coef.p);
    SG_CUDA_CHECK(cudaGetLastError());
    const double cr = max_norm > 0 ? std::min(1.0, double(max_norm) / (nrm + 1e-6)) : 1.0;
    char mn[32];
    std::snprintf(mn, sizeof mn, " max_norm %.3g", max_norm);
    c.row(name + mn + ": norm rel err", std::fabs(norm.get()[0] - nrm) / nrm, 1e-12);
    c.row(name + mn + ": coef rel err", std::fabs(coef.get()[0] - cr) / cr, std::ldexp(1.0, -23));
  }
}

// adamw_kernel, as model_step::launch_adamw (launch_grid: <<<1024, 256>>>):
// g scaled by *coef, then torch's AdamW in f32; p16 = bf16(p). Step t > 1
// starts from random moments (train::adamw::restore at t - 1).
void test_adamw(sgtest::checker& c, std::int64_t n, int t, float coef, std::mt19937& rng) {
  staticgrad::train::adamw_options o;
  o.lr = 1e-3, o.beta1 = 0.9, o.beta2 = 0.999, o.eps = 1e-8, o.weight_decay = 0.01;
  const std::size_t N = sz(n);
  const auto p0 = random_f32(N, std::normal_distribution<float>(0.f, 0.02f), rng);
  const auto g = random_f32(N, std::normal_distribution<float>(0.f, 1e-2f), rng);
  std::vector<float> m0(N, 0.f), v0(N, 0.f);
  if (t > 1) {
    std::normal_distribution<float> nd(0.f, 1e-2f);
    for (auto& x : m0) x = 0.5f * nd(rng);
    for (auto& x : v0) {
      const float z = nd(rng);
      x = z * z + 1e-6f;
    }
  }
  // model_step::adamw_args: bias corrections in double on the host, then f32.
  md::adamw_step_args a{};
  a.decay = float(1.0 - o.lr * o.weight_decay);
  a.b1 = float(o.beta1), a.b2 = float(o.beta2);
  a.step_size = float(o.lr / (1.0 - std::pow(o.beta1, double(t))));
  a.bc2s = float(std::sqrt(1.0 - std::pow(o.beta2, double(t))));
  a.eps = float(o.eps);
  dev_array<float> dp(p0), dg(g), dm(m0), dv(v0), dcoef(std::vector<float>{coef});
  dev_array<md::adamw_step_args> dargs(std::vector<md::adamw_step_args>{a});
  dev_array<bf16> dp16(N);
  dp16.poison();
  md::adamw_kernel<<<1024, 256>>>(dp.p, dg.p, dm.p, dv.p, dp16.p, n, dcoef.p, dargs.p);
  SG_CUDA_CHECK(cudaGetLastError());
  const auto p = dp.get(), m = dm.get(), v = dv.get();
  const auto p16 = dp16.get();

  // The CPU optimizer on the same clipped gradients (the kernel's g * coef in f32).
  std::vector<float> P = p0, gc(N);
  for (std::size_t i = 0; i < N; ++i) gc[i] = g[i] * coef;
  staticgrad::train::adamw opt(o);
  opt.restore(t - 1, {m0}, {v0});
  opt.step(std::vector<std::span<float>>{std::span<float>(P)}, std::vector<std::span<float>>{std::span<float>(gc)}, o.lr);

  // The formula in double with the f32 hyperparameters. Bounds: m, v take <= 5
  // roundings (g c, two products, the sum; v: g^2 doubles g c's) relative to
  // their terms: 2^-21. p: the decay product and the final difference (u |p|
  // each), the update's ~8 roundings plus m's error carried through: within
  // 2^-20 (|p| + S), S = step (|b1 m| + |(1 - b1) g c|) / (sqrt(v) / bc2s + eps).
  worst wm, wv, wp;
  std::size_t stale = 0;
  for (std::size_t i = 0; i < N; ++i) {
    const double gd = double(g[i]) * coef, mt = double(a.b1) * m0[i], gt = (1.0 - a.b1) * gd;
    const double mr = mt + gt, vr = double(a.b2) * v0[i] + (1.0 - a.b2) * gd * gd;
    const double den = std::sqrt(vr) / a.bc2s + a.eps;
    const double pr = double(p0[i]) * a.decay - double(a.step_size) * mr / den;
    wm.ratio(std::fabs(m[i] - mr), std::ldexp(std::fabs(mt) + std::fabs(gt), -21));
    wv.ratio(std::fabs(v[i] - vr), std::ldexp(vr, -21));
    wp.ratio(std::fabs(p[i] - pr),
             std::ldexp(std::fabs(p0[i]) + a.step_size * (std::fabs(mt) + std::fabs(gt)) / den, -20));
    stale += !(f32(p16[i]) == bf16_round(p[i]));
  }
  char name[64];
  std::snprintf(name, sizeof name, "adamw n%lld t%d coef %.2f", static_cast<long long>(n), t, coef);
  const std::string s = name;
  c.row(s + ": p != train::adamw", double(count_diff(p, P)), 0);
  c.row(s + ": m != train::adamw", double(count_diff(m, opt.exp_avg()[0])), 0);
  c.row(s + ": v != train::adamw", double(count_diff(v, opt.exp_avg_sq()[0])), 0);
  c.row(s + ": p |err| / bound (double)", wp.w, 1.0);
  c.row(s + ": m |err| / bound (double)", wm.w, 1.0);
  c.row(s + ": v |err| / bound (double)", wv.w, 1.0);
  c.row(s + ": p16 != bf16(p)", double(stale), 0);
}

// f32_to_bf16_kernel, as model_step (launch_grid: <<<1024, 256>>>): exact
// round to nearest even, over magnitudes 2^-30 .. 2^30.
void test_f32_to_bf16(sgtest::checker& c, std::int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_int_distribution<int> ex(-30, 30);
  std::vector<float> x(sz(n));
  for (auto& v : x) v = std::ldexp(nd(rng), ex(rng));
  dev_array<float> dx(x);
  dev_array<bf16> dy(sz(n));
  dy.poison();
  md::f32_to_bf16_kernel<<<1024, 256>>>(dx.p, dy.p, n);
  SG_CUDA_CHECK(cudaGetLastError());
  std::vector<bf16> ref(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) ref[i] = __float2bfloat16(x[i]);
  c.row("f32_to_bf16 n" + n_str(n) + ": differing", double(count_diff(dy.get(), ref)), 0);
}

// ---- cuda_decoder_kernels.cuh (through its launchers, default stream) ---------------

// embed: x [n, H] f32 = E [V, H] bf16 rows. Exact.
void test_embed(sgtest::checker& c, int n, std::int32_t V, int H, std::mt19937& rng) {
  const auto E = random_bf16(sz(V) * H, 1.f, rng);
  const auto ids = random_ids(sz(n), V, rng);
  dev_array<bf16> dE(E);
  dev_array<std::int32_t> dids(ids);
  dev_array<float> dx(sz(n) * H);
  dx.poison();
  dk::embed(dids.p, dE.p, dx.p, n, H, nullptr);
  std::vector<float> ref(dx.n);
  for (int t = 0; t < n; ++t)
    for (int i = 0; i < H; ++i) ref[sz(t) * H + i] = f32(E[sz(ids[t]) * H + i]);
  c.row("embed n" + n_str(n) + " H" + n_str(H) + ": differing", double(count_diff(dx.get(), ref)), 0);
}

// rmsnorm: out [n, H] bf16 = w x / sqrt(mean x^2 + eps). Row scales 1e-3
// (eps matters), 1 and 30. f32 error before the rounding: the sum of squares
// (<= H / 256 terms per thread, then 5 shuffles and 7 warp partials: <= 26 u
// of positive terms), the mean, + eps, sqrtf (halves it), 1 / x, two
// products: <= ~20 u; e = 2^-17 |ref| (128 u).
void test_rmsnorm(sgtest::checker& c, int n, int H, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(sz(n) * H);
  for (int t = 0; t < n; ++t)
    for (int i = 0; i < H; ++i) x[sz(t) * H + i] = (t % 3 == 0 ? 1e-3f : t % 3 == 1 ? 1.f : 30.f) * nd(rng);
  const auto w = random_f32(sz(H), std::uniform_real_distribution<float>(0.5f, 1.5f), rng);
  const float eps = 1e-6f;  // Qwen2.5's rms_norm_eps
  dev_array<float> dx(x), dw(w);
  dev_array<bf16> dout(x.size());
  dout.poison();
  dk::rmsnorm(dx.p, dw.p, dout.p, n, H, eps, nullptr);
  const auto out = dout.get();
  worst e;
  for (int t = 0; t < n; ++t) {
    const float* row = x.data() + sz(t) * H;
    double ss = 0;
    for (int i = 0; i < H; ++i) ss += double(row[i]) * row[i];
    const double r = 1.0 / std::sqrt(ss / H + eps);
    for (int i = 0; i < H; ++i) {
      const double ref = double(w[sz(i)]) * row[i] * r;
      e.ratio(std::fabs(f32(out[sz(t) * H + i]) - ref), bf16_bound(ref, std::ldexp(std::fabs(ref), -17)));
    }
  }
  c.row("rmsnorm n" + n_str(n) + " H" + n_str(H) + ": |err| / bound", e.w, 1.0);
}

// bias_rope: y [n, heads d] (row stride ld = heads d, as the decoder) += bias,
// then RoPE at positions p0 + t with the f32 angle float(p0 + t) inv_freq[i]
// (the kernel's documented angle; cos and sin of it in double here). Bound:
// the bias add, cosf / sinf (2 ulp), two products and the difference give
// <= 7 u (|a| + |b|): 2^-20 (|a| + |b|). Unrotated (the V rows): exact.
void test_bias_rope(sgtest::checker& c, int n, int heads, int d, int p0, bool bias, bool rotate, std::mt19937& rng) {
  const int ld = heads * d, half = d / 2;
  std::normal_distribution<float> nd(0.f, 1.f);
  const auto y = random_f32(sz(n) * ld, nd, rng);
  const auto b = random_f32(sz(ld), nd, rng);
  std::vector<float> inv(sz(half));
  for (int i = 0; i < half; ++i) inv[sz(i)] = float(std::pow(1e6, -2.0 * i / d));  // theta 1e6
  dev_array<float> dy(y), db(b), dinv(inv);
  dk::bias_rope(dy.p, ld, bias ? db.p : nullptr, n, heads, d, p0, dinv.p, rotate, nullptr);
  const auto got = dy.get();
  worst e;
  std::vector<float> added(y.size());  // f32 y + bias: the unrotated reference
  for (int t = 0; t < n; ++t)
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < half; ++i) {
        const std::size_t lo = sz(t) * ld + h * d + i, hi = lo + half;
        const float a = y[lo] + (bias ? b[sz(h * d + i)] : 0.f), bb = y[hi] + (bias ? b[sz(h * d + i + half)] : 0.f);
        added[lo] = a, added[hi] = bb;
        const double ang = double(float(p0 + t) * inv[sz(i)]), cs = std::cos(ang), sn = std::sin(ang);
        const double bound = std::ldexp(std::fabs(double(a)) + std::fabs(double(bb)), -20);
        e.ratio(std::fabs(got[lo] - (double(a) * cs - double(bb) * sn)), bound);
        e.ratio(std::fabs(got[hi] - (double(bb) * cs + double(a) * sn)), bound);
      }
  char name[96];
  std::snprintf(name, sizeof name, "bias_rope n%d heads%d d%d p0 %d%s", n, heads, d, p0, bias ? " bias" : "");
  if (rotate) c.row(std::string(name) + ": |err| / bound", e.w, 1.0);
  else c.row(std::string(name) + " unrotated: differing", double(count_diff(got, added)), 0);
}

// attention: queries t = 0..n-1 at positions p0 + t over cached keys
// 0..p0 + t; q [n, nh d], kc, vc [p0 + n, nkv d] f32 (exactly the rows it may
// read), out [n, nh d] bf16; head h reads KV head h / (nh / nkv).
// Bound per (t, h): the f32 scores are off by <= delta = u (d max_j sum_i
// |q_i k_ji| scale + 2 max|s|) + 2^-22 (the dot's roundings, exp's argument
// and 2 ulp), so each weight by <= 2 delta relative; the weighted sums of
// <= 128 keys per chunk and the rescales add < 2^-16 sum_j p_j |v_j|. So
// e_i = (2 delta + 2^-16) sum_j p_j |v_ji|.
void test_attention(sgtest::checker& c, int n, int p0, int nh, int nkv, int d, std::mt19937& rng) {
  const int KV = nkv * d, P = p0 + n;
  std::normal_distribution<float> nd(0.f, 1.f);
  const auto q = random_f32(sz(n) * nh * d, nd, rng);
  const auto k = random_f32(sz(P) * KV, nd, rng);
  const auto v = random_f32(sz(P) * KV, nd, rng);
  dev_array<float> dq(q), dkc(k), dvc(v);
  dev_array<bf16> dout(q.size());
  dout.poison();
  dk::attention(dq.p, dkc.p, dvc.p, dout.p, n, p0, nh, nkv, d, nullptr);
  const auto out = dout.get();
  const float scale = 1.0f / std::sqrt(float(d));  // the launcher's
  worst e;
  std::vector<double> s, sabs;
  for (int t = 0; t < n; ++t)
    for (int h = 0; h < nh; ++h) {
      const int g = h / (nh / nkv), keys = p0 + t + 1;
      const float* qr = q.data() + (sz(t) * nh + h) * d;
      s.assign(sz(keys), 0.0), sabs.assign(sz(keys), 0.0);
      double smax = -INFINITY, amax = 0, sa = 0;
      for (int j = 0; j < keys; ++j) {
        const float* kr = k.data() + sz(j) * KV + g * d;
        for (int i = 0; i < d; ++i) s[j] += double(qr[i]) * kr[i], sabs[j] += std::fabs(double(qr[i]) * kr[i]);
        s[j] *= scale;
        smax = std::max(smax, s[j]), amax = std::max(amax, std::fabs(s[j])), sa = std::max(sa, sabs[j] * scale);
      }
      double l = 0;
      for (int j = 0; j < keys; ++j) l += (s[j] = std::exp(s[j] - smax));  // s: now unnormalised weights
      const double delta = std::ldexp(d * sa + 2 * amax, -24) + std::ldexp(1.0, -22);
      for (int i = 0; i < d; ++i) {
        double o = 0, oabs = 0;
        for (int j = 0; j < keys; ++j) {
          const double vj = v[sz(j) * KV + g * d + i];
          o += s[j] * vj, oabs += s[j] * std::fabs(vj);
        }
        o /= l, oabs /= l;
        const double got = f32(out[(sz(t) * nh + h) * d + i]);
        e.ratio(std::fabs(got - o), bf16_bound(o, (2 * delta + std::ldexp(1.0, -16)) * oabs));
      }
    }
  char name[96];
  std::snprintf(name, sizeof name, "attention n%d p0 %d nh%d nkv%d d%d", n, p0, nh, nkv, d);
  c.row(std::string(name) + ": |err| / bound", e.w, 1.0);
}

// swiglu: out = g / (1 + exp(-g)) u, bf16. f32 error before the rounding:
// expf (2 ulp <= 4 u), the sum, the division, the product: <= 7 u; e =
// 2^-20 |ref| (16 u).
void test_swiglu(sgtest::checker& c, std::int64_t count, std::mt19937& rng) {
  const auto g = random_f32(sz(count), std::normal_distribution<float>(0.f, 3.f), rng);
  const auto u = random_f32(sz(count), std::normal_distribution<float>(0.f, 1.f), rng);
  dev_array<float> dg(g), du(u);
  dev_array<bf16> dout(sz(count));
  dout.poison();
  dk::swiglu(dg.p, du.p, dout.p, count, nullptr);
  const auto out = dout.get();
  worst e;
  for (std::size_t i = 0; i < g.size(); ++i) {
    const double ref = double(g[i]) / (1.0 + std::exp(-double(g[i]))) * u[i];
    e.ratio(std::fabs(f32(out[i]) - ref), bf16_bound(ref, std::ldexp(std::fabs(ref), -20)));
  }
  c.row("swiglu count" + n_str(count) + ": |err| / bound", e.w, 1.0);
}

// ---- reference_matmul.cuh ---------------------------------------------------------------

// C[M, N] = alpha op(A) op(B) + beta C for one layout (row-major, padded
// leading dimensions), C f32 or bf16, against the same sum in double. With
// beta == 0, C starts as NaN (not read); otherwise as random values.
template <class CType>
void test_reference_matmul(sgtest::checker& c, std::int64_t M, std::int64_t N, std::int64_t K, bool ta, bool tb,
                           float alpha, float beta, std::mt19937& rng) {
  const std::int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
  const auto A = random_bf16(sz((ta ? K : M) * lda), 1.f, rng), B = random_bf16(sz((tb ? N : K) * ldb), 1.f, rng);
  std::vector<CType> C0(sz(M * ldc));
  std::normal_distribution<float> nd(0.f, 1.f);
  for (auto& x : C0) x = CType(nd(rng));
  dev_array<bf16> dA(A), dB(B);
  dev_array<CType> dC(C0);
  if (beta == 0.f) dC.poison();
  staticgrad::cuda::launch_reference_matmul(dA.p, dB.p, dC.p, sizeof(CType) == 4, M, N, K, ta, tb, lda, ldb, ldc,
                                            alpha, beta, nullptr);
  const auto got = dC.get();
  auto a = [&](std::int64_t i, std::int64_t k) { return double(f32(ta ? A[sz(k * lda + i)] : A[sz(i * lda + k)])); };
  auto b = [&](std::int64_t k, std::int64_t j) { return double(f32(tb ? B[sz(j * ldb + k)] : B[sz(k * ldb + j)])); };
  const double u = std::ldexp(1.0, -24), gamma = K * u / (1 - K * u);
  worst e;
  std::size_t padding_changed = 0;
  for (std::int64_t i = 0; i < M; ++i) {
    for (std::int64_t j = 0; j < N; ++j) {
      double sum = 0, mag = 0;
      for (std::int64_t k = 0; k < K; ++k) sum += a(i, k) * b(k, j), mag += std::fabs(a(i, k) * b(k, j));
      const double c0 = beta == 0.f ? 0.0 : double(float(C0[sz(i * ldc + j)]));
      const double ref = alpha * sum + beta * c0;
      const double f32_err = std::fabs(alpha) * gamma * mag + 2 * u * (std::fabs(alpha * sum) + std::fabs(beta * c0));
      const double bound = sizeof(CType) == 4 ? f32_err : bf16_bound(ref, f32_err);
      e.ratio(std::fabs(double(float(got[sz(i * ldc + j)])) - ref), bound > 0 ? bound : 1e-300);
    }
    // The columns past N in each row of C are not written.
    if (beta != 0.f)
      for (std::int64_t j = N; j < ldc; ++j) padding_changed += std::memcmp(&got[sz(i * ldc + j)], &C0[sz(i * ldc + j)], sizeof(CType)) != 0;
  }
  const std::string name = std::string("reference_matmul ") + (sizeof(CType) == 4 ? "f32" : "bf16") + " M" + n_str(M) +
                           " N" + n_str(N) + " K" + n_str(K) + (ta ? " A^T" : " A") + (tb ? " B^T" : " B") +
                           (beta != 0.f ? " beta" : "");
  c.row(name + ": |err| / bound", e.w, 1.0);
  if (beta != 0.f) c.row(name + ": padding changed", double(padding_changed), 0);
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipping\n");
    return 77;
  }
  sgtest::checker c{64};
  try {
    cudaDeviceProp prop{};
    SG_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device: %s\n", prop.name);
    std::mt19937 rng(20250611);

    std::printf("model_kernels.cuh\n");
    test_embedding_gather(c, 1, 1, 8, rng);         // one 16-byte copy
    test_embedding_gather(c, 300, 5000, 896, rng);  // 0.5B hidden
    test_embedding_gather(c, 600, 2000, 3584, rng);  // 7B hidden: 268800 copies, past one 1024 x 256 grid pass
    test_cross_entropy(c, 151936, 6, true, rng);    // the vocabulary (float4 path): 296.75 x 512 per row
    test_cross_entropy(c, 5003, 5, false, rng);     // not a multiple of 4 (scalar path), 32 or 512; seed null
    test_cross_entropy(c, 4, 3, true, rng);         // one float4: a single thread holds data
    test_cross_entropy(c, 3, 3, true, rng);         // fewer elements than a warp
    test_cross_entropy(c, 1, 3, false, rng);        // one class: loss 0, dlogits 0
    for (std::int64_t n : {1, 1000, 1025, 2000003}) test_sum(c, n, rng);
    for (std::int64_t n : {1, 1000, 67583, 3000017}) test_grad_norm(c, n, rng);  // 67583 = 264 x 256 - 1
    test_adamw(c, 1, 1, 1.0f, rng);
    test_adamw(c, 1000, 1, 1.0f, rng);
    test_adamw(c, 262157, 7, 0.37f, rng);  // past one grid pass; clipped
    test_f32_to_bf16(c, 1, rng);
    test_f32_to_bf16(c, 300007, rng);

    std::printf("cuda_decoder_kernels.cuh\n");
    test_embed(c, 1, 1, 1, rng);
    test_embed(c, 7, 1000, 896, rng);  // 3.5 blocks of 256 per row
    test_embed(c, 3, 100, 3584, rng);
    const std::pair<int, int> norms[] = {{2, 1}, {3, 100}, {4, 896}, {3, 1000}, {3, 3584}};  // (rows, H)
    for (auto [n, H] : norms) test_rmsnorm(c, n, H, rng);
    test_bias_rope(c, 1, 1, 2, 0, true, true, rng);      // one pair
    test_bias_rope(c, 5, 14, 64, 0, true, true, rng);    // 0.5B q: 448 pairs, 3.5 blocks of 128
    test_bias_rope(c, 5, 2, 64, 700, true, true, rng);   // 0.5B k: 64 pairs, half a block
    test_bias_rope(c, 5, 2, 64, 700, true, false, rng);  // 0.5B v: bias only
    test_bias_rope(c, 3, 28, 128, 300, false, true, rng);  // 7B q, no bias
    test_attention(c, 1, 0, 1, 1, 1, rng);       // one key, one dimension
    test_attention(c, 5, 0, 14, 2, 64, rng);     // 0.5B prefill: 1..5 keys, GQA 7:1
    test_attention(c, 1, 300, 28, 4, 128, rng);  // 7B decode: 301 keys, 3 chunks of 128
    test_attention(c, 3, 254, 4, 2, 200, rng);   // 255..257 keys (chunk edges); 1.56 dims per thread
    test_attention(c, 2, 130, 2, 1, 512, rng);   // the largest head_dim: 4 dims per thread
    for (std::int64_t n : {1, 1000, 4096 * 256 + 77}) test_swiglu(c, n, rng);  // the last past the 4096-block cap

    std::printf("reference_matmul.cuh\n");
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        test_reference_matmul<float>(c, 37, 45, 70, ta, tb, 1.f, 0.f, rng);    // partial CTAs on every side
        test_reference_matmul<bf16>(c, 37, 45, 70, ta, tb, 0.5f, 1.f, rng);    // in-place accumulate (beta 1)
      }
    test_reference_matmul<float>(c, 16, 48, 1000, true, false, 2.f, 0.f, rng);  // a LoRA dA-like reduction over K
    test_reference_matmul<bf16>(c, 1, 1, 1, false, true, 1.f, 0.f, rng);        // one element
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
  std::printf("%s\n", c.ok ? "passed" : "FAILED");
  return c.ok ? 0 : 1;
}
