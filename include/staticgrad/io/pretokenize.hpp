#pragma once
// Hand-written scanner for the Qwen2 pre-tokenizer regex
//
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}
//   | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//
// with Oniguruma's leftmost-first alternation and backtracking, as Hugging
// Face `tokenizers` runs it (Split, behavior Isolated). Every character is
// matched by some alternative, so the pieces tile the input.
//
// What backtracking amounts to, per alternative, at position i with run W the
// maximal whitespace run starting at i:
//   5. \s*[\r\n]+  ends right after the LAST \r or \n inside W.
//   6. \s+(?!\S)   is all of W at the end of the text, else W minus its last
//                  character (that one may then start " word"), if W has >= 2.
//   7. \s+         the single whitespace character left.
// (?i) makes 's also match 'S and 'ſ (U+017F folds to s); no other character
// folds to t, r, e, v, m, l or d in Unicode simple case folding.
// Input must be valid UTF-8 (the tokenizer checks before calling).
#include <cstddef>
#include <string_view>

#include "staticgrad/io/unicode.hpp"

namespace staticgrad::io {

namespace detail {

struct cp_at {
  unicode::cls k;
  std::uint32_t len;
};

inline cp_at class_at(const unsigned char* p, const unsigned char* e) noexcept {
  if (*p < 0x80) return {unicode::ascii_class[*p], 1};
  auto d = unicode::decode_utf8(p, e);
  if (d.len == 0) return {unicode::cls::other, 1};  // unreachable on valid input; stay safe
  return {unicode::classify_slow(d.cp), d.len};
}

inline bool is_lower_ascii(unsigned char c, char lower) noexcept { return (c | 0x20) == lower; }

// Length of a contraction match at p ('s 't 're 've 'm 'll 'd, any case), or 0.
inline std::size_t contraction(const unsigned char* p, const unsigned char* e) noexcept {
  if (*p != '\'' || p + 1 >= e) return 0;
  unsigned char c = p[1] | 0x20;
  if (c == 's' || c == 't' || c == 'm' || c == 'd') return 2;
  if (p[1] == 0xC5 && p + 2 < e && p[2] == 0xBF) return 3;  // U+017F LATIN SMALL LETTER LONG S
  if (p + 2 < e) {
    if ((c == 'r' || c == 'v') && is_lower_ascii(p[2], 'e')) return 3;
    if (c == 'l' && is_lower_ascii(p[2], 'l')) return 3;
  }
  return 0;
}

}  // namespace detail

// Calls f(begin, end) (byte offsets into s) for each piece, in order.
template <class F>
inline void pretokenize(std::string_view s, F&& f) {
  using unicode::cls;
  auto* b = reinterpret_cast<const unsigned char*>(s.data());
  auto* e = b + s.size();
  auto* p = b;
  while (p < e) {
    auto* start = p;
    auto c0 = detail::class_at(p, e);
    auto emit = [&](const unsigned char* end) {
      f(std::size_t(start - b), std::size_t(end - b));
      p = end;
    };
    // 1. contractions
    if (std::size_t n = detail::contraction(p, e)) { emit(p + n); continue; }
    // 2. [^\r\n\p{L}\p{N}]?\p{L}+
    {
      const unsigned char* q = nullptr;
      if (c0.k == cls::letter) q = p;
      else if (c0.k != cls::newline && c0.k != cls::number && p + c0.len < e &&
               detail::class_at(p + c0.len, e).k == cls::letter)
        q = p + c0.len;
      if (q) {
        while (q < e) {
          auto c = detail::class_at(q, e);
          if (c.k != cls::letter) break;
          q += c.len;
        }
        emit(q);
        continue;
      }
    }
    // 3. \p{N}
    if (c0.k == cls::number) { emit(p + c0.len); continue; }
    // 4.  ?[^\s\p{L}\p{N}]+[\r\n]*
    {
      const unsigned char* q = nullptr;
      if (c0.k == cls::other) q = p;
      else if (*p == ' ' && p + 1 < e && detail::class_at(p + 1, e).k == cls::other) q = p + 1;
      if (q) {
        while (q < e) {
          auto c = detail::class_at(q, e);
          if (c.k != cls::other) break;
          q += c.len;
        }
        while (q < e && (*q == '\r' || *q == '\n')) ++q;
        emit(q);
        continue;
      }
    }
    // Here c0 is whitespace (space or newline).
    const unsigned char* q = p;
    const unsigned char* after_last_nl = nullptr;
    const unsigned char* last_start = p;
    std::size_t count = 0;
    while (q < e) {
      auto c = detail::class_at(q, e);
      if (c.k != cls::space && c.k != cls::newline) break;
      last_start = q;
      q += c.len;
      ++count;
      if (c.k == cls::newline) after_last_nl = q;
    }
    if (after_last_nl) emit(after_last_nl);          // 5.
    else if (q == e) emit(q);                        // 6. (end of text)
    else if (count >= 2) emit(last_start);           // 6. (leave the last one)
    else emit(q);                                    // 7.
  }
}

}  // namespace staticgrad::io
