#pragma once
// safetensors reader: a validated, memory-mapped view of one .safetensors file.
//
// File layout: u64 little-endian N | N bytes of JSON header | data section.
// Header: {name: {"dtype", "shape", "data_offsets": [begin, end)}, "__metadata__": {str: str}};
// offsets are relative to the start of the data section; data is row-major,
// little-endian.
//
// Invariants established by `parse_safetensors` (see docs/formats.md):
//  - file >= 8 bytes; N <= file size - 8 and N <= max_header_bytes (100 MiB);
//  - the header is JSON without duplicate keys, and an object;
//  - each tensor has a known dtype, a shape of non-negative integers whose
//    element count and byte size do not overflow, data_offsets [begin, end)
//    with begin <= end <= data size and end - begin == numel * element size;
//  - no two non-empty tensors overlap;
//  - "__metadata__", if present, is an object of strings.
// Hence every `tensor_view::bytes` lies inside the mapped file. The data may be
// unaligned (N need not be a multiple of 8), so conversions use memcpy.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "staticgrad/core/dtype.hpp"
#include "staticgrad/core/error.hpp"
#include "staticgrad/io/json_util.hpp"
#include "staticgrad/io/mapped_file.hpp"

namespace staticgrad::io {

// Element types of safetensors that staticgrad reads. Names as in the format.
enum class st_dtype : std::uint8_t { bf16, f16, f32, i32, i64, u8 };

constexpr std::size_t st_dtype_size(st_dtype d) {
  switch (d) {
    case st_dtype::bf16: case st_dtype::f16: return 2;
    case st_dtype::f32: case st_dtype::i32: return 4;
    case st_dtype::i64: return 8;
    case st_dtype::u8: return 1;
  }
  return 0;
}

constexpr std::string_view st_dtype_name(st_dtype d) {
  switch (d) {
    case st_dtype::bf16: return "BF16";
    case st_dtype::f16: return "F16";
    case st_dtype::f32: return "F32";
    case st_dtype::i32: return "I32";
    case st_dtype::i64: return "I64";
    case st_dtype::u8: return "U8";
  }
  return "?";
}

inline std::optional<st_dtype> st_dtype_from_name(std::string_view s) {
  for (st_dtype d : {st_dtype::bf16, st_dtype::f16, st_dtype::f32, st_dtype::i32, st_dtype::i64, st_dtype::u8})
    if (s == st_dtype_name(d)) return d;
  return std::nullopt;
}

// The core dtype of staticgrad for a file dtype (u8 has none).
inline std::optional<dtype> to_core_dtype(st_dtype d) {
  switch (d) {
    case st_dtype::bf16: return dtype::bf16;
    case st_dtype::f16: return dtype::f16;
    case st_dtype::f32: return dtype::f32;
    case st_dtype::i32: return dtype::i32;
    case st_dtype::i64: return dtype::i64;
    case st_dtype::u8: return std::nullopt;
  }
  return std::nullopt;
}

// One tensor of a file: a view; the bytes belong to the owning file object.
struct tensor_view {
  std::string name;
  st_dtype dtype = st_dtype::f32;
  std::vector<std::int64_t> shape;  // empty = scalar (one element)
  std::span<const std::byte> bytes;  // exactly numel() * element size bytes
  std::string file;                  // the file it lives in (for errors)

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;  // cannot overflow: checked at parse time
    return n;
  }
  std::string shape_string() const {
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
  }
};

// Upper bound on the JSON header: real checkpoints have headers of a few
// hundred KB; the cap keeps a corrupt length from allocating gigabytes.
inline constexpr std::uint64_t max_header_bytes = 100ull << 20;

struct parsed_safetensors {
  std::vector<tensor_view> tensors;  // sorted by data offset
  std::map<std::string, std::string> metadata;
};

