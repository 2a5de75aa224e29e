#pragma once
// Unicode pieces the Qwen2 tokenizer needs: UTF-8 decoding and validation,
// the character classes of its pre-tokenizer regex, NFC, and the GPT-2
// byte-to-unicode map.
//
// Invariants:
//  - classify() agrees with the Oniguruma classes used by Hugging Face
//    `tokenizers` for \p{L} (Lu Ll Lt Lm Lo), \p{N} (Nd Nl No) and \s (the
//    Unicode White_Space property: 9-D, 20, 85, A0, 1680, 2000-200A, 2028,
//    2029, 202F, 205F, 3000). Marks (\p{M}) are in none of them. L and N come
//    from unicode_classes.hpp, generated from Unicode 16.0 (the version
//    `tokenizers` 0.23 uses; ICU 72 of Debian 12 is only Unicode 15 and would
//    miss letters added in 16); scripts/gen_unicode_classes.py --verify checks
//    every code point against `tokenizers` itself.
//  - NFC comes from ICU (Debian libicu-dev, Unicode 15): it can differ from
//    `tokenizers` only on text holding characters new in Unicode 16 that have
//    canonical decompositions.
//  - ASCII never reaches ICU: a 128-entry table answers it, and ASCII text is
//    NFC by definition, so code and English prose stay on the fast path.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include <unicode/normalizer2.h>
#include <unicode/bytestream.h>
#include <unicode/edits.h>

#include "staticgrad/core/error.hpp"
#include "staticgrad/io/unicode_classes.hpp"

namespace staticgrad::io::unicode {

// Classes of the pre-tokenizer. `newline` is \r or \n (the regex names them
// apart from the rest of \s); `space` is every other White_Space character.
enum class cls : std::uint8_t { other = 0, letter = 1, number = 2, space = 3, newline = 4 };

struct decoded {
  char32_t cp;
  std::uint32_t len;  // bytes; 0 = ill-formed UTF-8 at this position
};

// Decodes one well-formed UTF-8 sequence (no overlongs, no surrogates, at most
// U+10FFFF). On ill-formed input returns len 0.
inline decoded decode_utf8(const unsigned char* p, const unsigned char* end) noexcept {
  unsigned char b0 = p[0];
  if (b0 < 0x80) return {b0, 1};
  auto cont = [&](std::size_t i) { return p + i < end && (p[i] & 0xC0) == 0x80; };
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    if (!cont(1)) return {0, 0};
    return {char32_t(((b0 & 0x1F) << 6) | (p[1] & 0x3F)), 2};
  }
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    if (!cont(1) || !cont(2)) return {0, 0};
    if (b0 == 0xE0 && p[1] < 0xA0) return {0, 0};  // overlong
    if (b0 == 0xED && p[1] >= 0xA0) return {0, 0};  // surrogate
    return {char32_t(((b0 & 0x0F) << 12) | ((p[1] & 0x3F) << 6) | (p[2] & 0x3F)), 3};
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return {0, 0};
    if (b0 == 0xF0 && p[1] < 0x90) return {0, 0};  // overlong
    if (b0 == 0xF4 && p[1] >= 0x90) return {0, 0};  // > U+10FFFF
    return {char32_t(((b0 & 0x07) << 18) | ((p[1] & 0x3F) << 12) | ((p[2] & 0x3F) << 6) | (p[3] & 0x3F)),
            4};
  }
  return {0, 0};
}

// Byte offset of the first ill-formed sequence, or npos when `s` is valid.
inline std::size_t find_invalid_utf8(std::string_view s) noexcept {
  auto* b = reinterpret_cast<const unsigned char*>(s.data());
  auto* e = b + s.size();
  for (auto* p = b; p < e;) {
    if (*p < 0x80) { ++p; continue; }
    auto d = decode_utf8(p, e);
    if (d.len == 0) return std::size_t(p - b);
    p += d.len;
  }
  return std::string_view::npos;
}

