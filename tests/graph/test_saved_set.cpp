// The saved set follows the input gradients a backward step computes
// (op_traits reads per gradient): an in-place op over a value that no computed
// gradient reads is valid, compiles, and gives the gradients of its
// out-of-place form, which match finite differences (double, CPU executor).
// And an in-place result never touches the caller's input, while an output
// always lands in the caller's buffer.
#include <algorithm>
#include <string>
#include <vector>

#include "support/gradcheck.hpp"

using namespace staticgrad::dsl;
namespace sg = staticgrad;

// Token ids drawn by graph_instance include -100 (an ignored target), which
// embedding<> rejects: use in-vocabulary ids.
template <class I>
void ids_in_vocabulary(I& g) {
  for (auto& [name, v] : g.ids) std::replace(v.begin(), v.end(), -100, 0);
}

// Same tensors (same seed, same table layout), so the gradients must agree.
template <class A, class B>
void same_gradients(A& a, B& b) {
  CHECK(a.loss() == doctest::Approx(b.loss()).epsilon(1e-12));
  a.backward();
  b.backward();
  REQUIRE(a.grads.size() == b.grads.size());
  for (auto& [name, g] : a.grads) {
    INFO(name);
    REQUIRE(b.grads.count(name));
    for (std::size_t i = 0; i < g.size(); ++i) CHECK(g[i] == doctest::Approx(b.grads[name][i]).epsilon(1e-12));
  }
}

// e = embedding of token ids needs no gradient: mul<a, e> computes da = dy * e
// only, so it saves e and not a, and rope_ may rotate a in place afterwards.
template <bool InPlace>
using mul_graph = graph<let<"a", linear<in<"x", 8>, frozen<"w", 8, 8>>>,
                        let<"e", embedding<token_ids<"ids">, frozen_rows<"emb", 8>>>,
                        out<"p", mul<ref<"a">, ref<"e">>>,
                        out<"y", linear<std::conditional_t<InPlace, rope_<ref<"a">, 4>, rope<ref<"a">, 4>>, frozen<"w2", 8, 8>>>>;

TEST_CASE("mul<a, e> with e needing no gradient saves e, not a; rope_ over a is valid and exact") {
  using C = sg::graph::compiled<mul_graph<true>>;
  CHECK(C::backward.saved[C::find("e")]);
  CHECK_FALSE(C::backward.saved[C::find("a")]);
  CHECK(C::buffers.value[C::find("y.rope_")].owner == C::find("a"));  // really in place
  // The same mul with both factors needing gradients saves both.
  using both = sg::graph::compiled<graph<let<"a", linear<in<"x", 8>, frozen<"w", 8, 8>>>,
                                         out<"p", mul<ref<"a">, linear<in<"x", 8>, frozen<"we", 8, 8>>>>>>;
  CHECK(both::backward.saved[both::find("a")]);
  CHECK(both::backward.saved[both::find("p.linear")]);

  sgtest::graph_instance<mul_graph<true>> ip({});
  sgtest::graph_instance<mul_graph<false>> oop({});
  ids_in_vocabulary(ip);
  ids_in_vocabulary(oop);
  same_gradients(ip, oop);
  CHECK(ip.check_all() == 1);
}

// swiglu<g, u>: dg reads g and u, du reads g only. With g from token ids
// (no gradient) only g is saved, so bias_add_ may write over u afterwards.
template <bool InPlace>
using swiglu_graph =
    graph<let<"g", linear<embedding<token_ids<"ids">, frozen_rows<"emb", 8>>, frozen<"wg", 16, 8>>>,
          let<"u", linear<in<"x", 8>, frozen<"wu", 16, 8>>>,
          out<"m", swiglu<ref<"g">, ref<"u">>>,
          out<"y", linear<std::conditional_t<InPlace, bias_add_<ref<"u">, vec<"b", 16>>, bias_add<ref<"u">, vec<"b", 16>>>,
                          frozen<"wd", 8, 16>>>>;

TEST_CASE("swiglu saves up only where the gate's gradient is computed; in place over up is then valid") {
  using C = sg::graph::compiled<swiglu_graph<true>>;
  CHECK(C::backward.saved[C::find("g")]);
  CHECK_FALSE(C::backward.saved[C::find("u")]);
  // Gate needing a gradient, up not: dg reads both.
  using gate_grad = sg::graph::compiled<graph<let<"g", linear<in<"x", 8>, frozen<"wg", 16, 8>>>,
                                              let<"u", linear<embedding<token_ids<"ids">, frozen_rows<"emb", 8>>, frozen<"wu", 16, 8>>>,
                                              out<"m", swiglu<ref<"g">, ref<"u">>>>>;
  CHECK(gate_grad::backward.saved[gate_grad::find("g")]);
  CHECK(gate_grad::backward.saved[gate_grad::find("u")]);

  sgtest::graph_instance<swiglu_graph<true>> ip({});
  sgtest::graph_instance<swiglu_graph<false>> oop({});
  ids_in_vocabulary(ip);
  ids_in_vocabulary(oop);
  same_gradients(ip, oop);
  CHECK(ip.check_all() == 1);
}

