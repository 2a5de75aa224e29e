// PEFT adapters: reading the adapters PEFT 0.21 wrote for the HF fixtures,
// writing them back (compared with PEFT's own files), the scaling rule
// against PEFT's, and validation errors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>

#include "fixtures/hf/hf_fixture.hpp"
#include "io/io_test_util.hpp"
#include "staticgrad/io/peft_adapter.hpp"

using namespace staticgrad;
using namespace staticgrad::io;

namespace {
json sorted_targets(json j) {
  auto v = j["target_modules"].get<std::vector<std::string>>();
  std::sort(v.begin(), v.end());
  j["target_modules"] = v;
  return j;
}
}  // namespace

TEST_CASE("key names and projection sizes") {
  CHECK(lora_key(3, lora_target::q_proj, 'A') == "base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight");
  CHECK(lora_key(0, lora_target::down_proj, 'B') == "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight");
  CHECK(base_module_name(2, lora_target::gate_proj) == "model.layers.2.mlp.gate_proj");
  // Against the base weights transformers saved ([out, in]).
  const auto dir = sg_fixtures::hf_fixture_dir("tied_v97_l1_r4_all7");
  const hf_config c = read_hf_config(dir);
  const checkpoint ck = checkpoint::open(dir);
  for (auto t : all_lora_targets) {
    INFO(target_name(t));
    CHECK(ck.at(base_module_name(0, t) + ".weight").shape ==
          std::vector<std::int64_t>{target_out_features(t, c), target_in_features(t, c)});
  }
}

TEST_CASE("reads PEFT's adapters; scaling equals PEFT's") {
  for (const auto& name : sg_fixtures::hf_fixture_cases()) {
    INFO(name);
    const auto dir = sg_fixtures::hf_fixture_dir(name);
    const hf_config mc = read_hf_config(dir);
    const lora_adapter ad = read_peft_adapter(dir / "adapter", mc);
    const json raw = read_json_file(dir / "adapter" / "adapter_config.json");
    CHECK(ad.config.r == raw["r"].get<std::int64_t>());
    CHECK(ad.config.lora_alpha == raw["lora_alpha"].get<double>());
    CHECK(ad.config.use_rslora == raw["use_rslora"].get<bool>());
    CHECK(ad.config.target_modules.size() == raw["target_modules"].size());
    const safetensors_file exp(dir / "expected.safetensors");
    CHECK(ad.config.scaling() == doctest::Approx(std::stod(exp.metadata().at("lora_scaling"))).epsilon(1e-12));
    const safetensors_file w(dir / "adapter" / "adapter_model.safetensors");
    CHECK(w.metadata().at("format") == "pt");
    std::size_t n = 0;
    for (std::int64_t l = 0; l < ad.num_layers; ++l)
      for (auto t : all_lora_targets) {
        if (!ad.config.targets(t)) {
          CHECK(ad.at(l, t).a.empty());
          continue;
        }
        CHECK(ad.at(l, t).a == to_f32(w.at(lora_key(l, t, 'A'))));
        CHECK(ad.at(l, t).b == to_f32(w.at(lora_key(l, t, 'B'))));
        n += 2;
      }
    CHECK(n == w.tensors().size());
  }
}

