// libFuzzer: adapter_config.json text -> parse_adapter_config, the writer's
// JSON dumped, and the adapter it describes sized (and, when small, made)
// for a tiny Qwen2 config: r reaches every size check and allocation.
#include "fuzz/fuzz_util.hpp"
#include "staticgrad/io/peft_adapter.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return sg_fuzz::expect_clean([&] {
    using namespace staticgrad::io;
    const json j = parse_json_strict(sg_fuzz::as_text(data, size), "adapter_config.json");
    const lora_config c = parse_adapter_config(j, "adapter_config.json");
    (void)to_json(c).dump(2);
    (void)c.scaling();
    hf_config m;
    m.hidden_size = 64;
    m.intermediate_size = 128;
    m.num_hidden_layers = 2;
    m.num_attention_heads = 4;
    m.num_key_value_heads = 2;
    m.head_dim = 16;
    m.vocab_size = 256;
    const auto bytes = require_adapter_fits(c, m, {"adapter_config.json", "r", {}});
    if (bytes <= (std::uint64_t(16) << 20)) {
      const lora_adapter ad = make_lora_adapter(c, m);
      (void)ad.at(1, c.target_modules.back()).b.size();
    }
  });
}
