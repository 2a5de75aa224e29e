#pragma once
// Byte-level BPE tokenizer that reads a Hugging Face tokenizer.json of the
// Qwen2 / Qwen2.5 family and produces the same ids as Hugging Face
// `tokenizers`.
//
// Encode, in the order `tokenizers` applies it:
//  1. added tokens (<|endoftext|>, <|im_start|>, ...) are found in the raw
//     text, leftmost first and longest at a position; the text between them is
//     handled alone (so BPE never spans an added token);
//  2. NFC normalization of each such piece (skipped for ASCII);
//  3. pre-tokenization with the Qwen2 regex (pretokenize.hpp);
//  4. BPE of each piece's bytes: the adjacent pair of lowest merge rank is
//     merged first, leftmost among equal ranks, until no pair has a merge.
// Decode maps ids back to bytes (added tokens to their text) and replaces
// ill-formed UTF-8 with U+FFFD, as `tokenizers` does; decode(encode(t)) is the
// NFC form of t.
//
// Invariants:
//  - A `tokenizer` is immutable after loading and safe to share between
//    threads. The BPE word cache is thread_local (one per thread, for the last
//    tokenizer that thread used), so encode needs no locks; encode_batch runs
//    on persistent worker threads so their caches stay warm across calls.
//  - Input text must be valid UTF-8; otherwise encode throws staticgrad::error
//    naming the byte offset (nothing in the pipeline guesses an encoding).
//  - Only what Qwen2 uses is implemented; a tokenizer.json that asks for
//    anything else (another model type or pre-tokenizer, byte fallback,
//    dropout, ignore_merges) is rejected when loaded, never mis-tokenized.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <mutex>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "staticgrad/core/error.hpp"
#include "staticgrad/io/file.hpp"
#include "staticgrad/io/json_util.hpp"
#include "staticgrad/io/pretokenize.hpp"
#include "staticgrad/io/unicode.hpp"

namespace staticgrad::io {

// The regex this tokenizer implements (pretokenize.hpp); a tokenizer.json with
// another one is rejected.
inline constexpr std::string_view qwen2_pretokenize_regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

struct added_token {
  std::string content;
  std::int32_t id = 0;
  bool special = false;     // skipped by decode(..., skip_special = true)
  bool normalized = false;  // matched in the NFC text rather than the raw text
};

// Byte range [begin, end) of a token in the encoded (raw) text. Where NFC
// changed the text, a token's bounds are mapped back through the edit; tokens
// inside one composed character may then share bounds (begin == end).
struct token_span {
  std::uint32_t begin = 0, end = 0;
};

namespace detail {

// Open-addressing cache from a pre-token's bytes to its BPE ids. Keys and
// values live in two arenas; the table is dropped whole when it grows past
// its budget (simpler than LRU, and the hit rate recovers within a few KB).
class word_cache {
 public:
  std::uint64_t owner = 0;

  static std::uint64_t hash(std::string_view s) noexcept {
    std::uint64_t h = 0x9E3779B97F4A7C15ull ^ (s.size() * 0xC2B2AE3D27D4EB4Full);
    std::size_t i = 0;
    for (; i + 8 <= s.size(); i += 8) {
      std::uint64_t w;
      std::memcpy(&w, s.data() + i, 8);
      h = (h ^ w) * 0x9FB21C651E98DF25ull;
      h ^= h >> 29;
    }
    std::uint64_t w = 0;
    std::memcpy(&w, s.data() + i, s.size() - i);
    h = (h ^ w) * 0x9FB21C651E98DF25ull;
    h ^= h >> 32;
    return h;
  }

  // Returns the cached ids or an empty span.
  std::span<const std::int32_t> find(std::string_view key, std::uint64_t h) const noexcept {
    if (slots_.empty()) return {};
    std::size_t mask = slots_.size() - 1;
    for (std::size_t i = h & mask;; i = (i + 1) & mask) {
      const slot& s = slots_[i];
      if (s.key_len == 0) return {};
      if (s.hash == h && s.key_len == key.size() && std::memcmp(keys_.data() + s.key_off, key.data(), key.size()) == 0)
        return {vals_.data() + s.val_off, s.val_len};
    }
  }