TEST_CASE("written adapters equal PEFT's files; also written for the Python check") {
  for (const auto& name : sg_fixtures::hf_fixture_cases()) {
    INFO(name);
    const auto dir = sg_fixtures::hf_fixture_dir(name);
    const hf_config mc = read_hf_config(dir);
    const lora_adapter ad = read_peft_adapter(dir / "adapter", mc);
    // Kept under the build tree so scripts/make_hf_fixtures.py --check-adapter
    // can load them with PeftModel (see tests/fixtures/hf/README.md).
    const auto out = std::filesystem::path(STATICGRAD_BINARY_DIR) / "io_out" / name;
    std::filesystem::remove_all(out);
    write_peft_adapter(out / "adapter", ad, mc);
    std::filesystem::create_directories(out / "model");
    write_hf_config(out / "model", mc);
    std::filesystem::copy_file(dir / "model.safetensors", out / "model" / "model.safetensors");

    const json ours = read_json_file(out / "adapter" / "adapter_config.json");
    const json peft = read_json_file(dir / "adapter" / "adapter_config.json");
    CHECK(sorted_targets(ours) == sorted_targets(peft));  // every key PEFT writes, same values
    const safetensors_file a(out / "adapter" / "adapter_model.safetensors");
    const safetensors_file b(dir / "adapter" / "adapter_model.safetensors");
    CHECK(a.metadata() == b.metadata());
    CHECK(a.tensors().size() == b.tensors().size());
    for (const auto& t : b.tensors()) {
      const tensor_view& u = a.at(t.name);
      CHECK(u.dtype == st_dtype::f32);
      CHECK(u.shape == t.shape);
      CHECK(to_f32(u) == to_f32(t));
    }
    const lora_adapter back = read_peft_adapter(out / "adapter", mc);
    for (std::int64_t l = 0; l < ad.num_layers; ++l)
      for (auto t : ad.config.target_modules) {
        CHECK(back.at(l, t).a == ad.at(l, t).a);
        CHECK(back.at(l, t).b == ad.at(l, t).b);
      }
  }
}

TEST_CASE("adapter validation errors name the tensor or key") {
  const auto src = sg_fixtures::hf_fixture_dir("untied_v256_l2_r8_rslora_subset");
  const hf_config mc = read_hf_config(src);
  const lora_adapter good = read_peft_adapter(src / "adapter", mc);
  sg_test::scratch_dir dir;
  const auto ad = dir / "adapter";

  auto with_config = [&](auto edit) {
    write_peft_adapter(ad, good, mc);
    json j = read_json_file(ad / "adapter_config.json");
    edit(j);
    sg_test::write_bytes(ad / "adapter_config.json", j.dump());
    return read_peft_adapter(ad, mc);
  };
  SG_CHECK_ERROR(with_config([](json& j) { j["peft_type"] = "IA3"; }), "LORA", "adapter_config.json", "peft_type");
  SG_CHECK_ERROR(with_config([](json& j) { j["use_dora"] = true; }), "DoRA", "adapter_config.json", "use_dora");
  SG_CHECK_ERROR(with_config([](json& j) { j["bias"] = "all"; }), "bias", "adapter_config.json", "bias");
  SG_CHECK_ERROR(with_config([](json& j) { j["target_modules"] = ".*proj"; }), "regular expression",
                 "adapter_config.json", "target_modules");
  SG_CHECK_ERROR(with_config([](json& j) { j["target_modules"] = {"q_proj", "lm_head"}; }), "lm_head",
                 "adapter_config.json", "target_modules");
  SG_CHECK_ERROR(with_config([](json& j) { j["r"] = 0; }), "positive", "adapter_config.json", "r");
  SG_CHECK_ERROR(with_config([](json& j) { j["layers_to_transform"] = {0}; }), "not implemented",
                 "adapter_config.json", "layers_to_transform");
  SG_CHECK_ERROR(with_config([](json& j) { j["rank_pattern"] = {{"q_proj", 4}}; }), "per-module",
                 "adapter_config.json", "rank_pattern");
  SG_CHECK_ERROR(with_config([](json& j) { j["r"] = 4; }), "shape mismatch", "adapter_model.safetensors",
                 "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  SG_CHECK_ERROR(with_config([](json& j) { j["target_modules"] = {"q_proj", "k_proj", "v_proj", "o_proj", "down_proj"}; }),
                 "missing LoRA tensor", "adapter_model.safetensors",
                 "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight");
  SG_CHECK_ERROR(with_config([](json& j) { j["target_modules"] = {"q_proj", "v_proj", "o_proj"}; }),
                 "unexpected tensor", "adapter_model.safetensors",
                 "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight");
  // A model with fewer layers than the adapter: the extra layer's tensors are unexpected.
  hf_config one = mc;
  one.num_hidden_layers = 1;
  write_peft_adapter(ad, good, mc);
  SG_CHECK_ERROR(read_peft_adapter(ad, one), "unexpected tensor", "adapter_model.safetensors",
                 "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight");
  // Wrong sizes handed to the writer.
  lora_adapter bad = good;
  bad.at(1, lora_target::v_proj).b.pop_back();
  SG_CHECK_ERROR(write_peft_adapter(ad, bad, mc), "lora_B holds", "adapter",
                 "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight");
  std::filesystem::remove(ad / "adapter_model.safetensors");
  SG_CHECK_ERROR(read_peft_adapter(ad, mc), "missing adapter_model.safetensors", "adapter_model.safetensors", "");
}

