// config.json reading and writing: files written by transformers 5.x (the HF
// fixtures), the older spelling (rope_theta, torch_dtype) of Qwen2.5 on the
// Hub, malformed inputs, and a write/read round trip.
#include <doctest/doctest.h>

#include <set>

#include "fixtures/hf/hf_fixture.hpp"
#include "io/io_test_util.hpp"
#include "staticgrad/io/checkpoint.hpp"
#include "staticgrad/io/hf_config.hpp"

using namespace staticgrad;
using namespace staticgrad::io;

TEST_CASE("config.json written by transformers agrees with the checkpoint it describes") {
  for (const auto& name : sg_fixtures::hf_fixture_cases()) {
    INFO(name);
    const auto dir = sg_fixtures::hf_fixture_dir(name);
    const hf_config c = read_hf_config(dir);
    const json raw = read_json_file(dir / "config.json");
    // transformers 5 writes the new spellings only.
    CHECK(!raw.contains("rope_theta"));
    CHECK(c.rope_theta == raw["rope_parameters"]["rope_theta"].get<double>());
    CHECK(c.dtype == raw["dtype"].get<std::string>());
    CHECK(c.rms_norm_eps == raw["rms_norm_eps"].get<double>());
    CHECK(c.architectures == std::vector<std::string>{"Qwen2ForCausalLM"});
    CHECK(c.eos_token_ids == std::vector<std::int64_t>{c.vocab_size - 1});  // the script sets eos = vocab - 1
    CHECK(!c.bos_token_id);
    // Sizes against the tensors transformers saved.
    const checkpoint ck = checkpoint::open(dir);
    CHECK(ck.at("model.embed_tokens.weight").shape == std::vector<std::int64_t>{c.vocab_size, c.hidden_size});
    CHECK(ck.at("model.layers.0.self_attn.q_proj.weight").shape == std::vector<std::int64_t>{c.q_dim(), c.hidden_size});
    CHECK(ck.at("model.layers.0.self_attn.k_proj.weight").shape == std::vector<std::int64_t>{c.kv_dim(), c.hidden_size});
    CHECK(ck.at("model.layers.0.mlp.gate_proj.weight").shape ==
          std::vector<std::int64_t>{c.intermediate_size, c.hidden_size});
    std::set<std::string> layers;
    for (const auto& n : ck.names())
      if (n.rfind("model.layers.", 0) == 0) layers.insert(n.substr(13, n.find('.', 13) - 13));
    CHECK(static_cast<std::int64_t>(layers.size()) == c.num_hidden_layers);
    CHECK(c.tie_word_embeddings == !ck.contains("lm_head.weight"));
    CHECK(c.head_dim * c.num_attention_heads == c.hidden_size);
    CHECK(st_dtype_name(ck.at("model.norm.weight").dtype) == (c.dtype == "float32" ? "F32" : "BF16"));
  }
}

// A config.json in the older transformers spelling used by the Qwen2.5
// checkpoints on the Hub (rope_theta and torch_dtype at the top level, no
// head_dim), with the 0.5B sizes of the table in docs/models.md.
static const char* qwen25_05b = R"({
  "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
  "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02,
  "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 21,
  "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": true,
  "torch_dtype": "bfloat16", "transformers_version": "4.43.1", "use_cache": true,
  "use_sliding_window": false, "vocab_size": 151936})";

TEST_CASE("older spelling: rope_theta and torch_dtype; head_dim derived") {
  const hf_config c = parse_hf_config(parse_json_strict(qwen25_05b, "q.json"), "q.json");
  CHECK(c.hidden_size == 896);
  CHECK(c.head_dim == 64);  // 896 / 14, the table in docs/models.md
  CHECK(c.num_key_value_heads == 2);
  CHECK(c.rope_theta == 1e6);
  CHECK(c.dtype == "bfloat16");
  CHECK(c.tie_word_embeddings);
  CHECK(c.bos_token_id == 151643);
  CHECK(c.eos_token_ids == std::vector<std::int64_t>{151645});
  CHECK(c.vocab_size == 151936);
}

TEST_CASE("malformed config.json: errors name the file and the key") {
  auto with = [](auto edit) {
    json j = json::parse(qwen25_05b);
    edit(j);
    return parse_hf_config(j, "cfg.json");
  };
  SG_CHECK_ERROR(with([](json& j) { j.erase("hidden_size"); }), "missing required key", "cfg.json", "hidden_size");
  SG_CHECK_ERROR(with([](json& j) { j["hidden_size"] = "896"; }), "expected an integer", "cfg.json", "hidden_size");
  SG_CHECK_ERROR(with([](json& j) { j["num_hidden_layers"] = 0; }), "positive", "cfg.json", "num_hidden_layers");
  SG_CHECK_ERROR(with([](json& j) { j["num_key_value_heads"] = 3; }), "multiple", "cfg.json", "num_key_value_heads");
  SG_CHECK_ERROR(with([](json& j) { j["hidden_size"] = 900; }), "divisible", "cfg.json", "head_dim");
  SG_CHECK_ERROR(with([](json& j) { j["model_type"] = "llama"; }), "llama", "cfg.json", "model_type");
  SG_CHECK_ERROR(with([](json& j) { j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4}}; }), "not supported",
                 "cfg.json", "rope_scaling");
  SG_CHECK_ERROR(with([](json& j) { j["rope_parameters"] = {{"rope_theta", 10000.0}}; }), "disagree", "cfg.json",
                 "rope_theta");
  SG_CHECK_ERROR(with([](json& j) { j["rope_parameters"] = {{"rope_theta", 1e6}, {"rope_type", "linear"}}; }),
                 "linear", "cfg.json", "rope_parameters.rope_type");
  SG_CHECK_ERROR(with([](json& j) { j.erase("rope_theta"); }), "missing rope_theta", "cfg.json", "rope_theta");
  SG_CHECK_ERROR(with([](json& j) { j["rms_norm_eps"] = -1; }), "positive", "cfg.json", "rms_norm_eps");
  SG_CHECK_ERROR(with([](json& j) { j["use_sliding_window"] = true; }), "sliding", "cfg.json", "use_sliding_window");
  SG_CHECK_ERROR(with([](json& j) { j["torch_dtype"] = "int8"; }), "int8", "cfg.json", "dtype");
  SG_CHECK_ERROR(with([](json& j) { j["dtype"] = "float32"; }), "disagree", "cfg.json", "dtype");
  SG_CHECK_ERROR(with([](json& j) { j["tie_word_embeddings"] = 1; }), "true or false", "cfg.json", "tie_word_embeddings");
  SG_CHECK_ERROR(with([](json& j) { j["eos_token_id"] = {1, "x"}; }), "integer", "cfg.json", "eos_token_id");
  SG_CHECK_ERROR(parse_hf_config(json::array(), "cfg.json"), "object", "cfg.json", "");
  sg_test::scratch_dir dir;
  SG_CHECK_ERROR(read_hf_config(dir.path), "cannot open", "config.json", "");
  sg_test::write_bytes(dir / "config.json", R"({"hidden_size": 1, "hidden_size": 2})");
  SG_CHECK_ERROR(read_hf_config(dir.path), "duplicate key", "config.json", "hidden_size");
}