// Validates a whole safetensors file held in memory and returns views into it.
// `file` names the file in errors. Throws `staticgrad::error` on any defect.
inline parsed_safetensors parse_safetensors(std::span<const std::byte> all, const std::string& file) {
  if (all.size() < 8)
    throw error("truncated file: expected at least 8 bytes (the header length), got " + std::to_string(all.size()),
                {file, {}, {}});
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<std::uint8_t>(all[static_cast<std::size_t>(i)]);
  if (n > max_header_bytes)
    throw error("header length " + std::to_string(n) + " exceeds the limit of " + std::to_string(max_header_bytes) +
                    " bytes (corrupt length field?)",
                {file, {}, {}});
  if (n > all.size() - 8)
    throw error("header length " + std::to_string(n) + " runs past the end of the file (" +
                    std::to_string(all.size()) + " bytes): truncated file?",
                {file, {}, {}});
  const std::string_view text(reinterpret_cast<const char*>(all.data() + 8), static_cast<std::size_t>(n));
  const json header = parse_json_strict(text, file);
  if (!header.is_object()) throw error("the header must be a JSON object, got " + std::string(header.type_name()), {file, {}, {}});

  const std::span<const std::byte> data = all.subspan(8 + static_cast<std::size_t>(n));
  parsed_safetensors out;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw error("__metadata__ must be an object of strings", {file, name, {}});
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          throw error("__metadata__ value must be a string, got " + std::string(m.value().type_name()), {file, m.key(), {}});
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const error_context ctx{file, name, {}};
    if (!v.is_object()) throw error("tensor entry must be an object with dtype, shape, data_offsets", ctx);
    // dtype
    const json* jd = find_key(v, "dtype");
    if (!jd || !jd->is_string()) throw error("missing or non-string \"dtype\"", ctx);
    const auto dt = st_dtype_from_name(jd->get<std::string>());
    if (!dt)
      throw error("unsupported dtype \"" + jd->get<std::string>() + "\" (expected BF16, F16, F32, I32, I64 or U8)", ctx);
    // shape
    const json* js = find_key(v, "shape");
    if (!js || !js->is_array()) throw error("missing \"shape\" or not an array", ctx);
    tensor_view t;
    t.name = name;
    t.dtype = *dt;
    t.file = file;
    std::uint64_t numel = 1;
    for (const json& d : *js) {
      if (!d.is_number_unsigned())
        throw error("shape entries must be non-negative integers, got " + d.dump(), ctx);
      const std::uint64_t u = d.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(INT64_MAX) || __builtin_mul_overflow(numel, u, &numel))
        throw error("shape " + js->dump() + " overflows the element count", ctx);
      t.shape.push_back(static_cast<std::int64_t>(u));
    }
    std::uint64_t nbytes = 0;
    if (numel > static_cast<std::uint64_t>(INT64_MAX) || __builtin_mul_overflow(numel, st_dtype_size(*dt), &nbytes))
      throw error("shape " + js->dump() + " overflows the byte size", ctx);
    // data_offsets
    const json* jo = find_key(v, "data_offsets");
    if (!jo || !jo->is_array() || jo->size() != 2 || !(*jo)[0].is_number_unsigned() || !(*jo)[1].is_number_unsigned())
      throw error("\"data_offsets\" must be [begin, end] with non-negative integers", ctx);
    const std::uint64_t b = (*jo)[0].get<std::uint64_t>(), e = (*jo)[1].get<std::uint64_t>();
    if (b > e) throw error("data_offsets [" + std::to_string(b) + ", " + std::to_string(e) + ") has begin > end", ctx);
    if (e > data.size())
      throw error("data_offsets [" + std::to_string(b) + ", " + std::to_string(e) + ") run past the data section (" +
                      std::to_string(data.size()) + " bytes): truncated file?",
                  ctx);
    if (e - b != nbytes)
      throw error("size mismatch: dtype " + std::string(st_dtype_name(*dt)) + " and shape " + js->dump() + " need " +
                      std::to_string(nbytes) + " bytes, data_offsets give " + std::to_string(e - b),
                  ctx);
    t.bytes = data.subspan(static_cast<std::size_t>(b), static_cast<std::size_t>(e - b));
    out.tensors.push_back(std::move(t));
  }
  // Overlap check on the sorted ranges (empty tensors occupy nothing).
  auto begin_of = [&](const tensor_view& t) { return t.bytes.data() - data.data(); };
  std::sort(out.tensors.begin(), out.tensors.end(), [&](const tensor_view& a, const tensor_view& b) {
    return begin_of(a) != begin_of(b) ? begin_of(a) < begin_of(b) : a.bytes.size() < b.bytes.size();
  });
  const tensor_view* prev = nullptr;
  for (const auto& t : out.tensors) {
    if (t.bytes.empty()) continue;
    if (prev && begin_of(t) < begin_of(*prev) + static_cast<std::ptrdiff_t>(prev->bytes.size()))
      throw error("data range overlaps the range of tensor '" + prev->name + "'", {file, t.name, {}});
    prev = &t;
  }
  return out;
}