TEST_CASE("ranks, sizes and values from the files are bounded before use") {
  const auto src = sg_fixtures::hf_fixture_dir("untied_v256_l2_r8_rslora_subset");
  const hf_config mc = read_hf_config(src);
  const lora_adapter good = read_peft_adapter(src / "adapter", mc);
  sg_test::scratch_dir dir;
  const auto ad = dir / "adapter";
  auto with_config = [&](auto edit) {
    write_peft_adapter(ad, good, mc);
    json j = read_json_file(ad / "adapter_config.json");
    edit(j);
    sg_test::write_bytes(ad / "adapter_config.json", j.dump());
    return read_peft_adapter(ad, mc);
  };
  // r = 2^62 once overflowed r * in (signed, UB); r = 1e9 tried a huge
  // allocation before the file was looked at. Both now fail on the bound.
  SG_CHECK_ERROR(with_config([](json& j) { j["r"] = std::int64_t(1) << 62; }), "exceeds the limit of 65536",
                 "adapter_config.json", "r");
  SG_CHECK_ERROR(with_config([](json& j) { j["r"] = 1000000000; }), "exceeds the limit", "adapter_config.json", "r");
  SG_CHECK_ERROR(with_config([](json& j) { j["r"] = 18446744073709551615ull; }), "out of range", "adapter_config.json", "r");
  // Within the bound, a wrong r fails on the file's shapes, before allocating.
  SG_CHECK_ERROR(with_config([](json& j) { j["r"] = 65536; }), "shape mismatch", "adapter_model.safetensors",
                 "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  // An unknown key nested 150000 deep once overflowed the stack when the raw
  // document was copied; the parser now stops at the depth limit.
  write_peft_adapter(ad, good, mc);
  std::string text = sg_test::read_bytes(ad / "adapter_config.json");
  text.insert(1, "\"deep\":" + std::string(150000, '[') + std::string(150000, ']') + ",");
  sg_test::write_bytes(ad / "adapter_config.json", text);
  SG_CHECK_ERROR(read_peft_adapter(ad, mc), "nested deeper than 128", "adapter_config.json", "");
  // Sizes handed in directly (a --lora-r flag): bound and memory checked first.
  lora_config huge = good.config;
  huge.r = std::int64_t(1) << 40;
  SG_CHECK_ERROR(make_lora_adapter(huge, mc), "outside the accepted range [1, 65536]", "", "r");
  hf_config wide = mc;  // a config within its own bounds whose adapter would not fit any machine
  wide.hidden_size = wide.intermediate_size = max_config_width;
  wide.num_hidden_layers = max_config_layers;
  huge.r = max_lora_rank;
  SG_CHECK_ERROR(make_lora_adapter(huge, wide), "MiB of memory of this machine", "", "r");
  // Integer LoRA weights are refused, not converted by value.
  write_peft_adapter(ad, good, mc);
  {
    safetensors_file f(ad / "adapter_model.safetensors");
    std::vector<tensor_data> ts;
    std::vector<std::vector<std::int32_t>> store;
    store.reserve(f.tensors().size());
    for (const auto& t : f.tensors()) {
      if (t.name == lora_key(1, lora_target::o_proj, 'B')) {
        auto& v = store.emplace_back(std::size_t(t.numel()), 7);
        ts.push_back({t.name, st_dtype::i32, t.shape, std::as_bytes(std::span<const std::int32_t>(v))});
      } else {
        ts.push_back({t.name, t.dtype, t.shape, t.bytes});
      }
    }
    const auto tmp = dir / "int.safetensors";
    write_safetensors(tmp, std::move(ts), f.metadata());
    std::filesystem::rename(tmp, ad / "adapter_model.safetensors");
  }
  SG_CHECK_ERROR(read_peft_adapter(ad, mc), "must be F32, BF16 or F16, got I32", "adapter_model.safetensors",
                 lora_key(1, lora_target::o_proj, 'B'));
}

TEST_CASE("a NaN or infinity in an adapter is refused by default, naming the tensor") {
  const auto src = sg_fixtures::hf_fixture_dir("untied_v256_l2_r8_rslora_subset");
  const hf_config mc = read_hf_config(src);
  const lora_adapter good = read_peft_adapter(src / "adapter", mc);
  sg_test::scratch_dir dir;
  // Mutation check over every targeted matrix: one bad element anywhere.
  int checked = 0;
  for (std::int64_t l = 0; l < good.num_layers; ++l)
    for (auto t : good.config.target_modules)
      for (char w : {'A', 'B'}) {
        lora_adapter bad = good;
        auto& v = w == 'A' ? bad.at(l, t).a : bad.at(l, t).b;
        const std::size_t at = (std::size_t(l) * 7 + std::size_t(t) * 3) % v.size();
        v[at] = (checked % 2) ? NAN : -INFINITY;
        write_peft_adapter(dir / "ad", bad, mc);
        SG_CHECK_ERROR(read_peft_adapter(dir / "ad", mc), "non-finite value (NaN or infinity) at element " + std::to_string(at),
                       "adapter_model.safetensors", lora_key(l, t, w));
        // The check can be turned off (to inspect a broken adapter).
        const lora_adapter raw = read_peft_adapter(dir / "ad", mc, {.check_finite = false});
        CHECK(!std::isfinite((w == 'A' ? raw.at(l, t).a : raw.at(l, t).b)[at]));
        ++checked;
      }
  CHECK(checked == 2 * good.num_layers * std::int64_t(good.config.target_modules.size()));
}

TEST_CASE("scaling rule and zero-initialised shapes") {
  lora_config c;
  c.r = 16;
  c.lora_alpha = 32;
  CHECK(c.scaling() == 2.0);
  c.use_rslora = true;
  CHECK(c.scaling() == 8.0);
  const hf_config mc = read_hf_config(sg_fixtures::hf_fixture_dir("tied_v97_l1_r4_all7"));
  c.target_modules = {lora_target::k_proj, lora_target::down_proj};
  const lora_adapter ad = make_lora_adapter(c, mc);
  CHECK(ad.at(0, lora_target::k_proj).a.size() == static_cast<std::size_t>(16 * mc.hidden_size));
  CHECK(ad.at(0, lora_target::k_proj).b.size() == static_cast<std::size_t>(mc.kv_dim() * 16));
  CHECK(ad.at(0, lora_target::down_proj).a.size() == static_cast<std::size_t>(16 * mc.intermediate_size));
  CHECK(ad.at(0, lora_target::q_proj).a.empty());
}

TEST_CASE("the writer refuses adapters PEFT or the reader would reject") {
  const hf_config mc = read_hf_config(sg_fixtures::hf_fixture_dir("untied_v256_l2_r8_rslora_subset"));
  sg_test::scratch_dir dir;
  lora_config c;
  c.target_modules = {lora_target::q_proj};
  lora_adapter ok = make_lora_adapter(c, mc);
  CHECK_NOTHROW(write_peft_adapter(dir / "a", ok, mc));
  lora_adapter none = ok;
  none.config.target_modules.clear();
  SG_CHECK_ERROR(write_peft_adapter(dir / "b", none, mc), "empty", "b", "target_modules");
  hf_config three = mc;
  three.num_hidden_layers = 3;
  SG_CHECK_ERROR(write_peft_adapter(dir / "c", ok, three), "layers", "c", "num_hidden_layers");
  CHECK(!std::filesystem::exists(dir / "b"));
}
