// safetensors reader, writer and checkpoint: against files written by the
// Python `safetensors` library (tests/fixtures/safetensors, made by
// scripts/make_safetensors_fixtures.py), round trips, and malformed inputs.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "io/io_test_util.hpp"
#include "staticgrad/io/checkpoint.hpp"
#include "staticgrad/io/json_util.hpp"
#include "staticgrad/io/safetensors.hpp"
#include "staticgrad/io/safetensors_writer.hpp"

using namespace staticgrad;
using namespace staticgrad::io;
using sg_test::fixture;

namespace {

double ref_value(const json& v) {  // JSON values; +-inf stored as strings by the script
  if (v.is_string()) return v.get<std::string>()[0] == '-' ? -INFINITY : INFINITY;
  return v.get<double>();
}

// A file made of a raw header text and `data_bytes` zero bytes of data.
std::string craft(const std::string& header, std::size_t data_bytes, std::uint64_t len_override = UINT64_MAX) {
  std::string s(8, '\0');
  const std::uint64_t n = len_override == UINT64_MAX ? header.size() : len_override;
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s + header + std::string(data_bytes, '\0');
}

parsed_safetensors parse_str(const std::string& s) {
  return parse_safetensors(std::as_bytes(std::span<const char>(s.data(), s.size())), "crafted.safetensors");
}

}  // namespace

TEST_CASE("reads every dtype of a file written by Python safetensors") {
  const json ref = read_json_file(fixture("safetensors/mixed.json"));
  safetensors_file f(fixture("safetensors/mixed.safetensors"));
  CHECK(f.metadata() == ref["metadata"].get<std::map<std::string, std::string>>());
  CHECK(f.tensors().size() == ref["tensors"].size());
  for (auto& [name, r] : ref["tensors"].items()) {
    INFO(name);
    const tensor_view& t = f.at(name);
    CHECK(st_dtype_name(t.dtype) == r["dtype"].get<std::string>());
    CHECK(t.shape == r["shape"].get<std::vector<std::int64_t>>());
    if (is_float_dtype(t.dtype)) {
      const std::vector<float> v = to_f32(t);
      REQUIRE(v.size() == r["values"].size());
      for (std::size_t i = 0; i < v.size(); ++i) CHECK(v[i] == static_cast<float>(ref_value(r["values"][i])));
      SG_CHECK_ERROR(to_i64(t), "expected an integer tensor", "mixed.safetensors", name);
    } else {  // integers are read exactly, and never as weights
      const std::vector<std::int64_t> v = to_i64(t);
      REQUIRE(v.size() == r["values"].size());
      for (std::size_t i = 0; i < v.size(); ++i) CHECK(v[i] == r["values"][i].get<std::int64_t>());
      SG_CHECK_ERROR(to_f32(t), "expected a floating-point tensor", "mixed.safetensors", name);
      SG_CHECK_ERROR(to_bf16(t), "declares " + std::string(st_dtype_name(t.dtype)), "mixed.safetensors", name);
    }
  }
  // i64 read bit-exactly too (to_f32 of large ints would round).
  const tensor_view& e = f.at("e.i64");
  std::int64_t last;
  std::memcpy(&last, e.bytes.data() + 24, 8);
  CHECK(last == ref["tensors"]["e.i64"]["values"][3].get<std::int64_t>());
  CHECK(f.at("g.scalar").numel() == 1);
  CHECK(f.at("h.empty").numel() == 0);
  CHECK(f.find("nope") == nullptr);
  SG_CHECK_ERROR(f.at("nope"), "not found", "mixed.safetensors", "nope");
}