// A validated safetensors file, memory-mapped read-only.
class safetensors_file {
 public:
  explicit safetensors_file(const std::filesystem::path& path) : map_(path) {
    auto parsed = parse_safetensors(map_.bytes(), map_.path());
    tensors_ = std::move(parsed.tensors);
    metadata_ = std::move(parsed.metadata);
    for (std::size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
  }
  const std::string& path() const noexcept { return map_.path(); }
  const std::vector<tensor_view>& tensors() const noexcept { return tensors_; }  // in data order
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
  const tensor_view* find(std::string_view name) const {
    auto it = index_.find(std::string(name));
    return it == index_.end() ? nullptr : &tensors_[it->second];
  }
  const tensor_view& at(std::string_view name) const {
    if (auto* t = find(name)) return *t;
    throw error("tensor not found in the file", {path(), std::string(name), {}});
  }

 private:
  mapped_file map_;
  std::vector<tensor_view> tensors_;
  std::map<std::string, std::string> metadata_;
  std::unordered_map<std::string, std::size_t> index_;
};

// ---- conversions ------------------------------------------------------------

namespace detail {
template <class T>
inline T load_le(const std::byte* p) {  // the format and all supported hosts are little-endian
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}
}  // namespace detail

// Converts any supported dtype to float into `out` (size must equal numel).
// Integer dtypes convert by value (exact up to 2^24).
inline void to_f32(const tensor_view& t, std::span<float> out) {
  const auto n = static_cast<std::size_t>(t.numel());
  if (out.size() != n)
    throw error("destination holds " + std::to_string(out.size()) + " floats, tensor " + t.shape_string() + " has " +
                    std::to_string(n),
                {t.file, t.name, {}});
  const std::byte* p = t.bytes.data();
  switch (t.dtype) {
    case st_dtype::f32: if (n) std::memcpy(out.data(), p, n * 4); break;
    case st_dtype::bf16: for (std::size_t i = 0; i < n; ++i) out[i] = bf16::to_float(detail::load_le<std::uint16_t>(p + 2 * i)); break;
    case st_dtype::f16: for (std::size_t i = 0; i < n; ++i) out[i] = half_to_float(detail::load_le<std::uint16_t>(p + 2 * i)); break;
    case st_dtype::i32: for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<float>(detail::load_le<std::int32_t>(p + 4 * i)); break;
    case st_dtype::i64: for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<float>(detail::load_le<std::int64_t>(p + 8 * i)); break;
    case st_dtype::u8: for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<float>(static_cast<std::uint8_t>(p[i])); break;
  }
}

inline std::vector<float> to_f32(const tensor_view& t) {
  std::vector<float> v(static_cast<std::size_t>(t.numel()));
  to_f32(t, v);
  return v;
}

// Converts to bf16 (round to nearest even, as torch's .to(torch.bfloat16)).
// BF16 is copied bit-exactly; others go through float.
inline void to_bf16(const tensor_view& t, std::span<bf16> out) {
  const auto n = static_cast<std::size_t>(t.numel());
  if (out.size() != n)
    throw error("destination holds " + std::to_string(out.size()) + " bf16 values, tensor " + t.shape_string() +
                    " has " + std::to_string(n),
                {t.file, t.name, {}});
  if (t.dtype == st_dtype::bf16) {
    if (n) std::memcpy(out.data(), t.bytes.data(), n * 2);
    return;
  }
  std::vector<float> f = to_f32(t);
  for (std::size_t i = 0; i < n; ++i) out[i] = bf16(f[i]);
}

inline std::vector<bf16> to_bf16(const tensor_view& t) {
  std::vector<bf16> v(static_cast<std::size_t>(t.numel()));
  to_bf16(t, v);
  return v;
}

// Throws unless the tensor has exactly `shape` (for model loading: a clear
// message naming the tensor instead of a silent misread).
inline void require_shape(const tensor_view& t, std::span<const std::int64_t> shape) {
  if (!std::equal(t.shape.begin(), t.shape.end(), shape.begin(), shape.end())) {
    tensor_view want;
    want.shape.assign(shape.begin(), shape.end());
    throw error("shape mismatch: expected " + want.shape_string() + ", the file has " + t.shape_string(),
                {t.file, t.name, {}});
  }
}
inline void require_shape(const tensor_view& t, std::initializer_list<std::int64_t> shape) {
  require_shape(t, std::span<const std::int64_t>(shape.begin(), shape.size()));
}

}  // namespace staticgrad::io
