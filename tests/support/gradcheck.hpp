#pragma once
// Gradient checking of any graph on the CPU backend, in double precision.
//
// L = sum over outputs y of <y, w_y> with fixed random w_y. The analytic
// gradients (the plan's backward: dL/dx for every input, dL/dA and dL/dB for
// every adapter) are compared with central finite differences of L,
//   (L(p + h) - L(p - h)) / 2h,   h = 1e-5.
// In double the truncation error is O(h^2 |L'''|) ~ 1e-10 and the rounding
// error O(eps |L| / h) ~ 1e-11 relative, so 1e-6 relative to the gradient's
// scale leaves four orders of margin and still catches any wrong term.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "staticgrad/backend/cpu/executor.hpp"

namespace sgtest {

using namespace staticgrad;

struct gradcheck_options {
  std::vector<std::int64_t> lengths{5, 9};  // packed sequences
  int rank = 4;
  runtime_config cfg{.eps = 1e-6f, .rope_theta = 10000.0f, .lora_scaling = 2.0f, .lora_dropout = 0.0f, .seed = 7, .layer = 3, .rank = 4};
  int samples_per_tensor = 12;  // finite-difference probes per tensor
  std::int64_t vocab = 50;      // rows of frozen_rows matrices
  double tol = 1e-6;
  unsigned seed = 1234;
};

template <class G>
struct graph_instance {
  using prog_t = cpu::program<G, double>;
  static constexpr auto& table = prog_t::table;
  prog_t prog;
  typename prog_t::saved_state saved;
  cpu::owned_layout layout;
  std::int64_t T = 0;
  gradcheck_options opt;
  std::map<std::string, std::vector<double>> tensors;  // parameters, inputs, output weights
  std::map<std::string, std::vector<std::int32_t>> ids;
  std::map<std::string, std::vector<double>> outputs, grads;
  cpu::parameters<double> params;
  std::mt19937_64 rng;

  explicit graph_instance(gradcheck_options o) : opt(o), rng(o.seed) {
    opt.cfg.rank = opt.rank;
    layout = cpu::make_packed_layout(opt.lengths);
    T = layout.seq_start.back();
    std::normal_distribution<double> nd(0.0, 1.0);
    auto randn = [&](std::size_t n, double scale, double mean = 0.0) {
      std::vector<double> v(n);
      for (auto& x : v) x = mean + scale * nd(rng);
      return v;
    };
    for (int i = 0; i < table.count; ++i) {
      const auto& n = table.nodes[i];
      const std::string name(n.name.view());
      using ok = graph::op_kind;
      switch (n.kind) {
        case ok::input: tensors[name] = randn(T * n.width, 1.0); break;
        case ok::token_ids: {
          std::uniform_int_distribution<int> u(0, static_cast<int>(opt.vocab) - 1);
          auto& v = ids[name];
          v.resize(T);
          for (auto& x : v) x = u(rng);
          v[1] = -100;  // an ignored target
          break;
        }
        case ok::frozen_matrix: {
          const std::int64_t rows = n.width ? n.width : opt.vocab;
          tensors[name] = randn(rows * n.cols, 1.0 / std::sqrt(double(n.cols)));
          params.frozen[name] = {tensors[name].data(), rows, n.cols};
          break;
        }
        case ok::frozen_vector:
          tensors[name] = randn(n.width, 0.2, name.find("norm") != std::string::npos ? 1.0 : 0.0);
          params.frozen[name] = {tensors[name].data(), 1, n.width};
          break;
        case ok::lora_adapter:
          tensors[name + ".A"] = randn(opt.rank * n.cols, 1.0 / std::sqrt(double(n.cols)));
          tensors[name + ".B"] = randn(n.width * opt.rank, 0.3);
          grads[name + ".A"].assign(opt.rank * n.cols, 0.0);
          grads[name + ".B"].assign(n.width * opt.rank, 0.0);
          params.lora[name] = {tensors[name + ".A"].data(), tensors[name + ".B"].data(), grads[name + ".A"].data(),
                               grads[name + ".B"].data(), opt.rank};
          break;
        default: break;
      }
      if (n.output) {
        outputs[name].assign(T * n.width, 0.0);
        tensors[name + ".w"] = randn(T * n.width, 1.0);
      }
    }
    prog.set_batch(T, layout.view(), opt.cfg);
    prog.set_parameters(params);
    for (auto& [name, v] : ids) prog.set_ids(name, v.data());
    for (int i = 0; i < table.count; ++i) {
      const auto& n = table.nodes[i];
      const std::string name(n.name.view());
      if (n.kind == graph::op_kind::input) prog.set_input(name, tensors[name].data());
      if (n.output) prog.set_output(name, outputs[name].data());
    }
  }

