// Memory from a budget (graph/recompute.hpp, graph/memory_plan.hpp) on the CPU:
//   * the plan's recompute candidates of the Qwen2.5 block and where the
//     schedule rebuilds them;
//   * gradients and loss are bitwise the same under every memory policy
//     (row-group recompute tiers, whole-block recompute of some layers), on
//     the Hugging Face fixture model and on a 2-layer model of the 0.5B block
//     shape; the reference is the same model keeping everything;
//   * the planner under a budget below keep-everything chooses a recompute,
//     its prediction fits the budget, and the arrays the model then holds are
//     exactly the predicted bytes.
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "fixtures/hf/hf_fixture.hpp"
#include "staticgrad/graph/memory_plan.hpp"
#include "staticgrad/io/safetensors_writer.hpp"
#include "staticgrad/models/qwen2_model.hpp"

using namespace staticgrad;
namespace fs = std::filesystem;

namespace {

using block05 = graph::compiled<models::qwen2_block<models::qwen2_5_0_5b>>;
constexpr auto& S05 = graph::schedule_of_compiled<block05>;

// The recompute candidates, by name, cheapest first.
static_assert(block05::recompute.n == 3, "Qwen2.5 block: h1, h2 (rmsnorm) and m (swiglu) can be rebuilt");
static_assert(S05.keep_act_width[3] == S05.saved_act_width - 2 * 896 - 4864,
              "tier 3 keeps everything but h1, h2 and m");
static_assert(block05::saved_bytes_per_token(16, 3) == block05::saved_bytes_per_token(16) - 2 * (2 * 896 + 4864));

struct run_result {
  double loss = 0;
  std::vector<std::vector<float>> grads;  // per layer and target: A then B
  double predicted = 0, held = 0;
};

template <class Shape>
run_result run(models::qwen2_model<Shape>& m, io::lora_adapter& ad, const graph::memory_policy& p,
               const std::vector<std::int32_t>& ids, const std::vector<std::int32_t>& lens) {
  auto grads = io::make_lora_adapter(ad.config, m.config());
  m.attach(&ad, &grads);
  m.set_memory(p);
  std::vector<std::int32_t> pos, seq = {0};
  for (auto n : lens) {
    for (int i = 0; i < n; ++i) pos.push_back(i);
    seq.push_back(seq.back() + n);
  }
  models::batch_view b{ids, {}, cpu::token_layout{pos, seq}};
  run_result r;
  r.loss = m.step(b, true).loss_sum;
  for (std::int64_t l = 0; l < m.layers(); ++l)
    for (auto t : io::all_lora_targets)
      if (ad.config.targets(t)) {
        r.grads.push_back(grads.at(l, t).a);
        r.grads.push_back(grads.at(l, t).b);
      }
  const int rank = int(ad.config.r);
  r.predicted = m.predict_bytes(std::int64_t(ids.size()), rank, p);
  r.held = m.held_bytes(rank);
  return r;
}

void check_same(const run_result& a, const run_result& b) {
  CHECK(a.loss == b.loss);
  REQUIRE(a.grads.size() == b.grads.size());
  for (std::size_t i = 0; i < a.grads.size(); ++i) {
    REQUIRE(a.grads[i].size() == b.grads[i].size());
    CHECK(std::memcmp(a.grads[i].data(), b.grads[i].data(), a.grads[i].size() * sizeof(float)) == 0);
  }
}

// Every policy of a model gives the keep-everything gradients bit for bit,
// and holds exactly the bytes its prediction says.
template <class Shape>
void check_policies(models::qwen2_model<Shape>& m, io::lora_adapter& ad, const std::vector<std::int32_t>& ids,
                    const std::vector<std::int32_t>& lens) {
  const int L = int(m.layers()), K = models::qwen2_model<Shape>::block_program::recompute_tiers();
  const run_result ref = run(m, ad, {}, ids, lens);
  CHECK(ref.held == ref.predicted);
  for (const graph::memory_policy p : {graph::memory_policy{1, 0}, graph::memory_policy{K, 0}, graph::memory_policy{0, 1},
                                       graph::memory_policy{2, L - 1}, graph::memory_policy{K, L}}) {
    CAPTURE(p.tier);
    CAPTURE(p.block_layers);
    const run_result r = run(m, ad, p, ids, lens);
    check_same(ref, r);
    CHECK(r.held == r.predicted);
    CHECK(r.predicted <= ref.predicted);  // one block layer alone saves nothing: its arena is the shared one
  }
}

}  // namespace

TEST_CASE("the schedule rebuilds each candidate just before its first backward reader") {
  int seen = 0;
  for (int i = 0; i < S05.n_bwd; ++i) {
    const auto& e = S05.bwd[i];
    if (e.recompute == 0) continue;
    ++seen;
    CHECK(e.kind == graph::kernel_kind::row_group);
    REQUIRE(i + 1 < S05.n_bwd);
    // The value it writes is read by a later entry, and no earlier entry reads it.
    const auto& v = e.buf[e.n_buf - 1];
    bool read_before = false;
    for (int j = 0; j < i; ++j) read_before = read_before || (S05.bwd[j].recompute == 0 && graph::detail::references(S05.bwd[j], v));
    CHECK_FALSE(read_before);
  }
  CHECK(seen == 3);
  const std::string names = std::string(S05.recompute_names[0].view()) + "," + std::string(S05.recompute_names[1].view()) +
                            "," + std::string(S05.recompute_names[2].view());
  CHECK(names == "h1,h2,m");
}

