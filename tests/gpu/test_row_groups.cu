// GPU test: every generated row-group kernel of the 0.5B, 1.5B, 3B and 7B
// block plans and of the 0.5B and 7B head plans against the CPU row executor
// (backend/cpu/row_group.hpp: the op headers' functors), forward and backward.
//
// Exit codes: 0 pass, 1 fail, 77 no CUDA device (ctest: skipped).
//
// Method: for each row-group entry of the schedule, random bf16 inputs for every buffer it reads
// (bf16-rounded floats on the host), NaN in every buffer it only writes; the
// kernel runs on the GPU; the reference runs the entry's steps on the host
// with the CPU row executor in float, rounding to bf16 exactly where
// the GPU stores bf16 (buffer outputs, gradient accumulation), never inside
// the group (scratch is f32 on both). What remains is f32 evaluation order
// (RMSNorm sums, device cosf/sinf/powf/expf vs the host's) and the one bf16
// rounding that follows it, so the bound is one bf16 ulp of |ref| (2^-7
// relative) plus an absolute floor of 2^-11 for values that cancel to ~0
// (RoPE: a 1e-4 rad angle difference at position 300 times |x| ~ 2); f32
// statistics must agree to 2e-5 relative. Every written element must be
// finite (the NaN poison proves it was written).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "bf16_round.cuh"
#include "staticgrad/backend/cpu/row_group.hpp"
#include "staticgrad/backend/cuda/row_group.cuh"
#include "staticgrad/plans/qwen2_0_5b.cuh"
#include "staticgrad/plans/qwen2_1_5b.cuh"
#include "staticgrad/plans/qwen2_3b.cuh"
#include "staticgrad/plans/qwen2_7b.cuh"

namespace sg = staticgrad;
namespace sc = staticgrad::cuda;

namespace {

using sg_gpu_test::bf16_round;

struct device_buffer {
  void* p = nullptr;
  explicit device_buffer(std::size_t bytes) { SG_CUDA_CHECK(cudaMalloc(&p, bytes)); }
  ~device_buffer() { cudaFree(p); }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
};

struct batch {
  std::int64_t T = 0;
  std::vector<std::int32_t> positions;
};

// 4 rows of 300 tokens, each packed with documents of 1..400 tokens (positions
// restart at 0 per document).
batch make_batch(std::mt19937& rng) {
  batch b;
  b.T = 4 * 300;
  std::uniform_int_distribution<int> len(1, 400);
  for (int row = 0; row < 4; ++row) {
    int left = 300;
    while (left > 0) {
      const int n = std::min(left, len(rng));
      for (int p = 0; p < n; ++p) b.positions.push_back(p);
      left -= n;
    }
  }
  return b;
}

// f.template operator()<K>() for the registered row op K == k.
template <class F>
void with_row_op(sg::graph::op_kind k, F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) {
    (([&] {
       constexpr auto K = static_cast<sg::graph::op_kind>(I);
       if constexpr (sg::is_row_op<K>)
         if (k == K) f.template operator()<K>();
     }()),
     ...);
  }(std::make_integer_sequence<int, static_cast<int>(sg::graph::op_kind::count_)>{});
}

