// libFuzzer: config.json text -> parse_json_strict -> parse_hf_config, then
// the writer's JSON (which copies the unknown keys) dumped again.
#include "fuzz/fuzz_util.hpp"
#include "staticgrad/io/hf_config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return sg_fuzz::expect_clean([&] {
    using namespace staticgrad::io;
    const json j = parse_json_strict(sg_fuzz::as_text(data, size), "config.json");
    const hf_config c = parse_hf_config(j, "config.json");
    (void)c.q_dim();
    (void)c.kv_dim();
    (void)to_json(c).dump(2);
  });
}