  void insert(std::string_view key, std::uint64_t h, std::span<const std::int32_t> ids) {
    if (key.empty() || key.size() > max_key_bytes) return;
    if (count_ >= max_entries || keys_.size() + key.size() > max_arena_bytes) clear_keep_owner();
    if (count_ + 1 > slots_.size() / 2) grow();
    if (slots_.empty()) grow();
    std::size_t mask = slots_.size() - 1;
    std::size_t i = h & mask;
    while (slots_[i].key_len != 0) i = (i + 1) & mask;
    slots_[i] = {h, std::uint32_t(keys_.size()), std::uint32_t(key.size()), std::uint32_t(vals_.size()),
                 std::uint32_t(ids.size())};
    keys_.append(key);
    vals_.insert(vals_.end(), ids.begin(), ids.end());
    ++count_;
  }

  void clear_keep_owner() {
    slots_.assign(slots_.size(), slot{});
    keys_.clear();
    vals_.clear();
    count_ = 0;
  }

 private:
  // Longer pre-tokens (base64 blobs, long hex) rarely repeat.
  static constexpr std::size_t max_key_bytes = 256;
  // Budget per thread before the cache starts over: 256K words (a large
  // corpus has fewer distinct frequent pre-tokens) in 512K slots of 24 bytes,
  // plus at most 16 MB of keys: about 30 MB.
  static constexpr std::size_t max_entries = std::size_t(1) << 18;
  static constexpr std::size_t max_arena_bytes = std::size_t(16) << 20;
  struct slot {
    std::uint64_t hash = 0;
    std::uint32_t key_off = 0, key_len = 0, val_off = 0, val_len = 0;
  };
  void grow() {
    std::size_t n = slots_.empty() ? 4096 : slots_.size() * 2;
    std::vector<slot> old = std::move(slots_);
    slots_.assign(n, slot{});
    for (const slot& s : old) {
      if (s.key_len == 0) continue;
      std::size_t i = s.hash & (n - 1);
      while (slots_[i].key_len != 0) i = (i + 1) & (n - 1);
      slots_[i] = s;
    }
  }
  std::vector<slot> slots_;
  std::string keys_;
  std::vector<std::int32_t> vals_;
  std::size_t count_ = 0;
};

// Persistent worker threads for encode_batch. Reusing the same threads keeps
// their thread_local word caches warm from one batch to the next (fresh
// threads would start cold every call: about half the speed). Workers are
// started on first use, grow to the largest count asked for, and are joined
// at exit. One batch runs at a time; concurrent callers wait their turn.
class worker_pool {
 public:
  static worker_pool& instance() {
    static worker_pool p;
    return p;
  }
  // Runs f(t) for t = 0..n-1, t = 0 on the calling thread; returns when all are done.
  void run(unsigned n, const std::function<void(unsigned)>& f) {
    std::lock_guard<std::mutex> one_at_a_time(run_mutex_);
    {
      std::unique_lock<std::mutex> lk(m_);
      while (threads_.size() + 1 < n) {
        unsigned id = unsigned(threads_.size()) + 1;
        threads_.emplace_back([this, id] { loop(id); });
      }
      job_ = &f;
      job_n_ = n;
      pending_ = n - 1;
      ++generation_;
    }
    cv_.notify_all();
    f(0);
    std::unique_lock<std::mutex> lk(m_);
    done_.wait(lk, [&] { return pending_ == 0; });
    job_ = nullptr;
  }
  ~worker_pool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  worker_pool() = default;
  void loop(unsigned id) {
    std::uint64_t seen = 0;
    {
      std::lock_guard<std::mutex> lk(m_);
      seen = generation_ - (job_ && id < job_n_ ? 1 : 0);  // a job posted while this thread started
    }
    for (;;) {
      const std::function<void(unsigned)>* job = nullptr;
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        if (id < job_n_) job = job_;
      }
      if (!job) continue;
      (*job)(id);
      std::lock_guard<std::mutex> lk(m_);
      if (--pending_ == 0) done_.notify_one();
    }
  }
  std::mutex run_mutex_, m_;
  std::condition_variable cv_, done_;
  std::vector<std::thread> threads_;
  const std::function<void(unsigned)>* job_ = nullptr;
  unsigned job_n_ = 0, pending_ = 0;
  std::uint64_t generation_ = 0;
  bool stop_ = false;
};

inline std::uint64_t next_tokenizer_serial() {
  static std::atomic<std::uint64_t> n{0};
  return ++n;
}

}  // namespace detail

