#pragma once
// The checks of gpu_test_block_executor for one plan (test_block_executor.cu
// has the setup, the tolerances and main). Included only by the generated
// block_executor_<plan>.cu (block_executor_plan.cu.in, one translation unit
// per plan: both plans' executors in one TU took 1.30 GB).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bf16_round.cuh"
#include "block_reference.hpp"
#include "support/compare.hpp"
#include "staticgrad/backend/cuda/block_executor.cuh"

namespace sc = staticgrad::cuda;
namespace st = staticgrad::test;
using bf16 = __nv_bfloat16;

namespace {

using sg_gpu_test::bf16_round;

std::vector<bf16> to_bf16(const std::vector<float>& x) {
  std::vector<bf16> r(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) r[i] = __float2bfloat16(x[i]);
  return r;
}
std::vector<float> from_bf16(const std::vector<bf16>& x) {
  std::vector<float> r(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) r[i] = __bfloat162float(x[i]);
  return r;
}

template <class T>
sc::device_array<T> upload(const std::vector<T>& h) {
  sc::device_array<T> d(h.size());
  SG_CUDA_CHECK(cudaMemcpy(d.get(), h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}
template <class T>
std::vector<T> download(const T* d, std::size_t n) {
  std::vector<T> h(n);
  SG_CUDA_CHECK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}
template <class T>
void poison(T* d, std::size_t n) {
  SG_CUDA_CHECK(cudaMemset(d, 0xFF, n * sizeof(T)));  // all-ones: NaN in bf16 and f32
}

// ||a - b|| / ||b||, with a - b optionally taken after subtracting `base` from both.
double rel_err(const std::vector<float>& a, const std::vector<float>& b, const std::vector<float>* base = nullptr) {
  return sgtest::rel_err_offset(a.data(), b.data(), a.size(), base ? base->data() : nullptr);
}

using sgtest::checker;  // label column 34

template <class Plan>
bool run_shape(const char* shape) {
  constexpr int r = 16;
  const float eps = 1e-6f, theta = 1e6f, scaling = 2.0f;
  const std::vector<int> lens = {1, 100, 211, 288};
  std::vector<std::int32_t> positions, seq_start = {0};
  for (int L : lens) {
    for (int i = 0; i < L; ++i) positions.push_back(i);
    seq_start.push_back(seq_start.back() + L);
  }
  const int T = seq_start.back(), nseq = static_cast<int>(lens.size()), H = Plan::input_width;
  std::printf("%s: T = %d tokens in %d sequences, hidden %d, r = %d\n", shape, T, nseq, H, r);

  // ---- parameters (bf16-rounded values, shared by GPU and CPU) ----------------
  std::vector<st::block_param> ps(64);
  const int np = st::block_reference_params(shape, ps.data(), 64);
  if (np <= 0 || np > 64) {
    std::printf("  no reference parameters for %s\n", shape);
    return false;
  }
  ps.resize(static_cast<std::size_t>(np));
  std::mt19937 rng(1234);
  std::normal_distribution<float> N01(0.0f, 1.0f);
  std::vector<std::vector<float>> ha(ps.size()), hb(ps.size()), cdA(ps.size()), cdB(ps.size());
  for (std::size_t i = 0; i < ps.size(); ++i) {
    const auto& p = ps[i];
    const std::string name = p.name;
    if (p.lora) {
      ha[i].resize(static_cast<std::size_t>(r) * p.cols);
      hb[i].resize(static_cast<std::size_t>(p.rows) * r);
      const float sa = 1.0f / std::sqrt(static_cast<float>(p.cols));
      for (auto& v : ha[i]) v = bf16_round(sa * N01(rng));
      for (auto& v : hb[i]) v = bf16_round(0.02f * N01(rng));
      cdA[i].resize(ha[i].size());
      cdB[i].resize(hb[i].size());
    } else {
      ha[i].resize(static_cast<std::size_t>(p.rows) * p.cols);
      const bool norm = name.find("layernorm") != std::string::npos, bias = name.find("bias") != std::string::npos;
      for (auto& v : ha[i]) v = bf16_round(norm ? 1.0f + 0.1f * N01(rng) : 0.02f * N01(rng));
      (void)bias;  // matrices and biases: std 0.02
    }
  }
  std::vector<float> hx(static_cast<std::size_t>(T) * H), hdy(hx.size());
  for (auto& v : hx) v = bf16_round(N01(rng));
  for (auto& v : hdy) v = bf16_round(N01(rng));

  // ---- GPU ---------------------------------------------------------------------------
  staticgrad::runtime_config cfg{};
  cfg.eps = eps, cfg.rope_theta = theta, cfg.lora_scaling = scaling, cfg.rank = r;
  sc::block_executor<Plan> ex(T, r, cfg);
  std::vector<sc::device_array<bf16>> dW(ps.size());
  std::vector<sc::device_array<float>> dAm(ps.size()), dBm(ps.size()), gA(ps.size()), gB(ps.size());
  for (std::size_t i = 0; i < ps.size(); ++i) {
    if (ps[i].lora) {
      dAm[i] = upload(ha[i]);
      dBm[i] = upload(hb[i]);
      gA[i] = sc::device_array<float>(ha[i].size());
      gB[i] = sc::device_array<float>(hb[i].size());
      poison(gA[i].get(), gA[i].size());
      poison(gB[i].get(), gB[i].size());
      ex.set_lora(ps[i].name, dAm[i].get(), dBm[i].get(), gA[i].get(), gB[i].get());
    } else {
      dW[i] = upload(to_bf16(ha[i]));
      ex.set_frozen(ps[i].name, dW[i].get());
    }
  }
  ex.set_accumulate(false);  // dA, dB overwritten: the NaN poison must be gone
  auto dx_in = upload(to_bf16(hx));
  sc::device_array<bf16> dy_out(hx.size()), dres(hx.size());
  auto dres0 = upload(to_bf16(hdy));
  auto dpos = upload(positions);
  auto dseq = upload(seq_start);
  auto saved = ex.allocate_saved();
  poison(saved.act.get(), saved.act.size());
  poison(saved.stat.get(), saved.stat.size());
  poison(saved.rank.get(), saved.rank.size());
  poison(dy_out.get(), dy_out.size());
  poison(ex.workspace(), ex.workspace_elems());
  ex.set_input(dx_in.get());
  ex.set_output(dy_out.get());
  ex.set_residual_grad(dres.get());
  ex.set_layout(dpos.get(), dseq.get(), nseq);
  SG_CUDA_CHECK(cudaMemcpy(dres.get(), dres0.get(), dres.size() * sizeof(bf16), cudaMemcpyDeviceToDevice));
  // Device-to-device copies and memsets may return early: finish them before the executor's stream reads.
  SG_CUDA_CHECK(cudaDeviceSynchronize());
  ex.refresh_lora();
  ex.forward(saved.view());
  ex.backward(saved.view());
  ex.synchronize();
  const auto gy = from_bf16(download(dy_out.get(), dy_out.size()));
  const auto gdx = from_bf16(download(dres.get(), dres.size()));
  std::vector<std::vector<float>> gdA(ps.size()), gdB(ps.size());
  for (std::size_t i = 0; i < ps.size(); ++i)
    if (ps[i].lora) {
      gdA[i] = download(gA[i].get(), gA[i].size());
      gdB[i] = download(gB[i].get(), gB[i].size());
    }

  // ---- CPU reference ------------------------------------------------------------------
  std::vector<const float*> pa(ps.size()), pb(ps.size());
  std::vector<float*> pda(ps.size()), pdb(ps.size());
  for (std::size_t i = 0; i < ps.size(); ++i) {
    pa[i] = ha[i].data();
    pb[i] = ps[i].lora ? hb[i].data() : nullptr;
    pda[i] = ps[i].lora ? cdA[i].data() : nullptr;
    pdb[i] = ps[i].lora ? cdB[i].data() : nullptr;
  }
  std::vector<float> cy(hx.size()), cdx(hx.size());
  if (st::block_reference_run(shape, T, r, positions.data(), seq_start.data(), nseq, eps, theta, scaling, pa.data(),
                              pb.data(), pda.data(), pdb.data(), hx.data(), hdy.data(), cy.data(), cdx.data()) != 0)
    return false;

  checker c;
  c.row("y", rel_err(gy, cy), 2e-2);
  c.row("y - x", rel_err(gy, cy, &hx), 2e-2);
  c.row("dx (residual gradient)", rel_err(gdx, cdx), 2e-2);
  c.row("dx - dy", rel_err(gdx, cdx, &hdy), 2e-2);
  for (std::size_t i = 0; i < ps.size(); ++i)
    if (ps[i].lora) {
      c.row(std::string("dA ") + ps[i].name, rel_err(gdA[i], cdA[i]), 3e-2);
      c.row(std::string("dB ") + ps[i].name, rel_err(gdB[i], cdB[i]), 3e-2);
    }

  // ---- CUDA graph: capture forward + backward, replay, same results --------------------
  ex.capture(saved.view());
  poison(dy_out.get(), dy_out.size());
  for (std::size_t i = 0; i < ps.size(); ++i)
    if (ps[i].lora) poison(gA[i].get(), gA[i].size()), poison(gB[i].get(), gB[i].size());
  SG_CUDA_CHECK(cudaMemcpy(dres.get(), dres0.get(), dres.size() * sizeof(bf16), cudaMemcpyDeviceToDevice));
  SG_CUDA_CHECK(cudaDeviceSynchronize());
  ex.replay();
  ex.synchronize();
  c.row("graph replay: y", rel_err(from_bf16(download(dy_out.get(), dy_out.size())), gy), 1e-4);
  c.row("graph replay: dx", rel_err(from_bf16(download(dres.get(), dres.size())), gdx), 1e-4);
  double worst = 0;
  for (std::size_t i = 0; i < ps.size(); ++i)
    if (ps[i].lora) {
      const double ea = rel_err(download(gA[i].get(), gA[i].size()), gdA[i]);
      const double eb = rel_err(download(gB[i].get(), gB[i].size()), gdB[i]);
      worst = std::isnan(ea) || std::isnan(eb) ? NAN : std::max({worst, ea, eb});
    }
  c.row("graph replay: dA, dB (worst)", worst, 1e-4);
  std::printf("  %s\n", c.ok ? "PASS" : "FAIL");
  return c.ok;
}

}  // namespace