// attention: dv = P^T dy needs q, k and the log-sum-exp only; dq and dk need
// v and the output too. With q and k from token ids only dv is computed, so v
// and the attention output may be overwritten in place afterwards.
template <bool InPlace, class X, int D>
using rot = std::conditional_t<InPlace, rope_<X, D>, rope<X, D>>;
template <bool InPlace>
using attention_graph =
    graph<let<"q", embedding<token_ids<"ids">, frozen_rows<"embq", 8>>>,
          let<"k", linear<ref<"q">, frozen<"wk", 4, 8>>>,
          let<"v", linear<in<"x", 8>, frozen<"wv", 4, 8>>>,
          let<"a", attention<ref<"q">, ref<"k">, ref<"v">, 2, 1, 4>>,
          out<"y", linear<rot<InPlace, ref<"a">, 4>, frozen<"wo", 8, 8>>>,
          out<"z", linear<rot<InPlace, ref<"v">, 4>, frozen<"wz", 8, 4>>>>;

TEST_CASE("attention saves v and its output only for dq and dk; with only dv computed both may be overwritten") {
  using C = sg::graph::compiled<attention_graph<true>>;
  CHECK(C::backward.saved[C::find("q")]);
  CHECK(C::backward.saved[C::find("k")]);
  CHECK(C::backward.saved_aux[C::find("a")]);
  CHECK_FALSE(C::backward.saved[C::find("v")]);
  CHECK_FALSE(C::backward.saved[C::find("a")]);

  sgtest::graph_instance<attention_graph<true>> ip({});
  sgtest::graph_instance<attention_graph<false>> oop({});
  ids_in_vocabulary(ip);
  ids_in_vocabulary(oop);
  same_gradients(ip, oop);
  CHECK(ip.check_all() == 1);
}

TEST_CASE("lora always saves its input and Z (dA and dB), and its dx reads neither; add reads nothing") {
  // Even over a value that needs no gradient: the adapter always trains.
  using C = sg::graph::compiled<graph<let<"h", embedding<token_ids<"ids">, frozen_rows<"emb", 8>>>,
                                      out<"y", add<linear<ref<"h">, frozen<"w", 8, 8>>, lora<ref<"h">, lora_params<"p", 8, 8>>>>>>;
  CHECK(C::backward.saved[C::find("h")]);
  CHECK(C::backward.saved_aux[C::find("y.lora")]);
  constexpr auto lora_reads = sg::graph::traits_of(sg::graph::op_kind::lora).reads;
  CHECK_FALSE(lora_reads.grad[0].in[0]);
  CHECK_FALSE(lora_reads.grad[0].aux);
  CHECK(lora_reads.always.in[0]);
  CHECK(lora_reads.always.aux);
  constexpr auto add_saves = sg::graph::traits_of(sg::graph::op_kind::add).saves;
  const bool add_reads_something = add_saves.in[0] || add_saves.in[1] || add_saves.out || add_saves.aux;
  CHECK_FALSE(add_reads_something);
}

// y = a + x computed in place over a (= x W^T): y's chain lives in the
// caller's y buffer, and the caller's x is never written.
TEST_CASE("an in-place output lands in the caller's output buffer; the caller's input is never written") {
  using G = graph<let<"a", linear<in<"x", 8>, frozen<"w", 8, 8>>>, out<"y", add_<ref<"a">, in<"x", 8>>>>;
  using C = sg::graph::compiled<G>;
  CHECK(C::buffers.value[C::find("y")].owner == C::find("a"));
  CHECK(C::buffers.value[C::find("a")].where == sg::graph::arena::external);
  sgtest::graph_instance<G> g({});
  const std::vector<double> x0 = g.tensors["x"];
  g.loss();
  const auto& w = g.tensors["w"];
  const auto& y = g.outputs["y"];
  for (std::int64_t t = 0; t < g.T; ++t)
    for (int o = 0; o < 8; ++o) {
      double ref = x0[t * 8 + o];
      for (int i = 0; i < 8; ++i) ref += x0[t * 8 + i] * w[o * 8 + i];
      CHECK(y[t * 8 + o] == doctest::Approx(ref).epsilon(1e-12));
    }
  CHECK(g.tensors["x"] == x0);  // bit for bit
  g.backward();
  CHECK(g.tensors["x"] == x0);
  CHECK(g.check_all() == 1);
}