// The schedule entry's steps on the host, with the CPU row executor
// (backend/cpu/row_group.hpp: the same op functors) in float.
void reference(const sg::graph::entry& e, const sg::graph::row_step* steps, std::vector<std::vector<float>>& bufs,
               const std::vector<std::vector<float>>& params, const batch& b, const sg::runtime_config& cfg) {
  std::vector<float> scratch(static_cast<std::size_t>(e.n_scratch * e.width_max + 1));
  float dummy_aux = 0.0f;
  const bool backward = e.kind == sg::graph::kernel_kind::row_group_bwd;
  for (std::int64_t t = 0; t < b.T; ++t) {
    auto ptr = [&](int o) -> float* {
      switch (sc::kind_of(o)) {
        case sc::operand_kind::buffer: return bufs[sc::index_of(o)].data() + t * e.buf[sc::index_of(o)].width;
        case sc::operand_kind::scratch: return scratch.data() + sc::index_of(o) * e.width_max;
        case sc::operand_kind::param: return const_cast<float*>(params[sc::index_of(o)].data());
        case sc::operand_kind::none: return nullptr;
      }
      return nullptr;
    };
    auto round_row = [&](int o, int w) {
      if (sc::kind_of(o) != sc::operand_kind::buffer || e.buf[sc::index_of(o)].store == sg::graph::storage::stat) return;
      float* r = ptr(o);
      for (int i = 0; i < w; ++i) r[i] = bf16_round(r[i]);
    };
    const std::int32_t pos = b.positions[static_cast<std::size_t>(t)];
    for (int i = 0; i < e.n_steps; ++i) {
      const sg::graph::row_step& s = steps[e.step0 + i];
      with_row_op(s.op, [&]<sg::graph::op_kind K>() {
        if (!backward) {
          sg::cpu::row_forward<K, float>(s, ptr(s.in0), ptr(s.in1), ptr(s.out), s.aux != sc::none ? ptr(s.aux) : &dummy_aux,
                                         pos, cfg);
        } else {
          sg::cpu::row_backward<K, float>(s, ptr(s.in0), ptr(s.in1), ptr(s.aux), ptr(s.dy), ptr(s.dx0), ptr(s.dx1), pos, cfg);
        }
      });
      if (!backward) round_row(s.out, s.width);
      else {
        round_row(s.dx0, s.width);
        round_row(s.dx1, s.width);
      }
    }
  }
}

int failures = 0;

