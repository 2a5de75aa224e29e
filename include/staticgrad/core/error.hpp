#pragma once
// The one error type of staticgrad. Every failure on bad input (a file, a
// tensor, a line of data, a command-line value) throws `staticgrad::error`
// with the context needed to find and fix it: which file, which tensor or
// field, which line, and what was expected.
#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

namespace staticgrad {

struct error_context {
  std::string file;                 // path of the file involved, if any
  std::string tensor;               // tensor, field or value name, if any
  std::optional<std::size_t> line;  // 1-based line number, if any
};

class error : public std::runtime_error {
 public:
  explicit error(std::string what, error_context ctx = {})
      : std::runtime_error(compose(what, ctx)), message_(std::move(what)), ctx_(std::move(ctx)) {}

  const std::string& message() const noexcept { return message_; }
  const error_context& context() const noexcept { return ctx_; }

 private:
  static std::string compose(const std::string& what, const error_context& c) {
    std::string s;
    if (!c.file.empty()) s += c.file;
    if (c.line) s += (s.empty() ? "line " : ":") + std::to_string(*c.line);
    if (!c.tensor.empty()) s += (s.empty() ? "" : ": ") + std::string("'") + c.tensor + "'";
    if (!s.empty()) s += ": ";
    return s + what;
  }
  std::string message_;
  error_context ctx_;
};

// Throws `error` unless `cond` holds. For checks on inputs, never on internal
// invariants (those are asserts).
inline void require(bool cond, const std::string& what, error_context ctx = {}) {
  if (!cond) throw error(what, std::move(ctx));
}

}  // namespace staticgrad
