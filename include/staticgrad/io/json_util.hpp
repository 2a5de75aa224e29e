#pragma once
// Strict JSON reading for the file-format layer.
//
// Invariants:
//  - Parsing never lets a nlohmann exception escape: every parse failure
//    becomes `staticgrad::error` naming the file.
//  - Duplicate keys in any object are an error (nlohmann would silently keep
//    the last one, which would let a malicious or broken header describe a
//    tensor twice). They are detected with a parse callback that keeps one
//    key set per open object.
//  - Nesting deeper than `max_json_depth` (128) objects/arrays is rejected
//    while parsing (nlohmann's parser is iterative, but copying, dumping or
//    walking a parsed document recurses: the bound keeps every later use of
//    a document safe). Real files nest at most 4 deep.
//  - A NUL byte outside a string is not JSON; nlohmann's lexer would take it
//    as the end of the input and silently ignore the rest, so it is rejected
//    first (inside a string JSON needs it escaped as \u0000).
//  - The typed getters check the JSON type before converting, so a wrong
//    type is reported with the file and the key, never as a nlohmann
//    type_error.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "staticgrad/core/error.hpp"

namespace staticgrad::io {

using json = nlohmann::json;

// Deepest nesting of objects and arrays accepted in any JSON input.
inline constexpr int max_json_depth = 128;

namespace detail {
// Throws unless `text` is free of NUL bytes (see the invariants above).
inline void reject_nul_bytes(std::string_view text, const std::string& file, std::optional<std::size_t> line) {
  const auto p = text.find('\0');
  if (p != std::string_view::npos)
    throw error("invalid JSON: NUL byte at byte " + std::to_string(p + 1) + " (not allowed outside strings, and "
                "inside a string it must be written \\u0000)",
                {file, line ? "(json)" : "", line});
}
// nlohmann reports the depth of an object/array start as the number of
// containers already open; deeper than max_json_depth is refused.
inline void check_depth(int depth, json::parse_event_t ev, const std::string& file, std::optional<std::size_t> line) {
  if ((ev == json::parse_event_t::object_start || ev == json::parse_event_t::array_start) && depth >= max_json_depth)
    throw error("invalid JSON: nested deeper than " + std::to_string(max_json_depth) + " objects/arrays (the limit)",
                {file, line ? "(json)" : "", line});
}
// nlohmann's message starts with "[json.exception.parse_error.101] "; keep the rest.
inline std::string json_what(const json::exception& e) {
  const std::string what = e.what();
  const auto p = what.find("] ");
  return p == std::string::npos ? what : what.substr(p + 2);
}
}  // namespace detail

// Parses `text` as JSON with the depth and NUL checks only (large documents
// such as tokenizer.json, and data lines). `line` is for error context.
inline json parse_json_bounded(std::string_view text, const std::string& file,
                               std::optional<std::size_t> line = std::nullopt) {
  detail::reject_nul_bytes(text, file, line);
  json::parser_callback_t cb = [&](int depth, json::parse_event_t ev, json&) -> bool {
    detail::check_depth(depth, ev, file, line);
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const json::exception& e) {
    throw error("invalid JSON: " + detail::json_what(e), {file, line ? "(json)" : "", line});
  }
}

// Parses `text` as JSON; rejects syntax errors, NUL bytes, nesting deeper
// than max_json_depth and duplicate keys. `file` is used for error context only.
inline json parse_json_strict(std::string_view text, const std::string& file) {
  detail::reject_nul_bytes(text, file, std::nullopt);
  std::vector<std::set<std::string>> keys;  // one set per currently open object
  json::parser_callback_t cb = [&](int depth, json::parse_event_t ev, json& parsed) -> bool {
    detail::check_depth(depth, ev, file, std::nullopt);
    switch (ev) {
      case json::parse_event_t::object_start: keys.emplace_back(); break;
      case json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case json::parse_event_t::key: {
        const std::string& k = parsed.get_ref<const std::string&>();
        if (keys.empty() || !keys.back().insert(k).second)
          throw error("invalid JSON: duplicate key (each key may appear once per object)", {file, k, {}});
        break;
      }
      default: break;
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const json::exception& e) {
    throw error(std::string("invalid JSON: ") + e.what(), {file, {}, {}});
  }
}

// Reads a whole (small) text file. Caps the size so that a wrong path (a
// multi-gigabyte weights file passed as config) fails clearly.
inline std::string read_text_file(const std::filesystem::path& path, std::size_t max_bytes = 256u << 20) {
  const std::string p = path.string();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw error("cannot open: expected a regular file", {p, {}, {}});
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) throw error("cannot read the file size: " + ec.message(), {p, {}, {}});
  if (size > max_bytes)
    throw error("file too large for a JSON file (" + std::to_string(size) + " bytes, at most " +
                    std::to_string(max_bytes) + " expected)",
                {p, {}, {}});
  std::ifstream in(path, std::ios::binary);
  if (!in) throw error("cannot open for reading", {p, {}, {}});
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw error("read error", {p, {}, {}});
  return ss.str();
}

inline json read_json_file(const std::filesystem::path& path) {
  return parse_json_strict(read_text_file(path), path.string());
}

// ---- typed getters: key lookup with type checks and error context ----------

inline const json* find_key(const json& obj, std::string_view key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

inline std::int64_t json_int(const json& v, const std::string& file, const std::string& key) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      throw error("integer out of range", {file, key, {}});
    return static_cast<std::int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<std::int64_t>();
  throw error("expected an integer, got " + std::string(v.type_name()), {file, key, {}});
}

inline double json_number(const json& v, const std::string& file, const std::string& key) {
  if (!v.is_number()) throw error("expected a number, got " + std::string(v.type_name()), {file, key, {}});
  return v.get<double>();
}

inline bool json_bool(const json& v, const std::string& file, const std::string& key) {
  if (!v.is_boolean()) throw error("expected true or false, got " + std::string(v.type_name()), {file, key, {}});
  return v.get<bool>();
}

inline std::string json_string(const json& v, const std::string& file, const std::string& key) {
  if (!v.is_string()) throw error("expected a string, got " + std::string(v.type_name()), {file, key, {}});
  return v.get<std::string>();
}

inline const json& require_key(const json& obj, std::string_view key, const std::string& file) {
  const json* v = find_key(obj, key);
  if (!v) throw error("missing required key", {file, std::string(key), {}});
  return *v;
}

// A positive integer field (sizes, counts).
inline std::int64_t require_positive_int(const json& obj, std::string_view key, const std::string& file) {
  const std::int64_t v = json_int(require_key(obj, key, file), file, std::string(key));
  if (v <= 0) throw error("expected a positive integer, got " + std::to_string(v), {file, std::string(key), {}});
  return v;
}

}  // namespace staticgrad::io
