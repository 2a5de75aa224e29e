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
//  - the header starts with '{' and ends with '}' followed only by spaces
//    (the padding writers add so the data is 8-byte aligned; N counts it);
//  - the header is JSON without duplicate keys, nested at most
//    max_json_depth deep, and an object;
//  - each tensor has a known dtype, a shape of non-negative integers whose
//    element count and byte size do not overflow, data_offsets [begin, end)
//    with begin <= end <= data size and end - begin == numel * element size;
//  - no two non-empty tensors overlap, and together they cover the data
//    section exactly (no hole, nothing after the last one): the data starts
//    right after the header, so a length N that points into the header's
//    padding (or past it) cannot shift every tensor silently;
//  - "__metadata__", if present, is an object of strings.
// Conversions keep the declared dtype's meaning: to_f32/to_bf16 read only
// floating-point tensors, to_i64 only integer ones; anything else is an
// error naming the tensor, never a conversion by value.
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

// Most dimensions a tensor may have (real tensors have at most 4 or 5).
inline constexpr std::size_t max_tensor_rank = 16;

namespace detail {
// The header must be '{' ... '}' then spaces only: the format pads with
// 0x20, and anything else there (a NUL, a newline, data bytes) means the
// length field N is wrong.
inline void check_header_layout(std::string_view text, const std::string& file) {
  const auto last = text.find_last_not_of(' ');
  if (text.empty() || text.front() != '{' || last == std::string_view::npos || text[last] != '}')
    throw error("the header must be a JSON object starting with '{' and ending with '}' followed only by space "
                "padding (is the header length at the start of the file right?)",
                {file, {}, {}});
}
// A shape for messages: at most 8 entries, no recursion into nested values.
inline std::string shape_text(const json& shape) {
  std::string s = "[";
  std::size_t i = 0;
  for (const json& d : shape) {
    if (i) s += ", ";
    if (i == 8) { s += "... (" + std::to_string(shape.size()) + " entries)"; break; }
    s += d.is_number_unsigned() ? std::to_string(d.get<std::uint64_t>())
         : d.is_number_integer() ? std::to_string(d.get<std::int64_t>())
                                 : std::string("<") + d.type_name() + ">";
    ++i;
  }
  return s + "]";
}
}  // namespace detail

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
  detail::check_header_layout(text, file);
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
    if (js->size() > max_tensor_rank)
      throw error("shape has " + std::to_string(js->size()) + " dimensions, more than the limit of " +
                      std::to_string(max_tensor_rank),
                  ctx);
    for (const json& d : *js) {
      if (!d.is_number_unsigned())
        throw error("shape entries must be non-negative integers, got a " + std::string(d.type_name()) + " in " +
                        detail::shape_text(*js),
                    ctx);
      const std::uint64_t u = d.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(INT64_MAX) || __builtin_mul_overflow(numel, u, &numel))
        throw error("shape " + detail::shape_text(*js) + " overflows the element count", ctx);
      t.shape.push_back(static_cast<std::int64_t>(u));
    }
    std::uint64_t nbytes = 0;
    if (numel > static_cast<std::uint64_t>(INT64_MAX) || __builtin_mul_overflow(numel, st_dtype_size(*dt), &nbytes))
      throw error("shape " + detail::shape_text(*js) + " overflows the byte size", ctx);
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
      throw error("size mismatch: dtype " + std::string(st_dtype_name(*dt)) + " and shape " + detail::shape_text(*js) + " need " +
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
  std::ptrdiff_t covered = 0;  // end of the last non-empty tensor
  for (const auto& t : out.tensors) {
    if (t.bytes.empty()) continue;
    if (prev && begin_of(t) < covered)
      throw error("data range overlaps the range of tensor '" + prev->name + "'", {file, t.name, {}});
    if (begin_of(t) > covered)
      throw error(std::to_string(begin_of(t) - covered) + " unused bytes before this tensor's data_offsets begin " +
                      std::to_string(begin_of(t)) + " (tensors must cover the data section without holes)",
                  {file, t.name, {}});
    covered = begin_of(t) + static_cast<std::ptrdiff_t>(t.bytes.size());
    prev = &t;
  }
  if (static_cast<std::size_t>(covered) != data.size())
    throw error("the data section holds " + std::to_string(data.size()) + " bytes but the tensors cover " +
                    std::to_string(covered) +
                    " (the header length points into the header's padding, or the file has trailing bytes)",
                {file, {}, {}});
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

constexpr bool is_float_dtype(st_dtype d) { return d == st_dtype::f32 || d == st_dtype::bf16 || d == st_dtype::f16; }

namespace detail {
inline void require_float_dtype(const tensor_view& t) {
  if (!is_float_dtype(t.dtype))
    throw error("expected a floating-point tensor (F32, BF16 or F16), the file declares " +
                    std::string(st_dtype_name(t.dtype)) + " (integers are not converted to weights)",
                {t.file, t.name, {}});
}
}  // namespace detail

// Converts a floating-point tensor (F32, BF16, F16) to float into `out`
// (size must equal numel). An integer dtype is an error (see the invariants).
inline void to_f32(const tensor_view& t, std::span<float> out) {
  detail::require_float_dtype(t);
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
    default: break;  // refused above
  }
}