// Appends `s` to `out`, replacing each maximal ill-formed subsequence with
// U+FFFD (the rule of Rust's String::from_utf8_lossy, which `tokenizers` uses
// when decoded bytes are not UTF-8).
inline void append_lossy_utf8(std::string& out, std::string_view s) {
  auto* b = reinterpret_cast<const unsigned char*>(s.data());
  auto* e = b + s.size();
  for (auto* p = b; p < e;) {
    auto d = decode_utf8(p, e);
    if (d.len) { out.append(reinterpret_cast<const char*>(p), d.len); p += d.len; continue; }
    // Length of the maximal prefix of a valid sequence starting at p (>= 1).
    std::size_t n = 1;
    unsigned char b0 = *p;
    std::size_t want = b0 >= 0xF0 && b0 <= 0xF4 ? 4 : b0 >= 0xE0 && b0 <= 0xEF ? 3 : b0 >= 0xC2 && b0 <= 0xDF ? 2 : 1;
    if (want > 1 && p + 1 < e) {
      unsigned char b1 = p[1];
      unsigned char lo = 0x80, hi = 0xBF;
      if (b0 == 0xE0) lo = 0xA0;
      if (b0 == 0xED) hi = 0x9F;
      if (b0 == 0xF0) lo = 0x90;
      if (b0 == 0xF4) hi = 0x8F;
      if (b1 >= lo && b1 <= hi) {
        n = 2;
        while (n < want && p + n < e && (p[n] & 0xC0) == 0x80) ++n;
      }
    }
    out += "\xEF\xBF\xBD";
    p += n;
  }
}

inline bool is_white_space(char32_t c) noexcept {
  if (c < 0x80) return (c >= 0x09 && c <= 0x0D) || c == 0x20;
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Class of a non-ASCII code point, from the generated two-stage table.
inline cls classify_slow(char32_t c) noexcept {
  if (is_white_space(c)) return cls::space;
  if (c > 0x10FFFF) return cls::other;
  unsigned blk = tables::stage1[c >> 8];
  unsigned byte = tables::blocks[blk * 64 + ((c & 255) >> 2)];
  return static_cast<cls>((byte >> ((c & 3) * 2)) & 3);
}

inline constexpr std::array<cls, 128> make_ascii_table() {
  std::array<cls, 128> t{};
  for (int c = 0; c < 128; ++c) {
    cls k = cls::other;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) k = cls::letter;
    else if (c >= '0' && c <= '9') k = cls::number;
    else if (c == '\r' || c == '\n') k = cls::newline;
    else if ((c >= 0x09 && c <= 0x0D) || c == 0x20) k = cls::space;
    t[c] = k;
  }
  return t;
}
inline constexpr std::array<cls, 128> ascii_class = make_ascii_table();

inline cls classify(char32_t c) noexcept { return c < 0x80 ? ascii_class[c] : classify_slow(c); }

// NFC of `s` (valid UTF-8) appended to `out`. Returns false (and leaves `out`
// alone) when `s` is already NFC, so callers can keep using `s` in place.
// `edits`, when given, records the changes so that offsets in `out` can be
// mapped back to offsets in `s`.
inline bool nfc_if_needed(std::string_view s, std::string& out, icu::Edits* edits = nullptr) {
  bool ascii = true;
  for (unsigned char c : s) if (c >= 0x80) { ascii = false; break; }
  if (ascii) return false;
  UErrorCode st = U_ZERO_ERROR;
  const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(st);
  require(U_SUCCESS(st), "ICU: cannot load the NFC normalizer");
  icu::StringPiece sp(s.data(), static_cast<int32_t>(s.size()));
  if (nfc->isNormalizedUTF8(sp, st) && U_SUCCESS(st)) return false;
  st = U_ZERO_ERROR;
  icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(s.size()));
  nfc->normalizeUTF8(0, sp, sink, edits, st);
  require(U_SUCCESS(st), "ICU: NFC normalization failed");
  return true;
}

inline std::string nfc(std::string_view s) {
  std::string out;
  if (!nfc_if_needed(s, out)) return std::string(s);
  return out;
}

// GPT-2's byte-to-unicode map: printable Latin-1 bytes map to themselves, the
// other 68 bytes to U+0100.. in byte order, so every byte has a visible
// character and vocabulary strings never hold spaces or control characters.
inline std::array<char32_t, 256> byte_to_unicode() {
  std::array<char32_t, 256> m{};
  char32_t next = 0x100;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    m[b] = printable ? char32_t(b) : next++;
  }
  return m;
}

inline void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) out += char(c);
  else if (c < 0x800) { out += char(0xC0 | (c >> 6)); out += char(0x80 | (c & 0x3F)); }
  else if (c < 0x10000) {
    out += char(0xE0 | (c >> 12)); out += char(0x80 | ((c >> 6) & 0x3F)); out += char(0x80 | (c & 0x3F));
  } else {
    out += char(0xF0 | (c >> 18)); out += char(0x80 | ((c >> 12) & 0x3F));
    out += char(0x80 | ((c >> 6) & 0x3F)); out += char(0x80 | (c & 0x3F));
  }
}

}  // namespace staticgrad::io::unicode
