#pragma once
// The example shapes users bring beyond staticgrad's own (dataset.hpp parses
// each line and calls these), and the one routine that turns a rendered text
// with trained byte ranges into ids and labels:
//
//  ShareGPT          {"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", ...}]}
//                    from: system | human/user | gpt/assistant (also chatgpt, bing, bard, model);
//                    rendered as a messages line (ChatML, loss on the assistant turns).
//  prompt/completion {"prompt": "...", "completion": "..."}: plain text, no template; the
//                    prompt is not trained on, the completion and an appended <|endoftext|>
//                    are (as TRL's SFTTrainer does for this shape: completion-only loss).
//                    {"prompt": [messages], "completion": [messages]}: conversational; rendered
//                    as one ChatML conversation, loss on the completion's assistant messages only.
//
// docs/data.md shows what the model sees for each.
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "staticgrad/core/error.hpp"
#include "staticgrad/io/tokenizer.hpp"

namespace staticgrad::io::shapes {

// A piece of the rendered text and whether its tokens are trained on.
struct segment {
  std::string text;
  bool trained = false;
};

// Tokenizes the concatenated segments as ONE text (what the model sees at
// inference) and labels a token with its id when its bytes overlap a trained
// segment, -100 otherwise. A token inside one NFC-composed character may have
// begin == end: it is trained when it sits inside a trained range.
// Encoding errors are rethrown with `ctx`.
inline void encode_segments(const tokenizer& tok, const std::vector<segment>& segs, std::vector<std::int32_t>& ids,
                            std::vector<std::int32_t>& labels, const error_context& ctx) {
  std::string s;
  std::vector<std::pair<std::size_t, std::size_t>> trained;
  for (const auto& g : segs) {
    if (g.trained && !g.text.empty()) trained.emplace_back(s.size(), s.size() + g.text.size());
    s += g.text;
  }
  std::vector<token_span> spans;
  ids.clear();
  try {
    tok.encode_into(s, ids, &spans);
  } catch (const error& e) {
    throw error(e.message(), ctx);
  }
  labels.assign(ids.size(), -100);
  std::size_t r = 0;
  for (std::size_t i = 0; i < spans.size(); ++i) {
    while (r < trained.size() && trained[r].second <= spans[i].begin) ++r;
    if (r == trained.size()) break;
    const auto& tr = trained[r];
    if (spans[i].end > tr.first || (spans[i].begin == spans[i].end && spans[i].begin >= tr.first)) labels[i] = ids[i];
  }
}

struct turn {
  std::string role, content;
  bool trained = false;
};

namespace detail {
inline const std::string& string_field(const nlohmann::json& obj, const char* key, const std::string& field,
                                       const std::string& file, std::size_t line) {
  require(obj.is_object() && obj.contains(key), "missing field", {file, field, line});
  require(obj[key].is_string(), "must be a string", {file, field, line});
  return obj[key].get_ref<const std::string&>();
}
}  // namespace detail

// ShareGPT's speaker names -> ChatML roles.
inline std::string sharegpt_role(const std::string& from, const std::string& field, const std::string& file,
                                 std::size_t line) {
  if (from == "system") return "system";
  if (from == "human" || from == "user") return "user";
  if (from == "gpt" || from == "assistant" || from == "chatgpt" || from == "bing" || from == "bard" || from == "model")
    return "assistant";
  throw error("unknown speaker \"" + from + "\" (expected system, human/user or gpt/assistant)", {file, field, line});
}

// {"conversations": [{"from", "value"}, ...]} -> turns, assistant ones trained.
inline std::vector<turn> sharegpt_turns(const nlohmann::json& j, const std::string& file, std::size_t line) {
  const auto& cv = j["conversations"];
  require(cv.is_array() && !cv.empty(), "must be a non-empty array of {from, value}", {file, "conversations", line});
  std::vector<turn> turns;
  bool any = false;
  for (std::size_t i = 0; i < cv.size(); ++i) {
    const std::string f = "conversations[" + std::to_string(i) + "]";
    require(cv[i].is_object(), "must be an object {from, value}", {file, f, line});
    const auto role = sharegpt_role(detail::string_field(cv[i], "from", f + ".from", file, line), f + ".from", file, line);
    turns.push_back({role, detail::string_field(cv[i], "value", f + ".value", file, line), role == "assistant"});
    any |= role == "assistant";
  }
  require(any, "no gpt/assistant turn: nothing to train on", {file, "conversations", line});
  return turns;
}

// A list of {role, content} under `key` (conversational prompt/completion).
inline std::vector<turn> message_list(const nlohmann::json& a, const char* key, bool trained, const std::string& file,
                                      std::size_t line) {
  require(a.is_array() && !a.empty(), "must be a string or a non-empty array of {role, content}", {file, key, line});
  std::vector<turn> v;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const std::string f = std::string(key) + "[" + std::to_string(i) + "]";
    require(a[i].is_object(), "must be an object {role, content}", {file, f, line});
    const auto& role = detail::string_field(a[i], "role", f + ".role", file, line);
    require(!role.empty(), "must not be empty", {file, f + ".role", line});
    v.push_back({role, detail::string_field(a[i], "content", f + ".content", file, line), trained && role == "assistant"});
  }
  return v;
}

// {"prompt", "completion"}: either both strings (plain text) or both message
// lists (conversational). `text` holds the plain segments; `turns` the
// conversation (then `text` is empty).
struct prompt_completion {
  std::vector<segment> text;
  std::vector<turn> turns;
};

inline prompt_completion parse_prompt_completion(const nlohmann::json& j, const std::string& file, std::size_t line) {
  require(j.contains("prompt") && j.contains("completion"), "a prompt/completion line needs both fields",
          {file, j.contains("prompt") ? "completion" : "prompt", line});
  const auto &p = j["prompt"], &c = j["completion"];
  prompt_completion pc;
  if (p.is_string()) {
    require(c.is_string(), "must be a string, as prompt is", {file, "completion", line});
    require(!c.get_ref<const std::string&>().empty(), "must not be empty: nothing to train on", {file, "completion", line});
    pc.text = {{p.get<std::string>(), false}, {c.get<std::string>(), true}};
    return pc;
  }
  pc.turns = message_list(p, "prompt", false, file, line);
  auto done = message_list(c, "completion", true, file, line);
  require(std::any_of(done.begin(), done.end(), [](const turn& t) { return t.trained; }),
          "no assistant message: nothing to train on", {file, "completion", line});
  pc.turns.insert(pc.turns.end(), done.begin(), done.end());
  return pc;
}

// A long document's windows of at most `max_len` tokens. Consecutive windows
// share one token (the last of one is the first of the next), so every token
// after the document's first is predicted exactly once although each window's
// first label is -100 (dataset.hpp's contract). Windows start every
// max_len - 1 tokens; a last window of a single token (nothing to predict) is
// not made.
inline std::vector<std::pair<std::size_t, std::size_t>> windows(std::size_t n, std::size_t max_len) {
  std::vector<std::pair<std::size_t, std::size_t>> w;
  const std::size_t stride = max_len - 1;
  for (std::size_t b = 0; b == 0 || b + 1 < n; b += stride) w.emplace_back(b, std::min(n, b + max_len));
  return w;
}

}  // namespace staticgrad::io::shapes