TEST_CASE("config sizes are bounded; deep nesting and NUL bytes are refused at parse time") {
  auto with = [](auto edit) {
    json j = json::parse(qwen25_05b);
    edit(j);
    return parse_hf_config(j, "cfg.json");
  };
  // Each size at its stated maximum is accepted (mutation check on the
  // bound), one above it is refused naming the key and the limit.
  const std::vector<std::pair<const char*, std::int64_t>> limits = {
      {"hidden_size", max_config_width},       {"intermediate_size", max_config_width},
      {"num_hidden_layers", max_config_layers}, {"vocab_size", max_config_vocab},
      {"head_dim", max_config_width},           {"max_position_embeddings", max_config_positions}};
  for (const auto& [key, max] : limits) {
    INFO(key);
    auto set = [&](json& j, std::int64_t v) {
      if (std::string(key) != "head_dim") j["head_dim"] = 64;  // no divisibility rule in the way
      j[key] = v;
    };
    CHECK_NOTHROW(with([&](json& j) { set(j, max); }));
    SG_CHECK_ERROR(with([&](json& j) { set(j, max + 1); }), "exceeds the limit of " + std::to_string(max), "cfg.json",
                   key);
  }
  SG_CHECK_ERROR(with([](json& j) { j["num_attention_heads"] = std::int64_t(1) << 62; }), "exceeds the limit",
                 "cfg.json", "num_attention_heads");
  SG_CHECK_ERROR(with([](json& j) { j["vocab_size"] = 18446744073709551615ull; }), "out of range", "cfg.json",
                 "vocab_size");
  // An unknown key nested 140000 deep once overflowed the stack when copied
  // into `raw`; now the parser stops at max_json_depth.
  sg_test::scratch_dir dir;
  std::string text = qwen25_05b;
  text.insert(text.find('{') + 1, "\"x\":" + std::string(140000, '[') + std::string(140000, ']') + ",");
  sg_test::write_bytes(dir / "config.json", text);
  SG_CHECK_ERROR(read_hf_config(dir.path), "nested deeper than 128", "config.json", "");
  // Nested to the limit, an unknown key is kept by the writer.
  text = qwen25_05b;
  text.insert(text.find('{') + 1, "\"x\":" + std::string(120, '[') + std::string(120, ']') + ",");
  sg_test::write_bytes(dir / "config.json", text);
  CHECK(to_json(read_hf_config(dir.path))["x"].is_array());
  text = qwen25_05b;
  text.insert(text.rfind('}'), std::string("\0", 1));
  sg_test::write_bytes(dir / "config.json", text);
  SG_CHECK_ERROR(read_hf_config(dir.path), "NUL byte", "config.json", "");
}

TEST_CASE("write then read: both spellings written, unknown keys kept") {
  sg_test::scratch_dir dir;
  hf_config c = parse_hf_config(json::parse(qwen25_05b), "q.json");
  c.rms_norm_eps = 1e-5;
  c.dtype = "float32";
  write_hf_config(dir.path, c);
  const json j = read_json_file(dir / "config.json");
  CHECK(j["rope_theta"] == 1e6);
  CHECK(j["rope_parameters"]["rope_theta"] == 1e6);
  CHECK(j["dtype"] == "float32");
  CHECK(j["torch_dtype"] == "float32");
  CHECK(j["max_window_layers"] == 21);  // a key hf_config does not model, kept from raw
  const hf_config d = read_hf_config(dir / "config.json");
  CHECK(d.hidden_size == c.hidden_size);
  CHECK(d.intermediate_size == c.intermediate_size);
  CHECK(d.num_hidden_layers == c.num_hidden_layers);
  CHECK(d.num_attention_heads == c.num_attention_heads);
  CHECK(d.num_key_value_heads == c.num_key_value_heads);
  CHECK(d.head_dim == c.head_dim);
  CHECK(d.vocab_size == c.vocab_size);
  CHECK(d.rope_theta == c.rope_theta);
  CHECK(d.rms_norm_eps == c.rms_norm_eps);
  CHECK(d.tie_word_embeddings == c.tie_word_embeddings);
  CHECK(d.dtype == c.dtype);
  CHECK(d.bos_token_id == c.bos_token_id);
  CHECK(d.eos_token_ids == c.eos_token_ids);
}