TEST_CASE("f32 -> bf16 rounding matches torch, bf16 copies are bit-exact") {
  const json ref = read_json_file(fixture("safetensors/mixed.json"));
  safetensors_file f(fixture("safetensors/mixed.safetensors"));
  const auto bits = ref["round_bf16_bits"].get<std::vector<std::uint16_t>>();
  const std::vector<bf16> r = to_bf16(f.at("round.f32"));
  REQUIRE(r.size() == bits.size());
  for (std::size_t i = 0; i < r.size(); ++i) CHECK_MESSAGE(r[i].bits == bits[i], "index " << i);
  const tensor_view& b = f.at("b.bf16");
  const std::vector<bf16> bb = to_bf16(b);
  CHECK(std::memcmp(bb.data(), b.bytes.data(), b.bytes.size()) == 0);
  std::vector<float> small(2);
  SG_CHECK_ERROR(to_f32(f.at("a.f32"), small), "destination holds 2", "mixed.safetensors", "a.f32");
  SG_CHECK_ERROR(require_shape(f.at("a.f32"), {3, 2}), "expected [3, 2]", "mixed.safetensors", "a.f32");
  CHECK_NOTHROW(require_shape(f.at("a.f32"), {2, 3}));
}

TEST_CASE("sharded checkpoint through model.safetensors.index.json") {
  const json vals = read_json_file(fixture("safetensors/sharded/values.json"));
  for (auto path : {fixture("safetensors/sharded"), fixture("safetensors/sharded/model.safetensors.index.json")}) {
    checkpoint ck = checkpoint::open(path);
    CHECK(ck.size() == 3);
    CHECK(ck.files().size() == 2);
    for (auto& [name, v] : vals.items()) {
      const auto got = to_f32(ck.at(name));
      CHECK(got == v.get<std::vector<float>>());
    }
    CHECK(ck.at("lm_head.weight").dtype == st_dtype::bf16);
    CHECK(ck.at("lm_head.weight").file.find("model-00002-of-00002") != std::string::npos);
    CHECK(&lm_head_weight(ck, false) == &ck.at("lm_head.weight"));
    CHECK(&lm_head_weight(ck, true) == &ck.at("model.embed_tokens.weight"));
  }
  checkpoint single = checkpoint::open(fixture("safetensors/mixed.safetensors"));
  SG_CHECK_ERROR(lm_head_weight(single, false), "tie_word_embeddings=false", "mixed", "lm_head.weight");
  SG_CHECK_ERROR(lm_head_weight(single, true), "not found", "mixed", "model.embed_tokens.weight");
}

TEST_CASE("writer round trip: padding, alignment, metadata, atomic replace") {
  sg_test::scratch_dir dir;
  std::vector<float> a = {1.f, -2.5f, 3.25f, 1e-30f, INFINITY, -0.f};
  std::vector<bf16> b = {bf16(1.f), bf16(-7.f), bf16(0.1f)};
  std::vector<std::int64_t> c = {42, -1};
  std::vector<float> empty;
  const auto path = dir / "rt.safetensors";
  write_safetensors(path,
                    {f32_tensor("z.a", {2, 3}, a), bf16_tensor("b", {3}, b), i64_tensor("c", {2}, c),
                     f32_tensor("e", {0}, empty), f32_tensor("s", {}, std::span<const float>(a.data(), 1))},
                    {{"format", "pt"}});
  const std::string raw = sg_test::read_bytes(path);
  std::uint64_t n;
  std::memcpy(&n, raw.data(), 8);
  CHECK(n % 8 == 0);  // data section 8-byte aligned, like the Python library
  safetensors_file f(path);
  CHECK(f.metadata().at("format") == "pt");
  const auto za = to_f32(f.at("z.a"));
  CHECK(std::memcmp(za.data(), a.data(), a.size() * 4) == 0);
  CHECK(std::memcmp(f.at("b").bytes.data(), b.data(), 6) == 0);
  CHECK(std::memcmp(f.at("c").bytes.data(), c.data(), 16) == 0);
  CHECK(f.at("s").shape.empty());
  CHECK(to_f32(f.at("s"))[0] == 1.f);
  for (const auto& t : f.tensors())  // every tensor aligned to its element size within the file
    CHECK((t.bytes.data() - reinterpret_cast<const std::byte*>(0)) % st_dtype_size(t.dtype) == 0);

  // Errors before writing leave the old file as it was.
  SG_CHECK_ERROR(write_safetensors(path, {f32_tensor("x", {7}, a)}), "byte count", "rt.safetensors", "x");
  SG_CHECK_ERROR(write_safetensors(path, {f32_tensor("x", {6}, a), f32_tensor("x", {6}, a)}), "duplicate",
                 "rt.safetensors", "x");
  CHECK(sg_test::read_bytes(path) == raw);
  // A failing producer leaves no temporary behind and the target untouched.
  CHECK_THROWS_AS(write_file_atomic(path, [](atomic_sink& s) {
                    s.write(std::string_view("partial"));
                    throw error("producer failed");
                  }),
                  error);
  CHECK(sg_test::read_bytes(path) == raw);
  CHECK(std::distance(std::filesystem::directory_iterator(dir.path), {}) == 1);
  SG_CHECK_ERROR(write_text_atomic(dir / "no/such/dir/x.json", "{}"), "does not exist", "x.json", "");
}

