#pragma once
// Streaming JSON Lines: one line in memory at a time, so files larger than
// memory stream. Line numbers are 1-based and count every line, blank ones
// included, so errors point at the line an editor shows.
//
// Invariants: a trailing '\r' (CR LF files) and a UTF-8 byte order mark on the
// first line are removed; a parse error becomes staticgrad::error naming the
// file, the line and the field "(json)".
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "staticgrad/core/error.hpp"

namespace staticgrad::io {

class line_reader {
 public:
  // `path` "-" reads standard input.
  explicit line_reader(std::string path) : path_(std::move(path)) {
    if (path_ == "-") {
      in_ = &std::cin;
    } else {
      std::error_code ec;
      require(!std::filesystem::is_directory(path_, ec), "is a directory, not a JSONL file", {path_, "", {}});
      file_ = std::make_unique<std::ifstream>(path_, std::ios::binary);
      require(bool(*file_), "cannot open file", {path_, "", {}});
      in_ = file_.get();
    }
  }

  // Reads the next line into `line`; false at end of file.
  bool next(std::string& line) {
    if (!std::getline(*in_, line)) {
      require(!in_->bad(), "read error", {path_, "", line_no_ + 1});
      return false;
    }
    ++line_no_;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line_no_ == 1 && line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);
    return true;
  }

  std::size_t line_no() const noexcept { return line_no_; }
  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
  std::unique_ptr<std::ifstream> file_;
  std::istream* in_ = nullptr;
  std::size_t line_no_ = 0;
};

inline bool is_blank(const std::string& line) {
  return line.find_first_not_of(" \t\r\n") == std::string::npos;
}

inline nlohmann::json parse_json_line(const std::string& line, const std::string& file, std::size_t line_no) {
  try {
    return nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    // nlohmann's message starts with "[json.exception.parse_error.101] "; keep the rest.
    std::string what = e.what();
    auto p = what.find("] ");
    throw error("invalid JSON: " + (p == std::string::npos ? what : what.substr(p + 2)), {file, "(json)", line_no});
  }
}

}  // namespace staticgrad::io