class tokenizer {
 public:
  // Loads a tokenizer.json (plain or gzip), or the tokenizer.json /
  // tokenizer.json.gz inside a directory.
  static tokenizer from_file(const std::string& path) {
    namespace fs = std::filesystem;
    std::string file = path;
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
      file.clear();
      for (const char* name : {"tokenizer.json", "tokenizer.json.gz"}) {
        fs::path p = fs::path(path) / name;
        if (fs::exists(p, ec)) { file = p.string(); break; }
      }
      require(!file.empty(), "directory holds no tokenizer.json or tokenizer.json.gz", {path, "", {}});
    }
    return from_json(read_file_maybe_gzip(file), file);
  }

  static tokenizer from_json(const std::string& text, const std::string& path_for_errors = "tokenizer.json") {
    const nlohmann::json j = parse_json_bounded(text, path_for_errors);  // depth-limited, NUL bytes refused
    tokenizer t;
    try {
      t.load(j, path_for_errors);
    } catch (const nlohmann::json::exception& e) {  // a field of the wrong JSON type (e.g. "type": 5)
      throw error("unexpected JSON type: " + detail::json_what(e), {path_for_errors, "", {}});
    }
    return t;
  }

  // Number of ids (largest id + 1, added tokens included).
  std::size_t vocab_size() const noexcept { return id_bytes_.size(); }

  // Id of an added token or of a vocabulary entry given as its raw bytes; -1 if none.
  std::int32_t token_to_id(std::string_view bytes) const {
    for (const auto& a : added_) if (a.content == bytes) return a.id;
    if (bytes.empty()) return -1;
    // BPE of the bytes gives the id when the vocabulary holds them as one token.
    std::vector<std::int32_t> ids;
    bpe(bytes, ids);
    return ids.size() == 1 && id_bytes_[ids[0]] == bytes ? ids[0] : -1;
  }
  // Raw bytes of an id (added tokens: their text).
  const std::string& id_to_bytes(std::int32_t id) const {
    require(id >= 0 && std::size_t(id) < id_bytes_.size(), "token id out of range: " + std::to_string(id));
    return id_bytes_[std::size_t(id)];
  }
  const std::vector<added_token>& added_tokens() const noexcept { return added_; }
  bool is_special(std::int32_t id) const noexcept {
    return id >= 0 && std::size_t(id) < special_.size() && special_[std::size_t(id)];
  }

  std::vector<std::int32_t> encode(std::string_view text, bool split_added = true) const {
    std::vector<std::int32_t> ids;
    encode_into(text, ids, nullptr, split_added);
    return ids;
  }

  // Longest text encode accepts: token spans are 32-bit and ICU indexes with
  // int32, so 1 GiB keeps every offset (and NFC's growth of it) in range.
  static constexpr std::size_t max_text_bytes = std::size_t(1) << 30;

  // Appends the ids of `text` to `ids` and, when `spans` is given, each
  // token's byte range in the NFC text (see token_span).
  void encode_into(std::string_view text, std::vector<std::int32_t>& ids, std::vector<token_span>* spans = nullptr,
                   bool split_added = true) const {
    require(text.size() <= max_text_bytes, "text of " + std::to_string(text.size()) + " bytes is longer than the " +
                                               std::to_string(max_text_bytes) + "-byte limit of one encode");
    std::size_t bad = unicode::find_invalid_utf8(text);
    require(bad == std::string_view::npos, "text is not valid UTF-8 (byte offset " + std::to_string(bad) + ")");
    std::uint32_t base = 0;  // offset of the current piece in the raw text
    auto plain = [&](std::string_view piece) {
      std::string normalized;
      std::string_view s = piece;
      icu::Edits edits;
      bool changed = nfc_ && unicode::nfc_if_needed(piece, normalized, spans ? &edits : nullptr);
      if (changed) s = normalized;
      std::size_t first = spans ? spans->size() : 0;
      std::uint32_t nbase = changed ? 0 : base;  // spans of a changed piece start in its own coordinates
      if (!has_normalized_added_ || !split_added) {
        encode_normalized(s, nbase, ids, spans);
      } else {
        std::uint32_t at = nbase;
        split_on_added(s, true, [&](std::string_view p) {
            encode_normalized(p, at, ids, spans);
            at += std::uint32_t(p.size());
          }, [&](const added_token& a) { push_added(a, at, ids, spans); });
      }
      if (changed && spans) {
        // Map offsets in the NFC piece back to offsets in the raw piece.
        auto it = edits.getFineIterator();
        UErrorCode st = U_ZERO_ERROR;
        for (std::size_t k = first; k < spans->size(); ++k) {
          auto& sp = (*spans)[k];
          sp.begin = base + std::uint32_t(it.sourceIndexFromDestinationIndex(std::int32_t(sp.begin), st));
          sp.end = base + std::uint32_t(it.sourceIndexFromDestinationIndex(std::int32_t(sp.end), st));
        }
        require(U_SUCCESS(st), "ICU: cannot map NFC offsets");
      }
      base += std::uint32_t(piece.size());
    };
    if (!split_added || added_.empty()) { plain(text); return; }
    split_on_added(text, false, plain, [&](const added_token& a) { push_added(a, base, ids, spans); });
  }

  // Encodes many texts on `threads` threads (0 = hardware concurrency).
  std::vector<std::vector<std::int32_t>> encode_batch(std::span<const std::string> texts, unsigned threads = 0,
                                                      bool split_added = true) const {
    std::vector<std::vector<std::int32_t>> out(texts.size());
    if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
    threads = unsigned(std::min<std::size_t>(threads, texts.size()));
    if (threads <= 1) {
      for (std::size_t i = 0; i < texts.size(); ++i) out[i] = encode(texts[i], split_added);
      return out;
    }
    // Work is handed out in small blocks through one atomic counter, so a few
    // long documents do not leave the other threads idle.
    std::atomic<std::size_t> next{0};
    std::vector<std::exception_ptr> errors(threads);
    constexpr std::size_t block = 8;
    std::function<void(unsigned)> work = [&](unsigned t) {
      try {
        for (;;) {
          std::size_t i0 = next.fetch_add(block);
          if (i0 >= texts.size()) break;
          for (std::size_t i = i0; i < std::min(i0 + block, texts.size()); ++i) out[i] = encode(texts[i], split_added);
        }
      } catch (...) {
        errors[t] = std::current_exception();
        next.store(texts.size());
      }
    };
    detail::worker_pool::instance().run(threads, work);
    for (auto& e : errors) if (e) std::rethrow_exception(e);
    return out;
  }

  // Text of `ids`. Added tokens are written as their text unless skip_special
  // and they are special. Throws on ids outside the vocabulary.
  std::string decode(std::span<const std::int32_t> ids, bool skip_special = false) const {
    std::string bytes;
    for (std::int32_t id : ids) {
      require(id >= 0 && std::size_t(id) < id_bytes_.size() && !(id_bytes_[std::size_t(id)].empty() && !is_added(id)),
              "token id out of range: " + std::to_string(id));
      if (skip_special && is_special(id)) continue;
      bytes += id_bytes_[std::size_t(id)];
    }
    std::string out;
    out.reserve(bytes.size());
    unicode::append_lossy_utf8(out, bytes);
    return out;
  }

  // The pre-tokenizer's pieces of an NFC text (for tests and inspection).
  static std::vector<std::string_view> pretokens(std::string_view s) {
    std::vector<std::string_view> v;
    pretokenize(s, [&](std::size_t b, std::size_t e) { v.push_back(s.substr(b, e - b)); });
    return v;
  }

 private:
  struct merge_info {
    std::int32_t rank;
    std::int32_t id;
  };

  bool is_added(std::int32_t id) const {
    for (const auto& a : added_) if (a.id == id) return true;
    return false;
  }

  static std::uint64_t pair_key(std::int32_t a, std::int32_t b) noexcept {
    return (std::uint64_t(std::uint32_t(a)) << 32) | std::uint32_t(b);
  }

  void push_added(const added_token& a, std::uint32_t& base, std::vector<std::int32_t>& ids,
                  std::vector<token_span>* spans) const {
    ids.push_back(a.id);
    if (spans) spans->push_back({base, base + std::uint32_t(a.content.size())});
    base += std::uint32_t(a.content.size());
  }

  // Splits `s` on the added tokens whose `normalized` flag equals `normalized`:
  // text between them goes to on_text (possibly empty pieces are skipped),
  // each match to on_added. Leftmost match first; longest at that position.
  template <class T, class A>
  void split_on_added(std::string_view s, bool normalized, T&& on_text, A&& on_added) const {
    std::size_t last = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
      unsigned char c = static_cast<unsigned char>(s[i]);
      if (!added_first_byte_[c]) continue;
      const added_token* best = nullptr;
      for (const auto& a : added_) {
        if (a.normalized != normalized || static_cast<unsigned char>(a.content[0]) != c) continue;
        if (s.compare(i, a.content.size(), a.content) == 0 && (!best || a.content.size() > best->content.size()))
          best = &a;
      }
      if (!best) continue;
      if (i > last) on_text(s.substr(last, i - last));
      on_added(*best);
      i += best->content.size() - 1;
      last = i + 1;
    }
    if (last < s.size()) on_text(s.substr(last));
  }

  void encode_normalized(std::string_view s, std::uint32_t base, std::vector<std::int32_t>& ids,
                         std::vector<token_span>* spans) const {
    thread_local detail::word_cache cache;
    if (cache.owner != serial_) {
      cache.clear_keep_owner();
      cache.owner = serial_;
    }
    thread_local std::vector<std::int32_t> tmp;
    pretokenize(s, [&](std::size_t b, std::size_t e) {
      std::string_view w = s.substr(b, e - b);
      std::size_t first = ids.size();
      if (w.size() == 1) {
        ids.push_back(byte_id_[static_cast<unsigned char>(w[0])]);
      } else {
        std::uint64_t h = detail::word_cache::hash(w);
        auto hit = cache.find(w, h);
        if (!hit.empty()) {
          ids.insert(ids.end(), hit.begin(), hit.end());
        } else {
          tmp.clear();
          bpe(w, tmp);
          cache.insert(w, h, tmp);
          ids.insert(ids.end(), tmp.begin(), tmp.end());
        }
      }
      if (spans) {
        std::uint32_t at = base + std::uint32_t(b);
        for (std::size_t k = first; k < ids.size(); ++k) {
          std::uint32_t n = std::uint32_t(id_bytes_[std::size_t(ids[k])].size());
          spans->push_back({at, at + n});
          at += n;
        }
      }
    });
  }

  // BPE of one pre-token's bytes. Symbols form a linked list; candidate merges
  // wait in a min-heap ordered by (rank, position); a popped candidate whose
  // symbols changed since it was pushed is stale and skipped.
  void bpe(std::string_view w, std::vector<std::int32_t>& out) const {
    struct sym {
      std::int32_t id;
      std::int32_t prev, next;
      bool alive;
    };
    struct cand {
      std::int32_t rank, pos, id;
      bool operator>(const cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::vector<sym> syms(w.size());
    for (std::size_t i = 0; i < w.size(); ++i)
      syms[i] = {byte_id_[static_cast<unsigned char>(w[i])], std::int32_t(i) - 1,
                 i + 1 < w.size() ? std::int32_t(i + 1) : -1, true};
    std::priority_queue<cand, std::vector<cand>, std::greater<cand>> heap;
    auto consider = [&](std::int32_t pos) {
      std::int32_t nx = syms[std::size_t(pos)].next;
      if (nx < 0) return;
      auto it = merges_.find(pair_key(syms[std::size_t(pos)].id, syms[std::size_t(nx)].id));
      if (it != merges_.end()) heap.push({it->second.rank, pos, it->second.id});
    };
    for (std::size_t i = 0; i + 1 < w.size(); ++i) consider(std::int32_t(i));
    while (!heap.empty()) {
      cand c = heap.top();
      heap.pop();
      sym& s = syms[std::size_t(c.pos)];
      if (!s.alive || s.next < 0) continue;
      sym& r = syms[std::size_t(s.next)];
      auto it = merges_.find(pair_key(s.id, r.id));
      if (it == merges_.end() || it->second.id != c.id) continue;
      s.id = c.id;
      r.alive = false;
      s.next = r.next;
      if (r.next >= 0) syms[std::size_t(r.next)].prev = c.pos;
      if (s.prev >= 0) consider(s.prev);
      consider(c.pos);
    }
    for (std::int32_t i = 0; i >= 0; i = syms[std::size_t(i)].next) out.push_back(syms[std::size_t(i)].id);
  }

  void load(const nlohmann::json& j, const std::string& path) {
    using nlohmann::json;
    auto fail = [&](const std::string& field, const std::string& what) { throw error(what, {path, field, {}}); };
    serial_ = detail::next_tokenizer_serial();
    if (!j.is_object()) fail("", "tokenizer.json must hold a JSON object");
    const json* model = j.contains("model") ? &j["model"] : nullptr;
    if (!model || !model->is_object()) fail("model", "missing model object");
    if (model->value("type", std::string("BPE")) != "BPE") fail("model.type", "only BPE models are supported");
    if (model->contains("dropout") && !(*model)["dropout"].is_null()) fail("model.dropout", "BPE dropout is not supported");
    if (model->value("byte_fallback", false)) fail("model.byte_fallback", "byte_fallback is not supported");
    if (model->value("ignore_merges", false)) fail("model.ignore_merges", "ignore_merges is not supported");
    if (!model->value("continuing_subword_prefix", std::string()).empty() ||
        !model->value("end_of_word_suffix", std::string()).empty())
      fail("model", "subword prefixes/suffixes are not supported");

    // Normalizer: NFC or none.
    if (j.contains("normalizer") && !j["normalizer"].is_null()) {
      if (j["normalizer"].value("type", std::string()) != "NFC") fail("normalizer", "only the NFC normalizer is supported");
      nfc_ = true;
    }
    // Pre-tokenizer: the Qwen2 split regex followed by ByteLevel without its own regex.
    {
      const json& pt = j.contains("pre_tokenizer") ? j["pre_tokenizer"] : json();
      bool ok = pt.is_object() && pt.value("type", std::string()) == "Sequence" && pt.contains("pretokenizers") &&
                pt["pretokenizers"].is_array() && pt["pretokenizers"].size() == 2;
      if (ok) {
        const json& sp = pt["pretokenizers"][0];
        const json& bl = pt["pretokenizers"][1];
        ok = sp.value("type", std::string()) == "Split" && sp.contains("pattern") && sp["pattern"].is_object() &&
             sp["pattern"].value("Regex", std::string()) == qwen2_pretokenize_regex &&
             sp.value("behavior", std::string()) == "Isolated" && !sp.value("invert", false) &&
             bl.value("type", std::string()) == "ByteLevel" && !bl.value("add_prefix_space", false) &&
             !bl.value("use_regex", true);
      }
      if (!ok) fail("pre_tokenizer", "only the Qwen2 pre-tokenizer (Split with its regex, then ByteLevel) is supported");
    }

    // Vocabulary: byte-level strings -> raw bytes.
    auto b2u = unicode::byte_to_unicode();
    std::unordered_map<char32_t, unsigned char> u2b;
    for (int b = 0; b < 256; ++b) u2b[b2u[b]] = static_cast<unsigned char>(b);
    auto to_bytes = [&](const std::string& s, const std::string& field) {
      std::string out;
      auto* p = reinterpret_cast<const unsigned char*>(s.data());
      auto* e = p + s.size();
      while (p < e) {
        auto d = unicode::decode_utf8(p, e);
        auto it = d.len ? u2b.find(d.cp) : u2b.end();
        if (it == u2b.end()) fail(field, "entry '" + s + "' is not a byte-level string");
        out += char(it->second);
        p += d.len;
      }
      return out;
    };
    if (!model->contains("vocab") || !(*model)["vocab"].is_object()) fail("model.vocab", "missing vocab object");
    std::unordered_map<std::string, std::int32_t> vocab;
    vocab.reserve((*model)["vocab"].size() * 2);
    std::int32_t max_id = -1;
    for (auto it = (*model)["vocab"].begin(); it != (*model)["vocab"].end(); ++it) {
      if (!it.value().is_number_integer() || it.value().get<std::int64_t>() < 0 || it.value().get<std::int64_t>() > 10'000'000)
        fail("model.vocab", "id of '" + it.key() + "' must be a non-negative integer");
      std::int32_t id = it.value().get<std::int32_t>();
      vocab.emplace(to_bytes(it.key(), "model.vocab"), id);
      max_id = std::max(max_id, id);
    }
    // Added tokens.
    if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
      for (const json& a : j["added_tokens"]) {
        if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") ||
            !a["content"].is_string() || a["content"].get<std::string>().empty())
          fail("added_tokens", "each added token needs an integer id and a non-empty content");
        if (a.value("lstrip", false) || a.value("rstrip", false) || a.value("single_word", false))
          fail("added_tokens", "lstrip/rstrip/single_word added tokens are not supported");
        // Range first, on the 64-bit value: get<int32_t> would wrap 2^32 + 1 to 1.
        if (!a["id"].is_number_unsigned() || a["id"].get<std::uint64_t>() > 10'000'000)
          fail("added_tokens", "id must be an integer in [0, 10000000]");
        added_token t{a["content"].get<std::string>(), std::int32_t(a["id"].get<std::uint64_t>()),
                      a.value("special", false), a.value("normalized", false)};
        max_id = std::max(max_id, t.id);
        added_first_byte_[static_cast<unsigned char>(t.content[0])] = true;
        has_normalized_added_ |= t.normalized;
        added_.push_back(std::move(t));
      }
    }
    id_bytes_.assign(std::size_t(max_id + 1), std::string());
    special_.assign(std::size_t(max_id + 1), false);
    for (auto& [bytes, id] : vocab) id_bytes_[std::size_t(id)] = bytes;
    for (auto& a : added_) {
      id_bytes_[std::size_t(a.id)] = a.content;
      special_[std::size_t(a.id)] = a.special;
    }
    for (int b = 0; b < 256; ++b) {
      auto it = vocab.find(std::string(1, char(b)));
      if (it == vocab.end()) fail("model.vocab", "byte " + std::to_string(b) + " has no token");
      byte_id_[b] = it->second;
    }
    // Merges: "a b" strings (older files) or ["a", "b"] pairs (newer files).
    if (!model->contains("merges") || !(*model)["merges"].is_array()) fail("model.merges", "missing merges array");
    const json& merges = (*model)["merges"];
    merges_.reserve(merges.size() * 2);
    std::int32_t rank = 0;
    for (const json& m : merges) {
      std::string a, b;
      if (m.is_string()) {
        const std::string& s = m.get_ref<const std::string&>();
        auto sp = s.find(' ');
        if (sp == std::string::npos) fail("model.merges", "merge '" + s + "' is not 'a b'");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        fail("model.merges", "merge #" + std::to_string(rank) + " is neither 'a b' nor [a, b]");
      }
      std::string ab = to_bytes(a, "model.merges"), bb = to_bytes(b, "model.merges");
      auto ia = vocab.find(ab), ib = vocab.find(bb), im = vocab.find(ab + bb);
      if (ia == vocab.end() || ib == vocab.end() || im == vocab.end())
        fail("model.merges", "merge '" + a + " " + b + "' uses or makes a token outside the vocabulary");
      merges_.emplace(pair_key(ia->second, ib->second), merge_info{rank, im->second});
      ++rank;
    }
  }

  std::uint64_t serial_ = 0;
  bool nfc_ = false;
  bool has_normalized_added_ = false;
  std::int32_t byte_id_[256] = {};
  std::unordered_map<std::uint64_t, merge_info> merges_;
  std::vector<std::string> id_bytes_;
  std::vector<bool> special_;
  std::vector<added_token> added_;
  bool added_first_byte_[256] = {};
};

}  // namespace staticgrad::io