  double loss() {
    prog.forward(saved);
    double L = 0;
    for (auto& [name, y] : outputs) {
      const auto& w = tensors[name + ".w"];
      for (std::size_t i = 0; i < y.size(); ++i) L += y[i] * w[i];
    }
    return L;
  }

  // Analytic gradients: input grads in grads[input name], adapters' in grads[name.A|B].
  void backward() {
    for (auto& [name, g] : grads)
      if (name.ends_with(".A") || name.ends_with(".B")) std::fill(g.begin(), g.end(), 0.0);
    loss();
    std::map<std::string, std::vector<double>> dy;
    for (auto& [name, y] : outputs) {
      dy[name] = tensors[name + ".w"];
      prog.set_grad(name, dy[name].data());
    }
    for (int i = 0; i < table.count; ++i) {
      const auto& n = table.nodes[i];
      if (n.kind != graph::op_kind::input || prog_t::plan::backward.grad_of[i] < 0) continue;
      const std::string name(n.name.view());
      grads[name].assign(T * n.width, 0.0);
      prog.set_grad(name, grads[name].data());
    }
    prog.backward(saved);
  }

  // Compares sampled finite differences with the analytic gradient of one
  // tensor; returns max |fd - an| / scale with scale = max(1, rms of an).
  double check(const std::string& tensor, const std::string& grad_name) {
    auto& p = tensors.at(tensor);
    const auto& an = grads.at(grad_name);
    REQUIRE(p.size() == an.size());
    double rms = 0;
    for (double g : an) rms += g * g;
    rms = std::sqrt(rms / double(an.size()));
    const double scale = std::max(1.0, rms);
    std::uniform_int_distribution<std::size_t> u(0, p.size() - 1);
    double worst = 0;
    const double h = 1e-5;
    for (int s = 0; s < opt.samples_per_tensor; ++s) {
      const std::size_t i = u(rng);
      const double keep = p[i];
      p[i] = keep + h;
      const double lp = loss();
      p[i] = keep - h;
      const double lm = loss();
      p[i] = keep;
      const double fd = (lp - lm) / (2 * h);
      worst = std::max(worst, std::abs(fd - an[i]) / scale);
    }
    return worst;
  }

  // Checks every input and every adapter; returns the number of tensors checked.
  int check_all() {
    backward();
    const auto an = grads;  // analytic, before loss() calls move nothing
    grads = an;
    int checked = 0;
    for (int i = 0; i < table.count; ++i) {
      const auto& n = table.nodes[i];
      const std::string name(n.name.view());
      if (n.kind == graph::op_kind::input && prog_t::plan::backward.grad_of[i] >= 0) {
        INFO("input " << name);
        CHECK(check(name, name) < opt.tol);
        ++checked;
      }
      if (n.kind == graph::op_kind::lora_adapter) {
        INFO("adapter " << name);
        CHECK(check(name + ".A", name + ".A") < opt.tol);
        CHECK(check(name + ".B", name + ".B") < opt.tol);
        checked += 2;
      }
    }
    return checked;
  }
};

// Checks every gradient of G (at least one must exist). Shared by
// tests/ops/test_ops_gradcheck.cpp and test_ops_gradcheck_matmul.cpp: the ops
// are split over two TUs (every graph is its own double-precision program).
template <class G>
void gradcheck(gradcheck_options o = {}) {
  graph_instance<G> g(o);
  CHECK(g.check_all() >= 1);
}

}  // namespace sgtest
