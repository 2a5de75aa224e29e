// Nothing non-finite passes silently, end to end through the built tool:
//  - a NaN or an infinity in a base weight makes `loss` exit 1 naming the
//    weight (the loss itself comes out non-finite, the checkpoint is then
//    scanned for the culprit);
//  - a NaN in a PEFT adapter is refused when it is read (`loss --adapter`,
//    `merge`), naming the adapter file and the tensor;
//  - `merge` refuses a non-finite base weight and a merged value that
//    overflows (W + scaling * B A), and leaves the destination as it was;
//  - a weight stored as I32 is refused naming it, never read by value.
// Each case is the tiny transformers fixture (tests/fixtures/hf) with one
// value replaced; the unmodified fixture is run too, so a refusal is due to
// the one value. Skipped (77) when the tool has not been built.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "fixtures/hf/hf_fixture.hpp"
#include "staticgrad/io/checkpoint.hpp"
#include "staticgrad/io/safetensors_writer.hpp"
#include "support/run_tool.hpp"

namespace fs = std::filesystem;
using namespace staticgrad;

namespace {

const std::string& tool = staticgrad::test::tool_path();
using staticgrad::test::have_tool;
using staticgrad::test::slurp;
const std::string fixture = "tied_v97_l1_r4_all7";
constexpr float nan_value = std::numeric_limits<float>::quiet_NaN();
constexpr float inf_value = std::numeric_limits<float>::infinity();

test::run_result run(const std::string& args) { return test::run_command(tool + " " + args + " 2>&1"); }

fs::path scratch(const std::string& name) {
  auto p = fs::path(STATICGRAD_BINARY_DIR) / "nonfinite_out" / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

// One value to put into a tensor: element `at` of tensor `name`.
struct patch {
  std::string name;
  std::size_t at;
  float value;
};

// Rewrites the safetensors file `src` as `dst` with the patched values (in
// each tensor's dtype: F32 or BF16); every other byte is copied.
void write_with_values(const fs::path& src, const fs::path& dst, const std::vector<patch>& patches) {
  io::safetensors_file f(src);
  std::vector<io::tensor_data> ts;
  std::vector<std::vector<std::byte>> patched;
  patched.reserve(patches.size());
  std::size_t found = 0;
  for (const auto& tv : f.tensors()) {
    ts.push_back({tv.name, tv.dtype, tv.shape, tv.bytes});
    bool copied = false;
    for (const auto& p : patches) {
      if (p.name != tv.name) continue;
      REQUIRE((tv.dtype == io::st_dtype::f32 || tv.dtype == io::st_dtype::bf16));
      REQUIRE(p.at < std::size_t(tv.numel()));
      if (!copied) patched.emplace_back(tv.bytes.begin(), tv.bytes.end());
      copied = true;
      auto& bytes = patched.back();
      if (tv.dtype == io::st_dtype::f32) {
        std::memcpy(bytes.data() + 4 * p.at, &p.value, 4);
      } else {
        const bf16 b(p.value);
        std::memcpy(bytes.data() + 2 * p.at, &b, 2);
      }
      ts.back().bytes = patched.back();
      ++found;
    }
  }
  REQUIRE(found == patches.size());
  io::write_safetensors(dst, std::move(ts), f.metadata());
}

// A copy of the fixture's model directory (config.json, model.safetensors,
// data.jsonl, adapter/) to modify.
fs::path copy_fixture(const std::string& name) {
  const auto dir = scratch(name);
  fs::copy(sg_fixtures::hf_fixture_dir(fixture), dir, fs::copy_options::recursive);
  return dir;
}

bool mentions(const std::string& out, const std::string& what) { return out.find(what) != std::string::npos; }

// A weight every position's logits depend on: its element 0 feeds hidden
// unit 0 of every token.
const std::string base_weight = "model.layers.0.mlp.down_proj.weight";
const std::string adapter_a = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
const std::string adapter_b = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";

}  // namespace

TEST_CASE("the unmodified fixture passes loss and merge (the refusals below are due to the one value)") {
  if (!have_tool()) return;
  const auto dir = copy_fixture("clean");
  const auto d = dir.string();
  auto r = run("loss --model " + d + " --data " + d + "/data.jsonl --adapter " + d + "/adapter");
  INFO(r.out);
  CHECK(r.rc == 0);
  r = run("merge --model " + d + " --adapter " + d + "/adapter --out " + (dir / "merged").string());
  CHECK(r.rc == 0);
  CHECK(fs::exists(dir / "merged" / "model.safetensors"));
}

TEST_CASE("a NaN or an infinity in a base weight: loss exits 1 naming the weight") {
  if (!have_tool()) return;
  for (float bad : {nan_value, inf_value, -inf_value}) {
    CAPTURE(bad);
    const auto dir = copy_fixture("base_weight");
    const auto model = dir / "model.safetensors";
    write_with_values(sg_fixtures::hf_fixture_dir(fixture) / "model.safetensors", model, {{base_weight, 0, bad}});
    const auto d = dir.string();
    for (const std::string adapter : {std::string(), " --adapter " + d + "/adapter"}) {
      const auto r = run("loss --model " + d + " --data " + d + "/data.jsonl" + adapter);
      INFO(r.out);
      CHECK(r.rc == 1);
      CHECK(mentions(r.out, base_weight));
      CHECK(mentions(r.out, "non-finite value (NaN or infinity) at element 0"));
      CHECK(mentions(r.out, "model.safetensors"));
      CHECK_FALSE(mentions(r.out, "\"loss\""));  // no result line
    }
    // The library call the loader offers: the same tensor named.
    const auto ck = io::checkpoint::open(dir);
    try {
      ck.require_finite();
      FAIL("require_finite accepted a non-finite weight");
    } catch (const error& e) {
      CHECK(e.context().tensor == base_weight);
    }
  }
}

TEST_CASE("a NaN in an adapter: loss and merge refuse it naming the tensor") {
  if (!have_tool()) return;
  const auto dir = copy_fixture("adapter");
  const auto ad = dir / "adapter" / "adapter_model.safetensors";
  write_with_values(sg_fixtures::hf_fixture_dir(fixture) / "adapter" / "adapter_model.safetensors", ad,
                    {{adapter_b, 3, nan_value}});
  const auto d = dir.string();
  auto r = run("loss --model " + d + " --data " + d + "/data.jsonl --adapter " + d + "/adapter");
  INFO(r.out);
  CHECK(r.rc == 1);
  CHECK(mentions(r.out, adapter_b));
  CHECK(mentions(r.out, "adapter_model.safetensors"));
  CHECK(mentions(r.out, "non-finite value (NaN or infinity) at element 3"));
  const auto out = dir / "merged";
  r = run("merge --model " + d + " --adapter " + d + "/adapter --out " + out.string());
  CHECK(r.rc == 1);
  CHECK(mentions(r.out, adapter_b));
  CHECK_FALSE(fs::exists(out / "model.safetensors"));
}

// `out` holds an earlier merge's files; after a refused merge they are byte
// for byte what they were, and nothing was added (no temp files either).
void check_destination_untouched(const fs::path& out, const std::vector<std::pair<fs::path, std::string>>& before) {
  std::size_t entries = 0;
  for (const auto& e : fs::directory_iterator(out)) {
    (void)e;
    ++entries;
  }
  CHECK(entries == before.size());
  for (const auto& [p, bytes] : before) {
    INFO(p.string());
    CHECK(slurp(p) == bytes);
  }
}

std::vector<std::pair<fs::path, std::string>> snapshot(const fs::path& out) {
  std::vector<std::pair<fs::path, std::string>> v;
  for (const auto& e : fs::directory_iterator(out)) v.emplace_back(e.path(), slurp(e.path()));
  return v;
}

TEST_CASE("merge refuses a non-finite base weight and an overflowing merged value; the destination is untouched") {
  if (!have_tool()) return;
  const auto src = sg_fixtures::hf_fixture_dir(fixture);
  SUBCASE("NaN in a targeted weight, and infinity in a weight copied unchanged") {
    for (const std::string name : {std::string("model.layers.0.self_attn.q_proj.weight"), std::string("model.norm.weight")}) {
      CAPTURE(name);
      const auto dir = copy_fixture("merge_base");
      const auto d = dir.string(), out = (dir / "merged").string();
      REQUIRE(run("merge --model " + d + " --adapter " + d + "/adapter --out " + out).rc == 0);
      const auto before = snapshot(dir / "merged");
      write_with_values(src / "model.safetensors", dir / "model.safetensors",
                        {{name, 1, name == "model.norm.weight" ? inf_value : nan_value}});
      const auto r = run("merge --model " + d + " --adapter " + d + "/adapter --out " + out);
      INFO(r.out);
      CHECK(r.rc == 1);
      CHECK(mentions(r.out, name));
      CHECK(mentions(r.out, "non-finite value (NaN or infinity) at element 1"));
      check_destination_untouched(dir / "merged", before);
    }
  }
  SUBCASE("W + scaling * B A overflows float") {
    const auto dir = copy_fixture("merge_overflow");
    const auto d = dir.string(), out = (dir / "merged").string();
    REQUIRE(run("merge --model " + d + " --adapter " + d + "/adapter --out " + out).rc == 0);
    const auto before = snapshot(dir / "merged");
    // A[0, 0] = B[0, 0] = 1e30, both finite: scaling * B A at [0, 0] is about
    // 1e60, past float's 3.4e38.
    write_with_values(src / "adapter" / "adapter_model.safetensors", dir / "adapter" / "adapter_model.safetensors",
                      {{adapter_a, 0, 1e30f}, {adapter_b, 0, 1e30f}});
    const auto r = run("merge --model " + d + " --adapter " + d + "/adapter --out " + out);
    INFO(r.out);
    CHECK(r.rc == 1);
    CHECK(mentions(r.out, "model.layers.0.self_attn.q_proj.weight"));
    CHECK(mentions(r.out, "the merged weight is not finite"));
    check_destination_untouched(dir / "merged", before);
  }
}

TEST_CASE("a weight stored as I32 is refused by loss and merge, naming it (no conversion by value)") {
  if (!have_tool()) return;
  const auto dir = copy_fixture("i32_weight");
  {
    io::safetensors_file f(sg_fixtures::hf_fixture_dir(fixture) / "model.safetensors");
    std::vector<io::tensor_data> ts;
    for (const auto& tv : f.tensors())
      ts.push_back({tv.name, tv.name == base_weight ? io::st_dtype::i32 : tv.dtype, tv.shape, tv.bytes});
    io::write_safetensors(dir / "model.safetensors", std::move(ts), f.metadata());
  }
  const auto d = dir.string();
  for (const std::string cmd : {"loss --model " + d + " --data " + d + "/data.jsonl",
                                "merge --model " + d + " --adapter " + d + "/adapter --out " + d + "/merged"}) {
    const auto r = run(cmd);
    INFO(cmd << "\n" << r.out);
    CHECK(r.rc == 1);
    CHECK(mentions(r.out, base_weight));
    CHECK(mentions(r.out, "I32"));
  }
}
