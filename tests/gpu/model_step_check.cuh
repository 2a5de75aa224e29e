#pragma once
// The checks of gpu_test_model_step for one plan (test_model_step.cu has the
// setup, the tolerances and main). Included only by the generated
// model_step_<plan>.cu (model_step_plan.cu.in, one translation unit per plan:
// three model steps and their checks in one TU took 53 s and 2 GB to compile).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <random>
#include <string>
#include <vector>

#include "bf16_round.cuh"
#include "model_reference.hpp"
#include "shared_gpu.hpp"
#include "support/compare.hpp"
#include "staticgrad/backend/cuda/model_step.cuh"

namespace sc = staticgrad::cuda;
namespace st = staticgrad::test;
using bf16 = __nv_bfloat16;

namespace {

using sg_gpu_test::bf16_round;

void upload_bf16(bf16* d, const std::vector<float>& h) {
  std::vector<bf16> b(h.size());
  for (std::size_t i = 0; i < h.size(); ++i) b[i] = __float2bfloat16(h[i]);
  SG_CUDA_CHECK(cudaMemcpy(d, b.data(), b.size() * sizeof(bf16), cudaMemcpyHostToDevice));
}
std::vector<float> download(const float* d, std::size_t n) {
  std::vector<float> h(n);
  SG_CUDA_CHECK(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
  return h;
}

double rel_err(const float* a, const float* b, std::size_t n, const float* base = nullptr) {
  return sgtest::rel_err_offset(a, b, n, base);
}


// Worst over all adapters; a NaN anywhere makes the worst NaN (std::max would drop it).
double worse(double w, double e) { return std::isnan(w) || std::isnan(e) ? NAN : std::max(w, e); }

// LoRA dropout (see the header): m holds the batch; a is the CPU reference's
// input (weights, initial adapter, batch); flat the initial adapter; cdA the
// CPU's p = 0 gradients of A. Returns false when the reference fails.
template <class Step, class Slot>
bool check_dropout(Step& m, sgtest::checker& c, st::model_reference_args a, const sc::adamw_hparams& h, double lr,
                   const std::vector<float>& flat, const std::vector<const Slot*>& slot,
                   const std::vector<std::vector<float>>& hA, const std::vector<std::vector<float>>& hB,
                   const std::vector<std::vector<float>>& cdA, double loss_p0) {
  const int n = static_cast<int>(slot.size());
  const float p = 0.1f;
  const std::uint64_t seeds[2] = {0x5eed0001ull, 0x5eed0002ull};
  SG_CUDA_CHECK(cudaMemcpy(m.lora_params(), flat.data(), flat.size() * sizeof(float), cudaMemcpyHostToDevice));
  m.sync_lora_bf16();
  m.zero_grads();
  const double half = 0.5 / static_cast<double>(m.counted());
  double gloss = 0;
  for (std::uint64_t sd : seeds) {
    m.set_dropout(p, sd);
    gloss += m.forward_backward(half, true).loss_sum;
  }
  const auto gd = download(m.lora_grads(), m.lora_elems());
  // The eval pass under dropout: no mask (the p = 0 loss of the same adapter, bit for bit), no gradient written.
  const double eval_loss = m.forward_loss().loss_sum;
  const auto gd_after = download(m.lora_grads(), m.lora_elems());
  double changed = 0;
  for (std::size_t i = 0; i < gd.size(); ++i) changed = std::max(changed, double(std::abs(gd_after[i] - gd[i])));
  c.row("dropout on: forward_loss = the p = 0 loss", std::abs(eval_loss - loss_p0), 0);
  c.row("dropout on: forward_loss changed gradients", changed, 0);
  std::vector<std::vector<float>> dA(n), dB(n), nA(n), nB(n);
  std::vector<float*> pda(n), pdb(n), pna(n), pnb(n);
  for (int k = 0; k < n; ++k) {
    dA[k].resize(hA[k].size()), nA[k].resize(hA[k].size()), dB[k].resize(hB[k].size()), nB[k].resize(hB[k].size());
    pda[k] = dA[k].data(), pdb[k] = dB[k].data(), pna[k] = nA[k].data(), pnb[k] = nB[k].data();
  }
  a.lora_dropout = p, a.micro = 2, a.dropout_seeds = seeds;
  st::model_reference_out out;
  out.dA = pda.data(), out.dB = pdb.data(), out.newA = pna.data(), out.newB = pnb.data();
  if (st::model_reference_run(a, out) != 0) return false;
  std::printf("  dropout p %.1f, 2 micro-batches: loss sum GPU %.6f, CPU %.6f\n", p, gloss, out.loss_sum);
  c.row("dropout: loss (2 micro-batches)", std::abs(gloss - out.loss_sum) / out.loss_sum, 1e-2);
  double effect = 0;
  for (int k = 0; k < n; ++k) {
    const auto& s = *slot[k];
    const std::string name = "L" + std::to_string(s.layer) + " " + s.adapter;
    c.row("dropout: dA " + name, rel_err(gd.data() + s.a_off, dA[k].data(), dA[k].size()), 3e-2);
    c.row("dropout: dB " + name, rel_err(gd.data() + s.b_off, dB[k].data(), dB[k].size()), 3e-2);
    effect = worse(effect, rel_err(cdA[k].data(), dA[k].data(), dA[k].size()));
  }
  std::printf("  dropout changes the CPU's dA by up to %.3e relative\n", effect);
  c.row("dropout effect on dA > 10 x 3e-2 (0 = yes)", effect > 0.3 ? 0.0 : 1.0, 0);
  // step() with dropout: launched kernel by kernel vs captured / replayed, per seed.
  const auto p0 = download(m.lora_params(), m.lora_elems());
  auto restore = [&] {
    SG_CUDA_CHECK(cudaMemcpy(m.lora_params(), p0.data(), p0.size() * sizeof(float), cudaMemcpyHostToDevice));
    m.sync_lora_bf16(true);
    m.synchronize();
  };
  double worst = 0, dloss = 0, seeds_apart = 0;
  std::vector<float> first;
  for (std::uint64_t sd : {0xabc1ull, 0xabc2ull, 0xabc3ull}) {  // graph: capture, replay, replay
    restore();
    m.set_graphs(false);
    m.set_dropout(p, sd);
    const double ld = m.step(h, lr);
    const auto pdirect = download(m.lora_params(), m.lora_elems());
    restore();
    m.set_graphs(true);
    m.set_dropout(p, sd);
    const double lg = m.step(h, lr);
    const auto pg = download(m.lora_params(), m.lora_elems());
    for (std::size_t i = 0; i < pg.size(); ++i) worst = std::max(worst, double(std::abs(pg[i] - pdirect[i])));
    dloss = std::max(dloss, std::abs(lg - ld));
    if (first.empty()) first = pdirect;
    else
      for (std::size_t i = 0; i < pdirect.size(); ++i) seeds_apart = std::max(seeds_apart, double(std::abs(pdirect[i] - first[i])));
  }
  std::printf("  dropout: %zu graphs captured\n", m.captured_graphs());
  c.row("dropout graph step: max |p - p_direct|", worst, 0);
  c.row("dropout graph step: |loss - loss_direct|", dloss, 0);
  c.row("dropout: two seeds, same step (0 = no)", seeds_apart > 0 ? 0.0 : 1.0, 0);
  m.set_dropout(0.0f, 0);
  return true;
}

// errors: the dA / dB rows' errors of this run, appended (the baseline pass);
// baseline: those of the baseline pass, giving each row's tolerance (see the header).
// dropout: also check LoRA dropout (check_dropout).
template <class Model>
bool run(const char* shape, bool dropout, std::vector<double>* errors = nullptr,
         const std::vector<double>* baseline = nullptr) {
  using plan = Model;
  constexpr int L = 2, V = 512, r = 16, H = Model::block::input_width;
  const double alpha = 32, lr = 1e-4, wd = 0.01, max_norm = 1.0;
  const std::vector<std::int32_t> lens = {100, 200};
  const int T = 300;
  sc::model_options o;
  o.layers = L, o.vocab = V, o.tied = false, o.rank = r, o.lora_scaling = static_cast<float>(alpha / r);
  o.eps = 1e-6f, o.rope_theta = 1e6f, o.ce_chunk = 128;
  o.lora_dropout = 0.1f;  // the dropout buffer (counted in the prediction); off until set_dropout
  std::size_t free0 = 0, free1 = 0, total = 0;
  SG_CUDA_CHECK(cudaMemGetInfo(&free0, &total));
  const std::size_t live0 = sc::device_bytes_live(), allocs0 = sc::device_allocations_live();
  sc::model_step<plan> m(T, o);
  SG_CUDA_CHECK(cudaMemGetInfo(&free1, &total));
  std::printf("model_step: %s block, %d layers, vocab %d, T = %d, chunk %lld, r = %d\n", shape, L, V, T,
              static_cast<long long>(m.chunk_tokens()), r);
  // Memory: every device allocation of the step is a device_array, and their
  // sum must be exactly what the plans predict (arena widths x token stride,
  // weights, LoRA state, residual stream, LM-head chunk, kernel workspaces).
  // What the device reports may exceed it by cudaMalloc's rounding (up to
  // 2 MiB per allocation) and cuBLASLt's handles (3 x a few MiB): margin
  // 2 MiB per allocation + 64 MiB.
  const auto pred = sc::model_step<plan>::predict_bytes(T, o);
  const std::size_t allocs = sc::device_allocations_live() - allocs0;
  const double dev_used = static_cast<double>(free0 - free1), margin = 2.0 * (1 << 20) * double(allocs) + 64.0 * (1 << 20);
  std::printf("  memory: predicted %zu B, allocated %zu B (%zu allocations), device used %.0f B\n", pred.total(),
              sc::device_bytes_live() - live0, allocs, dev_used);

  std::mt19937 rng(4321);
  std::normal_distribution<float> N01(0.0f, 1.0f);
  // ---- frozen weights (bf16-rounded; the same values go to the CPU model) -----
  std::vector<std::string> names;
  std::vector<std::vector<float>> data;
  std::vector<std::int64_t> rows, cols;
  auto weight = [&](const std::string& name, std::int64_t rr, std::int64_t cc, bool norm, bf16* dev) {
    std::vector<float> w(static_cast<std::size_t>(rr ? rr : 1) * static_cast<std::size_t>(cc));
    for (auto& v : w) v = norm ? 1.0f : bf16_round(0.02f * N01(rng));
    upload_bf16(dev, w);
    names.push_back(name), data.push_back(std::move(w)), rows.push_back(rr), cols.push_back(cc);
  };
  weight("model.embed_tokens.weight", V, H, false, m.embedding());
  weight("lm_head.weight", V, H, false, m.lm_head());
  weight("model.norm.weight", 0, H, true, m.final_norm());
  for (int l = 0; l < L; ++l)
    for (const auto& w : m.layer_weights())
      weight("model.layers." + std::to_string(l) + "." + w.name, w.rows, w.cols,
             w.name.find("layernorm") != std::string::npos, m.layer_weight(l, w.name));
  // ---- LoRA (flat array on the GPU; per (layer, target) on the CPU) -------------
  std::vector<float> flat(m.lora_elems(), 0.0f);
  std::vector<std::vector<float>> hA(L * 7), hB(L * 7), cdA(L * 7), cdB(L * 7), cA(L * 7), cB(L * 7);
  std::vector<const typename sc::model_step<plan>::lora_slot*> slot(L * 7);
  for (int l = 0; l < L; ++l)
    for (int t = 0; t < 7; ++t) {
      const auto& s = m.slot(l, st::model_reference_target(t));
      const int k = l * 7 + t;
      slot[k] = &s;
      hA[k].resize(static_cast<std::size_t>(r * s.in)), hB[k].resize(static_cast<std::size_t>(s.out * r));
      const float sa = 1.0f / std::sqrt(static_cast<float>(s.in));
      for (auto& v : hA[k]) v = bf16_round(sa * N01(rng));
      for (auto& v : hB[k]) v = bf16_round(0.02f * N01(rng));
      std::copy(hA[k].begin(), hA[k].end(), flat.begin() + static_cast<std::ptrdiff_t>(s.a_off));
      std::copy(hB[k].begin(), hB[k].end(), flat.begin() + static_cast<std::ptrdiff_t>(s.b_off));
      for (auto* v : {&cdA[k], &cA[k]}) v->resize(hA[k].size());
      for (auto* v : {&cdB[k], &cB[k]}) v->resize(hB[k].size());
    }
  SG_CUDA_CHECK(cudaMemcpy(m.lora_params(), flat.data(), flat.size() * sizeof(float), cudaMemcpyHostToDevice));
  m.sync_lora_bf16();
  // ---- batch --------------------------------------------------------------------------
  std::vector<std::int32_t> ids(T), labels(T);
  std::uniform_int_distribution<int> tok(0, V - 1);
  std::uniform_real_distribution<float> U(0.0f, 1.0f);
  for (int i = 0, s0 = 0; i < static_cast<int>(lens.size()); s0 += lens[static_cast<std::size_t>(i)], ++i)
    for (int j = 0; j < lens[static_cast<std::size_t>(i)]; ++j) {
      const int t = s0 + j;
      ids[t] = tok(rng);
      labels[t] = (j < 5 || U(rng) < 0.1f) ? -100 : ids[t];
    }
  m.set_batch(ids, labels, lens);

  // ---- GPU: forward + backward, then one AdamW step --------------------------------------
  const auto gl = m.forward_backward();
  const auto ggrad = download(m.lora_grads(), m.lora_elems());
  // Forward only (the eval loss): the same kernels as forward_backward's
  // forward, so the same loss bit for bit; no gradient written.
  const auto fl = m.forward_loss();
  const auto ggrad_fwd = download(m.lora_grads(), m.lora_elems());
  double fwd_grad_change = 0;
  for (std::size_t i = 0; i < ggrad.size(); ++i)
    fwd_grad_change = std::max(fwd_grad_change, double(std::abs(ggrad_fwd[i] - ggrad[i])));
  sc::adamw_hparams h;
  h.lr = lr, h.weight_decay = wd, h.max_grad_norm = max_norm;
  m.optimizer_step(h, lr);
  const double gnorm = m.last_grad_norm();
  const auto gparams = download(m.lora_params(), m.lora_elems());
  std::vector<bf16> gp16(m.lora_elems());
  SG_CUDA_CHECK(cudaMemcpy(gp16.data(), m.lora_params_bf16(), gp16.size() * sizeof(bf16), cudaMemcpyDeviceToHost));
  // A second pass on the updated adapter (reads the bf16 copies the AdamW kernel wrote).
  const auto gl2 = m.forward_backward();

  // ---- CPU -------------------------------------------------------------------------------
  std::vector<const char*> pn;
  std::vector<const float*> pd, pa(L * 7), pb(L * 7);
  for (std::size_t i = 0; i < names.size(); ++i) pn.push_back(names[i].c_str()), pd.push_back(data[i].data());
  std::vector<float*> pda(L * 7), pdb(L * 7), pna(L * 7), pnb(L * 7);
  for (int k = 0; k < L * 7; ++k)
    pa[k] = hA[k].data(), pb[k] = hB[k].data(), pda[k] = cdA[k].data(), pdb[k] = cdB[k].data(), pna[k] = cA[k].data(),
    pnb[k] = cB[k].data();
  st::model_reference_args a;
  a.shape = shape;
  a.layers = L, a.vocab = V, a.rank = r, a.lora_alpha = alpha, a.eps = 1e-6, a.rope_theta = 1e6;
  a.n_weights = static_cast<int>(names.size()), a.names = pn.data(), a.data = pd.data(), a.rows = rows.data(),
  a.cols = cols.data();
  a.A = pa.data(), a.B = pb.data();
  a.T = T, a.nseq = static_cast<int>(lens.size()), a.ids = ids.data(), a.labels = labels.data(), a.seq_lens = lens.data();
  a.lr = lr, a.weight_decay = wd, a.max_grad_norm = max_norm;
  st::model_reference_out out;
  out.dA = pda.data(), out.dB = pdb.data(), out.newA = pna.data(), out.newB = pnb.data();
  if (st::model_reference_run(a, out) != 0) return false;

  sgtest::checker c{40};
  c.row("allocated - predicted bytes (plans)", std::abs(double(m.allocated_bytes()) - double(pred.total())), 0);
  // The device's free memory is device-wide: on a shared GPU (shared_gpu.hpp)
  // it is printed, not checked; the exact sum of allocations above is checked.
  const double over = std::max(0.0, std::abs(dev_used - double(pred.total())) - margin);
  if (sgtest::gpu_is_shared())
    std::printf("  device used - predicted, over margin: %.3e (not checked: the GPU is shared)\n", over);
  else
    c.row("device used - predicted, over margin", over, 0);
  std::printf("  loss: GPU %.6f (%lld counted), CPU %.6f (%lld counted); grad norm GPU %.4e CPU %.4e\n", gl.mean(),
              static_cast<long long>(gl.counted), out.loss_sum / double(out.counted),
              static_cast<long long>(out.counted), gnorm, out.grad_norm);
  c.row("counted tokens (GPU - CPU)", std::abs(double(gl.counted - out.counted)), 0);
  c.row("forward_loss: |loss - forward_backward's|", std::abs(fl.loss_sum - gl.loss_sum), 0);
  c.row("forward_loss: gradients changed (max)", fwd_grad_change, 0);
  c.row("loss", std::abs(gl.mean() - out.loss_sum / double(out.counted)) / (out.loss_sum / double(out.counted)), 1e-2);
  c.row("global gradient norm", std::abs(gnorm - out.grad_norm) / out.grad_norm, 3e-2);
  for (int k = 0; k < L * 7; ++k) {
    const auto& s = *slot[k];
    const std::string n = "L" + std::to_string(s.layer) + " " + s.adapter;
    const double ea = rel_err(ggrad.data() + s.a_off, cdA[k].data(), cdA[k].size());
    const double eb = rel_err(ggrad.data() + s.b_off, cdB[k].data(), cdB[k].size());
    const std::size_t i = static_cast<std::size_t>(2 * k);
    const double ta = errors ? 1.0 : baseline ? std::max(3e-2, 1.1 * (*baseline)[i]) : 3e-2;
    const double tb = errors ? 1.0 : baseline ? std::max(3e-2, 1.1 * (*baseline)[i + 1]) : 3e-2;
    if (errors) errors->push_back(ea), errors->push_back(eb);
    c.row("dA " + n, ea, ta);
    c.row("dB " + n, eb, tb);
  }
  double wa = 0, wb = 0;
  for (int k = 0; k < L * 7; ++k) {
    const auto& s = *slot[k];
    wa = worse(wa, rel_err(gparams.data() + s.a_off, cA[k].data(), cA[k].size()));
    wb = worse(wb, rel_err(gparams.data() + s.b_off, cB[k].data(), cB[k].size()));
  }
  c.row("AdamW: A after the step (worst)", wa, 1e-2);
  c.row("AdamW: B after the step (worst)", wb, 1e-2);
  {
    std::vector<float> du_gpu, du_cpu;  // p_new - p_old over every adapter, both sides
    for (int k = 0; k < L * 7; ++k) {
      const auto& s = *slot[k];
      for (std::size_t i = 0; i < hA[k].size(); ++i)
        du_gpu.push_back(gparams[s.a_off + i] - hA[k][i]), du_cpu.push_back(cA[k][i] - hA[k][i]);
      for (std::size_t i = 0; i < hB[k].size(); ++i)
        du_gpu.push_back(gparams[s.b_off + i] - hB[k][i]), du_cpu.push_back(cB[k][i] - hB[k][i]);
    }
    c.row("AdamW: the update p_new - p_old", rel_err(du_gpu.data(), du_cpu.data(), du_cpu.size()), 0.5);
  }
  // The kernel alone: the CPU optimizer on the GPU's gradients.
  std::vector<float> ref = flat;
  if (st::adamw_reference_flat(ref.data(), ggrad.data(), static_cast<std::int64_t>(ref.size()), lr, 0.9, 0.999, 1e-8, wd,
                               max_norm) != 0)
    return false;
  c.row("AdamW kernel: update vs CPU on GPU grads", rel_err(gparams.data(), ref.data(), ref.size(), flat.data()), 1e-5);
  // The bf16 copies the products read are exactly bf16(p) after the step.
  std::size_t stale = 0;
  for (std::size_t i = 0; i < gp16.size(); ++i)
    stale += __bfloat162float(gp16[i]) != bf16_round(gparams[i]) ? 1 : 0;
  c.row("bf16 copies != bf16(p) after AdamW (count)", static_cast<double>(stale), 0);
  const double cl2 = out.loss_sum_after / double(out.counted);
  std::printf("  loss after the step: GPU %.6f, CPU %.6f\n", gl2.mean(), cl2);
  c.row("loss after the step", std::abs(gl2.mean() - cl2) / cl2, 1e-2);
  // Gradient accumulation: two micro-batches (here the same batch twice, each
  // seeded with 1 / (2 counted), accumulating) must give exactly the gradient
  // of one pass seeded with 1 / counted: halving the seed halves every bf16
  // and f32 intermediate exactly (a power of two, far from the subnormals),
  // and half + half is exact. So the tolerance is 0 (bit for bit).
  {
    m.forward_backward();
    const auto g1 = download(m.lora_grads(), m.lora_elems());
    m.zero_grads();
    const double half = 0.5 / static_cast<double>(m.counted());
    const auto la = m.forward_backward(half, true), lb = m.forward_backward(half, true);
    const auto g2 = download(m.lora_grads(), m.lora_elems());
    double worst = 0;
    for (std::size_t i = 0; i < g1.size(); ++i) worst = std::max(worst, double(std::abs(g1[i] - g2[i])));
    c.row("grad accumulation: max |2 x half - once|", worst, 0);
    c.row("grad accumulation: loss of the two passes", std::abs(la.loss_sum - lb.loss_sum), 0);
  }
  // One CUDA graph per step: the captured and replayed step must do exactly
  // what the step launched kernel by kernel does (same kernels, same order:
  // bit-identical parameters and loss), and a second replay the same again.
  {
    const auto p0 = download(m.lora_params(), m.lora_elems());
    const auto m0 = download(m.adam_m(), m.lora_elems()), v0 = download(m.adam_v(), m.lora_elems());
    const auto t0 = m.adam_steps();
    auto restore = [&] {
      SG_CUDA_CHECK(cudaMemcpy(m.lora_params(), p0.data(), p0.size() * sizeof(float), cudaMemcpyHostToDevice));
      SG_CUDA_CHECK(cudaMemcpy(m.adam_m(), m0.data(), m0.size() * sizeof(float), cudaMemcpyHostToDevice));
      SG_CUDA_CHECK(cudaMemcpy(m.adam_v(), v0.data(), v0.size() * sizeof(float), cudaMemcpyHostToDevice));
      m.set_adam_steps(t0);
      m.sync_lora_bf16(false);
      m.synchronize();
    };
    m.set_graphs(false);
    const double l_direct = m.step(h, lr);
    const auto p_direct = download(m.lora_params(), m.lora_elems());
    m.set_graphs(true);
    double worst = 0, dloss = 0;
    for (int rep = 0; rep < 3; ++rep) {  // warm-up (uncaptured), capture + launch, replay
      restore();
      const double l = m.step(h, lr);
      const auto p = download(m.lora_params(), m.lora_elems());
      for (std::size_t i = 0; i < p.size(); ++i) worst = std::max(worst, double(std::abs(p[i] - p_direct[i])));
      dloss = std::max(dloss, std::abs(l - l_direct));
    }
    std::printf("  CUDA graph: %zu captured, loss %.6f\n", m.captured_graphs(), l_direct);
    c.row("graph step: max |p - p_direct|", worst, 0);
    c.row("graph step: |loss - loss_direct|", dloss, 0);
    c.row("graphs captured (expect 1)", std::abs(double(m.captured_graphs()) - 1.0), 0);
  }
  if (dropout && !check_dropout(m, c, a, h, lr, flat, slot, hA, hB, cdA, gl.loss_sum)) return false;
  std::printf("  %s\n", c.ok ? "PASS" : "FAIL");
  return c.ok;
}

// Each shape twice: first on the mma.sync attention kernels (the baseline:
// dA / dB only recorded, bounded by 1), then on the default kernels.
// Dropout is checked in the second pass only.
template <class Model>
bool run_both(const char* shape, bool dropout) {
  std::vector<double> base;
  sc::attention_kernel_override() = sc::attention_kernel::portable;
  std::printf("-- baseline pass: mma.sync attention\n");
  bool ok = run<Model>(shape, false, &base);
  sc::attention_kernel_override() = sc::attention_kernel::fastest;
  std::printf("-- the default kernels\n");
  return run<Model>(shape, dropout, nullptr, &base) && ok;
}

}  // namespace
