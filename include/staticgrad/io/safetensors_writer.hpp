#pragma once
// safetensors writer, byte-compatible with the Python `safetensors` library:
// the JSON header is padded with spaces to a multiple of 8 bytes, so the data
// section starts 8-byte aligned; tensors are laid out by decreasing element
// size, then by name, so every tensor is aligned to its element size.
//
// Invariants:
//  - Names are unique, non-empty and not "__metadata__"; each tensor's byte
//    count equals numel * element size. Violations throw before anything is
//    written.
//  - The file is written through `write_file_atomic` (temp file in the same
//    directory, fsync, rename): an existing file is never left half-written.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "staticgrad/io/atomic_file.hpp"
#include "staticgrad/io/safetensors.hpp"

namespace staticgrad::io {

// A tensor to write; `bytes` must stay alive until write_safetensors returns.
struct tensor_data {
  std::string name;
  st_dtype dtype = st_dtype::f32;
  std::vector<std::int64_t> shape;
  std::span<const std::byte> bytes;
};

inline tensor_data f32_tensor(std::string name, std::vector<std::int64_t> shape, std::span<const float> v) {
  return {std::move(name), st_dtype::f32, std::move(shape), std::as_bytes(v)};
}
inline tensor_data bf16_tensor(std::string name, std::vector<std::int64_t> shape, std::span<const bf16> v) {
  return {std::move(name), st_dtype::bf16, std::move(shape), std::as_bytes(v)};
}
inline tensor_data i64_tensor(std::string name, std::vector<std::int64_t> shape, std::span<const std::int64_t> v) {
  return {std::move(name), st_dtype::i64, std::move(shape), std::as_bytes(v)};
}

// Builds the complete header block (8-byte length + padded JSON) for tensors
// already in file order. Exposed for tests that craft files.
inline std::string safetensors_header(const std::vector<tensor_data>& tensors,
                                      const std::map<std::string, std::string>& metadata) {
  std::string h = "{";
  bool first = true;
  if (!metadata.empty()) {
    h += "\"__metadata__\":" + json(metadata).dump();
    first = false;
  }
  std::uint64_t off = 0;
  for (const auto& t : tensors) {
    json e;
    e["dtype"] = std::string(st_dtype_name(t.dtype));
    e["shape"] = t.shape;
    e["data_offsets"] = {off, off + t.bytes.size()};
    off += t.bytes.size();
    h += (first ? "" : ",") + json(t.name).dump() + ":" + e.dump();
    first = false;
  }
  h += "}";
  h.append((8 - h.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  const std::uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + h;
}

// Writes `tensors` (any order; they are sorted for alignment) and optional
// string metadata (PEFT and transformers write {"format": "pt"}).
inline void write_safetensors(const std::filesystem::path& path, std::vector<tensor_data> tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
  const std::string file = path.string();
  std::set<std::string> seen;
  for (const auto& t : tensors) {
    const error_context ctx{file, t.name, {}};
    if (t.name.empty() || t.name == "__metadata__") throw error("invalid tensor name", ctx);
    if (!seen.insert(t.name).second) throw error("duplicate tensor name", ctx);
    std::uint64_t n = 1;
    for (auto d : t.shape) {
      if (d < 0 || __builtin_mul_overflow(n, static_cast<std::uint64_t>(d), &n))
        throw error("invalid shape (negative or overflowing)", ctx);
    }
    if (n * st_dtype_size(t.dtype) != t.bytes.size())
      throw error("byte count " + std::to_string(t.bytes.size()) + " does not match the shape and dtype (" +
                      std::to_string(n * st_dtype_size(t.dtype)) + " expected)",
                  ctx);
  }
  std::sort(tensors.begin(), tensors.end(), [](const tensor_data& a, const tensor_data& b) {
    const auto sa = st_dtype_size(a.dtype), sb = st_dtype_size(b.dtype);
    return sa != sb ? sa > sb : a.name < b.name;
  });
  const std::string header = safetensors_header(tensors, metadata);
  write_file_atomic(path, [&](atomic_sink& s) {
    s.write(header);
    for (const auto& t : tensors) s.write(t.bytes);
  });
}

}  // namespace staticgrad::io
