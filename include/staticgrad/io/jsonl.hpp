#pragma once
// Streaming JSON Lines: one line in memory at a time, so files larger than
// memory stream. Line numbers are 1-based and count every line, blank ones
// included, so errors point at the line an editor shows.
//
// Invariants: a trailing '\r' (CR LF files) and a UTF-8 byte order mark on the
// first line are removed; a parse error becomes staticgrad::error naming the
// file, the line and the field "(json)". A line longer than `max_line_bytes`
// (default 64 MiB, far above any real example) is refused while it is read,
// so a file without newlines never reaches an unbounded allocation. A NUL
// byte or nesting past max_json_depth is a parse error (json_util.hpp),
// never a silently shortened line.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "staticgrad/core/error.hpp"
#include "staticgrad/io/json_util.hpp"

namespace staticgrad::io {

inline constexpr std::size_t default_max_line_bytes = std::size_t(64) << 20;

class line_reader {
 public:
  // `path` "-" reads standard input.
  explicit line_reader(std::string path, std::size_t max_line_bytes = default_max_line_bytes)
      : path_(std::move(path)), max_line_bytes_(max_line_bytes) {
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
    if (!read_bounded_line(line)) {
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
  // std::getline without its unbounded growth: false at end of input with
  // nothing read; throws once a line passes max_line_bytes_.
  bool read_bounded_line(std::string& line) {
    line.clear();
    std::streambuf* sb = in_->rdbuf();
    for (;;) {
      const int c = sb->sbumpc();
      if (c == std::char_traits<char>::eof()) {
        if (line.empty()) {
          in_->setstate(std::ios::eofbit);
          return false;
        }
        return true;
      }
      if (c == '\n') return true;
      if (line.size() == max_line_bytes_)
        throw error("line longer than " + std::to_string(max_line_bytes_) + " bytes (the limit per JSONL line)",
                    {path_, "", line_no_ + 1});
      line.push_back(static_cast<char>(c));
    }
  }

  std::string path_;
  std::size_t max_line_bytes_;
  std::unique_ptr<std::ifstream> file_;
  std::istream* in_ = nullptr;
  std::size_t line_no_ = 0;
};

inline bool is_blank(const std::string& line) {
  return line.find_first_not_of(" \t\r\n") == std::string::npos;
}

inline nlohmann::json parse_json_line(const std::string& line, const std::string& file, std::size_t line_no) {
  return parse_json_bounded(line, file, line_no);
}

}  // namespace staticgrad::io