TEST_CASE("malformed headers are rejected with the file and tensor named") {
  const std::string ok = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  CHECK(parse_str(craft(ok, 8)).tensors.size() == 1);
  auto bad = [](const std::string& s, const char* msg, const char* tensor) {
    SG_CHECK_ERROR(parse_str(s), msg, "crafted.safetensors", tensor);
  };
  bad(std::string(5, '\0'), "at least 8 bytes", "");
  bad(craft(ok, 8, 1000), "runs past the end of the file", "");
  bad(craft(ok, 8, 1ull << 40), "exceeds the limit", "");
  bad(craft(ok, 7), "run past the data section", "t");  // truncated data
  bad(craft("{not json}", 0), "invalid JSON", "");
  bad(craft("[1,2]", 0), "must be a JSON object starting with '{'", "");
  bad(craft(R"({"t":5})", 0), "must be an object", "t");
  bad(craft(R"({"t":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", 8), "unsupported dtype \"F64\"", "t");
  bad(craft(R"({"t":{"shape":[1],"data_offsets":[0,4]}})", 4), "dtype", "t");
  bad(craft(R"({"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4), "non-negative", "t");
  bad(craft(R"({"t":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4), "non-negative", "t");
  bad(craft(R"({"t":{"dtype":"F32","shape":"2","data_offsets":[0,4]}})", 4), "shape", "t");
  bad(craft(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", 4), "overflows", "t");
  bad(craft(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "size mismatch", "t");
  bad(craft(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8), "begin > end", "t");
  bad(craft(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8), "data_offsets", "t");
  bad(craft(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", 8), "data_offsets", "t");
  bad(craft(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", 8), "run past the data section", "t");
  bad(craft(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
            12),
      "overlaps the range of tensor 'a'", "b");
  bad(craft(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
            8),
      "duplicate key", "t");
  bad(craft(R"({"__metadata__":{"format":1}})", 0), "must be a string", "format");
  bad(craft(R"({"__metadata__":[1]})", 0), "__metadata__ must be an object", "__metadata__");
  // Empty tensors may share an offset with others; header padding is allowed.
  CHECK(parse_str(craft(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}   )",
                        1))
            .tensors.size() == 2);
}

TEST_CASE("errors opening files name the file") {
  sg_test::scratch_dir dir;
  SG_CHECK_ERROR(safetensors_file(dir / "missing.safetensors"), "cannot open", "missing.safetensors", "");
  sg_test::write_bytes(dir / "empty.safetensors", "");
  SG_CHECK_ERROR(safetensors_file(dir / "empty.safetensors"), "at least 8 bytes", "empty.safetensors", "");
  const std::string good = sg_test::read_bytes(fixture("safetensors/mixed.safetensors"));
  sg_test::write_bytes(dir / "trunc.safetensors", good.substr(0, good.size() - 3));
  SG_CHECK_ERROR(safetensors_file(dir / "trunc.safetensors"), "truncated file", "trunc.safetensors", "");
  SG_CHECK_ERROR(checkpoint::open(dir.path), "no model.safetensors", "sg_io_", "");
}

TEST_CASE("bad index files") {
  sg_test::scratch_dir dir;
  const auto src = fixture("safetensors/sharded");
  for (auto& e : std::filesystem::directory_iterator(src))
    if (e.path().extension() == ".safetensors") std::filesystem::copy_file(e.path(), dir / e.path().filename().string());
  const auto idx = dir / "model.safetensors.index.json";
  auto with_index = [&](const std::string& text) {
    sg_test::write_bytes(idx, text);
    return checkpoint::open(dir.path);
  };
  const std::string s1 = "\"model-00001-of-00002.safetensors\"";
  CHECK(with_index(R"({"metadata":{"total_size":1},"weight_map":{"model.norm.weight":)" + s1 + "}}").size() == 1);
  SG_CHECK_ERROR(with_index("{\"weight_map\":"), "invalid JSON", "model.safetensors.index.json", "");
  SG_CHECK_ERROR(with_index("[]"), "JSON object", "index.json", "");
  SG_CHECK_ERROR(with_index(R"({"metadata":{}})"), "weight_map", "index.json", "weight_map");
  SG_CHECK_ERROR(with_index(R"({"weight_map":{}})"), "empty", "index.json", "weight_map");
  SG_CHECK_ERROR(with_index(R"({"weight_map":{"x":3}})"), "shard file name", "index.json", "x");
  SG_CHECK_ERROR(with_index(R"({"weight_map":{"x":"nope.safetensors"}})"), "does not exist", "index.json", "x");
  SG_CHECK_ERROR(with_index(R"({"weight_map":{"x":"../mixed.safetensors"}})"), "plain file name", "index.json", "x");
  SG_CHECK_ERROR(with_index(R"({"weight_map":{"x":"/etc/passwd"}})"), "plain file name", "index.json", "x");
  SG_CHECK_ERROR(with_index(R"({"weight_map":{"lm_head.weight":)" + s1 + "}}"), "does not hold it", "index.json",
                 "lm_head.weight");
  SG_CHECK_ERROR(with_index(R"({"weight_map":{"a":)" + s1 + R"(,"a":)" + s1 + "}}"), "duplicate key", "index.json", "a");
  SG_CHECK_ERROR(with_index(R"({"metadata":{"total_size":"x"},"weight_map":{"a":)" + s1 + "}}"), "total_size",
                 "index.json", "metadata.total_size");
  sg_test::write_bytes(dir / "bad.safetensors", "12345678");
  SG_CHECK_ERROR(with_index(R"({"weight_map":{"a":"bad.safetensors"}})"), "exceeds the limit", "bad.safetensors", "");
}

TEST_CASE("fuzz: random byte flips and truncations only ever throw staticgrad::error") {
  const std::string good = sg_test::read_bytes(fixture("safetensors/mixed.safetensors"));
  std::mt19937_64 rng(20261130);
  int rejected = 0, accepted = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string s = good;
    const int mode = iter % 4;
    if (mode == 3) {
      s.resize(rng() % (s.size() + 1));
    } else {
      const int flips = 1 + static_cast<int>(rng() % 4);
      // Bias flips toward the header, where they matter.
      const std::size_t span = (iter % 2) ? s.size() : std::min<std::size_t>(s.size(), 8 + 400);
      for (int k = 0; k < flips; ++k) s[rng() % span] = static_cast<char>(rng() & 0xff);
    }
    try {
      auto p = parse_str(s);
      double sink = 0;  // touch every byte of every tensor, like a loader would
      for (const auto& t : p.tensors)
        if (is_float_dtype(t.dtype))
          for (float x : to_f32(t)) sink += x;
        else
          for (auto x : to_i64(t)) sink += double(x);
      (void)sink;
      ++accepted;
    } catch (const staticgrad::error&) {
      ++rejected;
    } catch (const std::exception& e) {
      FAIL("non-staticgrad exception: " << e.what());
    }
  }
  MESSAGE("fuzz: " << accepted << " accepted, " << rejected << " rejected");
  CHECK(rejected > 0);
  CHECK(accepted > 0);
}

// ---- bounded inputs and the format's layout (issue: fuzzed, sanitized) ------

namespace {
// A valid file from the writer whose header needs padding (its JSON length is
// not a multiple of 8), with the index of the first padding byte.
std::pair<std::string, std::size_t> padded_file(const sg_test::scratch_dir& dir) {
  std::vector<float> a = {1.f, 2.f, 3.f};
  std::vector<bf16> b = {bf16(4.f)};
  for (std::string name = "w"; name.size() < 16; name += "x") {
    const auto path = dir / "padded.safetensors";
    write_safetensors(path, {f32_tensor(name, {3}, a), bf16_tensor("b", {1}, b)});
    std::string raw = sg_test::read_bytes(path);
    std::uint64_t n;
    std::memcpy(&n, raw.data(), 8);
    const std::size_t last = raw.find_last_not_of(' ', 8 + n - 1);
    if (last + 1 < 8 + n) return {raw, last + 1};
  }
  FAIL("no padded header found");
  return {};
}
std::string with_length(std::string raw, std::uint64_t n) {
  for (int i = 0; i < 8; ++i) raw[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return raw;
}
}  // namespace

TEST_CASE("the data starts right after the header: a length into the padding or the data is an error") {
  sg_test::scratch_dir dir;
  const auto [raw, pad_begin] = padded_file(dir);
  std::uint64_t n;
  std::memcpy(&n, raw.data(), 8);
  REQUIRE(parse_str(raw).tensors.size() == 2);
  // Every other length in [pad_begin - 8, n + 8] is refused (mutation check):
  // inside the padding the tensors would shift by the difference.
  int refused = 0;
  for (std::uint64_t m = pad_begin - 8; m <= n + 8; ++m) {
    if (m == n) continue;
    INFO("header length " << m << " instead of " << n);
    CHECK_THROWS_AS(parse_str(with_length(raw, m)), staticgrad::error);
    ++refused;
  }
  CHECK(refused >= 8);
  SG_CHECK_ERROR(parse_str(with_length(raw, n - 1)), "points into the header's padding", "crafted", "");
  SG_CHECK_ERROR(parse_str(with_length(raw, n + 1)), "followed only by space padding", "crafted", "");
  // Padding is spaces, as writers produce it; a newline or NUL there is not.
  for (char c : {'\n', '\t', '\0'}) {
    std::string s = raw;
    s[pad_begin] = c;
    SG_CHECK_ERROR(parse_str(s), "followed only by space padding", "crafted", "");
  }
}

TEST_CASE("tensors cover the data section: holes and trailing bytes are refused") {
  const std::string two = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  SG_CHECK_ERROR(parse_str(craft(two, 12)), "4 unused bytes before", "crafted", "b");
  const std::string late = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  SG_CHECK_ERROR(parse_str(craft(late, 8)), "unused bytes before", "crafted", "a");
  const std::string ok = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  SG_CHECK_ERROR(parse_str(craft(ok, 9)), "the tensors cover 8", "crafted", "");
  SG_CHECK_ERROR(parse_str(craft("{}", 1)), "the tensors cover 0", "crafted", "");
  CHECK(parse_str(craft("{}", 0)).tensors.empty());
}

TEST_CASE("nesting, NUL bytes and ranks are bounded; messages stay short") {
  // The shape nested 100000 deep once overflowed the stack while the error
  // was formatted; now the parser stops at max_json_depth.
  const int deep = 100000;
  const std::string nested = R"({"t":{"dtype":"F32","data_offsets":[0,4],"shape":)" + std::string(deep, '[') +
                             std::string(deep, ']') + "}}";
  SG_CHECK_ERROR(parse_str(craft(nested, 4)), "nested deeper than 128", "crafted", "");
  // 128 levels parse, 129 do not (the stated limit).
  auto levels = [](int k) { return std::string(std::size_t(k), '[') + std::string(std::size_t(k), ']'); };
  CHECK_NOTHROW(parse_json_strict(levels(max_json_depth), "depth.json"));
  SG_CHECK_ERROR(parse_json_strict(levels(max_json_depth + 1), "depth.json"), "nested deeper than 128", "depth.json", "");
  std::string objects;
  for (int i = 0; i < deep; ++i) objects += "{\"a\":";
  SG_CHECK_ERROR(parse_json_strict(objects, "depth.json"), "nested deeper", "depth.json", "");
  SG_CHECK_ERROR(parse_json_bounded(objects, "depth.jsonl", 7), "nested deeper", "depth.jsonl", "(json)");
  // A NUL byte would end nlohmann's input silently.
  const std::string ok = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  SG_CHECK_ERROR(parse_json_strict(std::string("{}\0{\"x\"", 7), "nul.json"), "NUL byte at byte 3", "nul.json", "");
  std::string with_nul = ok;
  with_nul.insert(with_nul.size() - 1, std::string("\0", 1));
  SG_CHECK_ERROR(parse_str(craft(with_nul, 8)), "NUL byte", "crafted", "");
  // Rank limit, and a shape message that does not print 100000 entries.
  std::string shape17 = "[1";
  for (int i = 0; i < 16; ++i) shape17 += ",1";
  SG_CHECK_ERROR(parse_str(craft(R"({"t":{"dtype":"F32","shape":)" + shape17 + R"(],"data_offsets":[0,4]}})", 4)),
                 "17 dimensions, more than the limit of 16", "crafted", "t");
  std::string wide = "[";
  for (int i = 0; i < 15; ++i) wide += "1,";
  wide += "\"x\"]";
  try {
    parse_str(craft(R"({"t":{"dtype":"F32","shape":)" + wide + R"(,"data_offsets":[0,4]}})", 4));
    FAIL("accepted a string in a shape");
  } catch (const staticgrad::error& e) {
    CHECK(std::string(e.what()).find("got a string in [1, 1, 1, 1, 1, 1, 1, 1, ... (16 entries)]") != std::string::npos);
  }
}

TEST_CASE("non-finite values are found and named, in every float dtype") {
  sg_test::scratch_dir dir;
  std::vector<float> f = {1.f, 2.f, NAN, 4.f};
  std::vector<bf16> b = {bf16(1.f), bf16(INFINITY)};
  std::vector<std::uint16_t> h = {0x3c00, 0x3c00, 0xfc00};  // F16 1, 1, -inf
  std::vector<float> fine = {0.f, -0.f, 3.4e38f, 1e-45f};
  const auto path = dir / "nan.safetensors";
  write_safetensors(path, {f32_tensor("f", {4}, f), bf16_tensor("b", {2}, b),
                           {"h", st_dtype::f16, {3}, std::as_bytes(std::span<const std::uint16_t>(h))},
                           f32_tensor("fine", {2, 2}, fine)});
  safetensors_file file(path);
  CHECK(first_non_finite(file.at("f")) == std::optional<std::size_t>(2));
  CHECK(first_non_finite(file.at("b")) == std::optional<std::size_t>(1));
  CHECK(first_non_finite(file.at("h")) == std::optional<std::size_t>(2));
  CHECK(!first_non_finite(file.at("fine")));
  SG_CHECK_ERROR(require_finite(file.at("f")), "non-finite value (NaN or infinity) at element 2 of [4]", "nan.safetensors", "f");
  SG_CHECK_ERROR(require_finite(file.at("h")), "element 2", "nan.safetensors", "h");
  // The checkpoint-wide check names the first bad tensor in name order ("b").
  SG_CHECK_ERROR(checkpoint::open(path).require_finite(), "element 1 of [2]", "nan.safetensors", "b");
  // Mutation check: every NaN/inf position of a finite f32 tensor is caught.
  for (std::size_t i = 0; i < fine.size(); ++i)
    for (float bad : {NAN, INFINITY, -INFINITY}) {
      std::vector<float> v = fine;
      v[i] = bad;
      write_safetensors(path, {f32_tensor("v", {4}, v)});
      CHECK(first_non_finite(safetensors_file(path).at("v")) == std::optional<std::size_t>(i));
    }
}