TEST_CASE("every memory policy gives the same gradients bit for bit (HF fixture model, 3 layers)") {
  auto fx = sg_fixtures::load_hf_fixture("tied_v1000_l3_r8_all7_theta1e4");
  auto m = models::qwen2_model<models::qwen2_tiny>::load(sg_fixtures::hf_fixture_dir("tied_v1000_l3_r8_all7_theta1e4"));
  std::vector<std::int32_t> ids, lens;
  for (const auto& s : fx.data) {
    for (auto t : s.input_ids) ids.push_back(std::int32_t(t));
    lens.push_back(std::int32_t(s.input_ids.size()));
  }
  check_policies(*m, fx.adapter, ids, lens);
  // Offloading layer inputs is a CUDA decision: the CPU's residual stream is host memory already.
  CHECK_THROWS_WITH(m->set_memory({0, 0, 1}), doctest::Contains("offloading layer inputs is a CUDA plan decision"));
}

TEST_CASE("the 0.5B block shape on the CPU under a budget that forces recompute") {
  using shape = models::qwen2_5_0_5b;
  const int L = 2, V = 256, r = 8;
  const fs::path dir = fs::temp_directory_path() / ("sg_memory_05b_" + std::to_string(std::random_device{}()));
  fs::create_directories(dir);
  io::hf_config c;
  c.hidden_size = shape::hidden, c.intermediate_size = shape::intermediate, c.num_hidden_layers = L;
  c.num_attention_heads = shape::heads, c.num_key_value_heads = shape::kv_heads, c.head_dim = shape::head_dim;
  c.vocab_size = V, c.tie_word_embeddings = true;
  io::write_hf_config(dir / "config.json", c);
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::vector<std::vector<float>> store;
  std::vector<io::tensor_data> ts;
  auto add = [&](const std::string& name, std::vector<std::int64_t> shape_, bool norm) {
    std::int64_t n = 1;
    for (auto d : shape_) n *= d;
    store.emplace_back(static_cast<std::size_t>(n));
    for (auto& x : store.back()) x = norm ? 1.0f + nd(rng) : nd(rng);
    io::tensor_data t;
    t.name = name, t.dtype = io::st_dtype::f32, t.shape = shape_;
    t.bytes = std::as_bytes(std::span<const float>(store.back()));
    ts.push_back(std::move(t));
  };
  store.reserve(64);
  const std::int64_t H = shape::hidden, I = shape::intermediate, QW = shape::heads * shape::head_dim,
                     KW = shape::kv_heads * shape::head_dim;
  add("model.embed_tokens.weight", {V, H}, false);
  add("model.norm.weight", {H}, true);
  for (int l = 0; l < L; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {H}, true);
    add(p + "post_attention_layernorm.weight", {H}, true);
    add(p + "self_attn.q_proj.weight", {QW, H}, false);
    add(p + "self_attn.q_proj.bias", {QW}, false);
    add(p + "self_attn.k_proj.weight", {KW, H}, false);
    add(p + "self_attn.k_proj.bias", {KW}, false);
    add(p + "self_attn.v_proj.weight", {KW, H}, false);
    add(p + "self_attn.v_proj.bias", {KW}, false);
    add(p + "self_attn.o_proj.weight", {H, QW}, false);
    add(p + "mlp.gate_proj.weight", {I, H}, false);
    add(p + "mlp.up_proj.weight", {I, H}, false);
    add(p + "mlp.down_proj.weight", {H, I}, false);
  }
  io::write_safetensors(dir / "model.safetensors", std::move(ts));
  auto m = models::qwen2_model<shape>::load(dir);
  fs::remove_all(dir);
  io::lora_config lc;
  lc.r = r, lc.lora_alpha = 16;
  lc.target_modules.assign(io::all_lora_targets.begin(), io::all_lora_targets.end());
  auto ad = io::make_lora_adapter(lc, m->config());
  for (std::int64_t l = 0; l < L; ++l)
    for (auto t : io::all_lora_targets) {
      for (auto& x : ad.at(l, t).a) x = nd(rng);
      for (auto& x : ad.at(l, t).b) x = nd(rng);  // non-zero B: every gradient path carries signal
    }
  std::vector<std::int32_t> ids(48), lens = {32, 16};
  std::uniform_int_distribution<int> tok(0, V - 1);
  for (auto& t : ids) t = tok(rng);

  // The budget: 1 byte less than keeping everything. The planner must recompute.
  const std::int64_t T = std::int64_t(ids.size());
  const double keep = m->predict_bytes(T, r, {});
  const auto choice = m->plan_memory(T, 32, r, keep - 1);
  REQUIRE(choice.fits);
  CHECK(choice.bytes <= keep - 1);
  CHECK(choice.policy != graph::memory_policy{});
  CHECK(choice.policy.block_layers == 0);  // a row-group tier suffices and is cheaper than a block re-run
  CHECK(choice.slowdown() > 1.0);
  const run_result ref = run(*m, ad, {}, ids, lens);
  const run_result got = run(*m, ad, choice.policy, ids, lens);
  check_same(ref, got);
  CHECK(got.held == got.predicted);
  CHECK(got.held <= keep - 1);
  // And the smallest policy (every tier, every layer re-run), still the same gradients.
  const run_result least = run(*m, ad, {block05::recompute.n, L}, ids, lens);
  check_same(ref, least);
  CHECK(least.held == least.predicted);
}