template <class Plan>
void run_case(const char* plan, const sg::graph::entry& e, const batch& b, std::mt19937& rng) {
  const staticgrad::runtime_config cfg{};  // eps 1e-6, theta 1e6 (Qwen2.5)
  std::uniform_real_distribution<float> act(-2.0f, 2.0f), stat(0.5f, 1.5f);
  const std::size_t n = static_cast<std::size_t>(e.n_buf);
  std::vector<std::vector<float>> host(n), init(n);
  std::vector<std::unique_ptr<device_buffer>> dev;
  sc::row_group_args args;
  for (std::size_t j = 0; j < n; ++j) {
    const auto& bb = e.buf[j];
    const bool is_stat = bb.store == sg::graph::storage::stat;
    const std::size_t count = static_cast<std::size_t>(b.T * bb.width);
    const bool write_only = e.buf_written[j] && !e.buf_read[j];
    host[j].resize(count);
    for (auto& v : host[j]) v = write_only ? NAN : is_stat ? stat(rng) : bf16_round(act(rng));
    dev.push_back(std::make_unique<device_buffer>(count * (is_stat ? 4 : 2)));
    if (is_stat) {
      SG_CUDA_CHECK(cudaMemcpy(dev.back()->p, host[j].data(), count * 4, cudaMemcpyHostToDevice));
    } else {
      std::vector<__nv_bfloat16> h(count);
      for (std::size_t i = 0; i < count; ++i) h[i] = __float2bfloat16(host[j][i]);
      SG_CUDA_CHECK(cudaMemcpy(dev.back()->p, h.data(), count * 2, cudaMemcpyHostToDevice));
    }
    args.buf[j] = dev.back()->p;
  }
  std::vector<std::vector<float>> params(static_cast<std::size_t>(e.n_par));
  std::vector<std::unique_ptr<device_buffer>> dev_params;
  for (int p = 0; p < e.n_par; ++p) {
    std::vector<__nv_bfloat16> h(static_cast<std::size_t>(Plan::data.params[e.par[p]].cols));
    for (auto& v : h) v = __float2bfloat16(act(rng) * 0.5f);
    for (const auto& v : h) params[p].push_back(__bfloat162float(v));
    dev_params.push_back(std::make_unique<device_buffer>(h.size() * 2));
    SG_CUDA_CHECK(cudaMemcpy(dev_params.back()->p, h.data(), h.size() * 2, cudaMemcpyHostToDevice));
    args.par[p] = static_cast<const __nv_bfloat16*>(dev_params.back()->p);
  }
  device_buffer pos(b.positions.size() * 4);
  SG_CUDA_CHECK(cudaMemcpy(pos.p, b.positions.data(), b.positions.size() * 4, cudaMemcpyHostToDevice));
  args.positions = static_cast<const std::int32_t*>(pos.p);
  args.tokens = b.T;
  args.eps = cfg.eps;
  args.rope_theta = cfg.rope_theta;

  Plan::row_group(e.group, [&](auto* g) { sc::launch_row_group<std::remove_pointer_t<decltype(g)>>(args); });
  SG_CUDA_CHECK(cudaDeviceSynchronize());
  reference(e, Plan::data.steps.data(), host, params, b, cfg);

  // Compare every buffer the kernel writes.
  double worst_bf16 = 0, worst_ulps = 0, worst_stat = 0;
  long bad = 0, unwritten = 0;
  for (std::size_t j = 0; j < n; ++j) {
    if (!e.buf_written[j]) continue;
    const bool is_stat = e.buf[j].store == sg::graph::storage::stat;
    const std::size_t count = host[j].size();
    std::vector<float> got(count);
    if (is_stat) {
      SG_CUDA_CHECK(cudaMemcpy(got.data(), dev[j]->p, count * 4, cudaMemcpyDeviceToHost));
    } else {
      std::vector<__nv_bfloat16> h(count);
      SG_CUDA_CHECK(cudaMemcpy(h.data(), dev[j]->p, count * 2, cudaMemcpyDeviceToHost));
      for (std::size_t i = 0; i < count; ++i) got[i] = __bfloat162float(h[i]);
    }
    for (std::size_t i = 0; i < count; ++i) {
      const double g = got[i], r = host[j][i];
      if (!std::isfinite(g)) {
        ++unwritten;
        continue;
      }
      const double err = std::fabs(g - r);
      if (is_stat) {
        worst_stat = std::max(worst_stat, err / std::fabs(r));
        bad += err > 2e-5 * std::fabs(r);
      } else {
        const double ulp = std::ldexp(1.0, -7) * std::fabs(r);
        worst_bf16 = std::max(worst_bf16, err);
        if (err > 0) worst_ulps = std::max(worst_ulps, err / std::max(ulp, 1e-30));
        bad += err > ulp + std::ldexp(1.0, -11);
      }
    }
  }
  const bool ok = bad == 0 && unwritten == 0;
  failures += !ok;
  std::string ops;
  for (int i = 0; i < e.n_steps; ++i)
    ops += (i ? " + " : "") + std::string(sg::graph::traits_of(Plan::data.steps[e.step0 + i].op).name);
  const std::string id = (e.kind == sg::graph::kernel_kind::row_group ? "f" : "b") + std::to_string(e.kernel);
  std::printf("%-10s %-4s %-42s %12.3g %10.2f %10.3g %8ld %8ld  %s\n", plan, id.c_str(), ops.c_str(), worst_bf16, worst_ulps,
              worst_stat, unwritten, bad, ok ? "ok" : "FAIL");
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipping\n");
    return 77;
  }
  try {
    cudaDeviceProp prop{};
    SG_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device: %s\n", prop.name);
    std::mt19937 rng(20240611);
    const batch b = make_batch(rng);
    std::printf("T = %lld tokens (4 x 300, packed documents)\n", static_cast<long long>(b.T));
    std::printf("%-5s %-4s %-42s %12s %10s %10s %8s %8s\n", "plan", "kern", "ops", "max|err|", "max ulps", "stat rel",
                "unwritn", "bad");
    // Every row-group entry of the block and head plans of four sizes (0.5B:
    // head dim 64; 1.5B, 3B, 7B: head dim 128, 12..28 heads, GQA 6:1, 8:1, 7:1).
    auto plan = [&]<class P>(const char* name) {
      for (int i = 0; i < P::data.n_fwd; ++i)
        if (P::data.fwd[i].kind == sg::graph::kernel_kind::row_group) run_case<P>(name, P::data.fwd[i], b, rng);
      for (int i = 0; i < P::data.n_bwd; ++i)
        if (P::data.bwd[i].kind == sg::graph::kernel_kind::row_group_bwd) run_case<P>(name, P::data.bwd[i], b, rng);
    };
    plan.template operator()<sc::plans::qwen2_0_5b::block>("0.5B");
    plan.template operator()<sc::plans::qwen2_0_5b::head>("0.5B head");
    plan.template operator()<sc::plans::qwen2_1_5b::block>("1.5B");
    plan.template operator()<sc::plans::qwen2_3b::block>("3B");
    plan.template operator()<sc::plans::qwen2_7b::block>("7B");
    plan.template operator()<sc::plans::qwen2_7b::head>("7B head");
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
  std::printf("%s (%d failing kernels)\n", failures ? "FAILED" : "passed", failures);
  return failures ? 1 : 0;
}
