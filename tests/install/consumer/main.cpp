// Compiles a graph and runs its CPU plan with the installed headers only.
#include <cstdio>

#include "staticgrad/backend/cpu/executor.hpp"
#include "staticgrad/graph/explain.hpp"

using namespace staticgrad::dsl;
using G = graph<out<"y", rmsnorm<in<"x", 4>, vec<"w", 4>>>>;

int main() {
  static_assert(staticgrad::graph::compiled<G>::in_place_ok);
  staticgrad::cpu::program<G, float> p;
  const auto layout = staticgrad::cpu::make_packed_layout({2});
  float x[8] = {1, 2, 3, 4, -1, 0, 1, 0}, w[4] = {1, 1, 1, 1}, y[8] = {};
  staticgrad::cpu::parameters<float> params;
  params.frozen["w"] = {w, 1, 4};
  p.set_batch(2, layout.view(), {});
  p.set_parameters(params);
  p.set_input("x", x);
  p.set_output("y", y);
  decltype(p)::saved_state s;
  p.forward(s);
  std::printf("%s", staticgrad::graph::explain<G>().substr(0, 40).c_str());
  // mean(x^2) of row 0 is 7.5: y = x / sqrt(7.5 + 1e-6)
  return (y[0] > 0.36 && y[0] < 0.37) ? 0 : 1;
}
