#pragma once
// Whole-file reads, with transparent gzip. The tokenizer.json vendored in
// data/qwen2-tokenizer/ is stored gzip-compressed (5.4 MB -> ~1.6 MB in git);
// zlib (Debian zlib1g-dev) is on every system that has a compiler, so it costs
// users nothing, where zstd would add a library for a few hundred KB.
// A file is gunzipped when it starts with the gzip magic bytes 1F 8B, whatever
// its name.
#include <cstdio>
#include <fstream>
#include <string>

#include <zlib.h>

#include "staticgrad/core/error.hpp"

namespace staticgrad::io {

inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  require(bool(f), "cannot open file", {path, "", {}});
  std::string s;
  f.seekg(0, std::ios::end);
  auto n = f.tellg();
  require(n >= 0, "cannot read file", {path, "", {}});
  s.resize(static_cast<std::size_t>(n));
  f.seekg(0);
  f.read(s.data(), n);
  require(bool(f), "cannot read file", {path, "", {}});
  return s;
}

inline bool is_gzip(const std::string& bytes) {
  return bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0x1F &&
         static_cast<unsigned char>(bytes[1]) == 0x8B;
}

// Inflates a gzip stream (one or more members).
inline std::string gunzip(const std::string& in, const std::string& path_for_errors = {}) {
  z_stream z{};
  // 15 + 32: zlib window of 2^15 bytes, with automatic gzip/zlib header detection.
  require(inflateInit2(&z, 15 + 32) == Z_OK, "zlib: inflateInit2 failed", {path_for_errors, "", {}});
  std::string out;
  out.resize(in.size() * 4 + 1024);
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  int rc = Z_OK;
  for (;;) {
    if (z.total_out >= out.size()) out.resize(out.size() * 2);
    z.next_out = reinterpret_cast<Bytef*>(out.data() + z.total_out);
    z.avail_out = static_cast<uInt>(out.size() - z.total_out);
    rc = inflate(&z, Z_NO_FLUSH);
    if (rc == Z_STREAM_END) {
      if (z.avail_in == 0) break;
      // Another gzip member follows: keep going.
      uLong done = z.total_out;
      inflateReset(&z);
      z.total_out = done;
      continue;
    }
    if (rc != Z_OK && rc != Z_BUF_ERROR) break;
    if (rc == Z_BUF_ERROR && z.avail_in == 0) break;  // truncated input
  }
  out.resize(z.total_out);
  inflateEnd(&z);
  require(rc == Z_STREAM_END, "corrupt or truncated gzip data", {path_for_errors, "", {}});
  return out;
}

// Reads `path`, gunzipping it when it is gzip data.
inline std::string read_file_maybe_gzip(const std::string& path) {
  std::string s = read_file(path);
  return is_gzip(s) ? gunzip(s, path) : s;
}

}  // namespace staticgrad::io