inline std::vector<float> to_f32(const tensor_view& t) {
  detail::require_float_dtype(t);
  std::vector<float> v(static_cast<std::size_t>(t.numel()));
  to_f32(t, v);
  return v;
}

// The values of an integer tensor (I32, I64, U8), exactly. A floating-point
// dtype is an error.
inline std::vector<std::int64_t> to_i64(const tensor_view& t) {
  if (is_float_dtype(t.dtype))
    throw error("expected an integer tensor (I32, I64 or U8), the file declares " + std::string(st_dtype_name(t.dtype)),
                {t.file, t.name, {}});
  const auto n = static_cast<std::size_t>(t.numel());
  std::vector<std::int64_t> v(n);
  const std::byte* p = t.bytes.data();
  for (std::size_t i = 0; i < n; ++i)
    v[i] = t.dtype == st_dtype::i32 ? detail::load_le<std::int32_t>(p + 4 * i)
         : t.dtype == st_dtype::i64 ? detail::load_le<std::int64_t>(p + 8 * i)
                                    : std::int64_t(static_cast<std::uint8_t>(p[i]));
  return v;
}

// Index of the first NaN or infinity of a floating-point tensor, if any:
// one pass over the bytes, no conversion of the whole tensor.
inline std::optional<std::size_t> first_non_finite(const tensor_view& t) {
  detail::require_float_dtype(t);
  const auto n = static_cast<std::size_t>(t.numel());
  const std::byte* p = t.bytes.data();
  for (std::size_t i = 0; i < n; ++i) {
    bool bad;
    if (t.dtype == st_dtype::f32) bad = (detail::load_le<std::uint32_t>(p + 4 * i) & 0x7f800000u) == 0x7f800000u;
    else if (t.dtype == st_dtype::bf16) bad = (detail::load_le<std::uint16_t>(p + 2 * i) & 0x7f80u) == 0x7f80u;
    else bad = (detail::load_le<std::uint16_t>(p + 2 * i) & 0x7c00u) == 0x7c00u;  // f16
    if (bad) return i;
  }
  return std::nullopt;
}

// Throws unless every value of a floating-point tensor is finite; the error
// names the tensor and the first bad element.
inline void require_finite(const tensor_view& t) {
  if (const auto i = first_non_finite(t))
    throw error("non-finite value (NaN or infinity) at element " + std::to_string(*i) + " of " + t.shape_string(),
                {t.file, t.name, {}});
}

// Converts to bf16 (round to nearest even, as torch's .to(torch.bfloat16)).
// BF16 is copied bit-exactly; others go through float.
inline void to_bf16(const tensor_view& t, std::span<bf16> out) {
  const auto n = static_cast<std::size_t>(t.numel());
  if (out.size() != n)
    throw error("destination holds " + std::to_string(out.size()) + " bf16 values, tensor " + t.shape_string() +
                    " has " + std::to_string(n),
                {t.file, t.name, {}});
  detail::require_float_dtype(t);
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
